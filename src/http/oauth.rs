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
use super::error::{DPOP_NONCE, OAuthBadRequest, OAuthError, OAuthInvalidClient, OAuthThrottled, OAuthUnavailable};
use crate::audit::Origin;
use crate::grants;
use crate::state::AppState;
use crate::tenants::{Client, ClientKind};
use crate::tokens::claims::Confirmation;
use crate::tokens::validate::Introspecting;

/// RFC 9449's proof header.
static DPOP: axum::http::HeaderName = axum::http::HeaderName::from_static("dpop");

/// `POST /oauth2/token`, form-encoded. Client authentication is
/// `client_secret_basic` or `client_secret_post`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the form is read by OAuthParams
pub struct TokenRequest {
    /// `client_credentials`, `urn:ietf:params:oauth:grant-type:jwt-bearer`,
    /// `urn:ietf:params:oauth:grant-type:token-exchange`, `authorization_code`
    /// or `refresh_token`.
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
    /// authorization_code: the code, the redirect URI it was asked for, and the PKCE verifier.
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    /// refresh_token: the session's current refresh token.
    refresh_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// `DPoP` when the request carried a valid DPoP proof (the token is
    /// bound to its key, `cnf.jkt`), else `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
    /// What was granted (requested scopes the client lacks are dropped).
    pub scope: String,
    /// Token exchange only: `urn:ietf:params:oauth:token-type:access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// authorization_code and refresh_token only: the session's next
    /// refresh token (opaque, single use, rotated on every refresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// RFC 7662 answer: `{"active": false}` alone, or the token's claims.
/// (Documented as `IntrospectionDoc`: a flattened optional struct has no
/// schema that `{"active": false}` satisfies.)
#[derive(Debug, Default, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ActiveClaims>,
}

/// The RFC 7662 answer as documented: `active` always, and the token's
/// claims only when it is active.
#[derive(ToSchema)]
#[schema(as = Introspection)]
#[allow(dead_code)] // documentation only: the answer is written by `Introspection`
pub struct IntrospectionDoc {
    active: bool,
    /// The rest only when `active` is true.
    #[schema(example = "Bearer")]
    token_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    sub: Option<String>,
    aud: Option<String>,
    iss: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
    tenant: Option<String>,
    workflow: Option<String>,
    /// RFC 8693 actor chain, when delegated.
    act: Option<serde_json::Value>,
    /// RFC 9449 §6.2: the thumbprint of the DPoP key a bound token needs
    /// (`{"jkt": …}`); `token_type` is then `DPoP`.
    cnf: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
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

/// Mint a token: client credentials (secret or private_key_jwt), an external
/// OIDC token (RFC 7523 jwt-bearer), or RFC 8693 token exchange of one.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    params(("DPoP" = Option<String>, Header,
        description = "RFC 9449 proof (`typ dpop+jwt`, ES256, EdDSA or RS256; `htm` POST, `htu` the metadata's token_endpoint). With it the token is bound to the proof's key: `token_type` DPoP, `cnf.jkt`.")),
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "OK.", body = TokenResponse, headers(("Cache-Control" = String),
            ("DPoP-Nonce" = String, description = "With MAYFLY_DPOP_NONCE=required: the nonce for the next proof."))),
        (status = 400, response = OAuthBadRequest), (status = 401, response = OAuthInvalidClient),
        (status = 429, response = OAuthThrottled), (status = 503, response = OAuthUnavailable)))]
pub async fn token(
    State(AppState { tokens, .. }): State<AppState>,
    origin: Origin,
    params: OAuthParams,
) -> Result<Response, OAuthError> {
    let basic = auth::basic_credentials(&params.headers).transpose()?;
    let mut request = grants::TokenRequest::parse(|name| params.get(name), basic)?;
    request.dpop = match params.headers.get_all(&DPOP).iter().collect::<Vec<_>>()[..] {
        [] => None,
        [one] => Some(
            one.to_str()
                .map_err(|_| OAuthError::new("invalid_dpop_proof", "the DPoP header is not visible ASCII"))?,
        ),
        _ => return Err(OAuthError::new("invalid_dpop_proof", "one DPoP header at most")),
    };
    let granted = match tokens.token(&request, &origin).await {
        Ok(g) => g,
        // A client that sent a proof learns the nonce for its next one.
        Err(e) => {
            let mut e = OAuthError::from(e);
            if request.dpop.is_some() && e.dpop_nonce.is_none() {
                e.dpop_nonce = tokens.dpop_nonce();
            }
            return Err(e);
        }
    };
    let token_type = granted.token_type();
    let mut res = Json(TokenResponse {
        access_token: granted.issued.access_token,
        token_type,
        expires_in: granted.issued.expires_in,
        scope: granted.issued.scope,
        issued_token_type: granted.issued_token_type,
        refresh_token: granted.refresh_token,
    })
    .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(v) = granted.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        h.insert(DPOP_NONCE.clone(), v);
    }
    Ok(res)
}

/// Is this token active? For `resource_server` clients of the token's
/// tenant (Basic or form credentials) and admins (Bearer).
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "OK.", body = IntrospectionDoc), (status = 400, response = OAuthBadRequest),
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
                token_type: if c.cnf.is_some() { "DPoP" } else { "Bearer" },
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
                cnf: c.cnf,
            }),
        },
    }))
}

/// RFC 7009: a client revokes a token it holds. Unknown or foreign tokens get
/// the same empty 200, as the RFC asks. A person's MCP client (public)
/// revokes its session with its refresh token and `client_id`.
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
    // A person's MCP client (public: it names itself) ends its session
    // with the refresh token it holds.
    if let Some(token) = params.get("token").filter(|t| t.starts_with("mfy_rt_"))
        && params.get("client_secret").is_none()
        && auth::basic_credentials(&params.headers).is_none()
    {
        state
            .people
            .revoke_refresh(token, params.get("client_id"), &origin)
            .await?;
        return Ok(StatusCode::OK);
    }
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
