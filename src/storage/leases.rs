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
    /// None for key revocations, which span tenants.
    pub tenant_id: Option<&'a str>,
    pub selector: &'a Selector,
    pub reason: &'a str,
    pub created_by: Option<serde_json::Value>,
    pub now: DateTime<Utc>,
    /// When every token the rule could match has expired.
    pub prune_after: DateTime<Utc>,
    /// Cover leases numbered after the rule too: for deleted clients and
    /// tenants and revoked keys, which can have no legitimate later token
    /// (one minted concurrently with the deletion must not survive it).
    pub forever: bool,
}

/// `issued_before` of rules that cover every token, whenever issued.
fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC) // 9999-12-31T23:59:59Z
}

/// A lease with the first rule that revokes it, if any, read in one query.
#[derive(Debug, sqlx::FromRow)]
pub struct LeaseStatus {
    #[sqlx(flatten)]
    pub lease: Lease,
    pub revoked_by: Option<Uuid>,
}

/// One SQL text per selector kind, sharing the lease-matching prefix.
/// Parameters: `$1` tenant ('' for keys), `$2` cutoff seq, `$3` now, `$4` the
/// selector value, then whatever the statement adds.
macro_rules! per_kind {
    ($head:literal, $tail:literal) => {
        [
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3 AND $4 = ''",
                $tail
            ),
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3 AND workflow = $4",
                $tail
            ),
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3 AND workload = $4",
                $tail
            ),
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3 AND client_id = $4",
                $tail
            ),
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3 AND id = $4",
                $tail
            ),
            concat!(
                $head,
                " $1 = '' AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3 AND kid = $4",
                $tail
            ),
        ]
    };
}

const MARK_MATCHING: [&str; 6] = per_kind!(
    "UPDATE leases SET revoked_at = $3, revocation_id = $5 WHERE revoked_at IS NULL AND seq IN (SELECT seq FROM leases WHERE",
    " AND seq > $7 ORDER BY seq LIMIT $6) RETURNING seq"
);
/// Marks a rule done only when no matching lease row is left unmarked, so a
/// replica that lost a race for a batch cannot declare the rule finished.
const FINISH_IF_MARKED: [&str; 6] = per_kind!(
    "UPDATE revocations SET marked_at = $3 WHERE id = $5 AND NOT EXISTS (SELECT 1 FROM leases WHERE",
    ")"
);

fn kind_index(selector: &Selector) -> usize {
    match selector {
        Selector::Tenant => 0,
        Selector::Workflow(_) => 1,
        Selector::Workload(_) => 2,
        Selector::Client(_) => 3,
        Selector::Lease(_) => 4,
        Selector::Key(_) => 5,
    }
}

