//! Leases: one row per issued token, numbered by the database.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::leases::{Lease, Links};
use crate::storage::{Conn, Result, StoreError, run};

/// The lease columns, as read (with the `l` alias).
macro_rules! lease_columns {
    () => {
        "l.seq, l.id, l.tenant_id, l.workflow, l.workload, l.client_id, l.actor, l.resource, l.scopes, l.kid,
         l.issued_at, l.expires_at, l.revoked_at, l.revocation_id, l.source, l.request_id, l.federated, l.policy_id,
         l.parent_id, l.jkt"
    };
}

/// The first rule that revokes lease `l`, if any: one indexed probe per
/// selector kind on the lease itself (and on the workloads of its actors),
/// then the same probes on each lease it descends from (the subject's and
/// the actor token's, at most five): whatever revokes an ancestor revokes
/// its descendants. Each rule's cutoff is compared with the sequence number
/// of the lease it matched, so a token exchanged from a revoked subject
/// while the rule was being written is caught too. A few probes per token,
/// whatever the number of live leases. Only a delegated lease (one with an
/// actor chain) descends from others: the ancestor probes run for it alone,
/// so a plain token's check costs what it did.
macro_rules! revoked_by {
    () => {
        "COALESCE(
          (SELECT r.id FROM revocations r
            WHERE r.cutoff_seq >= l.seq AND (
                  (r.tenant_id = l.tenant_id AND r.kind = 'tenant' AND r.value = '')
               OR (r.tenant_id = l.tenant_id AND r.kind = 'workflow' AND r.value = l.workflow)
               OR (r.tenant_id = l.tenant_id AND r.kind = 'workload' AND r.value = l.workload)
               OR (r.tenant_id = l.tenant_id AND r.kind = 'client_id' AND r.value = l.client_id)
               OR (r.tenant_id = l.tenant_id AND r.kind = 'lease_id' AND r.lease_ref = l.id)
               OR (r.tenant_id = l.tenant_id AND r.kind = 'workload' AND r.value IN
                      (SELECT k.actor FROM lease_links k WHERE k.lease_id = l.id AND k.actor IS NOT NULL))
               OR (r.tenant_id IS NULL AND r.kind = 'kid' AND r.value = l.kid))
            LIMIT 1),
          CASE WHEN l.actor IS NOT NULL THEN
          (SELECT r.id FROM lease_links k
             JOIN leases a ON a.id = k.ancestor
             JOIN revocations r ON r.cutoff_seq >= a.seq AND (
                  (r.tenant_id = a.tenant_id AND r.kind = 'tenant' AND r.value = '')
               OR (r.tenant_id = a.tenant_id AND r.kind = 'workflow' AND r.value = a.workflow)
               OR (r.tenant_id = a.tenant_id AND r.kind = 'workload' AND r.value = a.workload)
               OR (r.tenant_id = a.tenant_id AND r.kind = 'client_id' AND r.value = a.client_id)
               OR (r.tenant_id = a.tenant_id AND r.kind = 'lease_id' AND r.lease_ref = a.id)
               OR (r.tenant_id IS NULL AND r.kind = 'kid' AND r.value = a.kid))
            WHERE k.lease_id = l.id AND k.ancestor IS NOT NULL
            LIMIT 1) END) AS revoked_by"
    };
}

#[derive(Debug, Default, Clone)]
pub struct LeaseFilter {
    pub workflow: Option<String>,
    pub workload: Option<String>,
    pub client_id: Option<String>,
    /// Some(true): neither revoked nor expired at `now`; Some(false): the others.
    pub active: Option<bool>,
    /// Minted under this trust policy.
    pub policy_id: Option<Uuid>,
    /// With this workload somewhere in its actor chain.
    pub actor: Option<String>,
}

/// A lease with the first rule that revokes it, if any, read in one query.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeaseStatus {
    #[sqlx(flatten)]
    pub lease: Lease,
    pub revoked_by: Option<Uuid>,
}

impl LeaseStatus {
    /// Active at `now`: unrevoked (marked or by rule) and unexpired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.lease.revoked_at.is_none() && self.revoked_by.is_none() && self.lease.expires_at > now
    }
}

