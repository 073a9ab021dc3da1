//! Extractors: JSON bodies in the admin error shape, OAuth form parameters,
//! client credentials, request metadata and the admin bearer token.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::RequestId;
use super::error::{ApiError, OAuthError};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, actions};
use crate::tenants::{self, authn};
use crate::tokens::issuer::Meta;
use crate::tokens::validate::{self, Validity};

fn is_content_type(parts_headers: &axum::http::HeaderMap, expected: &str) -> bool {
    parts_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case(expected) || (expected == "application/json" && v.ends_with("+json"))
        })
}

async fn read_body(req: Request) -> Result<(axum::http::HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, &()).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::bad_request("invalid_body", "cannot read request body")
        }
    })?;
    Ok((headers, bytes))
}

fn parse_json<T: DeserializeOwned>(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_content_type(headers, "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    // Postgres text cannot hold NUL; refuse it here rather than fail in the store.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(ApiError::bad_request("invalid_body", "NUL characters are not accepted"));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request("invalid_body", e.to_string()),
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })
}

/// A JSON body; unknown fields are refused by the target types.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = read_body(req).await?;
        parse_json(&headers, &bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out entirely (then `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = read_body(req).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&headers, &bytes).map(OptionalJson)
    }
}

/// OAuth form parameters (RFC 6749 §3.2): each at most once.
pub struct OAuthParams {
    pub headers: axum::http::HeaderMap,
    params: HashMap<String, String>,
}

impl OAuthParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthParams {
    type Rejection = OAuthError;
    async fn from_request(req: Request, _: &S) -> Result<Self, OAuthError> {
        let (headers, bytes) = read_body(req).await.map_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                OAuthError::too_large()
            } else {
                OAuthError::invalid_request(e.message)
            }
        })?;
        if !is_content_type(&headers, "application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "send parameters as application/x-www-form-urlencoded",
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| OAuthError::invalid_request("body is not UTF-8"))?;
        let mut params = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (form_decode(k), form_decode(v));
            let (Some(k), Some(v)) = (k, v) else {
                return Err(OAuthError::invalid_request("malformed form encoding"));
            };
            if params.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{}` is repeated",
                    truncate(&k, 64)
                )));
            }
        }
        Ok(OAuthParams { headers, params })
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// application/x-www-form-urlencoded decoding: `+` is a space, `%XX` a byte.
pub fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    // Postgres text cannot hold NUL; no parameter of ours needs one.
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Client credentials from `client_secret_basic` or `client_secret_post`.
pub struct Credentials {
    pub client_id: String,
    pub secret: SecretString,
}

/// `Authorization: Basic` credentials, if the header is there.
pub fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<Result<Credentials, OAuthError>> {
    let b64 = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))?;
    Some((|| {
        let raw = zeroize::Zeroizing::new(STANDARD.decode(b64.trim()).map_err(|_| OAuthError::invalid_client())?);
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

/// Why client authentication failed, in a form each error shape can take.
#[derive(Debug)]
pub enum ClientAuthError {
    Throttled(i64),
    Invalid,
    Store(crate::storage::StoreError),
}

impl From<ClientAuthError> for OAuthError {
    fn from(e: ClientAuthError) -> Self {
        match e {
            ClientAuthError::Throttled(wait) => OAuthError::throttled(wait),
            ClientAuthError::Invalid => OAuthError::invalid_client(),
            ClientAuthError::Store(e) => e.into(),
        }
    }
}

impl From<ClientAuthError> for ApiError {
    fn from(e: ClientAuthError) -> Self {
        match e {
            ClientAuthError::Throttled(wait) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("too many failed authentications from this address; retry in {wait} s"),
            ),
            ClientAuthError::Invalid => ApiError::unauthorized("client authentication failed"),
            ClientAuthError::Store(e) => e.into(),
        }
    }
}

/// Authenticates a client by secret, braking repeated failures per source
/// address; failures are audited (never with the secret) and answered alike.
pub async fn authenticate_client(
    state: &AppState,
    creds: &Credentials,
    meta: &Meta,
) -> Result<tenants::Client, ClientAuthError> {
    let source: Option<std::net::IpAddr> = meta.source.parse().ok();
    let source = source.map(|ip| (ip, creds.client_id.chars().take(128).collect::<String>()));
    let now = state.clock.now();
    if let Some(wait) = state.auth_throttle.retry_after(source.clone(), now) {
        return Err(ClientAuthError::Throttled(wait));
    }
    match authn::authenticate(&state.store, now, &creds.client_id, &creds.secret).await {
        Ok(client) => {
            super::record_span(&client.tenant_id, Some(&client.client_id));
            Ok(client)
        }
        Err(authn::AuthError::Failed(why, client)) => {
            let mut event = AuditEvent::new(actions::CLIENT_AUTH_FAILED, Outcome::Denied, now);
            event.reason = Some(why.as_str().to_string());
            // Only a well-formed id is recorded: a pasted secret must not land in the log.
            let looks_like_secret = creds
                .client_id
                .starts_with(tenants::secret::PREFIX.trim_end_matches('_'));
            event.client_id = (tenants::validate_client_id(&creds.client_id).is_ok() && !looks_like_secret)
                .then(|| creds.client_id.clone());
            event.tenant = client.map(|c| c.tenant_id);
            event.request_id = Some(meta.request_id.clone());
            event.source = Some(meta.source.clone());
            state
                .store
                .append_audit(&[event])
                .await
                .map_err(ClientAuthError::Store)?;
            metrics::counter!("mayfly_client_auth_failures_total").increment(1);
            state.auth_throttle.record_failure(source, now);
            Err(ClientAuthError::Invalid)
        }
        Err(authn::AuthError::Store(e)) => Err(ClientAuthError::Store(e)),
    }
}

impl FromRequestParts<AppState> for Meta {
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
                crate::config::client_address(peer, forwarded, &state.config.trusted_proxies).to_string()
            })
            .unwrap_or_default();
        Ok(Meta { request_id, source })
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
    pub client_id: String,
    pub sub: String,
    pub jti: String,
    pub act: Option<serde_json::Value>,
    pub meta: Meta,
}

