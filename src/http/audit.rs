//! `/v1/tenants/{tenant}/audit`, `/v1/audit/verify`, and the transparency
//! log's signed checkpoint, its key and its proofs.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::auth::{Admin, GlobalAdmin, TenantAdmin};
use super::body::ApiQuery;
use super::error::{ApiError, BadRequest, Forbidden, ListBusy, NotFound, Unauthorized};
use super::pagination::{self, Page};
use crate::audit::note::NoteVerifier;
use crate::audit::sql::AuditFilter;
use crate::audit::tlog::ProofError;
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

/// An event with its place in the record. A log entry: `hash` is the hex
/// SHA-256 of its canonical content, `prev_hash` is empty, and `log_index`
/// is set once it is integrated (within about a second). An event from
/// before the log: `hash` is its chain link over `prev_hash`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventOut {
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
    pub log_index: Option<i64>,
}

impl From<ChainedEvent> for AuditEventOut {
    fn from(e: ChainedEvent) -> Self {
        Self {
            event: e.event,
            prev_hash: e.prev_hash,
            hash: e.hash,
            log_index: e.log_index,
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
    State(AppState {
        audit,
        checkpoints,
        tlog,
        ..
    }): State<AppState>,
    _: GlobalAdmin,
) -> Result<Json<Verification>, ApiError> {
    // The key this process opened under the master key, not the stored one:
    // a key swapped in the database does not vouch for itself here.
    let key = NoteVerifier::parse(tlog.verifier_key()).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(audit.verify(Some(checkpoints.key()), &[], &[], Some(&key)).await?))
}

/// The latest signed checkpoint of the audit log: a C2SP signed note whose
/// body is a `tlog-checkpoint` (origin, tree size, base64 root hash), signed
/// with Ed25519 under the origin's name. Keep copies: a later checkpoint
/// must be consistent with every earlier one.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "records",
    responses((status = 200, description = "The signed note.", content_type = "text/plain", body = String),
        (status = 401, response = Unauthorized)))]
pub async fn checkpoint(
    State(AppState { tlog, web, .. }): State<AppState>,
    admin: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let head = tlog.checkpoint(gate(&admin), web.clock.now()).await?;
    Ok(plain(head.note))
}

/// The audit log's verifier key in note format: `name+hash+base64(0x01 || key)`.
#[utoipa::path(get, path = "/v1/audit/checkpoint/key", tag = "records",
    responses((status = 200, description = "The verifier key.", content_type = "text/plain", body = String),
        (status = 401, response = Unauthorized)))]
pub async fn checkpoint_key(State(AppState { tlog, .. }): State<AppState>, _: Admin) -> impl IntoResponse {
    plain(format!("{}\n", tlog.verifier_key()))
}

/// Whose share of the list gate an admin's log read takes.
fn gate(admin: &Admin) -> &str {
    admin.own_tenant().unwrap_or(crate::tenants::SYSTEM_TENANT)
}

fn plain(body: String) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The event's `log_index`.
    #[param(minimum = 0)]
    index: u64,
    /// The size of the checkpoint to prove against.
    #[param(minimum = 1)]
    tree_size: u64,
}

/// An RFC 6962 / RFC 9162 audit path: sibling hashes from the leaf up.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    /// Base64 `SHA-256(0x00 || content hash)`.
    pub leaf_hash: String,
    /// Base64 hashes.
    pub proof: Vec<String>,
}

/// The proof that the event at `index` is in the tree of `tree_size`
/// events. A tenant admin gets proofs of its own tenant's events only.
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "records", params(InclusionQuery),
    responses((status = 200, description = "OK.", body = InclusionProof), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 404, response = NotFound)))]
pub async fn inclusion(
    State(AppState { tlog, .. }): State<AppState>,
    admin: Admin,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    // Sizes first (they say only how long the log is, as checkpoints do).
    let proof = tlog.inclusion(gate(&admin), q.index, q.tree_size).await?;
    let (leaf, tenant) = tlog
        .leaf(gate(&admin), q.index)
        .await?
        .ok_or_else(|| ApiError::not_found("log index"))?;
    if let Some(own) = admin.own_tenant()
        && tenant.as_deref() != Some(own)
    {
        // What another tenant's event is, is not theirs to learn.
        return Err(ApiError::not_found("log index"));
    }
    Ok(Json(InclusionProof {
        index: q.index,
        tree_size: q.tree_size,
        leaf_hash: STANDARD.encode(leaf),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    #[param(minimum = 1)]
    from: u64,
    to: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Base64 hashes.
    pub proof: Vec<String>,
}

/// The proof that the tree of `from` events is a prefix of the tree of `to`.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "records", params(ConsistencyQuery),
    responses((status = 200, description = "OK.", body = ConsistencyProof), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized)))]
pub async fn consistency(
    State(AppState { tlog, .. }): State<AppState>,
    admin: Admin,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    if q.from == 0 {
        return Err(ApiError::bad_request("invalid_query", "`from` must be at least 1"));
    }
    let proof = tlog.consistency(gate(&admin), q.from, q.to).await?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to: q.to,
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

impl From<ProofError> for ApiError {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::OutOfRange(m) => ApiError::bad_request("invalid_query", m),
            ProofError::Store(e) => e.into(),
        }
    }
}
