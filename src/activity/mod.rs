//! The MCP action done with a token, as gateways report it: each reported
//! request is checked against its lease and recorded as an `mcp.request`
//! audit event, and gateways read the tool policy they enforce. A gateway
//! (a `resource_server` client) speaks only for the resources it serves, and
//! who acted is read from the lease, never taken from the report.

pub mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{AuditEvent, actions, sanitize};
use crate::clock::Clock;
use crate::error::Error;
use crate::leases::sql::LeaseStatus;
use crate::storage::{Store, StoreError};
use crate::tenants::tools::ToolPolicy;
use crate::tenants::{Catalog, Client, ClientKind, Resource, uri};

/// Events a gateway may deliver in one batch.
pub const MAX_BATCH: usize = 1000;
/// How far ahead of mayfly's clock a gateway's event time may be.
const MAX_SKEW: TimeDelta = TimeDelta::minutes(5);

/// One MCP request a gateway handled (`POST /v1/mcp-events`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpEventIn {
    /// Chosen by the gateway (UUID); a redelivered event is recorded once.
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The route's resource URI (the token's `aud`).
    #[schema(max_length = 2048)]
    pub resource: String,
    /// The token's `jti`; null when the request carried no valid token.
    pub lease_id: Option<Uuid>,
    /// The JSON-RPC method (`tools/call`), or the HTTP method of a stream (`GET`, `DELETE`).
    #[schema(max_length = 128)]
    pub method: String,
    /// The tool, prompt or resource named.
    #[schema(max_length = 256)]
    pub name: Option<String>,
    /// Hex SHA-256 of the canonical JSON of the arguments: never the arguments.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub arguments_sha256: Option<String>,
    pub outcome: McpOutcome,
    /// Why it was denied or failed (`insufficient_scope`, `rate_limited`, …).
    #[schema(max_length = 200)]
    pub reason: Option<String>,
    /// The upstream's JSON-RPC error code.
    pub error_code: Option<i64>,
    /// The HTTP status answered to the caller.
    #[schema(minimum = 100, maximum = 599)]
    pub http_status: Option<u16>,
    #[schema(minimum = 0)]
    pub latency_ms: Option<f64>,
    /// The `Mcp-Session-Id`.
    #[schema(max_length = 256)]
    pub session: Option<String>,
    #[schema(max_length = 128)]
    pub request_id: Option<String>,
    /// The caller's address as the gateway saw it.
    #[schema(max_length = 64)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpOutcome {
    Success,
    Denied,
    UpstreamError,
}

impl McpOutcome {
    fn as_str(self) -> &'static str {
        match self {
            McpOutcome::Success => "success",
            McpOutcome::Denied => "denied",
            McpOutcome::UpstreamError => "upstream_error",
        }
    }
}

/// What became of a batch. Rejected events will never be accepted: the
/// gateway drops them (and counts them) rather than retry.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<RejectedEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedEvent {
    pub id: Uuid,
    pub error: String,
}

/// What a gateway enforces for one resource.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResourcePolicy {
    pub resource: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    /// Null: any valid token may call any tool.
    pub tools: Option<ToolPolicy>,
}

#[derive(Clone)]
pub struct Activity {
    store: Store,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
}

impl Activity {
    pub fn new(store: Store, catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        Self { store, catalog, clock }
    }

    /// The resource at `uri` if `gateway` serves it: a resource server of
    /// its tenant, with the resource in its `serves` (or no `serves` list).
    /// Another tenant's resource is as unknown as a missing one.
    async fn served(&self, gateway: &Client, resource_uri: &str) -> Result<Resource, Error> {
        if gateway.kind != ClientKind::ResourceServer {
            return Err(Error::Forbidden("only resource_server clients act as gateways".into()));
        }
        let canonical = uri::canonicalize(resource_uri).map_err(|_| Error::NotFound("resource"))?;
        let found = self
            .catalog
            .resource(&gateway.tenant_id, &canonical)
            .await?
            .ok_or(Error::NotFound("resource"))?;
        match &gateway.serves {
            Some(serves) if !serves.contains(&canonical) => {
                Err(Error::Forbidden("this client does not serve that resource".into()))
            }
            _ => Ok(found.resource),
        }
    }

    /// How many MCP requests were made with `lease`, and the last one.
    pub async fn of_lease(&self, lease: Uuid) -> Result<(i64, Option<sql::LastRequest>), StoreError> {
        self.store.read().await?.conn().lease_activity(lease).await
    }

    pub async fn policy(&self, gateway: &Client, resource_uri: &str) -> Result<ResourcePolicy, Error> {
        let r = self.served(gateway, resource_uri).await?;
        Ok(ResourcePolicy {
            resource: r.uri,
            tenant: r.tenant_id,
            scopes: r.scopes,
            tools: r.tools,
        })
    }

