//! `/v1/tenants`: create (global admins), list, read, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Admin, AdminScope, GlobalAdmin, GlobalTenantAdmin, TenantAdmin};
use super::body::{ApiJson, ApiQuery};
use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unprocessable};
use super::pagination::{self, Page, PageQuery};
use crate::state::AppState;
use crate::tenants::Tenant;
use crate::tenants::directory::{NewTenant, TenantPatch};

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantOut {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Past this many live leases, mints answer 429 (null: no limit).
    pub max_live_leases: Option<i64>,
    /// Past this many mints per second per replica, mints answer 429 (null: no limit).
    pub max_mints_per_second: Option<i64>,
}

impl From<Tenant> for TenantOut {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            max_live_leases: t.max_live_leases,
            max_mints_per_second: t.max_mints_per_second,
        }
    }
}

/// Create a tenant (global admins only).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, description = "Created.", body = TenantOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
pub async fn create_tenant(
    State(AppState { directory, .. }): State<AppState>,
    GlobalAdmin(admin): GlobalAdmin,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<(StatusCode, Json<TenantOut>), ApiError> {
    let tenant = directory.create_tenant(&admin.caller, body).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// Tenants in id order; a tenant admin sees only its own.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageQuery),
    responses((status = 200, description = "OK.", body = Page<TenantOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized)))]
pub async fn list_tenants(
    State(AppState { directory, .. }): State<AppState>,
    admin: Admin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<TenantOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let after = pagination::text_cursor(q.cursor.as_deref())?;
    let tenants = directory.list_tenants(admin.own_tenant(), &after, limit).await?;
    Ok(Json(Page::of(tenants, limit, |t| t.id.clone(), TenantOut::from)))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, description = "OK.", body = TenantOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn get_tenant(admin: TenantAdmin) -> Json<TenantOut> {
    Json(admin.tenant.into())
}

/// Rename a tenant, or (global admins) change its limits.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    request_body = TenantPatch,
    responses((status = 200, description = "OK.", body = TenantOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 422, response = Unprocessable)))]
pub async fn update_tenant(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Json<TenantOut>, ApiError> {
    let global = at.admin.scope == AdminScope::Global;
    Ok(Json(
        directory
            .update_tenant(at.caller(), at.id(), global, patch)
            .await?
            .into(),
    ))
}

/// Delete a tenant: every token in it is revoked and its clients deleted (global admins only).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound), (status = 409, response = Conflict)))]
pub async fn delete_tenant(
    State(AppState { directory, .. }): State<AppState>,
    GlobalTenantAdmin(at): GlobalTenantAdmin,
) -> Result<StatusCode, ApiError> {
    directory.delete_tenant(at.caller(), at.id()).await?;
    Ok(StatusCode::NO_CONTENT)
}
