//! The security admin console: static assets compiled into the binary, and a
//! session that is an ordinary admin token held only in an HttpOnly,
//! SameSite=Strict cookie (Secure unless the issuer is loopback). The console
//! calls the REST API like any client; state-changing calls carry a CSRF
//! token bound to the session (a MAC of its token's `jti`). Sign-out revokes
//! the token.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::auth::{Admin, AdminScope, admin_from_token};
use super::body::ApiJson;
use super::error::ApiError;
use super::pagination::{self, Page};
use super::session::{cookie_names, csrf_token, secure, set_cookie};
use crate::audit::Origin;
use crate::state::AppState;
use crate::tenants::{self, Credentials};
use crate::tokens::issuer::{MintError, Provenance};
use crate::tokens::policy::MintRequest;

/// No inline script or style, nothing from elsewhere, never framed. ES
/// modules load under `script-src 'self'` like any script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// Browsers refuse a module script served with any other than a JavaScript type.
const JS: &str = "text/javascript; charset=utf-8";

/// A module of console/js/, compiled in, served under /console/js/.
macro_rules! module {
    ($file:literal) => {
        (
            concat!("/console/js/", $file),
            JS,
            include_str!(concat!("../../console/js/", $file)),
        )
    };
}

/// The console's files, compiled in: (path, content type, body). Only these
/// are served; any other path is the API's 404. `main.js` is the entry
/// module (index.html loads it); the others are what it imports.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/console", HTML, include_str!("../../console/index.html")),
    ("/console/app.css", CSS, include_str!("../../console/app.css")),
    module!("main.js"),
    module!("api.js"),
    module!("state.js"),
    module!("dom.js"),
    module!("format.js"),
    module!("confirm.js"),
    module!("tenants.js"),
    module!("leases.js"),
    module!("custody.js"),
    module!("stats.js"),
    module!("rules.js"),
    module!("audit.js"),
    module!("keys.js"),
    module!("clients.js"),
    module!("people.js"),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// One GET route per entry of `ASSETS`.
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    client_id: String,
    client_secret: String,
}

#[derive(Debug, Serialize)]
pub struct Session {
    client_id: String,
    /// `global` or `tenant`.
    scope: &'static str,
    tenant: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

fn session_of(admin: &Admin, expires_at: Option<DateTime<Utc>>) -> Session {
    Session {
        client_id: admin.id.client_id.clone(),
        scope: match admin.scope {
            AdminScope::Global => "global",
            AdminScope::Tenant(_) => "tenant",
        },
        tenant: admin.own_tenant().map(str::to_string),
        expires_at,
    }
}

/// Signs in with an admin client's id and secret: mints its admin token
/// through the normal issuer (audited, revocable) and keeps it in a cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let creds = Credentials {
        client_id: body.client_id,
        secret: SecretString::from(body.client_secret),
    };
    let client = state.authn.authenticate(&creds, &origin).await?;
    let scope = if client.tenant_id == tenants::SYSTEM_TENANT {
        tenants::GLOBAL_ADMIN_SCOPE.to_string()
    } else {
        tenants::tenant_admin_scope(&client.tenant_id)
    };
    let workflow = match client.implied_workflow() {
        Some(w) => w.to_string(),
        None => "console".to_string(),
    };
    let request = MintRequest {
        scope: Some(&scope),
        workflow: Some(&workflow),
        workload: None,
        expires_in: None,
    };
    let issuer = state.issuer.id().url.clone();
    let issued = match state
        .issuer
        .mint(
            &crate::tokens::terms::MintTerms::of_client(&client),
            Some(&issuer),
            &request,
            &origin,
            &Provenance::default(),
        )
        .await
    {
        Ok(issued) => issued,
        Err(MintError::Store(e)) => return Err(e.into()),
        Err(MintError::Stale) => return Err(crate::storage::StoreError::Stale.into()),
        Err(_) => return Err(ApiError::forbidden("this client may not administer mayfly")),
    };
    let admin = admin_from_token(&state, &issued.access_token, origin).await?;
    let csrf = csrf_token(&state, &admin.id.jti);
    let mut res = Json(session_of(&admin, Some(issued.lease.expires_at))).into_response();
    let secure = secure(&state);
    let (session_name, csrf_name) = cookie_names(&state);
    set_cookie(
        &mut res,
        session_name,
        &issued.access_token,
        issued.expires_in,
        true,
        secure,
    );
    set_cookie(&mut res, csrf_name, &csrf, issued.expires_in, false, secure);
    Ok(res)
}

