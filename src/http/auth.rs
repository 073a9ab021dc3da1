//! Who is calling: the request's origin, client credentials (Basic or form),
//! and admin tokens. Authorization is an extractor: a handler that takes a
//! `TenantAdmin` receives the already-loaded tenant its token may administer;
//! a `GlobalAdmin`, a token with `mayfly:admin`. Refusals are audited.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;

use super::RequestId;
use super::body::{OAuthParams, form_decode};
use super::error::{ApiError, OAuthError};
use super::session;
use crate::audit::{AdminId, Caller, Origin, Outcome, actions};
use crate::state::AppState;
use crate::tenants::{self, Credentials, Tenant, uri};
use crate::tokens::validate::Validity;

/// The credentials of an `Authorization` header with `scheme` (case-insensitive, RFC 9110).
fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// The one bearer-token parser.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    authorization(headers, "Bearer").filter(|t| !t.is_empty())
}

/// `Authorization: Basic` credentials, if the header is there.
pub fn basic_credentials(headers: &HeaderMap) -> Option<Result<Credentials, OAuthError>> {
    let b64 = authorization(headers, "Basic")?;
    Some((|| {
        let raw = zeroize::Zeroizing::new(STANDARD.decode(b64).map_err(|_| OAuthError::invalid_client())?);
        let text = std::str::from_utf8(&raw).map_err(|_| OAuthError::invalid_client())?;
        let (id, secret) = text.split_once(':').ok_or_else(OAuthError::invalid_client)?;
        // RFC 6749 §2.3.1: both halves are form-encoded inside Basic.
        let id = form_decode(id).ok_or_else(OAuthError::invalid_client)?;
        let secret = form_decode(secret).ok_or_else(OAuthError::invalid_client)?;
        Ok(Credentials {
            client_id: id,
            secret: SecretString::from(secret),
        })
    })())
}

/// Client credentials from `client_secret_basic` or `client_secret_post` (not both).
pub fn client_credentials(params: &OAuthParams) -> Result<Credentials, OAuthError> {
    let post = (params.get("client_id"), params.get("client_secret"));
    match (basic_credentials(&params.headers), post) {
        (Some(_), (_, Some(_))) => Err(OAuthError::invalid_request(
            "use one client authentication method, not both",
        )),
        (Some(basic), (form_id, None)) => {
            let creds = basic?;
            if form_id.is_some_and(|f| f != creds.client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id does not match the Authorization header",
                ));
            }
            Ok(creds)
        }
        (None, (Some(id), Some(secret))) => Ok(Credentials {
            client_id: id.to_string(),
            secret: SecretString::from(secret.to_string()),
        }),
        (None, _) => Err(OAuthError::invalid_client()),
    }
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let source = peer
            .map(|peer| {
                let forwarded = parts
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                crate::config::client_address(peer, forwarded, &state.web.trusted_proxies).to_string()
            })
            .unwrap_or_default();
        Ok(Origin { request_id, source })
    }
}

/// What an admin token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminScope {
    Global,
    Tenant(String),
}

/// An authenticated admin: a valid, unrevoked mayfly token for the admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    pub scope: AdminScope,
    pub id: AdminId,
    pub caller: Caller,
}

impl Admin {
    /// Its own tenant, for a tenant admin.
    pub fn own_tenant(&self) -> Option<&str> {
        match &self.scope {
            AdminScope::Global => None,
            AdminScope::Tenant(t) => Some(t),
        }
    }

    /// Refuses, and records the refusal in the admin's own tenant's log
    /// (another tenant's log is not theirs to write in).
    async fn deny(&self, state: &AppState, tenant: Option<&str>, why: &str) -> ApiError {
        let mut event = self
            .caller
            .origin
            .event(actions::ADMIN_DENIED, Outcome::Denied, state.web.clock.now());
        event.tenant = match &self.scope {
            AdminScope::Tenant(own) => Some(own.clone()),
            AdminScope::Global => tenant.map(|t| t.chars().take(64).collect()),
        };
        event.admin = Some(self.caller.identity.clone());
        event.reason = Some(match tenant {
            Some(t) if self.scope != AdminScope::Global => {
                format!("{why} (tried tenant `{}`)", t.chars().take(64).collect::<String>())
            }
            _ => why.to_string(),
        });
        match state.audit.append(&[event]).await {
            Ok(()) => ApiError::forbidden(why),
            Err(e) => e.into(),
        }
    }
}

