//! The audit log as a service: append events in a transaction of their own,
//! and recompute the whole chain. Appends inside a larger transaction go
//! through `Conn::append_audit` directly, so they commit with what they record.

use chrono::{DateTime, TimeDelta, Utc};

use super::checkpoint::Checkpoint;
use super::note::NoteVerifier;
use super::sql::AuditFilter;
use super::{AuditEvent, ChainVerifier, ChainedEvent, Verification, actions};
use crate::storage::gate::bounded;
use crate::storage::{Store, StoreError};

/// The longest window the per-minute counts read.
pub const STATS_MAX_MINUTES: usize = 60;

#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Appends events in a transaction of their own.
    pub async fn append(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.conn().append_audit(events).await?;
        tx.commit().await
    }

    /// A tenant's events, newest first, before sequence `before`. An admin
    /// list: it takes a slot of the list gate (busy past the tenant's or the
    /// process's share) and runs under the list statement timeout.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        before: i64,
        limit: i64,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        let mut read = self.store.list_read(tenant).await?;
        bounded(read.tx.conn().list_audit(tenant, filter, before, limit)).await
    }

    /// Mints and denials of `tenant` per minute, for `minutes` minutes from
    /// `from` (minute-aligned; at most an hour): `(minted, denied)` per
    /// minute. Gated and timed like a list.
    pub async fn minutes(
        &self,
        tenant: &str,
        from: DateTime<Utc>,
        minutes: usize,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let minutes = minutes.min(STATS_MAX_MINUTES);
        let to = from + TimeDelta::minutes(minutes as i64);
        let mut read = self.store.list_read(tenant).await?;
        let rows = bounded(read.tx.conn().audit_minutes(tenant, from, to)).await?;
        let mut out = vec![(0, 0); minutes];
        for (action, minute, count) in rows {
            let Some(m) = usize::try_from(minute).ok().and_then(|i| out.get_mut(i)) else {
                continue;
            };
            let count = u64::try_from(count).unwrap_or(0);
            if action == actions::TOKEN_DENIED {
                m.1 += count;
            } else {
                m.0 += count;
            }
        }
        Ok(out)
    }

    /// Verifies the whole record: the chain written before the log (below),
    /// then the transparency log (`verify::verify_tree`) against its stored
    /// signed checkpoints and `notes` kept elsewhere, checked with `pinned`
    /// or else the log's stored key. The first finding is reported.
    pub async fn verify(
        &self,
        key: Option<&ring::hmac::Key>,
        exported: &[Checkpoint],
        notes: &[String],
        pinned: Option<&NoteVerifier>,
    ) -> Result<Verification, StoreError> {
        let mut v = self.verify_chain(key, exported).await?;
        let stored = super::verify::stored_verifier_key(&self.store).await?;
        let stored = stored.and_then(|k| NoteVerifier::parse(&k).ok());
        let Some(log_key) = pinned.or(stored.as_ref()) else {
            let size = self.store.read().await?.conn().log_size().await?;
            if size > 0 && v.ok {
                v.ok = false;
                v.problem = Some(format!(
                    "the log has {size} events but no key to check its checkpoints with"
                ));
            }
            return Ok(v);
        };
        let tree = super::verify::verify_tree(&self.store, log_key, notes).await?;
        v.checked += tree.checked;
        v.log_size = Some(tree.size);
        if v.ok && tree.problem.is_some() {
            v.ok = false;
            v.first_broken = tree.first_broken;
            v.problem = tree.problem;
        }
        Ok(v)
    }

    /// Walks the chain from the first event to the head recorded when the
    /// walk began (the chain ended there when the log began), and checks its
    /// length against the recorded count and against checkpoints: those
    /// stored in the database and `exported` ones kept elsewhere. With `key`,
    /// a checkpoint that is not authentic is itself a finding.
    async fn verify_chain(
        &self,
        key: Option<&ring::hmac::Key>,
        exported: &[Checkpoint],
    ) -> Result<Verification, StoreError> {
        let mut conn = self.store.read().await?;
        let (head, count) = conn.conn().audit_head().await?;
        let mut checkpoints = conn.conn().checkpoints().await?;
        checkpoints.extend_from_slice(exported);
        if let Some(key) = key
            && let Some(forged) = checkpoints.iter().find(|c| !c.is_authentic(key))
        {
            return Ok(Verification {
                ok: false,
                checked: 0,
                first_broken: None,
                problem: Some(format!("a checkpoint of {} events is not authentic", forged.count)),
                log_size: None,
            });
        }
        let mut verifier = ChainVerifier::default();
        let mut mismatch = None;
        let mut after = 0;
        'walk: loop {
            let page = conn.conn().audit_chain_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                if e.prev_hash.is_empty() {
                    // The first log entry: the chain ended before it.
                    break 'walk;
                }
                verifier.check(e);
                let n = verifier.checked as i64;
                if mismatch.is_none() && checkpoints.iter().any(|c| c.count == n && c.head != e.hash) {
                    mismatch = Some(e.event.id);
                }
                if e.hash == head {
                    break 'walk;
                }
            }
        }
        let checked = verifier.checked as i64;
        let mut v = verifier.finish(&head);
        if v.ok {
            let longest = checkpoints.iter().map(|c| c.count).max().unwrap_or(0);
            let problem = if let Some(id) = mismatch {
                v.first_broken = Some(id);
                Some("the chain differs from a checkpoint: events were replaced".to_string())
            } else if longest > checked {
                // No event is wrong: some are missing. `problem` says so.
                Some(format!(
                    "the chain has {checked} events but a checkpoint saw {longest}: its tail was removed"
                ))
            } else if checked != count {
                Some(format!("the chain has {checked} events but {count} were appended"))
            } else {
                None
            };
            v.ok = problem.is_none();
            v.problem = problem;
        }
        Ok(v)
    }
}
