//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types, so spec and code cannot drift.
//! `mayfly openapi > openapi.yaml` writes it; a test fails when the
//! committed file is stale.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::{
    BadRequest, Conflict, Forbidden, ListBusy, NotFound, OAuthBadRequest, OAuthInvalidClient, OAuthThrottled,
    OAuthUnavailable, Unauthorized, Unprocessable, UnprocessableIssuer, UnsupportedMediaType,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mayfly",
        description = "mayfly mints short-lived, scoped access tokens (RFC 9068 JWTs) per tenant, \
workflow and workload, records a lease for each, and revokes precisely. OAuth endpoints take \
form-encoded bodies and answer errors in the RFC 6749 §5.2 shape; the admin API takes JSON, refuses \
unknown fields with 400, and answers errors as `{\"error\", \"message\"}`. Every response carries \
`x-request-id`. A known path with an unsupported method answers 405 with `Allow`; an unknown path 404 \
`no_route`. Admin routes take `Authorization: Bearer <mayfly token>` whose `aud` is the issuer and \
whose scope is `mayfly:admin` or `mayfly:tenant:{tenant}:admin`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "http://127.0.0.1:8420")),
    tags(
        (name = "oauth", description = "Token, introspection and revocation (RFC 6749, 7662, 7009)."),
        (name = "discovery", description = "Metadata and signing keys."),
        (name = "tenants"), (name = "resources"), (name = "clients"),
        (name = "federation", description = "Trust policies: external OIDC tokens instead of stored secrets."),
        (name = "people", description = "People at the keyboard: login providers (company IdPs) and sessions."),
        (name = "records", description = "Leases, revocations and the audit trail."),
        (name = "keys", description = "Signing keys (global admins)."),
        (name = "gateway", description = "What `mayfly gateway` reads and reports, as a `resource_server` client."),
        (name = "operations"),
    ),
    components(responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, Unprocessable,
        UnprocessableIssuer, ListBusy, UnsupportedMediaType, OAuthBadRequest, OAuthInvalidClient, OAuthThrottled,
        OAuthUnavailable)),
    modifiers(&AdminBearer),
)]
pub struct ApiDoc;

/// Declares the admin bearer scheme.
struct AdminBearer;

impl utoipa::Modify for AdminBearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = api.components.as_mut() {
            components.add_security_scheme(
                "admin_token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = super::routes().split_for_parts().1;
    json_bodies_may_be_refused_as_415(&mut doc);
    doc
}

/// Every operation that reads a JSON body answers 415 to any other content
/// type (`http::body`): said once here rather than on each route.
fn json_bodies_may_be_refused_as_415(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr};
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.post, &mut item.put, &mut item.patch].into_iter().flatten() {
            let json = op
                .request_body
                .as_ref()
                .is_some_and(|b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")));
            if json {
                op.responses.responses.insert(
                    "415".into(),
                    RefOr::Ref(Ref::from_response_name("UnsupportedMediaType")),
                );
            }
        }
    }
}

/// The document as YAML, as committed in `openapi.yaml`.
pub fn yaml() -> Result<String, String> {
    document().to_yaml().map_err(|e| e.to_string())
}
