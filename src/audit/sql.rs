//! The audit events' SQL: appends without a shared row, lists, the
//! per-minute counts, and the pre-log chain's walk.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use crate::audit::{AuditEvent, ChainedEvent};
use crate::storage::{Conn, Result, run};

macro_rules! event_columns {
    () => {
        "id, at, action, outcome, reason, tenant_id, workflow, workload, client_id, actor, admin, resource, scopes,
         lease_id, request_id, source, mcp"
    };
}

/// An event's log index, if integrated (one probe of `audit_leaves_seq_key`).
macro_rules! log_index {
    () => {
        "(SELECT l.log_index FROM audit_leaves l WHERE l.seq = audit_events.seq) AS log_index"
    };
}
pub(crate) use event_columns;

/// The console's per-minute counts: the minute bucket is the one expression
/// the backends spell differently (SQLite stores `at` as RFC 3339 text).
pub const AUDIT_MINUTES_POSTGRES: &str =
    "SELECT action, CAST(floor(extract(epoch FROM (at - $2)) / 60) AS BIGINT), COUNT(*)
     FROM audit_events
     WHERE tenant_id = $1 AND at >= $2 AND at < $3
       AND action IN ('token.issued', 'token.exchanged', 'token.denied')
     GROUP BY 1, 2";
pub const AUDIT_MINUTES_SQLITE: &str =
    "SELECT action, (CAST(strftime('%s', at) AS INTEGER) - CAST(strftime('%s', $2) AS INTEGER)) / 60, COUNT(*)
     FROM audit_events
     WHERE tenant_id = $1 AND at >= $2 AND at < $3
       AND action IN ('token.issued', 'token.exchanged', 'token.denied')
     GROUP BY 1, 2";

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub workflow: Option<String>,
    pub workload: Option<String>,
    pub client_id: Option<String>,
    pub action: Option<String>,
    /// An MCP request's JSON-RPC method (`tools/call`).
    pub method: Option<String>,
    pub lease_id: Option<uuid::Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The SQL of an audit list. Only the filters given become conditions, so
