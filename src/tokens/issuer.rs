//! Minting: resolve the target, decide (pure, in `policy`), commit the lease
//! and its audit event, and only then sign and hand out the token. A token
//! the database does not know about never exists.

use chrono::DateTime;
use uuid::Uuid;

use super::claims::AccessClaims;
use super::jws;
use super::policy::{self, Denial, MintRequest, Target, TargetScopes};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, actions};
use crate::leases::Lease;
use crate::storage::{Store, StoreError};
use crate::tenants::{Client, uri};

/// Where a request came from, for leases and audit events.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub request_id: String,
    pub source: String,
}

#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
    pub lease: Lease,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{}", .0.message())]
    Denied(Denial),
    #[error("no active signing key")]
    NoSigningKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Commits leases with their audit events, atomically. Takes a slice so
    /// concurrent mints can later share one transaction.
    pub async fn record_issues(&self, items: &[(Lease, AuditEvent)]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let leases: Vec<Lease> = items.iter().map(|(l, _)| l.clone()).collect();
        tx.insert_leases(&leases).await?;
        let events: Vec<AuditEvent> = items.iter().map(|(_, e)| e.clone()).collect();
        tx.append_audit(&events).await?;
        tx.commit().await
    }
}

async fn resolve_target(state: &AppState, client: &Client, resource: &str) -> Result<Target, MintError> {
    let canonical = uri::canonicalize(resource)
        .map_err(|e| MintError::Denied(Denial::InvalidTarget(format!("invalid resource: {e}"))))?;
    if canonical == state.issuer_canonical {
        return Ok(Target {
            canonical_uri: canonical,
            scopes: TargetScopes::AdminApi,
            default_ttl: state.config.default_ttl_seconds(),
            max_ttl: state.config.max_ttl_seconds(),
        });
    }
    match state.store.find_resource_by_uri(&client.tenant_id, &canonical).await {
        Ok(r) => Ok(Target {
            canonical_uri: canonical,
            scopes: TargetScopes::Listed(r.scopes),
            default_ttl: r.default_ttl_seconds,
            max_ttl: r.max_ttl_seconds,
        }),
        Err(StoreError::NotFound) => Err(MintError::Denied(Denial::InvalidTarget("unknown resource".into()))),
        Err(e) => Err(e.into()),
    }
}

pub async fn issue(
    state: &AppState,
    client: &Client,
    resource: Option<&str>,
    req: &MintRequest<'_>,
    meta: &Meta,
) -> Result<Issued, MintError> {
    let decided = match resource {
        None => Err(MintError::Denied(Denial::InvalidRequest(
            "`resource` (or `audience`) is required".into(),
        ))),
        Some(resource) => match resolve_target(state, client, resource).await {
            Ok(target) => {
                policy::decide(client, &target, req, state.config.max_ttl_seconds()).map_err(MintError::Denied)
            }
            Err(e) => Err(e),
        },
    };
    let decision = match decided {
        Ok(d) => d,
        Err(MintError::Denied(denial)) => {
            let mut event = AuditEvent::new(actions::TOKEN_DENIED, Outcome::Denied, state.clock.now());
            event.reason = Some(format!("{}: {}", denial.code(), denial.message()));
            event.tenant = Some(client.tenant_id.clone());
            event.client_id = Some(client.client_id.clone());
            event.workflow = req.workflow.map(|w| truncate(w, 128));
            event.workload = req.workload.map(|w| truncate(w, 256));
            event.resource = resource.map(|r| truncate(r, 2048));
            event.request_id = Some(meta.request_id.clone());
            event.source = Some(meta.source.clone());
            state.store.append_audit(&[event]).await?;
            metrics::counter!("mayfly_tokens_denied_total", "reason" => denial.code()).increment(1);
            return Err(MintError::Denied(denial));
        }
        Err(e) => return Err(e),
    };
    let resource = resource.unwrap_or_default();

    let keys = state.keyring.current();
    let signer = keys.active.clone().ok_or(MintError::NoSigningKey)?;
    let now = state.clock.now();
    let iat = now.timestamp();
    let exp = iat + decision.ttl_seconds;
    let lease = Lease {
        seq: 0,
        id: Uuid::now_v7(),
        tenant_id: client.tenant_id.clone(),
        workflow: decision.workflow,
        workload: decision.workload,
        client_id: client.client_id.clone(),
        actor: None,
        resource: resource.to_string(),
        scopes: decision.scopes,
        kid: signer.kid.clone(),
        issued_at: now,
        expires_at: DateTime::from_timestamp(exp, 0).unwrap_or(now),
        revoked_at: None,
        revocation_id: None,
        source: Some(meta.source.clone()),
        request_id: Some(meta.request_id.clone()),
    };
    let mut event = AuditEvent::new(actions::TOKEN_ISSUED, Outcome::Success, now);
    event.tenant = Some(lease.tenant_id.clone());
    event.workflow = Some(lease.workflow.clone());
    event.workload = Some(lease.workload.clone());
    event.client_id = Some(lease.client_id.clone());
    event.resource = Some(lease.resource.clone());
    event.scopes = Some(lease.scopes.clone());
    event.lease_id = Some(lease.id);
    event.request_id = Some(meta.request_id.clone());
    event.source = Some(meta.source.clone());

    state.issues.commit(lease.clone(), event).await?;

    let scope = lease.scopes.join(" ");
    let claims = AccessClaims {
        iss: state.config.issuer.clone(),
        sub: lease.workload.clone(),
        aud: lease.resource.clone(),
        exp,
        iat,
        nbf: iat,
        jti: lease.id.to_string(),
        client_id: lease.client_id.clone(),
        scope: scope.clone(),
        tenant: lease.tenant_id.clone(),
        workflow: lease.workflow.clone(),
        act: lease.actor.clone(),
    };
    let access_token = jws::sign(&signer, &claims);
    metrics::counter!("mayfly_tokens_issued_total").increment(1);
    Ok(Issued {
        access_token,
        expires_in: decision.ttl_seconds,
        scope,
        lease,
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
