//! `/v1/tenants/{tenant}/audit` and `/v1/audit/verify`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{GlobalAdmin, TenantAdmin};
use super::body::ApiQuery;
use super::error::{ApiError, BadRequest, Forbidden, ListBusy, NotFound, Unauthorized};
use super::pagination::{self, Page};
use crate::audit::sql::AuditFilter;
use crate::audit::{AuditEvent, ChainedEvent, Verification};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[param(max_length = 128)]
    workflow: Option<String>,
    #[param(max_length = 256)]
    workload: Option<String>,
    #[param(max_length = 128)]
    client_id: Option<String>,
    /// A dotted action such as `token.issued`.
    #[param(max_length = 64)]
    action: Option<String>,
    /// An MCP request's JSON-RPC method, e.g. `tools/call` (with `action=mcp.request`).
    #[param(max_length = 128)]
    method: Option<String>,
    /// Events of one lease (its token's `jti`): the mint, the MCP requests made with it, its revocation.
    lease_id: Option<uuid::Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    #[param(max_length = 2048)]
    cursor: Option<String>,
}

/// An event with its place in the hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventOut {
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl From<ChainedEvent> for AuditEventOut {
    fn from(e: ChainedEvent) -> Self {
        Self {
            event: e.event,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

/// A tenant's audit events, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "records",
    params(("tenant" = String, Path), AuditQuery),
    responses((status = 200, description = "OK.", body = Page<AuditEventOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = ListBusy)))]
pub async fn list_audit(
    State(AppState { audit, .. }): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEventOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let before = pagination::seq_cursor(q.cursor.as_deref())?;
    let filter = AuditFilter {
        workflow: q.workflow,
        workload: q.workload,
        client_id: q.client_id,
        action: q.action,
        method: q.method,
        lease_id: q.lease_id,
        since: q.since,
        until: q.until,
    };
    let events = audit.list(at.id(), &filter, before, limit).await?;
    Ok(Json(Page::of(
        events,
        limit,
        |e| e.seq.to_string(),
        AuditEventOut::from,
    )))
}

/// Recomputes the whole chain and checks its length against the recorded
/// count and the stored checkpoints (global admins only: the chain spans
/// tenants). `mayfly audit verify --checkpoint` also checks an exported one.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "records",
    responses((status = 200, description = "OK.", body = Verification), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden)))]
pub async fn verify_audit(
    State(AppState { audit, checkpoints, .. }): State<AppState>,
    _: GlobalAdmin,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(audit.verify(Some(checkpoints.key()), &[]).await?))
}
