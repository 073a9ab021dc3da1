//! The OAuth endpoints: token (RFC 6749 client credentials, RFC 8707
//! resource), introspection (RFC 7662) and revocation (RFC 7009).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{self, AdminScope, admin_from_token, bearer, client_credentials};
use super::body::OAuthParams;
use super::error::{OAuthBadRequest, OAuthError, OAuthInvalidClient, OAuthThrottled, OAuthUnavailable};
use crate::app::AppState;
use crate::audit::Origin;
use crate::delegation::{Actor, SubjectToken};
use crate::federation::{Federated, Purpose, Refusal, jwt};
use crate::storage::StoreError;
use crate::tenants::{Client, ClientKind};
use crate::tokens::issuer::{MintError, Provenance};
use crate::tokens::policy::MintRequest;
use crate::tokens::terms::MintTerms;
use crate::tokens::validate::Introspecting;

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// `POST /oauth2/token`, form-encoded. Client authentication is
/// `client_secret_basic` or `client_secret_post`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the form is read by OAuthParams
pub struct TokenRequest {
    /// `client_credentials`, `urn:ietf:params:oauth:grant-type:jwt-bearer` or
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(example = "client_credentials")]
    grant_type: String,
    /// jwt-bearer: the CI job's or workload's OIDC token.
    assertion: Option<String>,
    /// Token exchange: the OIDC token (JWT or id_token).
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    /// private_key_jwt: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    client_assertion_type: Option<String>,
    /// private_key_jwt: a JWT signed by a key registered on the client, or a
    /// workload OIDC token a trust policy binds to the client.
    client_assertion: Option<String>,
    /// The MCP server's URI (RFC 8707); `audience` is a synonym.
    #[schema(max_length = 2048)]
    resource: Option<String>,
    #[schema(max_length = 2048)]
    audience: Option<String>,
    /// Space-separated; absent = the client's scopes on that resource.
    scope: Option<String>,
    /// Required unless the client serves exactly one workflow.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", max_length = 128)]
    workflow: Option<String>,
    /// The token's `sub`; defaults to the client id.
    #[schema(max_length = 256)]
    workload: Option<String>,
    /// Seconds; capped by the client, the resource and MAYFLY_MAX_TTL.
    #[schema(minimum = 1)]
    expires_in: Option<i64>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
    /// What was granted (requested scopes the client lacks are dropped).
    pub scope: String,
    /// Token exchange only: `urn:ietf:params:oauth:token-type:access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// RFC 7662 answer: `{"active": false}` alone, or the token's claims.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ActiveClaims>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveClaims {
    pub token_type: &'static str,
    pub scope: String,
    pub client_id: String,
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub tenant: String,
    pub workflow: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
}

/// `POST /oauth2/introspect` and `/oauth2/revoke`, form-encoded.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the form is read by OAuthParams
pub struct TokenParam {
    token: String,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Authenticates the calling client by its credentials in the request.
async fn authenticate(state: &AppState, params: &OAuthParams, origin: &Origin) -> Result<Client, OAuthError> {
    let creds = client_credentials(params)?;
    let client = state.authn.authenticate(&creds, origin).await?;
    super::record_span(&client.tenant_id, Some(&client.client_id));
    Ok(client)
}

pub const GRANT_JWT_BEARER_URN: &str = GRANT_JWT_BEARER;
pub const GRANT_TOKEN_EXCHANGE_URN: &str = GRANT_TOKEN_EXCHANGE;
const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The `typ` of an Identity Assertion JWT Authorization Grant.
const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";

/// `typ` compared as RFC 7515 §4.1.9 says: case-insensitively, with the
/// `application/` prefix optional.
fn is_id_jag_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == ID_JAG_TYPE
}

fn invalid_grant(r: Refusal) -> OAuthError {
    match r {
        Refusal::Invalid(why) => OAuthError::new("invalid_grant", why),
        Refusal::Throttled(wait) => OAuthError::throttled(wait),
        Refusal::Store(e) => e.into(),
    }
}