/// each combination plans on its own and a filter by action walks the
/// `(tenant_id, action, seq)` index (a `$n IS NULL OR …` condition hides
/// indexes from the planner). Binds: tenant, before, then the filters given
/// in the order below, then the limit. The method sits inside the `mcp`
/// document, which the backends read with different functions.
fn list_audit_sql(f: &AuditFilter, postgres: bool) -> String {
    let mut sql = String::from(concat!(
        "SELECT seq, ",
        event_columns!(),
        ", prev_hash, hash, ",
        log_index!(),
        " FROM audit_events WHERE tenant_id = $1 AND seq < $2"
    ));
    let mut n = 2;
    let given = [
        ("workflow =", f.workflow.is_some()),
        ("workload =", f.workload.is_some()),
        ("client_id =", f.client_id.is_some()),
        ("action =", f.action.is_some()),
        (
            if postgres {
                "mcp->>'method' ="
            } else {
                "json_extract(mcp, '$.method') ="
            },
            f.method.is_some(),
        ),
        ("lease_id =", f.lease_id.is_some()),
        ("at >=", f.since.is_some()),
        ("at <", f.until.is_some()),
    ];
    for (condition, _) in given.iter().filter(|(_, on)| *on) {
        n += 1;
        sql.push_str(&format!(" AND {condition} ${n}"));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", n + 1));
    sql
}

impl Conn<'_> {
    /// Appends events as log entries: each carries its own content hash and
    /// no link, so concurrent writers (on any replica) share no row; a
    /// trigger queues each for the integrator (`audit_pending`). Commits
    /// with the transaction it runs in.
    pub async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<()> {
        self.insert_audit(events, false).await.map(|_| ())
    }

    /// Appends the events whose id is not recorded yet (a sender's retry,
    /// or the same event from two senders at once) and returns how many were
    /// new. The id's unique constraint decides, so no lock is needed.
    pub async fn append_audit_once(&mut self, events: &[AuditEvent]) -> Result<u64> {
        self.insert_audit(events, true).await
    }

    async fn insert_audit(&mut self, events: &[AuditEvent], skip_known: bool) -> Result<u64> {
        // Hashed as stored, so the hash recomputed from the row matches.
        let events: Vec<std::borrow::Cow<'_, AuditEvent>> = events.iter().map(AuditEvent::as_stored).collect();
        let links: Vec<(String, String)> = events
            .iter()
            .map(|e| (String::new(), crate::keys::seal::hex(&e.content_hash())))
            .collect();
        self.insert_linked(&events, &links, skip_known).await
    }

    /// Appends events linked as a chain, as writers did before the log, and
    /// off the log's queue, as events from before 0008 are (tests of the
    /// chain's verification only).
    #[cfg(test)]
    pub async fn append_chained(&mut self, events: &[AuditEvent]) -> Result<()> {
        let (mut head, count) = self.audit_head().await?;
        let mut links = Vec::new();
        for e in events {
            let hash = e.chain_hash(&head);
            links.push((std::mem::replace(&mut head, hash.clone()), hash));
        }
        self.insert_linked(events, &links, false).await?;
        run!(self, c => sqlx::query("UPDATE audit_chain SET head = $1, count = $2 WHERE id = 1")
            .bind(&head).bind(count + events.len() as i64).execute(c).await.map(|r| r.rows_affected()))?;
        run!(self, c => sqlx::query("DELETE FROM audit_pending WHERE seq IN (SELECT seq FROM audit_events WHERE prev_hash <> '')")
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    async fn insert_linked<E: std::borrow::Borrow<AuditEvent> + Sync>(
        &mut self,
        events: &[E],
        links: &[(String, String)],
        skip_known: bool,
    ) -> Result<u64> {
        let mut inserted = 0;
        // 19 parameters a row: 1,000 rows stay under Postgres's limit.
        for (events, links) in events.chunks(1000).zip(links.chunks(1000)) {
            inserted += run!(self, c => {
                let mut q = sqlx::QueryBuilder::new(concat!("INSERT INTO audit_events (", event_columns!(), ", prev_hash, hash) "));
                q.push_values(events.iter().zip(links), |mut row, (e, (prev, hash))| {
                    let e: &AuditEvent = e.borrow();
                    row.push_bind(e.id).push_bind(e.at).push_bind(&e.action).push_bind(&e.outcome)
                        .push_bind(e.reason.as_deref()).push_bind(e.tenant.as_deref()).push_bind(e.workflow.as_deref())
                        .push_bind(e.workload.as_deref()).push_bind(e.client_id.as_deref())
                        .push_bind(e.actor.as_ref().map(Json)).push_bind(e.admin.as_ref().map(Json))
                        .push_bind(e.resource.as_deref()).push_bind(e.scopes.as_ref().map(Json)).push_bind(e.lease_id)
                        .push_bind(e.request_id.as_deref()).push_bind(e.source.as_deref()).push_bind(e.mcp.as_ref().map(Json))
                        .push_bind(prev).push_bind(hash);
                });
                if skip_known {
                    q.push(" ON CONFLICT (id) DO NOTHING");
                }
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(inserted)
    }

    /// The writer order in shared mode, then the catalog sequence: a lease
    /// batch takes it so that a catalog change, a revocation or a key
    /// rotation (which take it exclusively, `lock_chain`) is ordered wholly
    /// before or after the batch, while batches do not wait for each other.
    /// Two statements: the sequence is read with a snapshot taken after the
    /// lock is granted. On SQLite the transaction's write lock already
    /// orders everything.
    pub async fn share_writer_order(&mut self) -> Result<i64> {
        if self.is_postgres() {
            run!(self, c => sqlx::query(crate::storage::backend::WRITER_ORDER_SHARED)
                .execute(c).await.map(|r| r.rows_affected()))?;
        }
        self.catalog_seq().await
    }

    /// The catalog sequence now (read before a tenant's catalog rows).
    pub async fn catalog_seq(&mut self) -> Result<i64> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, i64>("SELECT catalog_seq FROM audit_chain WHERE id = 1")
            .fetch_one(c).await)?,
        )
    }

    /// A tenant's events newest first (see `list_audit_sql`).
    pub async fn list_audit(
        &mut self,
        tenant: &str,
        f: &AuditFilter,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<ChainedEvent>> {
        let sql = list_audit_sql(f, self.is_postgres());
        Ok(run!(self, c => {
            let mut q = sqlx::query_as::<_, ChainedEvent>(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(before_seq);
            for v in [&f.workflow, &f.workload, &f.client_id, &f.action, &f.method].into_iter().flatten() {
                q = q.bind(v.as_str());
            }
            if let Some(id) = f.lease_id {
                q = q.bind(id);
            }
            for t in [f.since, f.until].into_iter().flatten() {
                q = q.bind(t);
            }
            q.bind(limit).fetch_all(c).await
        })?)
    }

    /// Mints (`token.issued`, `token.exchanged`) and denials (`token.denied`)
    /// of `tenant` per minute since `from` (minute-aligned) and before `to`:
    /// `(action, minute index, count)`. One range of the `(tenant_id, at,
    /// action)` index, however long the trail; the window is the caller's bound.
    pub async fn audit_minutes(
        &mut self,
        tenant: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, i64, i64)>> {
        let sql = if self.is_postgres() {
            AUDIT_MINUTES_POSTGRES
        } else {
            AUDIT_MINUTES_SQLITE
        };
        Ok(run!(self, c => sqlx::query_as::<_, (String, i64, i64)>(sql)
            .bind(tenant).bind(from).bind(to).fetch_all(c).await)?)
    }

    /// Events in chain order after `after_seq`, for verification.
    pub async fn audit_chain_page(&mut self, after_seq: i64, limit: i64) -> Result<Vec<ChainedEvent>> {
        Ok(run!(self, c => sqlx::query_as::<_, ChainedEvent>(concat!(
            "SELECT seq, ", event_columns!(), ", prev_hash, hash, ", log_index!(),
            " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(after_seq).bind(limit).fetch_all(c).await)?)
    }

    /// The events that seal the chain written before the log (one, once
    /// the log has begun on a database that had a chain).
    pub async fn chain_seals(&mut self) -> Result<Vec<AuditEvent>> {
        Ok(
            run!(self, c => sqlx::query_as::<_, AuditEvent>(concat!("SELECT ", event_columns!(),
            " FROM audit_events WHERE tenant_id IS NULL AND action = 'audit.chain_sealed' ORDER BY seq"))
            .fetch_all(c).await)?,
        )
    }

    /// The chain head hash and the number of events appended.
    pub async fn audit_head(&mut self) -> Result<(String, i64)> {
        Ok(
            run!(self, c => sqlx::query_as::<_, (String, i64)>("SELECT head, count FROM audit_chain WHERE id = 1")
            .fetch_one(c).await)?,
        )
    }
}

impl Conn<'_> {
    /// Stores a MAC'd checkpoint of the pre-log chain (nothing writes new
    /// ones since the log superseded them; the re-MAC test seeds some).
    #[cfg(test)]
    pub async fn insert_checkpoint(&mut self, cp: &crate::audit::checkpoint::Checkpoint) -> Result<()> {
        run!(self, c => sqlx::query("INSERT INTO audit_checkpoints (count, head, at, mac) VALUES ($1, $2, $3, $4)")
            .bind(cp.count).bind(&cp.head).bind(cp.at).bind(&cp.mac)
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Replaces a stored checkpoint's MAC (the master key was rotated).
    pub async fn replace_checkpoint_mac(&mut self, old: &str, new: &str) -> Result<u64> {
        Ok(
            run!(self, c => sqlx::query("UPDATE audit_checkpoints SET mac = $2 WHERE mac = $1")
            .bind(old).bind(new).execute(c).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Stored checkpoints, oldest first.
    pub async fn checkpoints(&mut self) -> Result<Vec<crate::audit::checkpoint::Checkpoint>> {
        Ok(
            run!(self, c => sqlx::query_as::<_, crate::audit::checkpoint::Checkpoint>(
            "SELECT count, head, at, mac FROM audit_checkpoints ORDER BY count, id")
            .fetch_all(c).await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Pooled;

    /// SQLite's plan of `sql` with `binds` (text), one detail line per step.
    async fn plan(store: &crate::storage::Store, sql: &str, binds: &[&str]) -> String {
        let Pooled::Sqlite(mut c) = store.read().await.unwrap() else {
            unreachable!("a SQLite test store")
        };
        let mut q =
            sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&mut *c).await.unwrap();
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn an_audit_list_names_only_the_filters_given() {
        let none = list_audit_sql(&AuditFilter::default(), true);
        assert!(
            none.ends_with("WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"),
            "{none}"
        );
        let f = AuditFilter {
            action: Some("token.issued".into()),
            until: Some(DateTime::<Utc>::UNIX_EPOCH),
            ..Default::default()
        };
        let sql = list_audit_sql(&f, true);
        assert!(
            sql.ends_with("AND action = $3 AND at < $4 ORDER BY seq DESC LIMIT $5"),
            "{sql}"
        );
        assert!(!sql.contains("IS NULL"), "{sql}");
    }

    #[tokio::test]
    async fn audit_lists_by_action_and_the_minute_counts_read_their_indexes() {
        let (store, _dir) = crate::testing::temp_store().await;
        let by_action = list_audit_sql(
            &AuditFilter {
                action: Some("token.issued".into()),
                ..Default::default()
            },
            false,
        );
        let p = plan(&store, &by_action, &["acme", "9", "token.issued", "10"]).await;
        assert!(p.contains("audit_events_action_idx"), "{p}");
        let (from, to) = ("2026-01-01T00:00:00+00:00", "2026-01-01T00:30:00+00:00");
        let p = plan(&store, AUDIT_MINUTES_SQLITE, &["acme", from, to]).await;
        assert!(p.contains("audit_events_at_idx"), "{p}");
        assert!(!p.contains("SCAN audit_events"), "{p}");
    }
}