impl Store {
    pub async fn get_lease(&self, id: Uuid) -> Result<Lease> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Lease>(
            "SELECT seq, id, tenant_id, workflow, workload, client_id, actor, resource, scopes, kid,
                    issued_at, expires_at, revoked_at, revocation_id, source, request_id
             FROM leases WHERE id = $1")
            .bind(id).fetch_one(c).await)?)
    }

    /// Leases newest first. `active` is exact: a lease a rule revokes is
    /// inactive even before its row is marked. (Single-lease rules mark their
    /// row in the same transaction, so they need no probe here.)
    pub async fn list_leases(
        &self,
        tenant: &str,
        filter: &LeaseFilter,
        now: DateTime<Utc>,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<LeaseStatus>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, LeaseStatus>(
            "SELECT * FROM (
                SELECT l.seq, l.id, l.tenant_id, l.workflow, l.workload, l.client_id, l.actor, l.resource, l.scopes, l.kid,
                       l.issued_at, l.expires_at, l.revoked_at, l.revocation_id, l.source, l.request_id,
                       (SELECT r.id FROM revocations r
                         WHERE r.cutoff_seq >= l.seq AND (
                               (r.tenant_id = l.tenant_id AND r.kind = 'tenant' AND r.value = '')
                            OR (r.tenant_id = l.tenant_id AND r.kind = 'workflow' AND r.value = l.workflow)
                            OR (r.tenant_id = l.tenant_id AND r.kind = 'workload' AND r.value = l.workload)
                            OR (r.tenant_id = l.tenant_id AND r.kind = 'client_id' AND r.value = l.client_id)
                            OR (r.tenant_id IS NULL AND r.kind = 'kid' AND r.value = l.kid))
                         LIMIT 1) AS revoked_by
                FROM leases l
                WHERE l.tenant_id = $1 AND l.seq < $2
                  AND ($3 IS NULL OR l.workflow = $3)
                  AND ($4 IS NULL OR l.workload = $4)
                  AND ($5 IS NULL OR l.client_id = $5)
             ) x
             WHERE ($6 IS NULL OR $6 = (x.revoked_at IS NULL AND x.revoked_by IS NULL AND x.expires_at > $7))
             ORDER BY x.seq DESC LIMIT $8")
            .bind(tenant).bind(before_seq)
            .bind(filter.workflow.as_deref()).bind(filter.workload.as_deref()).bind(filter.client_id.as_deref())
            .bind(filter.active).bind(now).bind(limit)
            .fetch_all(c).await)?)
    }

    /// The lease and the first rule revoking it, in one round trip. One
    /// indexed probe per selector kind; the number of live leases does not
    /// enter into it.
    pub async fn lease_status(&self, id: Uuid) -> Result<LeaseStatus> {
        let id_text = id.to_string();
        Ok(on_pool!(self, c => sqlx::query_as::<_, LeaseStatus>(
            "SELECT l.seq, l.id, l.tenant_id, l.workflow, l.workload, l.client_id, l.actor, l.resource, l.scopes, l.kid,
                    l.issued_at, l.expires_at, l.revoked_at, l.revocation_id, l.source, l.request_id,
                    (SELECT r.id FROM revocations r
                      WHERE r.cutoff_seq >= l.seq AND (
                            (r.tenant_id = l.tenant_id AND r.kind = 'tenant' AND r.value = '')
                         OR (r.tenant_id = l.tenant_id AND r.kind = 'workflow' AND r.value = l.workflow)
                         OR (r.tenant_id = l.tenant_id AND r.kind = 'workload' AND r.value = l.workload)
                         OR (r.tenant_id = l.tenant_id AND r.kind = 'client_id' AND r.value = l.client_id)
                         OR (r.tenant_id = l.tenant_id AND r.kind = 'lease_id' AND r.value = $2)
                         OR (r.tenant_id IS NULL AND r.kind = 'kid' AND r.value = l.kid))
                      LIMIT 1) AS revoked_by
             FROM leases l WHERE l.id = $1")
            .bind(id).bind(&id_text).fetch_one(c).await)?)
    }

    pub async fn list_revocations(&self, tenant: &str, before_seq: i64, limit: i64) -> Result<Vec<Revocation>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Revocation>(
            "SELECT seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked, marked_at
             FROM revocations WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3")
            .bind(tenant).bind(before_seq).bind(limit).fetch_all(c).await)?)
    }

    /// The revocation feed, oldest first after `after_seq`: one tenant's rules
    /// plus the key rules that span tenants, or (tenant None) every rule.
    pub async fn revocation_feed(&self, tenant: Option<&str>, after_seq: i64, limit: i64) -> Result<Vec<Revocation>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Revocation>(
            "SELECT seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked, marked_at
             FROM revocations WHERE seq > $1 AND ($2 IS NULL OR tenant_id = $2 OR tenant_id IS NULL)
             ORDER BY seq LIMIT $3")
            .bind(after_seq).bind(tenant).bind(limit).fetch_all(c).await)?)
    }

    /// Rules whose lease rows are not all marked yet.
    pub async fn unmarked_revocations(&self, limit: i64) -> Result<Vec<Revocation>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Revocation>(
            "SELECT seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked, marked_at
             FROM revocations WHERE marked_at IS NULL ORDER BY seq LIMIT $1")
            .bind(limit).fetch_all(c).await)?)
    }

    /// Marks up to `batch` lease rows matched by `rule` as revoked; returns how
    /// many. Idempotent, so replicas may race on it harmlessly.
    pub async fn mark_revoked_batch(
        &self,
        rule: &Revocation,
        now: DateTime<Utc>,
        batch: i64,
        after_seq: i64,
    ) -> Result<(u64, i64)> {
        let Some(selector) = Selector::from_parts(&rule.kind, &rule.value) else {
            return Ok((0, after_seq));
        };
        let sql = MARK_MATCHING[kind_index(&selector)];
        let tenant = rule.tenant_id.clone().unwrap_or_default();
        let mut tx = self.begin().await?;
        // In sequence order from where the last batch stopped: each batch reads
        // only rows it has not seen, so marking N rows costs O(N).
        let marked = on_tx!(tx, c => {
            let q = sqlx::query_scalar::<_, i64>(sql).bind(&tenant).bind(rule.cutoff_seq).bind(now);
            let q = match &selector {
                Selector::Lease(id) => q.bind(*id),
                other => q.bind(other.value()),
            };
            q.bind(rule.id).bind(batch).bind(after_seq).fetch_all(&mut **c).await
        })?;
        let n = marked.len() as u64;
        if n > 0 {
            on_tx!(tx, c => sqlx::query("UPDATE revocations SET leases_revoked = leases_revoked + $2 WHERE id = $1")
                .bind(rule.id).bind(n as i64).execute(&mut **c).await.map(|_| ()))?;
        }
        tx.commit().await?;
        Ok((n, marked.into_iter().max().unwrap_or(after_seq)))
    }

    /// Sets `marked_at` if no matching unexpired lease row is unmarked; returns whether it did.
    pub async fn finish_revocation_if_marked(&self, rule: &Revocation, now: DateTime<Utc>) -> Result<bool> {
        let Some(selector) = Selector::from_parts(&rule.kind, &rule.value) else {
            return Ok(false);
        };
        let sql = FINISH_IF_MARKED[kind_index(&selector)];
        let tenant = rule.tenant_id.clone().unwrap_or_default();
        let n = on_pool!(self, c => {
            let q = sqlx::query(sql).bind(&tenant).bind(rule.cutoff_seq).bind(now);
            let q = match &selector {
                Selector::Lease(id) => q.bind(*id),
                other => q.bind(other.value()),
            };
            q.bind(rule.id).execute(c).await.map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// Deletes up to `batch` leases that expired before `lease_horizon`, and
    /// rules no unexpired token can match any more. Returns (leases, rules).
    pub async fn prune(&self, now: DateTime<Utc>, lease_horizon: DateTime<Utc>, batch: i64) -> Result<(u64, u64)> {
        let leases = on_pool!(self, c => sqlx::query(
            "DELETE FROM leases WHERE seq IN (SELECT seq FROM leases WHERE expires_at < $1 LIMIT $2)")
            .bind(lease_horizon).bind(batch).execute(c).await.map(|r| r.rows_affected()))?;
        let rules = on_pool!(self, c => sqlx::query(
            "DELETE FROM revocations WHERE prune_after < $1 AND marked_at IS NOT NULL")
            .bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok((leases, rules))
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

    /// Records a rule covering every lease numbered so far. Constant cost,
    /// whatever the number of live leases: matching lease rows are marked
    /// (and counted in `leases_revoked`) afterwards, in batches.
    pub async fn insert_revocation(&mut self, r: &NewRevocation<'_>) -> Result<Revocation> {
        // Under the chain lock, rules are numbered in commit order, so a feed
        // reader polling by `seq` never skips one that commits late.
        self.lock_chain().await?;
        let cutoff = on_tx!(self, c => sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM leases")
            .fetch_one(&mut **c).await)?;
        let cutoff = if r.forever { i64::MAX } else { cutoff };
        let tenant = r.tenant_id.unwrap_or_default();
        let value = r.selector.value();
        // One lease is one row: mark it now.
        let (marked, marked_at) = match r.selector {
            Selector::Lease(id) => {
                let sql = MARK_MATCHING[kind_index(r.selector)];
                let n = on_tx!(self, c => sqlx::query(sql).bind(tenant).bind(cutoff).bind(r.now).bind(*id).bind(r.id).bind(1i64)
                    .bind(0i64).execute(&mut **c).await.map(|x| x.rows_affected()))?;
                (n as i64, Some(r.now))
            }
            _ => (0, None),
        };
        // Offline verifiers compare `iat` with `issued_before`: a rule for every
        // token, present and future, must say so to them too.
        let issued_before = if r.forever { far_future() } else { r.now };
        Ok(on_tx!(self, c => sqlx::query_as::<_, Revocation>(
            "INSERT INTO revocations (id, tenant_id, kind, value, cutoff_seq, issued_before, prune_after, reason,
                                      created_by, created_at, leases_revoked, marked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $12, $10, $11)
             RETURNING seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked, marked_at")
            .bind(r.id).bind(r.tenant_id).bind(r.selector.kind()).bind(&value).bind(cutoff).bind(issued_before)
            .bind(r.prune_after).bind(r.reason).bind(r.created_by.as_ref().map(Json)).bind(marked).bind(marked_at).bind(r.now)
            .fetch_one(&mut **c).await)?)
    }
}