/// The calling client: by secret (Basic or form), or by private_key_jwt. A
/// workload token vouched for by a trust policy comes back with the match.
async fn authenticate_any(
    state: &AppState,
    params: &OAuthParams,
    origin: &Origin,
    resource: Option<&str>,
) -> Result<(Client, Option<Federated>), OAuthError> {
    let Some(assertion) = params.get("client_assertion") else {
        return Ok((authenticate(state, params, origin).await?, None));
    };
    if params.get("client_assertion_type") != Some(CLIENT_ASSERTION_JWT) {
        return Err(OAuthError::invalid_request(format!(
            "`client_assertion_type` must be {CLIENT_ASSERTION_JWT}"
        )));
    }
    if params.get("client_secret").is_some() || auth::basic_credentials(&params.headers).is_some() {
        return Err(OAuthError::invalid_request(
            "use one client authentication method, not both",
        ));
    }
    let found = state
        .federation
        .authenticate_client(params.get("client_id"), assertion, resource, origin)
        .await;
    match found {
        Ok((client, federated)) => {
            super::record_span(&client.tenant_id, Some(&client.client_id));
            Ok((client, federated))
        }
        Err(Refusal::Invalid(_)) => Err(OAuthError::invalid_client()),
        Err(Refusal::Throttled(wait)) => Err(OAuthError::throttled(wait)),
        Err(Refusal::Store(e)) => Err(e.into()),
    }
}

/// Mint a token: client credentials (secret or private_key_jwt), an external
/// OIDC token (RFC 7523 jwt-bearer), or RFC 8693 token exchange of one.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "OK.", body = TokenResponse, headers(("Cache-Control" = String))),
        (status = 400, response = OAuthBadRequest), (status = 401, response = OAuthInvalidClient),
        (status = 429, response = OAuthThrottled), (status = 503, response = OAuthUnavailable)))]
pub async fn token(State(state): State<AppState>, origin: Origin, params: OAuthParams) -> Result<Response, OAuthError> {
    // A mint decided on a catalog entry that changed underneath it is decided
    // again from authentication on (the catalog has caught up by then). Only
    // client credentials are replayed: other grants may spend single-use
    // assertions, so their caller retries.
    let replayable = params.get("grant_type") == Some(GRANT_CLIENT_CREDENTIALS);
    for _ in 0..3 {
        match mint(&state, &origin, &params).await? {
            Some(res) => return Ok(res),
            None if replayable => continue,
            None => break,
        }
    }
    Err(StoreError::Stale.into())
}

