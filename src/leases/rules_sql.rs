//! Revocation rules, and the bulk marking of the lease rows they cover.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::leases::{Revocation, Selector};
use crate::storage::{Conn, Result, StoreError, run};

macro_rules! rule_columns {
    () => {
        "seq, id, tenant_id, kind, value, cutoff_seq, issued_before, reason, created_by, created_at, leases_revoked, marked_at"
    };
}

/// A rule as stored; its selector is decoded once, into `Revocation`.
#[derive(Debug, sqlx::FromRow)]
struct RuleRow {
    seq: i64,
    id: Uuid,
    tenant_id: Option<String>,
    kind: String,
    value: String,
    cutoff_seq: i64,
    issued_before: DateTime<Utc>,
    reason: String,
    #[sqlx(json(nullable))]
    created_by: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    leases_revoked: i64,
    marked_at: Option<DateTime<Utc>>,
}

impl TryFrom<RuleRow> for Revocation {
    type Error = StoreError;
    fn try_from(r: RuleRow) -> Result<Self> {
        let selector = Selector::from_parts(&r.kind, &r.value)
            .ok_or_else(|| StoreError::Corrupt(format!("revocation {} has unknown kind `{}`", r.id, r.kind)))?;
        Ok(Revocation {
            seq: r.seq,
            id: r.id,
            tenant_id: r.tenant_id,
            selector,
            cutoff_seq: r.cutoff_seq,
            issued_before: r.issued_before,
            reason: r.reason,
            created_by: r.created_by,
            created_at: r.created_at,
            leases_revoked: r.leases_revoked,
            marked_at: r.marked_at,
        })
    }
}

fn decode(rows: Vec<RuleRow>) -> Result<Vec<Revocation>> {
    rows.into_iter().map(Revocation::try_from).collect()
}

/// A rule to record.
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
    /// The lease-sequence cutoff: every matching lease numbered at or before
    /// it is revoked (`i64::MAX` for rules that cover later leases too).
    pub cutoff_seq: i64,
    /// What offline verifiers compare `iat` with.
    pub issued_before: DateTime<Utc>,
}

