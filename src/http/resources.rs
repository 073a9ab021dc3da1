//! `/v1/tenants/{tenant}/resources`: the MCP servers of a tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::TenantAdmin;
use super::body::{ApiJson, ApiPath, ApiQuery};
use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unprocessable};
use super::pagination::{self, Page, PageQuery};
use crate::state::AppState;
use crate::tenants::Resource;
use crate::tenants::directory::{NewResource, ResourcePatch};
use crate::tenants::tools::ToolPolicy;

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceOut {
    pub id: Uuid,
    pub tenant: String,
    /// As registered.
    pub uri: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub default_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
    /// The per-tool policy gateways enforce (null: any tool).
    pub tools: Option<ToolPolicy>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Resource> for ResourceOut {
    fn from(r: Resource) -> Self {
        Self {
            id: r.id,
            tenant: r.tenant_id,
            uri: r.uri,
            name: r.name,
            scopes: r.scopes,
            default_ttl_seconds: r.default_ttl_seconds,
            max_ttl_seconds: r.max_ttl_seconds,
            tools: r.tools,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Register an MCP server (its URI is unique across tenants).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/resources", tag = "resources", params(("tenant" = String, Path)),
    request_body = NewResource,
    responses((status = 201, description = "Created.", body = ResourceOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
pub async fn create_resource(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiJson(body): ApiJson<NewResource>,
) -> Result<(StatusCode, Json<ResourceOut>), ApiError> {
    let r = directory.create_resource(at.caller(), at.id(), body).await?;
    Ok((StatusCode::CREATED, Json(r.into())))
}

/// Resources in canonical-URI order.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/resources", tag = "resources",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, description = "OK.", body = Page<ResourceOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn list_resources(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ResourceOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let after = pagination::text_cursor(q.cursor.as_deref())?;
    let items = directory.list_resources(at.id(), &after, limit).await?;
    Ok(Json(Page::of(
        items,
        limit,
        |r| r.canonical_uri.clone(),
        ResourceOut::from,
    )))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/resources/{id}", tag = "resources",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "OK.", body = ResourceOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn get_resource(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<ResourceOut>, ApiError> {
    Ok(Json(directory.get_resource(at.id(), &id).await?.into()))
}

#[utoipa::path(patch, path = "/v1/tenants/{tenant}/resources/{id}", tag = "resources",
    params(("tenant" = String, Path), ("id" = String, Path)), request_body = ResourcePatch,
    responses((status = 200, description = "OK.", body = ResourceOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 422, response = Unprocessable)))]
pub async fn update_resource(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<ResourcePatch>,
) -> Result<Json<ResourceOut>, ApiError> {
    Ok(Json(
        directory
            .update_resource(at.caller(), at.id(), &id, patch)
            .await?
            .into(),
    ))
}

/// Delete a resource: new mints fail; tokens already minted run out.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/resources/{id}", tag = "resources",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn delete_resource(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    directory.delete_resource(at.caller(), at.id(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