/// One attempt at `token`; None when the decision went stale.
async fn mint(state: &AppState, origin: &Origin, params: &OAuthParams) -> Result<Option<Response>, OAuthError> {
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("`grant_type` is required"))?;
    let resource = match (params.get("resource"), params.get("audience")) {
        (Some(r), Some(a)) if r != a => {
            return Err(OAuthError::invalid_request(
                "`resource` and `audience` disagree; send one",
            ));
        }
        (r, a) => r.or(a),
    };
    let mut request = MintRequest {
        scope: params.get("scope"),
        workflow: params.get("workflow"),
        workload: params.get("workload"),
        expires_in: params.get("expires_in"),
    };
    let has_client_auth = params.get("client_secret").is_some()
        || params.get("client_assertion").is_some()
        || auth::basic_credentials(&params.headers).is_some();
    let mut provenance = Provenance::default();
    let (workflow, workload);
    let (terms, issued_token_type) = match grant_type {
        GRANT_CLIENT_CREDENTIALS => {
            let (client, federated) = authenticate_any(state, params, origin, resource).await?;
            let mut terms = MintTerms::of_client(&client);
            // A policy-vouched identity names the workload, and the workflow unless asked.
            if let Some(f) = &federated {
                workflow = f.matched.workflow.clone();
                workload = f.matched.workload.clone();
                request.workflow = request.workflow.or(Some(workflow.as_str()));
                request.workload = Some(workload.as_str());
                provenance.federated = Some(f.provenance());
                provenance.policy_id = Some(f.policy.id);
                terms.workload_verified = true;
            }
            (terms, None)
        }
        GRANT_JWT_BEARER | GRANT_TOKEN_EXCHANGE => {
            if request.workflow.is_some() || request.workload.is_some() {
                return Err(OAuthError::invalid_request(
                    "`workflow` and `workload` come from the subject, not the request",
                ));
            }
            let exchange = grant_type == GRANT_TOKEN_EXCHANGE;
            let (token, mayfly_subject) = if exchange {
                let subject = params
                    .get("subject_token")
                    .ok_or_else(|| OAuthError::invalid_request("`subject_token` is required"))?;
                let mayfly_subject = match params.get("subject_token_type") {
                    Some(TOKEN_TYPE_ACCESS_TOKEN) => true,
                    Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ID_TOKEN) => false,
                    _ => {
                        return Err(OAuthError::invalid_request(format!(
                            "`subject_token_type` must be {TOKEN_TYPE_ACCESS_TOKEN}, {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}"
                        )));
                    }
                };
                (subject, mayfly_subject)
            } else {
                let assertion = params
                    .get("assertion")
                    .ok_or_else(|| OAuthError::invalid_request("`assertion` is required"))?;
                (assertion, false)
            };
            // An ID-JAG is one whichever grant carries it: it is only ever
            // honoured for the client it names, never as a bare subject.
            let id_jag =
                !mayfly_subject && jwt::parse(token).is_ok_and(|t| t.header.typ.as_deref().is_some_and(is_id_jag_type));
            // The actor: an actor token's holder, or the authenticated client.
            let actor = match params.get("actor_token") {
                Some(actor_token) if exchange => {
                    if params.get("actor_token_type") != Some(TOKEN_TYPE_ACCESS_TOKEN) {
                        return Err(OAuthError::invalid_request(format!(
                            "`actor_token_type` must be {TOKEN_TYPE_ACCESS_TOKEN}"
                        )));
                    }
                    let actor = state
                        .delegation
                        .actor_from_token(actor_token)
                        .await
                        .map_err(invalid_grant)?;
                    // A bearer actor token alone is not enough: whoever presents
                    // it must also authenticate as the client it was minted for.
                    if !has_client_auth {
                        return Err(OAuthError::invalid_client());
                    }
                    let (client, _) = authenticate_any(state, params, origin, resource).await?;
                    if client.tenant_id != actor.client.tenant_id || client.client_id != actor.client.client_id {
                        return Err(invalid_grant(Refusal::Invalid(
                            "actor_token: not minted for the authenticated client".into(),
                        )));
                    }
                    Some(actor)
                }
                _ if has_client_auth => {
                    let (client, _) = authenticate_any(state, params, origin, resource).await?;
                    let workload = client.client_id.clone();
                    Some(Actor {
                        client,
                        workload,
                        lease: None,
                    })
                }
                _ => None,
            };
            let issued = exchange.then_some(TOKEN_TYPE_ACCESS_TOKEN);
            match actor {
                Some(actor) if exchange || id_jag => {
                    let d = state
                        .delegation
                        .exchange(
                            if mayfly_subject {
                                SubjectToken::Mayfly(token)
                            } else if id_jag {
                                SubjectToken::IdJag(token)
                            } else {
                                SubjectToken::External(token)
                            },
                            actor,
                            resource,
                            request.expires_in,
                            origin,
                        )
                        .await
                        .map_err(invalid_grant)?;
                    super::record_span(&d.terms.tenant_id, Some(&d.terms.client_id));
                    workflow = d.workflow;
                    workload = d.workload;
                    request.workflow = Some(workflow.as_str());
                    request.workload = Some(workload.as_str());
                    provenance = d.provenance;
                    (d.terms, issued)
                }
                _ if id_jag => return Err(OAuthError::invalid_client()),
                _ if mayfly_subject => {
                    return Err(OAuthError::invalid_request(
                        "exchanging a mayfly token needs an actor: authenticate the client or send `actor_token`",
                    ));
                }
                _ => {
                    let resource = resource
                        .ok_or_else(|| OAuthError::invalid_request("`resource` (or `audience`) is required"))?;
                    let f = state
                        .federation
                        .for_resource(token, resource, Purpose::Direct, origin)
                        .await
                        .map_err(invalid_grant)?;
                    super::record_span(&f.policy.tenant_id, None);
                    workflow = f.matched.workflow.clone();
                    workload = f.matched.workload.clone();
                    request.workflow = Some(workflow.as_str());
                    request.workload = Some(workload.as_str());
                    provenance.federated = Some(f.provenance());
                    provenance.policy_id = Some(f.policy.id);
                    let terms = state.federation.terms(&f, origin).await.map_err(invalid_grant)?;
                    (terms, issued)
                }
            }
        }
        _ => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "supported: client_credentials, jwt-bearer, token-exchange",
            ));
        }
    };
    // A delegated token's resource defaults to the subject's.
    let resource = resource.or_else(|| {
        provenance
            .actor
            .as_ref()
            .and(terms.grants.first().map(|g| g.resource.as_str()))
    });
    let issued = match state.issuer.mint(&terms, resource, &request, origin, &provenance).await {
        Ok(issued) => issued,
        Err(MintError::Denied(d)) => return Err(OAuthError::new(d.code(), d.message())),
        Err(MintError::NoSigningKey) => {
            return Err(OAuthError::new("temporarily_unavailable", "no signing key is loaded"));
        }
        Err(MintError::Limited(l)) => {
            return Err(OAuthError {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(l.retry_after),
                ..OAuthError::new("temporarily_unavailable", format!("limit reached: {}", l.what))
            });
        }
        Err(MintError::Store(e)) => return Err(e.into()),
        Err(MintError::Stale) => return Ok(None),
    };
    let span = tracing::Span::current();
    span.record("workflow", issued.lease.workflow.as_str());
    span.record("workload", issued.lease.workload.as_str());
    let mut res = Json(TokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: issued.scope,
        issued_token_type,
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(Some(res))
}