/// One SQL text per selector kind, sharing the lease-matching prefix. A
/// workload rule also reaches tokens with that workload among their actors,
/// a client or key rule the tokens with that client or key along their
/// chain, and a lease rule the tokens exchanged from it (all through
/// `lease_links`).
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
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3
                  AND (workload = $4 OR id IN (SELECT lease_id FROM lease_links WHERE actor = $4))",
                $tail
            ),
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3
                  AND (client_id = $4 OR id IN (SELECT lease_id FROM lease_links WHERE client = $4))",
                $tail
            ),
            concat!(
                $head,
                " tenant_id = $1 AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3
                  AND (id = $4 OR id IN (SELECT lease_id FROM lease_links WHERE ancestor = $4))",
                $tail
            ),
            concat!(
                $head,
                " $1 = '' AND seq <= $2 AND revoked_at IS NULL AND expires_at > $3
                  AND (kid = $4 OR id IN (SELECT lease_id FROM lease_links WHERE kid = $4))",
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

/// Binds `$1`..`$4` of a per-kind statement: tenant, cutoff, now, selector value.
macro_rules! bind_selector {
    ($q:expr, $rule_tenant:expr, $cutoff:expr, $now:expr, $selector:expr) => {{
        let q = $q.bind($rule_tenant).bind($cutoff).bind($now);
        match $selector {
            Selector::Lease(id) => q.bind(*id),
            other => q.bind(other.value()),
        }
    }};
}

impl Conn<'_> {
    /// Records a rule. Constant cost, whatever the number of live leases:
    /// the rows it covers (a single lease's and the tokens exchanged from it
    /// included) are marked afterwards, in batches; validity never waits for
    /// that. The caller holds the writer-order lock, so rules are numbered in commit
    /// order and a feed reader never skips a late one.
    pub async fn insert_revocation(&mut self, r: &NewRevocation<'_>) -> Result<Revocation> {
        let (marked, marked_at): (i64, Option<DateTime<Utc>>) = (0, None);
        let row = run!(self, c => sqlx::query_as::<_, RuleRow>(concat!(
            "INSERT INTO revocations (id, tenant_id, kind, value, cutoff_seq, issued_before, prune_after, reason,
                                      created_by, created_at, leases_revoked, marked_at, lease_ref)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             RETURNING ", rule_columns!()))
            .bind(r.id).bind(r.tenant_id).bind(r.selector.kind()).bind(r.selector.value()).bind(r.cutoff_seq)
            .bind(r.issued_before).bind(r.prune_after).bind(r.reason).bind(r.created_by.as_ref().map(Json))
            .bind(r.now).bind(marked).bind(marked_at)
            .bind(match r.selector { Selector::Lease(id) => Some(*id), _ => None })
            .fetch_one(c).await)?;
        row.try_into()
    }

    pub async fn list_revocations(&mut self, tenant: &str, before_seq: i64, limit: i64) -> Result<Vec<Revocation>> {
        decode(run!(self, c => sqlx::query_as::<_, RuleRow>(concat!(
            "SELECT ", rule_columns!(), " FROM revocations WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"))
            .bind(tenant).bind(before_seq).bind(limit).fetch_all(c).await)?)
    }

    /// The revocation feed, oldest first after `after_seq`: one tenant's rules
    /// plus the key rules that span tenants, or (tenant None) every rule.
    pub async fn revocation_feed(
        &mut self,
        tenant: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Revocation>> {
        decode(run!(self, c => sqlx::query_as::<_, RuleRow>(concat!(
            "SELECT ", rule_columns!(), " FROM revocations
             WHERE seq > $1 AND ($2 IS NULL OR tenant_id = $2 OR tenant_id IS NULL) ORDER BY seq LIMIT $3"))
            .bind(after_seq).bind(tenant).bind(limit).fetch_all(c).await)?)
    }

    /// Rules whose lease rows are not all marked yet.
    pub async fn unmarked_revocations(&mut self, limit: i64) -> Result<Vec<Revocation>> {
        decode(run!(self, c => sqlx::query_as::<_, RuleRow>(concat!(
            "SELECT ", rule_columns!(), " FROM revocations WHERE marked_at IS NULL ORDER BY seq LIMIT $1"))
            .bind(limit).fetch_all(c).await)?)
    }

    /// Marks up to `batch` lease rows matched by `rule` and numbered after
    /// `after_seq` as revoked, and counts them on the rule. Returns how many
    /// and the last sequence number marked. Idempotent, so replicas may race
    /// on it harmlessly. Run it in a transaction.
    pub async fn mark_revoked_batch(
        &mut self,
        rule: &Revocation,
        now: DateTime<Utc>,
        batch: i64,
        after_seq: i64,
    ) -> Result<(u64, i64)> {
        let tenant = rule.tenant_id.clone().unwrap_or_default();
        let sql = MARK_MATCHING[kind_index(&rule.selector)];
        // In sequence order from where the last batch stopped: each batch reads
        // only rows it has not seen, so marking N rows costs O(N).
        let marked = run!(self, c => bind_selector!(sqlx::query_scalar::<_, i64>(sql), &tenant, rule.cutoff_seq, now, &rule.selector)
            .bind(rule.id).bind(batch).bind(after_seq).fetch_all(c).await)?;
        let n = marked.len() as u64;
        if n > 0 {
            run!(self, c => sqlx::query("UPDATE revocations SET leases_revoked = leases_revoked + $2 WHERE id = $1")
                .bind(rule.id).bind(n as i64).execute(c).await.map(|r| r.rows_affected()))?;
        }
        Ok((n, marked.into_iter().max().unwrap_or(after_seq)))
    }

    /// Sets `marked_at` if no matching unexpired lease row is unmarked; returns whether it did.
    pub async fn finish_revocation_if_marked(&mut self, rule: &Revocation, now: DateTime<Utc>) -> Result<bool> {
        let tenant = rule.tenant_id.clone().unwrap_or_default();
        let sql = FINISH_IF_MARKED[kind_index(&rule.selector)];
        let n = run!(self, c => bind_selector!(sqlx::query(sql), &tenant, rule.cutoff_seq, now, &rule.selector)
            .bind(rule.id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Deletes rules no unexpired token can match any more; returns how many.
    pub async fn prune_revocations(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let r = run!(self, c => sqlx::query("DELETE FROM revocations WHERE prune_after < $1 AND marked_at IS NOT NULL")
            .bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(r)
    }
}
