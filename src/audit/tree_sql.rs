//! The transparency log's SQL: the log row (size, origin, sealed key), the
//! events waiting to be integrated, leaves, stored subtree hashes and signed
//! tree heads. Leaves, nodes and heads are append-only in the database.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::AuditEvent;
use super::merkle::{Hash, leaf_hash};
use super::tree::NodeId;
use crate::storage::{Conn, Result, StoreError, run};

/// An integrated event, in log order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogEntry {
    pub log_index: i64,
    /// The content hash the log recorded (32 bytes).
    pub leaf: Vec<u8>,
    #[sqlx(flatten)]
    pub event: AuditEvent,
}

/// One signed checkpoint as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TreeHead {
    pub size: i64,
    pub root: Vec<u8>,
    pub at: DateTime<Utc>,
    pub note: String,
}

/// The log's key as stored: origin, public key, PKCS#8 sealed under the master key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredLogKey {
    pub origin: Option<String>,
    pub public_key: Option<Vec<u8>>,
    pub sealed_key: Option<Vec<u8>>,
}

/// A stored hash that is not 32 bytes: the table was written by someone else.
fn hash32(bytes: &[u8]) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Conflict("a stored log hash is not 32 bytes".into()))
}

impl Conn<'_> {
    /// The log's size, holding its row for this transaction; `None` when
    /// another replica holds it (it is integrating). On SQLite the
    /// transaction's write lock already makes this the only integrator.
    pub async fn hold_log(&mut self) -> Result<Option<i64>> {
        let sql = if self.is_postgres() {
            "SELECT size FROM audit_log WHERE id = 1 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT size FROM audit_log WHERE id = 1"
        };
        Ok(run!(self, c => sqlx::query_scalar::<_, i64>(sql).fetch_optional(c).await)?)
    }

    pub async fn log_size(&mut self) -> Result<i64> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, i64>("SELECT size FROM audit_log WHERE id = 1")
            .fetch_one(c).await)?,
        )
    }

    /// Up to `limit` committed events not yet in the log, in write order:
    /// each one's sequence and the content hash its writer recorded.
    pub async fn pending_hashes(&mut self, limit: i64) -> Result<Vec<(i64, String)>> {
        Ok(run!(self, c => sqlx::query_as::<_, (i64, String)>(
            "SELECT e.seq, e.hash FROM audit_pending p JOIN audit_events e ON e.seq = p.seq ORDER BY p.seq LIMIT $1")
            .bind(limit).fetch_all(c).await)?)
    }

    /// Records a batch (its statements vary in shape with the batch, so
    /// none is kept prepared): its leaves from `first` on, the subtrees it
    /// completed, its signed head; takes its events off the queue.
    pub async fn extend_log(
        &mut self,
        first: i64,
        leaves: &[(i64, Hash)],
        nodes: &[(NodeId, Hash)],
        head: &TreeHead,
    ) -> Result<()> {
        // 3 parameters a row: 10,000 rows stay under Postgres's limit.
        for (i, chunk) in leaves.chunks(10_000).enumerate() {
            let base = first + (i * 10_000) as i64;
            run!(self, c => {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO audit_leaves (log_index, seq, hash) ");
                q.push_values(chunk.iter().enumerate(), |mut row, (j, (seq, hash))| {
                    row.push_bind(base + j as i64).push_bind(*seq).push_bind(hash.to_vec());
                });
                q.build().persistent(false).execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        for chunk in nodes.chunks(10_000) {
            run!(self, c => {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO audit_nodes (level, start, hash) ");
                q.push_values(chunk, |mut row, (id, hash)| {
                    row.push_bind(id.level as i16).push_bind(id.start as i64).push_bind(hash.to_vec());
                });
                q.build().persistent(false).execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        run!(self, c => sqlx::query(
            "DELETE FROM audit_pending WHERE seq IN (SELECT seq FROM audit_leaves WHERE log_index >= $1)")
            .bind(first).execute(c).await.map(|r| r.rows_affected()))?;
        run!(self, c => sqlx::query("INSERT INTO audit_tree_heads (size, root, at, note) VALUES ($1, $2, $3, $4)")
            .bind(head.size).bind(&head.root).bind(head.at).bind(&head.note)
            .execute(c).await.map(|r| r.rows_affected()))?;
        run!(self, c => sqlx::query("UPDATE audit_log SET size = $1 WHERE id = 1")
            .bind(head.size).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The stored hashes of `ids` that exist: leaves (level 0) as RFC 6962
    /// leaf hashes of their content hash, nodes as stored.
    pub async fn stored_hashes(&mut self, ids: &BTreeSet<NodeId>) -> Result<HashMap<NodeId, Hash>> {
        let mut out = HashMap::with_capacity(ids.len());
        let leaves: Vec<i64> = ids
            .iter()
            .filter(|id| id.level == 0)
            .map(|id| id.start as i64)
            .collect();
        for chunk in leaves.chunks(500) {
            let rows = run!(self, c => {
                let mut q = sqlx::QueryBuilder::new("SELECT log_index, hash FROM audit_leaves WHERE log_index IN (");
                let mut list = q.separated(", ");
                for i in chunk {
                    list.push_bind(*i);
                }
                q.push(")");
                q.build_query_as::<(i64, Vec<u8>)>().persistent(false).fetch_all(c).await
            })?;
            for (i, h) in rows {
                out.insert(
                    NodeId {
                        level: 0,
                        start: i as u64,
                    },
                    leaf_hash(&hash32(&h)?),
                );
            }
        }
        let nodes: Vec<NodeId> = ids.iter().filter(|id| id.level > 0).copied().collect();
        for chunk in nodes.chunks(200) {
            let rows = run!(self, c => {
                let mut q = sqlx::QueryBuilder::new("SELECT level, start, hash FROM audit_nodes WHERE ");
                for (n, id) in chunk.iter().enumerate() {
                    if n > 0 {
                        q.push(" OR ");
                    }
                    q.push("(level = ").push_bind(id.level as i16).push(" AND start = ").push_bind(id.start as i64).push(")");
                }
                q.build_query_as::<(i16, i64, Vec<u8>)>().persistent(false).fetch_all(c).await
            })?;
            for (level, start, h) in rows {
                out.insert(
                    NodeId {
                        level: level as u32,
                        start: start as u64,
                    },
                    hash32(&h)?,
                );
            }
        }
        Ok(out)
    }

    /// Events written as log entries (no chain link) that are neither
    /// integrated nor queued: taken off the queue by hand.
    pub async fn events_outside_log(&mut self) -> Result<i64> {
        Ok(run!(self, c => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_events e WHERE e.prev_hash = ''
               AND NOT EXISTS (SELECT 1 FROM audit_leaves l WHERE l.seq = e.seq)
               AND NOT EXISTS (SELECT 1 FROM audit_pending p WHERE p.seq = e.seq)")
            .fetch_one(c).await)?)
    }

    pub async fn latest_tree_head(&mut self) -> Result<Option<TreeHead>> {
        Ok(run!(self, c => sqlx::query_as::<_, TreeHead>(
            "SELECT size, root, at, note FROM audit_tree_heads ORDER BY size DESC LIMIT 1")
            .fetch_optional(c).await)?)
    }

    /// Signed heads after `after_size`, smallest first.
    pub async fn tree_heads_page(&mut self, after_size: i64, limit: i64) -> Result<Vec<TreeHead>> {
        Ok(run!(self, c => sqlx::query_as::<_, TreeHead>(
            "SELECT size, root, at, note FROM audit_tree_heads WHERE size > $1 ORDER BY size LIMIT $2")
            .bind(after_size).bind(limit).fetch_all(c).await)?)
    }

    /// Integrated events from `from` on, in log order.
    pub async fn log_entries(&mut self, from: i64, limit: i64) -> Result<Vec<LogEntry>> {
        Ok(run!(self, c => sqlx::query_as::<_, LogEntry>(concat!(
            "SELECT l.log_index, l.hash AS leaf, ", super::sql::event_columns!(),
            " FROM audit_leaves l JOIN audit_events e ON e.seq = l.seq
             WHERE l.log_index >= $1 ORDER BY l.log_index LIMIT $2"))
            .bind(from).bind(limit).fetch_all(c).await)?)
    }

    /// The integrated event with this id, if it is one.
    pub async fn log_entry_of(&mut self, id: uuid::Uuid) -> Result<Option<LogEntry>> {
        Ok(run!(self, c => sqlx::query_as::<_, LogEntry>(concat!(
            "SELECT l.log_index, l.hash AS leaf, ", super::sql::event_columns!(),
            " FROM audit_leaves l JOIN audit_events e ON e.seq = l.seq WHERE e.id = $1"))
            .bind(id).fetch_optional(c).await)?)
    }

    /// The content hash at `index` and its event's tenant (none: a global event).
    pub async fn log_leaf(&mut self, index: i64) -> Result<Option<(Vec<u8>, Option<String>)>> {
        Ok(run!(self, c => sqlx::query_as::<_, (Vec<u8>, Option<String>)>(
            "SELECT l.hash, e.tenant_id FROM audit_leaves l JOIN audit_events e ON e.seq = l.seq WHERE l.log_index = $1")
            .bind(index).fetch_optional(c).await)?)
    }

    pub async fn log_key(&mut self) -> Result<StoredLogKey> {
        Ok(run!(self, c => sqlx::query_as::<_, StoredLogKey>(
            "SELECT origin, public_key, sealed_key FROM audit_log WHERE id = 1").fetch_one(c).await)?)
    }

    /// Records the log's key unless one is recorded (another replica won).
    pub async fn init_log_key(&mut self, origin: &str, public: &[u8], sealed: &[u8]) -> Result<()> {
        run!(self, c => sqlx::query(
            "UPDATE audit_log SET origin = $1, public_key = $2, sealed_key = $3 WHERE id = 1 AND sealed_key IS NULL")
            .bind(origin).bind(public).bind(sealed).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Replaces the sealed key (the master key is being rotated).
    pub async fn reseal_log_key(&mut self, sealed: &[u8]) -> Result<()> {
        run!(self, c => sqlx::query("UPDATE audit_log SET sealed_key = $1 WHERE id = 1")
            .bind(sealed).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