/// Is this token active? For `resource_server` clients of the token's
/// tenant (Basic or form credentials) and admins (Bearer).
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "OK.", body = Introspection), (status = 400, response = OAuthBadRequest),
        (status = 401, response = OAuthInvalidClient), (status = 403, response = OAuthBadRequest),
        (status = 429, response = OAuthThrottled)))]
pub async fn introspect(
    State(state): State<AppState>,
    origin: Origin,
    params: OAuthParams,
) -> Result<Json<Introspection>, OAuthError> {
    // The caller: a resource_server client (its tenant only) or an admin token.
    let caller = match bearer(&params.headers) {
        Some(token) => {
            let admin = admin_from_token(&state, token, origin.clone())
                .await
                .map_err(|_| OAuthError::invalid_client())?;
            let tenant = match admin.scope {
                AdminScope::Global => None,
                AdminScope::Tenant(t) => Some(t),
            };
            Introspecting {
                tenant,
                client_id: admin.id.client_id,
                resource_server: false,
                serves: None,
            }
        }
        None => {
            let client = authenticate(&state, &params, &origin).await?;
            if client.kind != ClientKind::ResourceServer {
                return Err(OAuthError {
                    status: StatusCode::FORBIDDEN,
                    ..OAuthError::new("unauthorized_client", "only resource_server clients may introspect")
                });
            }
            Introspecting {
                tenant: Some(client.tenant_id),
                client_id: client.client_id,
                resource_server: true,
                serves: client.serves,
            }
        }
    };
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    let claims = state.verifier.introspect(&caller, token, &origin).await?;
    Ok(Json(match claims {
        None => Introspection::default(),
        Some(c) => Introspection {
            active: true,
            claims: Some(ActiveClaims {
                token_type: "Bearer",
                scope: c.scope,
                client_id: c.client_id,
                sub: c.sub,
                aud: c.aud,
                iss: c.iss,
                exp: c.exp,
                iat: c.iat,
                nbf: c.nbf,
                jti: c.jti,
                tenant: c.tenant,
                workflow: c.workflow,
                act: c.act,
            }),
        },
    }))
}

/// RFC 7009: a client revokes a token it holds. Unknown or foreign tokens get
/// the same empty 200, as the RFC asks.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Revoked, or not a token of this client."),
        (status = 400, response = OAuthBadRequest), (status = 401, response = OAuthInvalidClient),
        (status = 429, response = OAuthThrottled)))]
pub async fn revoke(
    State(state): State<AppState>,
    origin: Origin,
    params: OAuthParams,
) -> Result<StatusCode, OAuthError> {
    let client = authenticate(&state, &params, &origin).await?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    let Ok(claims) = state.verifier.check_offline(token) else {
        return Ok(StatusCode::OK);
    };
    let Ok(lease_id) = claims.jti.parse::<Uuid>() else {
        return Ok(StatusCode::OK);
    };
    if claims.client_id == client.client_id && claims.tenant == client.tenant_id {
        state
            .revocations
            .revoke_held(&client.tenant_id, &client.client_id, lease_id, &origin)
            .await?;
    }
    Ok(StatusCode::OK)
}

/// There is no interactive flow; the endpoint exists because MCP clients
/// require `authorization_endpoint` in the metadata.
#[utoipa::path(get, path = "/oauth2/authorize", tag = "oauth",
    responses((status = 400, response = OAuthBadRequest)))]
pub async fn authorize() -> OAuthError {
    OAuthError::new(
        "unsupported_response_type",
        "mayfly issues tokens to machines only: use the token endpoint (client_credentials)",
    )
}

#[cfg(test)]
mod tests {
    use super::is_id_jag_type;

    #[test]
    fn id_jag_type_is_compared_as_rfc_7515_says() {
        for typ in ["oauth-id-jag+jwt", "OAuth-ID-JAG+JWT", "application/oauth-id-jag+jwt"] {
            assert!(is_id_jag_type(typ), "{typ}");
        }
        for typ in ["JWT", "at+jwt", "application/jwt", "xoauth-id-jag+jwt"] {
            assert!(!is_id_jag_type(typ), "{typ}");
        }
    }
}
