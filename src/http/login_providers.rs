//! `/v1/tenants/{tenant}/login-providers` (the company IdPs people sign in
//! through) and `/v1/tenants/{tenant}/sessions` (people's sessions with
//! their MCP clients, revoked in one call).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::TenantAdmin;
use super::body::{ApiJson, ApiPath, ApiQuery};
use super::clients::GrantOut;
use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, UnprocessableIssuer};
use super::pagination::{self, Page, PageQuery};
use crate::federation::policy::ClaimCondition;
use crate::people::providers::NewLoginProvider;
use crate::people::{LoginProvider, Session};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginProviderOut {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    /// Whether a client secret is stored (it is never shown).
    pub has_client_secret: bool,
    pub scopes: Vec<String>,
    pub claims: BTreeMap<String, ClaimCondition>,
    pub workload_template: String,
    pub workflow: String,
    pub grants: Vec<GrantOut>,
    pub max_ttl_seconds: i64,
    pub refresh_ttl_seconds: i64,
    pub allow_registration: bool,
    /// Register this as the redirect URI at the IdP.
    pub redirect_uri: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn out(state: &AppState, p: LoginProvider) -> LoginProviderOut {
    LoginProviderOut {
        id: p.id,
        tenant: p.tenant_id,
        name: p.name,
        issuer: p.issuer,
        client_id: p.client_id,
        has_client_secret: p.sealed_secret.is_some(),
        scopes: p.scopes,
        claims: p.claims,
        workload_template: p.workload_template,
        workflow: p.workflow,
        grants: p.grants.into_iter().map(GrantOut::from).collect(),
        max_ttl_seconds: p.max_ttl_seconds,
        refresh_ttl_seconds: p.refresh_ttl_seconds,
        allow_registration: p.allow_registration,
        redirect_uri: state.people.callback_uri(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// Sign people in through a company IdP (OIDC, authorization code + PKCE).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/login-providers", tag = "people",
    params(("tenant" = String, Path)), request_body = NewLoginProvider,
    responses((status = 201, description = "Created.", body = LoginProviderOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = UnprocessableIssuer)))]
pub async fn create_provider(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiJson(body): ApiJson<NewLoginProvider>,
) -> Result<(StatusCode, Json<LoginProviderOut>), ApiError> {
    let p = state.people.providers().create(at.caller(), at.id(), body).await?;
    Ok((StatusCode::CREATED, Json(out(&state, p))))
}

/// Login providers in name order (sign-in uses the first).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/login-providers", tag = "people",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, description = "OK.", body = Page<LoginProviderOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn list_providers(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<LoginProviderOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let after = pagination::text_cursor(q.cursor.as_deref())?;
    let items = state.people.providers().list(at.id(), &after, limit).await?;
    Ok(Json(Page::of(items, limit, |p| p.name.clone(), |p| out(&state, p))))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/login-providers/{id}", tag = "people",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "OK.", body = LoginProviderOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn get_provider(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<LoginProviderOut>, ApiError> {
    let p = state.people.providers().get(at.id(), &id).await?;
    Ok(Json(out(&state, p)))
}

/// Replace a provider (send it whole; no `client_secret` keeps the stored one).
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/login-providers/{id}", tag = "people",
    params(("tenant" = String, Path), ("id" = String, Path)), request_body = NewLoginProvider,
    responses((status = 200, description = "OK.", body = LoginProviderOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict), (status = 422, response = UnprocessableIssuer)))]
pub async fn update_provider(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<NewLoginProvider>,
) -> Result<Json<LoginProviderOut>, ApiError> {
    let p = state
        .people
        .providers()
        .replace(at.caller(), at.id(), &id, body)
        .await?;
    Ok(Json(out(&state, p)))
}

/// Delete a provider: its sessions end (no more refresh); access tokens run out.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/login-providers/{id}", tag = "people",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn delete_provider(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.people.providers().delete(at.caller(), at.id(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A person's session with an MCP client (a refresh-token family).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut {
    pub id: Uuid,
    pub tenant: String,
    /// The person (the token's `sub`).
    pub workload: String,
    pub workflow: String,
    pub client_id: String,
    pub client_name: Option<String>,
    pub resource: String,
    pub scopes: Vec<String>,
    /// Who signed in: `{issuer, subject, email, name, provider}`.
    pub identity: serde_json::Value,
    pub dpop_bound: bool,
    /// The first lease (revoking it ends the session) and the newest.
    pub root_lease_id: Option<Uuid>,
    pub latest_lease_id: Option<Uuid>,
    pub refreshes: i64,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

impl From<Session> for SessionOut {
    fn from(s: Session) -> Self {
        Self {
            id: s.id,
            tenant: s.tenant_id,
            workload: s.workload,
            workflow: s.workflow,
            client_id: s.client_id,
            client_name: s.client_name,
            resource: s.resource,
            scopes: s.scopes,
            identity: s.identity,
            dpop_bound: s.jkt.is_some(),
            root_lease_id: s.root_lease_id,
            latest_lease_id: s.latest_lease_id,
            refreshes: s.refreshes,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            revoked_at: s.revoked_at,
            revoked_reason: s.revoked_reason,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// One person's sessions.
    #[param(max_length = 256)]
    pub workload: Option<String>,
    /// true: neither revoked nor expired; false: the others.
    pub active: Option<bool>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[param(max_length = 2048)]
    pub cursor: Option<String>,
}

/// People's sessions, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sessions", tag = "people",
    params(("tenant" = String, Path), SessionQuery),
    responses((status = 200, description = "OK.", body = Page<SessionOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> Result<Json<Page<SessionOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let before = match pagination::text_cursor(q.cursor.as_deref())?.as_str() {
        "" => None,
        c => Some(
            c.parse::<Uuid>()
                .map_err(|_| ApiError::bad_request("invalid_query", "cursor is not one this server issued"))?,
        ),
    };
    let items = state
        .people
        .sessions(at.id(), q.workload.as_deref(), q.active, before, limit)
        .await?;
    Ok(Json(Page::of(items, limit, |s| s.id.to_string(), SessionOut::from)))
}

/// End a session: its refresh token stops working and its live access
/// tokens are revoked (by lease, so gateways refuse them at once).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/sessions/{id}", tag = "people",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "Revoked.", body = SessionOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<SessionOut>, ApiError> {
    Ok(Json(
        state.people.revoke_session(at.caller(), at.id(), &id).await?.into(),
    ))
}