    /// Records a batch: each event is checked on its own (a bad one is
    /// rejected, the others go in), those already recorded are skipped, and
    /// the rest commit together. The event id's unique constraint decides
    /// what is already recorded, so two concurrent deliveries of one batch
    /// record it once without any lock.
    pub async fn ingest(&self, gateway: &Client, events: Vec<McpEventIn>) -> Result<IngestReport, Error> {
        if gateway.kind != ClientKind::ResourceServer {
            return Err(Error::Forbidden("only resource_server clients act as gateways".into()));
        }
        if events.len() > MAX_BATCH {
            return Err(Error::Invalid(crate::tenants::invalid(
                "events",
                format!("at most {MAX_BATCH} events a batch"),
            )));
        }
        let mut report = IngestReport::default();
        let mut resources: HashMap<String, Result<Resource, String>> = HashMap::new();
        for e in &events {
            if !resources.contains_key(&e.resource) {
                let r = match self.served(gateway, &e.resource).await {
                    Ok(r) => Ok(r),
                    Err(Error::Store(e)) => return Err(e.into()),
                    Err(e) => Err(e.to_string()),
                };
                resources.insert(e.resource.clone(), r);
            }
        }
        // A busy lease reports many calls a batch: each is looked up once.
        let mut lease_ids: Vec<Uuid> = events.iter().filter_map(|e| e.lease_id).collect();
        lease_ids.sort_unstable();
        lease_ids.dedup();
        let leases: HashMap<Uuid, LeaseStatus> = self
            .store
            .read()
            .await?
            .conn()
            .lease_statuses(&lease_ids)
            .await?
            .into_iter()
            .map(|s| (s.lease.id, s))
            .collect();
        let now = self.clock.now();
        let mut records = Vec::with_capacity(events.len());
        for e in events {
            let id = e.id;
            let resource = match resources.get(&e.resource) {
                Some(Ok(r)) => r,
                Some(Err(why)) => {
                    report.rejected.push(RejectedEvent { id, error: why.clone() });
                    continue;
                }
                None => continue,
            };
            match record(gateway, resource, e, &leases, now) {
                Ok(event) => records.push(event),
                Err(error) => report.rejected.push(RejectedEvent { id, error }),
            }
        }
        let mut seen = std::collections::HashSet::new();
        records.retain(|r| seen.insert(r.id));
        if records.is_empty() {
            return Ok(report);
        }
        let mut tx = self.store.begin().await?;
        let accepted = tx.conn().append_audit_once(&records).await? as usize;
        tx.commit().await?;
        report.duplicates = records.len() - accepted;
        report.accepted = accepted;
        metrics::counter!("mayfly_mcp_events_total", "result" => "accepted").increment(report.accepted as u64);
        metrics::counter!("mayfly_mcp_events_total", "result" => "duplicate").increment(report.duplicates as u64);
        metrics::counter!("mayfly_mcp_events_total", "result" => "rejected").increment(report.rejected.len() as u64);
        Ok(report)
    }
}

/// One reported request as an audit event: who acted comes from the lease
/// (which must be of the gateway's tenant and for this very resource), what
/// was done from the report, cleaned of anything that could forge a log line.
fn record(
    gateway: &Client,
    resource: &Resource,
    e: McpEventIn,
    leases: &HashMap<Uuid, LeaseStatus>,
    now: DateTime<Utc>,
) -> Result<AuditEvent, String> {
    if e.at > now + MAX_SKEW {
        return Err("`at` is in the future".into());
    }
    if e.method.is_empty() || e.method.len() > 128 {
        return Err("`method` must be 1 to 128 characters".into());
    }
    if let Some(h) = &e.arguments_sha256
        && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err("`arguments_sha256` must be 64 lowercase hex digits".into());
    }
    if e.http_status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err("`http_status` must be an HTTP status".into());
    }
    if e.latency_ms.is_some_and(|l| !l.is_finite() || l < 0.0) {
        return Err("`latency_ms` must be a non-negative number".into());
    }
    let mut event = AuditEvent::new(actions::MCP_REQUEST, crate::audit::Outcome::Success, e.at);
    event.id = e.id;
    event.outcome = e.outcome.as_str().to_string();
    event.tenant = Some(resource.tenant_id.clone());
    event.resource = Some(resource.uri.clone());
    if let Some(id) = e.lease_id {
        let lease = &leases.get(&id).ok_or("unknown lease")?.lease;
        let same_resource = uri::canonicalize(&lease.resource).is_ok_and(|c| c == resource.canonical_uri);
        if lease.tenant_id != resource.tenant_id || !same_resource {
            // Never say more: the lease may be another tenant's.
            return Err("unknown lease".into());
        }
        event.lease_id = Some(id);
        event.workflow = Some(lease.workflow.clone());
        event.workload = Some(lease.workload.clone());
        event.client_id = Some(lease.client_id.clone());
        event.actor = lease.actor.clone();
        event.scopes = Some(lease.scopes.clone());
    }
    event.reason = e.reason.as_deref().map(|r| sanitize(r, 200));
    event.request_id = e.request_id.as_deref().map(|r| sanitize(r, 128));
    event.source = e.source.as_deref().map(|s| sanitize(s, 64));
    event.mcp = Some(json!({
        "method": sanitize(&e.method, 128),
        "name": e.name.as_deref().map(|n| sanitize(n, 256)),
        "arguments_sha256": e.arguments_sha256,
        "error_code": e.error_code,
        "http_status": e.http_status,
        "latency_ms": e.latency_ms,
        "session": e.session.as_deref().map(|s| sanitize(s, 256)),
        "gateway": gateway.client_id,
    }));
    Ok(event)
}