/// Checks an admin-API token: active, for the admin API, with an admin scope.
pub async fn admin_from_token(state: &AppState, token: &str, origin: Origin) -> Result<Admin, ApiError> {
    let claims = match state.verifier.check(token).await? {
        Validity::Active { claims, .. } => claims,
        Validity::Inactive { reason, .. } => {
            return Err(ApiError::unauthorized(format!(
                "admin token is not active ({})",
                reason.as_str()
            )));
        }
    };
    let issuer = state.issuer.id();
    if uri::canonicalize(&claims.aud).ok().as_deref() != Some(issuer.canonical.as_str()) {
        return Err(ApiError::unauthorized("this token is not for the admin API (aud)"));
    }
    // The admin API checks no DPoP proofs, so it takes no bound token (none
    // is minted for it either): a bound token here would be a bearer one.
    if claims.cnf.is_some() {
        return Err(ApiError::unauthorized(
            "a DPoP-bound token is not accepted on the admin API",
        ));
    }
    let scope = if claims.scopes().any(|s| s == tenants::GLOBAL_ADMIN_SCOPE) && claims.tenant == tenants::SYSTEM_TENANT
    {
        AdminScope::Global
    } else if claims
        .scopes()
        .any(|s| s == tenants::tenant_admin_scope(&claims.tenant))
    {
        AdminScope::Tenant(claims.tenant.clone())
    } else {
        return Err(ApiError::forbidden("the token carries no admin scope"));
    };
    tracing::Span::current().record("client_id", claims.client_id.as_str());
    let id = AdminId {
        client_id: claims.client_id,
        sub: claims.sub,
        jti: claims.jti,
        act: claims.act,
    };
    Ok(Admin {
        scope,
        caller: Caller::admin(&id, origin),
        id,
    })
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Ok(origin) = Origin::from_request_parts(parts, state).await;
        // A bearer token, or the console's session cookie; a cookie rides on
        // every request the browser makes, so a state-changing one must also
        // carry its session's CSRF token, which only our own pages can read.
        if let Some(token) = bearer(&parts.headers) {
            return admin_from_token(state, token, origin).await;
        }
        let token = session::session_token(state, &parts.headers)
            .ok_or_else(|| ApiError::unauthorized("send an admin token as `Authorization: Bearer …`"))?;
        let admin = admin_from_token(state, token, origin).await?;
        let safe = parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
        if !safe && !session::csrf_ok(state, &parts.headers, &admin.id.jti) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "csrf",
                "a state-changing request from the console needs its session's X-CSRF-Token",
            ));
        }
        Ok(admin)
    }
}

/// A global admin (`mayfly:admin`).
pub struct GlobalAdmin(pub Admin);

impl FromRequestParts<AppState> for GlobalAdmin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let admin = Admin::from_request_parts(parts, state).await?;
        if admin.scope == AdminScope::Global {
            return Ok(GlobalAdmin(admin));
        }
        Err(admin
            .deny(state, None, "requires the global admin scope mayfly:admin")
            .await)
    }
}

/// An admin of the tenant named in the path, with that tenant loaded.
/// Global admins reach every tenant; a tenant admin only its own.
pub struct TenantAdmin {
    pub admin: Admin,
    pub tenant: Tenant,
}

impl TenantAdmin {
    pub fn caller(&self) -> &Caller {
        &self.admin.caller
    }

    pub fn id(&self) -> &str {
        &self.tenant.id
    }
}

impl FromRequestParts<AppState> for TenantAdmin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let admin = Admin::from_request_parts(parts, state).await?;
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        let tenant = params.0.get("tenant").cloned().unwrap_or_default();
        // A tenant in a path must be a slug; anything else cannot exist.
        if !tenants::is_tenant_path(&tenant) {
            return Err(ApiError::not_found("tenant"));
        }
        super::record_span(&tenant, None);
        if let AdminScope::Tenant(own) = &admin.scope
            && *own != tenant
        {
            return Err(admin
                .deny(state, Some(&tenant), "this token administers another tenant")
                .await);
        }
        let tenant = state.directory.get_tenant(&tenant).await?;
        Ok(TenantAdmin { admin, tenant })
    }
}

/// A global admin acting on the tenant in the path (deleting it), loaded.
pub struct GlobalTenantAdmin(pub TenantAdmin);

impl FromRequestParts<AppState> for GlobalTenantAdmin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let at = TenantAdmin::from_request_parts(parts, state).await?;
        if at.admin.scope == AdminScope::Global {
            return Ok(GlobalTenantAdmin(at));
        }
        Err(at
            .admin
            .deny(state, None, "requires the global admin scope mayfly:admin")
            .await)
    }
}