impl Admin {
    /// Who did it, as the audit log records it.
    pub fn identity(&self) -> serde_json::Value {
        let mut v = json!({"client_id": self.client_id, "sub": self.sub, "jti": self.jti});
        if let Some(act) = &self.act {
            v["act"] = act.clone();
        }
        v
    }

    pub fn is_global(&self) -> bool {
        self.scope == AdminScope::Global
    }

    pub async fn require_global(&self, state: &AppState) -> Result<(), ApiError> {
        if self.is_global() {
            return Ok(());
        }
        self.deny(state, None, "requires the global admin scope mayfly:admin")
            .await
    }

    /// Global admins reach every tenant; a tenant admin only its own.
    pub async fn require_tenant(&self, state: &AppState, tenant: &str) -> Result<(), ApiError> {
        super::record_span(tenant, None);
        match &self.scope {
            AdminScope::Global => Ok(()),
            AdminScope::Tenant(t) if t == tenant => Ok(()),
            AdminScope::Tenant(_) => {
                self.deny(state, Some(tenant), "this token administers another tenant")
                    .await
            }
        }
    }

    async fn deny(&self, state: &AppState, tenant: Option<&str>, why: &str) -> Result<(), ApiError> {
        let mut event = AuditEvent::new(actions::ADMIN_DENIED, Outcome::Denied, state.clock.now());
        // Recorded in the caller's own log: another tenant's log is not theirs to write in.
        event.tenant = match &self.scope {
            AdminScope::Tenant(own) => Some(own.clone()),
            AdminScope::Global => tenant.map(|t| t.chars().take(64).collect()),
        };
        event.admin = Some(self.identity());
        event.reason = Some(match tenant {
            Some(t) if self.scope != AdminScope::Global => {
                format!("{why} (tried tenant `{}`)", t.chars().take(64).collect::<String>())
            }
            _ => why.to_string(),
        });
        event.request_id = Some(self.meta.request_id.clone());
        event.source = Some(self.meta.source.clone());
        state.store.append_audit(&[event]).await?;
        Err(ApiError::forbidden(why))
    }

    pub fn event(&self, action: &str, now: chrono::DateTime<chrono::Utc>) -> AuditEvent {
        let mut e = AuditEvent::new(action, Outcome::Success, now);
        e.admin = Some(self.identity());
        e.actor = self.act.clone();
        e.request_id = Some(self.meta.request_id.clone());
        e.source = Some(self.meta.source.clone());
        e
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Ok(meta) = Meta::from_request_parts(parts, state).await;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("send an admin token as `Authorization: Bearer …`"))?;
        admin_from_token(state, token, meta).await
    }
}

pub async fn admin_from_token(state: &AppState, token: &str, meta: Meta) -> Result<Admin, ApiError> {
    let (claims, _lease) = match validate::check_fresh(state, token).await? {
        Validity::Active { claims, lease } => (claims, lease),
        Validity::Inactive { reason, .. } => {
            return Err(ApiError::unauthorized(format!("admin token is not active ({reason})")));
        }
    };
    if tenants::uri::canonicalize(&claims.aud).ok().as_deref() != Some(state.issuer_canonical.as_str()) {
        return Err(ApiError::unauthorized("this token is not for the admin API (aud)"));
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
    Ok(Admin {
        scope,
        client_id: claims.client_id,
        sub: claims.sub,
        jti: claims.jti,
        act: claims.act,
        meta,
    })
}

/// Query parameters, refused in the admin error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters, refused in the admin error shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// `limit` and `cursor` of every list.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// Decodes a cursor, or the start of the list when absent.
pub fn page_cursor(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => crate::storage::decode_cursor(c)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("invalid_query", "cursor is not one this server issued")),
    }
}

/// A page of items with the cursor of the next page, if there may be one.
pub fn page_body<T: serde::Serialize>(items: &[T], limit: i64, key: impl Fn(&T) -> String) -> serde_json::Value {
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| crate::storage::encode_cursor(&key(i))))
        .flatten();
    json!({"items": items, "next_cursor": next})
}
