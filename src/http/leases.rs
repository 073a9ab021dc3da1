//! `/v1/tenants/{tenant}/leases`: one row per issued token.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::TenantAdmin;
use super::body::{ApiPath, ApiQuery};
use super::error::{ApiError, BadRequest, Forbidden, ListBusy, NotFound, Unauthorized};
use super::pagination::{self, Page};
use crate::leases::sql::{LeaseFilter, LeaseStatus};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaseQuery {
    #[param(max_length = 128)]
    workflow: Option<String>,
    #[param(max_length = 256)]
    workload: Option<String>,
    #[param(max_length = 128)]
    client_id: Option<String>,
    /// true: neither revoked nor expired; false: the others.
    active: Option<bool>,
    /// Minted under this trust policy.
    policy_id: Option<Uuid>,
    /// With this workload in the token's actor chain (`act`).
    #[param(max_length = 256)]
    actor: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    #[param(max_length = 2048)]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseOut {
    /// The token's `jti`.
    pub id: Uuid,
    pub tenant: String,
    pub workflow: String,
    /// The token's `sub`.
    pub workload: String,
    pub client_id: String,
    /// RFC 8693 actor chain, where delegated.
    pub actor: Option<serde_json::Value>,
    /// The token's `aud`, as requested.
    pub resource: String,
    pub scopes: Vec<String>,
    pub kid: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the row was marked revoked (the rule is in force before that).
    pub revoked_at: Option<DateTime<Utc>>,
    pub revocation_id: Option<Uuid>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// A federated token's external identity: `{issuer, subject, jti, policy, policy_name}`.
    pub federated: Option<serde_json::Value>,
    /// The trust policy that accepted it.
    pub policy_id: Option<Uuid>,
    /// The lease a delegated token was exchanged from.
    pub parent_id: Option<Uuid>,
    /// The thumbprint of the DPoP key the token is bound to (its `cnf.jkt`);
    /// null for a bearer token.
    pub jkt: Option<String>,
    /// Exact: false as soon as a rule revokes it, marked or not.
    pub active: bool,
    /// Lease detail only: MCP requests gateways reported for this token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_requests: Option<i64>,
    /// Lease detail only: the last of them, `{at, outcome, method, name, …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_mcp_request: Option<serde_json::Value>,
}

impl LeaseOut {
    fn new(status: LeaseStatus, now: DateTime<Utc>) -> Self {
        let active = status.is_active(now);
        let l = status.lease;
        Self {
            id: l.id,
            tenant: l.tenant_id,
            workflow: l.workflow,
            workload: l.workload,
            client_id: l.client_id,
            actor: l.actor,
            resource: l.resource,
            scopes: l.scopes,
            kid: l.kid,
            issued_at: l.issued_at,
            expires_at: l.expires_at,
            revoked_at: l.revoked_at,
            // A rule revokes a lease before the background sweep marks its row.
            revocation_id: l.revocation_id.or(status.revoked_by),
            source: l.source,
            request_id: l.request_id,
            federated: l.federated,
            policy_id: l.policy_id,
            parent_id: l.parent_id,
            jkt: l.jkt,
            active,
            mcp_requests: None,
            last_mcp_request: None,
        }
    }
}

/// Leases newest first, filtered.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/leases", tag = "records",
    params(("tenant" = String, Path), LeaseQuery),
    responses((status = 200, description = "OK.", body = Page<LeaseOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = ListBusy)))]
pub async fn list_leases(
    State(AppState { ledger, .. }): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<LeaseQuery>,
) -> Result<Json<Page<LeaseOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let before = pagination::seq_cursor(q.cursor.as_deref())?;
    let filter = LeaseFilter {
        workflow: q.workflow,
        workload: q.workload,
        client_id: q.client_id,
        active: q.active,
        policy_id: q.policy_id,
        actor: q.actor,
    };
    let leases = ledger.leases(at.id(), &filter, before, limit).await?;
    let now = ledger.now();
    Ok(Json(Page::of(
        leases,
        limit,
        |l| l.lease.seq.to_string(),
        |l| LeaseOut::new(l, now),
    )))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/leases/{lease_id}", tag = "records",
    params(("tenant" = String, Path), ("lease_id" = String, Path)),
    responses((status = 200, description = "OK.", body = LeaseOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn get_lease(
    State(AppState { ledger, activity, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, lease_id)): ApiPath<(String, String)>,
) -> Result<Json<LeaseOut>, ApiError> {
    let status = ledger.lease(at.id(), &lease_id).await?;
    let (count, last) = activity.of_lease(status.lease.id).await?;
    let mut out = LeaseOut::new(status, ledger.now());
    out.mcp_requests = Some(count);
    out.last_mcp_request = last.map(|r| {
        let mut v = r.mcp.unwrap_or_else(|| serde_json::json!({}));
        v["at"] = serde_json::json!(r.at);
        v["outcome"] = serde_json::json!(r.outcome);
        v
    });
    Ok(Json(out))
}