impl Conn<'_> {
    /// A lease of `tenant`, by id.
    pub async fn get_lease(&mut self, tenant: &str, id: Uuid) -> Result<Lease> {
        Ok(run!(self, c => sqlx::query_as::<_, Lease>(concat!(
            "SELECT ", lease_columns!(), " FROM leases l WHERE l.tenant_id = $1 AND l.id = $2"))
            .bind(tenant).bind(id).fetch_one(c).await)?)
    }

    /// The lease and the first rule revoking it, in one round trip; only in
    /// `tenant` when one is given.
    pub async fn lease_status(&mut self, id: Uuid, tenant: Option<&str>) -> Result<LeaseStatus> {
        Ok(run!(self, c => sqlx::query_as::<_, LeaseStatus>(concat!(
            "SELECT ", lease_columns!(), ", ", revoked_by!(), " FROM leases l
             WHERE l.id = $1 AND ($2 IS NULL OR l.tenant_id = $2)"))
            .bind(id).bind(tenant).fetch_one(c).await)?)
    }

    /// Several leases, each with the first rule revoking it, in one round
    /// trip (the ones that exist; in no particular order).
    pub async fn lease_statuses(&mut self, ids: &[Uuid]) -> Result<Vec<LeaseStatus>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(run!(self, c => {
            let mut q = sqlx::QueryBuilder::new(concat!(
                "SELECT ", lease_columns!(), ", ", revoked_by!(), " FROM leases l WHERE l.id IN ("));
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            q.build_query_as::<LeaseStatus>().fetch_all(c).await
        })?)
    }

    /// Leases of `tenant` newest first. `active` is exact: a lease a rule
    /// revokes is inactive even before its row is marked.
    pub async fn list_leases(
        &mut self,
        tenant: &str,
        filter: &LeaseFilter,
        now: DateTime<Utc>,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<LeaseStatus>> {
        Ok(run!(self, c => sqlx::query_as::<_, LeaseStatus>(concat!(
            "SELECT * FROM (
                SELECT ", lease_columns!(), ", ", revoked_by!(), "
                FROM leases l
                WHERE l.tenant_id = $1 AND l.seq < $2
                  AND ($3 IS NULL OR l.workflow = $3)
                  AND ($4 IS NULL OR l.workload = $4)
                  AND ($5 IS NULL OR l.client_id = $5)
                  AND ($9 IS NULL OR l.policy_id = $9)
                  AND ($10 IS NULL OR l.id IN (SELECT k.lease_id FROM lease_links k WHERE k.actor = $10))
             ) x
             WHERE ($6 IS NULL OR $6 = (x.revoked_at IS NULL AND x.revoked_by IS NULL AND x.expires_at > $7))
             ORDER BY x.seq DESC LIMIT $8"))
            .bind(tenant).bind(before_seq)
            .bind(filter.workflow.as_deref()).bind(filter.workload.as_deref()).bind(filter.client_id.as_deref())
            .bind(filter.active).bind(now).bind(limit).bind(filter.policy_id).bind(filter.actor.as_deref())
            .fetch_all(c).await)?)
    }

    /// Inserts leases and returns their database-assigned sequence numbers.
    /// Inserts leases in one statement (and their links in one more) and
    /// returns each lease's sequence number, in the order given.
    pub async fn insert_leases(&mut self, leases: &[Lease]) -> Result<Vec<i64>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let numbered = run!(self, c => {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO leases (id, tenant_id, workflow, workload, client_id, actor, resource, scopes, kid,
                                     issued_at, expires_at, source, request_id, federated, policy_id, parent_id, jkt) ");
            q.push_values(leases, |mut row, l| {
                row.push_bind(l.id).push_bind(&l.tenant_id).push_bind(&l.workflow).push_bind(&l.workload)
                    .push_bind(&l.client_id).push_bind(l.actor.as_ref().map(Json)).push_bind(&l.resource)
                    .push_bind(Json(&l.scopes)).push_bind(&l.kid).push_bind(l.issued_at).push_bind(l.expires_at)
                    .push_bind(l.source.as_deref()).push_bind(l.request_id.as_deref())
                    .push_bind(l.federated.as_ref().map(Json)).push_bind(l.policy_id).push_bind(l.parent_id)
                    .push_bind(l.jkt.as_deref());
            });
            q.push(" RETURNING id, seq");
            q.build_query_as::<(Uuid, i64)>().fetch_all(c).await
        })?;
        // RETURNING promises no row order: match by id.
        let by_id: std::collections::HashMap<Uuid, i64> = numbered.into_iter().collect();
        let seqs = leases
            .iter()
            .map(|l| by_id.get(&l.id).copied())
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| StoreError::Corrupt("a lease insert returned no sequence number".into()))?;
        // (lease, actor, ancestor, client, kid): one link a row.
        type Row<'a> = (Uuid, Option<&'a str>, Option<Uuid>, Option<&'a str>, Option<&'a str>);
        let links: Vec<Row<'_>> = leases
            .iter()
            .flat_map(|l| {
                let k = &l.links;
                let actors = k.actors.iter().map(|a| (l.id, Some(a.as_str()), None, None, None));
                let ancestors = k.ancestors.iter().map(|a| (l.id, None, Some(*a), None, None));
                let clients = k.clients.iter().map(|c| (l.id, None, None, Some(c.as_str()), None));
                let kids = k.kids.iter().map(|kid| (l.id, None, None, None, Some(kid.as_str())));
                actors.chain(ancestors).chain(clients).chain(kids)
            })
            .collect();
        if !links.is_empty() {
            run!(self, c => {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO lease_links (lease_id, actor, ancestor, client, kid) ");
                q.push_values(&links, |mut row, (lease, actor, ancestor, client, kid)| {
                    row.push_bind(*lease).push_bind(*actor).push_bind(*ancestor).push_bind(*client).push_bind(*kid);
                });
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(seqs)
    }

    /// Removes leases inserted earlier in this transaction (and their links).
    pub async fn delete_uncommitted_leases(&mut self, ids: &[Uuid]) -> Result<()> {
        for id in ids {
            run!(self, c => sqlx::query("DELETE FROM lease_links WHERE lease_id = $1")
                .bind(id).execute(c).await.map(|r| r.rows_affected()))?;
            run!(self, c => sqlx::query("DELETE FROM leases WHERE id = $1")
                .bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        }
        Ok(())
    }

    /// A lease's links: the actors, ancestor leases, chain clients and
    /// ancestor keys it was recorded with.
    pub async fn links(&mut self, lease: Uuid) -> Result<Links> {
        type Row = (Option<String>, Option<Uuid>, Option<String>, Option<String>);
        let rows = run!(self, c => sqlx::query_as::<_, Row>(
            "SELECT actor, ancestor, client, kid FROM lease_links WHERE lease_id = $1")
            .bind(lease).fetch_all(c).await)?;
        let mut links = Links::default();
        for (actor, ancestor, client, kid) in rows {
            links.actors.extend(actor);
            links.ancestors.extend(ancestor);
            links.clients.extend(client);
            links.kids.extend(kid);
        }
        Ok(links)
    }

    /// Unexpired, unmarked leases of `tenant` (its live-lease limit).
    pub async fn count_live_leases(&mut self, tenant: &str, now: DateTime<Utc>) -> Result<i64> {
        Ok(run!(self, c => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM leases WHERE tenant_id = $1 AND expires_at > $2 AND revoked_at IS NULL")
            .bind(tenant).bind(now).fetch_one(c).await)?)
    }

    /// Unexpired, unmarked leases per tenant (the `mayfly_live_leases` gauge).
    pub async fn count_live_leases_by_tenant(&mut self, now: DateTime<Utc>) -> Result<Vec<(String, i64)>> {
        Ok(run!(self, c => sqlx::query_as::<_, (String, i64)>(
            "SELECT tenant_id, COUNT(*) FROM leases WHERE expires_at > $1 AND revoked_at IS NULL GROUP BY tenant_id")
            .bind(now).fetch_all(c).await)?)
    }

    /// The newest lease number so far (a rule's cutoff).
    pub async fn last_lease_seq(&mut self) -> Result<i64> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM leases")
            .fetch_one(c).await)?,
        )
    }

    /// Deletes up to `batch` leases that expired before `horizon`; returns how many.
    pub async fn prune_leases(&mut self, horizon: DateTime<Utc>, batch: i64) -> Result<u64> {
        let r = run!(self, c => sqlx::query(
            "DELETE FROM leases WHERE seq IN (SELECT seq FROM leases WHERE expires_at < $1 LIMIT $2)")
            .bind(horizon).bind(batch).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(r)
    }
}
