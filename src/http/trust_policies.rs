//! `/v1/tenants/{tenant}/trust-policies`: which external OIDC tokens a
//! tenant accepts instead of a stored secret.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::TenantAdmin;
use super::body::{ApiJson, ApiPath, ApiQuery};
use super::clients::GrantOut;
use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, UnprocessableIssuer};
use super::pagination::{self, Page, PageQuery};
use crate::federation::admin::{NewTrustPolicy, TrustPolicyPatch};
use crate::federation::policy::{ClaimCondition, TrustPolicy};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct TrustPolicyOut {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub subject: Option<String>,
    pub subject_pattern: Option<String>,
    pub claims: BTreeMap<String, ClaimCondition>,
    pub max_token_age_seconds: Option<i64>,
    pub single_use: bool,
    pub workflow_template: String,
    pub workload_template: String,
    pub grants: Vec<GrantOut>,
    pub max_ttl_seconds: i64,
    pub owner: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub client_id: Option<String>,
    pub actors: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TrustPolicy> for TrustPolicyOut {
    fn from(p: TrustPolicy) -> Self {
        Self {
            id: p.id,
            tenant: p.tenant_id,
            name: p.name,
            issuer: p.issuer,
            audience: p.audience,
            subject: p.subject,
            subject_pattern: p.subject_pattern,
            claims: p.claims,
            max_token_age_seconds: p.max_token_age_seconds,
            single_use: p.single_use,
            workflow_template: p.workflow_template,
            workload_template: p.workload_template,
            grants: p.grants.into_iter().map(GrantOut::from).collect(),
            max_ttl_seconds: p.max_ttl_seconds,
            owner: p.owner,
            expires_at: p.expires_at,
            client_id: p.client_id,
            actors: p.actors,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// Accept an external issuer's tokens for matching subjects and claims.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/trust-policies", tag = "federation",
    params(("tenant" = String, Path)), request_body = NewTrustPolicy,
    responses((status = 201, description = "Created.", body = TrustPolicyOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = UnprocessableIssuer)))]
pub async fn create_policy(
    State(AppState { trust_policies, .. }): State<AppState>,
    at: TenantAdmin,
    ApiJson(body): ApiJson<NewTrustPolicy>,
) -> Result<(StatusCode, Json<TrustPolicyOut>), ApiError> {
    let p = trust_policies.create(at.caller(), at.id(), body).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

/// Trust policies in name order.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/trust-policies", tag = "federation",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, description = "OK.", body = Page<TrustPolicyOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn list_policies(
    State(AppState { trust_policies, .. }): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<TrustPolicyOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let after = pagination::text_cursor(q.cursor.as_deref())?;
    let items = trust_policies.list(at.id(), &after, limit).await?;
    Ok(Json(Page::of(items, limit, |p| p.name.clone(), TrustPolicyOut::from)))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/trust-policies/{id}", tag = "federation",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "OK.", body = TrustPolicyOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn get_policy(
    State(AppState { trust_policies, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<TrustPolicyOut>, ApiError> {
    Ok(Json(trust_policies.get(at.id(), &id).await?.into()))
}

/// Replace a policy (send it whole).
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/trust-policies/{id}", tag = "federation",
    params(("tenant" = String, Path), ("id" = String, Path)), request_body = NewTrustPolicy,
    responses((status = 200, description = "OK.", body = TrustPolicyOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict), (status = 422, response = UnprocessableIssuer)))]
pub async fn update_policy(
    State(AppState { trust_policies, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<TrustPolicyPatch>,
) -> Result<Json<TrustPolicyOut>, ApiError> {
    Ok(Json(
        trust_policies.replace(at.caller(), at.id(), &id, body).await?.into(),
    ))
}

/// Delete a policy: its tokens run out; new ones are refused.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/trust-policies/{id}", tag = "federation",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn delete_policy(
    State(AppState { trust_policies, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    trust_policies.delete(at.caller(), at.id(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