pub async fn whoami(admin: Admin) -> Json<Session> {
    Json(session_of(&admin, None))
}

/// Signs out: the session's token is revoked (RFC 7009 semantics) and the
/// cookies cleared.
pub async fn sign_out(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let tenant = match &admin.scope {
        AdminScope::Global => tenants::SYSTEM_TENANT.to_string(),
        AdminScope::Tenant(t) => t.clone(),
    };
    if let Ok(lease) = admin.id.jti.parse() {
        state
            .revocations
            .revoke_held(&tenant, &admin.id.client_id, lease, &admin.caller.origin)
            .await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    let secure = secure(&state);
    let (session_name, csrf_name) = cookie_names(&state);
    set_cookie(&mut res, session_name, "", 0, true, secure);
    set_cookie(&mut res, csrf_name, "", 0, false, secure);
    Ok(res)
}

#[derive(Debug, Serialize)]
pub struct TenantLive {
    id: String,
    name: String,
    live_leases: i64,
}

/// The most tenants one `/console/tenants` answer counts leases for.
pub const TENANTS_MAX: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Tenants with their live-lease counts (a tenant admin: its own), at most
/// `TENANTS_MAX` a page; the counts run as one admin list (gated, timed).
pub async fn tenants(
    State(state): State<AppState>,
    admin: Admin,
    super::body::ApiQuery(q): super::body::ApiQuery<TenantsQuery>,
) -> Result<Json<Page<TenantLive>>, ApiError> {
    let limit = match q.limit {
        None => TENANTS_MAX,
        Some(n) if (1..=TENANTS_MAX).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {TENANTS_MAX}"),
            ));
        }
    };
    let after = pagination::text_cursor(q.cursor.as_deref())?;
    let list = state.directory.list_tenants(admin.own_tenant(), &after, limit).await?;
    let caller = admin.own_tenant().unwrap_or(tenants::SYSTEM_TENANT);
    let ids: Vec<&str> = list.iter().map(|t| t.id.as_str()).collect();
    let counts = state.ledger.live_leases(caller, &ids).await?;
    let rows: Vec<TenantLive> = list
        .into_iter()
        .zip(counts)
        .map(|(t, live_leases)| TenantLive {
            id: t.id,
            name: t.name,
            live_leases,
        })
        .collect();
    Ok(Json(Page::of(rows, limit, |t| t.id.clone(), |t| t)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    tenant: String,
}

#[derive(Debug, Serialize)]
struct Minute {
    minute: DateTime<Utc>,
    minted: u64,
    denied: u64,
}

/// How many minutes `/console/stats` covers, ending with the current one.
pub const STATS_MINUTES: usize = 30;

/// Mints and denials per minute over the last 30 minutes, from the audit
/// trail: one indexed time range of one tenant, run as an admin list (gated,
/// timed), whatever the size of the trail.
pub async fn stats(
    State(state): State<AppState>,
    admin: Admin,
    super::body::ApiQuery(q): super::body::ApiQuery<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if admin.own_tenant().is_some_and(|own| own != q.tenant) {
        return Err(ApiError::forbidden("this token administers another tenant"));
    }
    let now = state.web.clock.now();
    let start = now - TimeDelta::minutes(STATS_MINUTES as i64 - 1);
    let start = DateTime::from_timestamp(start.timestamp() - start.timestamp().rem_euclid(60), 0).unwrap_or(start);
    let counts = state.audit.minutes(&q.tenant, start, STATS_MINUTES).await?;
    let minutes: Vec<Minute> = counts
        .into_iter()
        .enumerate()
        .map(|(i, (minted, denied))| Minute {
            minute: start + TimeDelta::minutes(i as i64),
            minted,
            denied,
        })
        .collect();
    Ok(Json(serde_json::json!({
        "from": start,
        "to": start + TimeDelta::minutes(STATS_MINUTES as i64),
        "minutes": minutes,
    })))
}
