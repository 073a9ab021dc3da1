//! Leases and revocation rules.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, Tx, on_pool, on_tx};
use crate::leases::{Lease, Revocation, Selector};

#[derive(Debug, Default, Clone)]
pub struct LeaseFilter {
    pub workflow: Option<String>,
    pub workload: Option<String>,
    pub client_id: Option<String>,
    /// Some(true): neither revoked nor expired at `now`; Some(false): the others.
    pub active: Option<bool>,
}

pub struct NewRevocation<'a> {
    pub id: Uuid,
    pub tenant_id: &'a str,
    pub selector: &'a Selector,
    pub reason: &'a str,
    pub created_by: Option<serde_json::Value>,
    pub now: DateTime<Utc>,
    /// When every token the rule could match has expired.
    pub prune_after: DateTime<Utc>,
}

impl Store {
    pub async fn get_lease(&self, id: Uuid) -> Result<Lease> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Lease>(
            "SELECT seq, id, tenant_id, workflow, workload, client_id, actor, resource, scopes, kid,
                    issued_at, expires_at, revoked_at, revocation_id, source, request_id
             FROM leases WHERE id = $1")
            .bind(id).fetch_one(c).await)?)
    }

    pub async fn list_leases(
        &self,
        tenant: &str,
        filter: &LeaseFilter,
        now: DateTime<Utc>,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<Lease>> {
        let active: Option<bool> = filter.active;
        Ok(on_pool!(self, c => sqlx::query_as::<_, Lease>(
            "SELECT seq, id, tenant_id, workflow, workload, client_id, actor, resource, scopes, kid,
                    issued_at, expires_at, revoked_at, revocation_id, source, request_id
             FROM leases
             WHERE tenant_id = $1 AND seq < $2
               AND ($3 IS NULL OR workflow = $3)
               AND ($4 IS NULL OR workload = $4)
               AND ($5 IS NULL OR client_id = $5)
               AND ($6 IS NULL OR ($6 = (revoked_at IS NULL AND expires_at > $7)))
             ORDER BY seq DESC LIMIT $8")
            .bind(tenant).bind(before_seq)
            .bind(filter.workflow.as_deref()).bind(filter.workload.as_deref()).bind(filter.client_id.as_deref())
            .bind(active).bind(now).bind(limit)
            .fetch_all(c).await)?)
    }

    /// The first rule that revokes this lease, if any. One indexed probe per
    /// selector kind; the number of live leases does not enter into it.
    pub async fn revoking_rule(&self, lease: &Lease) -> Result<Option<Uuid>> {
        let lease_id = lease.id.to_string();
        Ok(on_pool!(self, c => sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM revocations
             WHERE tenant_id = $1 AND cutoff_seq >= $2 AND (
                   (kind = 'tenant' AND value = '')
                OR (kind = 'workflow' AND value = $3)
                OR (kind = 'workload' AND value = $4)
                OR (kind = 'client_id' AND value = $5)
                OR (kind = 'lease_id' AND value = $6))
             LIMIT 1")
            .bind(&lease.tenant_id).bind(lease.seq).bind(&lease.workflow).bind(&lease.workload)
            .bind(&lease.client_id).bind(&lease_id)
            .fetch_optional(c).await)?)
    }

    pub async fn list_revocations(
        &self,
        tenant: &str,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<Revocation>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Revocation>(
            "SELECT seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked
             FROM revocations WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3")
            .bind(tenant).bind(before_seq).bind(limit).fetch_all(c).await)?)
    }
}

impl Tx {
    /// Inserts leases and returns their database-assigned sequence numbers.
    pub async fn insert_leases(&mut self, leases: &[Lease]) -> Result<Vec<i64>> {
        let mut seqs = Vec::with_capacity(leases.len());
        for l in leases {
            let seq = on_tx!(self, c => sqlx::query_scalar::<_, i64>(
                "INSERT INTO leases (id, tenant_id, workflow, workload, client_id, actor, resource, scopes, kid,
                                     issued_at, expires_at, source, request_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq")
                .bind(l.id).bind(&l.tenant_id).bind(&l.workflow).bind(&l.workload).bind(&l.client_id)
                .bind(l.actor.as_ref().map(Json)).bind(&l.resource).bind(Json(&l.scopes)).bind(&l.kid)
                .bind(l.issued_at).bind(l.expires_at).bind(l.source.as_deref()).bind(l.request_id.as_deref())
                .fetch_one(&mut **c).await)?;
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Records a rule covering every lease numbered so far, and marks the
    /// matching unexpired lease rows revoked for the record.
    pub async fn insert_revocation(&mut self, r: &NewRevocation<'_>) -> Result<Revocation> {
        let cutoff = on_tx!(self, c => sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM leases")
            .fetch_one(&mut **c).await)?;
        let value = r.selector.value();
        let sql: &'static str = match r.selector {
            Selector::Tenant => {
                "UPDATE leases SET revoked_at = $1, revocation_id = $2
                 WHERE tenant_id = $3 AND seq <= $4 AND revoked_at IS NULL AND expires_at > $1 AND $5 = ''"
            }
            Selector::Workflow(_) => {
                "UPDATE leases SET revoked_at = $1, revocation_id = $2
                 WHERE tenant_id = $3 AND seq <= $4 AND revoked_at IS NULL AND expires_at > $1 AND workflow = $5"
            }
            Selector::Workload(_) => {
                "UPDATE leases SET revoked_at = $1, revocation_id = $2
                 WHERE tenant_id = $3 AND seq <= $4 AND revoked_at IS NULL AND expires_at > $1 AND workload = $5"
            }
            Selector::Client(_) => {
                "UPDATE leases SET revoked_at = $1, revocation_id = $2
                 WHERE tenant_id = $3 AND seq <= $4 AND revoked_at IS NULL AND expires_at > $1 AND client_id = $5"
            }
            Selector::Lease(_) => {
                "UPDATE leases SET revoked_at = $1, revocation_id = $2
                 WHERE tenant_id = $3 AND seq <= $4 AND revoked_at IS NULL AND expires_at > $1 AND id = $5"
            }
        };
        let marked = on_tx!(self, c => {
            let q = sqlx::query(sql).bind(r.now).bind(r.id).bind(r.tenant_id).bind(cutoff);
            let q = match r.selector {
                Selector::Lease(id) => q.bind(id),
                _ => q.bind(value.clone()),
            };
            q.execute(&mut **c).await.map(|x| x.rows_affected())
        })? as i64;
        Ok(on_tx!(self, c => sqlx::query_as::<_, Revocation>(
            "INSERT INTO revocations (id, tenant_id, kind, value, cutoff_seq, issued_before, prune_after, reason,
                                      created_by, created_at, leases_revoked)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $6, $10)
             RETURNING seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked")
            .bind(r.id).bind(r.tenant_id).bind(r.selector.kind()).bind(&value).bind(cutoff).bind(r.now)
            .bind(r.prune_after).bind(r.reason).bind(r.created_by.as_ref().map(Json)).bind(marked)
            .fetch_one(&mut **c).await)?)
    }
}
