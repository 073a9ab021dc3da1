//! Discovery (RFC 8414) and the JWKS. Both are public and cacheable.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;
use crate::tenants::GLOBAL_ADMIN_SCOPE;

/// RFC 8414 authorization server metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    /// RFC 7591: public clients of people (where a login provider allows them).
    registration_endpoint: String,
    grant_types_supported: Vec<&'static str>,
    response_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    /// mayfly's own admin scopes only, never tenants' scopes.
    scopes_supported: Vec<&'static str>,
    subject_types_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    code_challenge_methods_supported: Vec<&'static str>,
    /// RFC 9449 §5.1: the algorithms a DPoP proof may be signed with.
    dpop_signing_alg_values_supported: Vec<&'static str>,
    /// RFC 9207: authorization responses carry `iss`.
    authorization_response_iss_parameter_supported: bool,
    /// MCP clients may name themselves by a Client ID Metadata Document URL.
    client_id_metadata_document_supported: bool,
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    keys: Vec<serde_json::Value>,
}

fn metadata_for(issuer: &str) -> ServerMetadata {
    let secret_methods = vec!["client_secret_basic", "client_secret_post"];
    // `none`: people's MCP clients are public (PKCE and a metadata document).
    let token_methods = vec!["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];
    ServerMetadata {
        issuer: issuer.to_string(),
        authorization_endpoint: format!("{issuer}/oauth2/authorize"),
        token_endpoint: format!("{issuer}/oauth2/token"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        introspection_endpoint: format!("{issuer}/oauth2/introspect"),
        revocation_endpoint: format!("{issuer}/oauth2/revoke"),
        registration_endpoint: format!("{issuer}/oauth2/register"),
        grant_types_supported: vec![
            crate::grants::request::GRANT_CLIENT_CREDENTIALS,
            crate::grants::request::GRANT_JWT_BEARER,
            crate::grants::request::GRANT_TOKEN_EXCHANGE,
            crate::grants::request::GRANT_AUTHORIZATION_CODE,
            crate::grants::request::GRANT_REFRESH_TOKEN,
        ],
        response_types_supported: vec!["code"],
        token_endpoint_auth_methods_supported: token_methods,
        introspection_endpoint_auth_methods_supported: secret_methods.clone(),
        revocation_endpoint_auth_methods_supported: secret_methods,
        scopes_supported: vec![GLOBAL_ADMIN_SCOPE],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: vec!["ES256"],
        token_endpoint_auth_signing_alg_values_supported: vec!["RS256", "ES256", "EdDSA"],
        code_challenge_methods_supported: vec!["S256"],
        dpop_signing_alg_values_supported: crate::jose::dpop::ALGORITHMS.to_vec(),
        authorization_response_iss_parameter_supported: true,
        client_id_metadata_document_supported: true,
    }
}

fn cached(body: ServerMetadata) -> Response {
    let mut res = Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}

/// Authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, description = "OK.", body = ServerMetadata)))]
pub async fn metadata(State(AppState { issuer, .. }): State<AppState>) -> Response {
    cached(metadata_for(&issuer.id().url))
}

/// The same metadata, at the OpenID discovery location.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "OK.", body = ServerMetadata)))]
pub async fn openid_configuration(State(AppState { issuer, .. }): State<AppState>) -> Response {
    cached(metadata_for(&issuer.id().url))
}

/// Every `next`, `active` and `retired` public signing key. Cacheable for
/// MAYFLY_JWKS_MAX_AGE, with an ETag (If-None-Match answers 304).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    params(("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "OK.", body = Jwks, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified.")))]
pub async fn jwks(State(AppState { keys, web, .. }): State<AppState>, headers: HeaderMap) -> Response {
    let set = keys.keyring().current();
    let cache = format!("public, max-age={}", web.jwks_max_age.as_secs());
    let mut res = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == set.jwks.etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], set.jwks.json.to_string()).into_response()
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&set.jwks.etag) {
        h.insert(header::ETAG, v);
    }
    res
}
