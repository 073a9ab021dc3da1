//! The audit log as a service: append events in a transaction of their own,
//! and recompute the whole chain. Appends inside a larger transaction go
//! through `Conn::append_audit` directly, so they commit with what they record.

use chrono::{DateTime, TimeDelta, Utc};

use super::checkpoint::Checkpoint;
use super::note::NoteVerifier;
use super::sql::AuditFilter;
use super::{AuditEvent, ChainVerifier, ChainedEvent, Verification, actions};
#[cfg(test)]
use crate::storage::Pooled;
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
        if v.ok
            && let Some(problem) = self.check_seal().await?
        {
            v.ok = false;
            v.problem = Some(problem);
        }
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

    /// The chain's end must be what the log's seal event recorded (written
    /// when the log began on a database with a chain): a chain cut or
    /// rewound since, or events moved out of it, no longer match.
    async fn check_seal(&self) -> Result<Option<String>, StoreError> {
        let mut c = self.store.read().await?;
        let (head, count) = c.conn().audit_head().await?;
        let seals = c.conn().chain_seals().await?;
        let expected = super::chain_seal_reason(count, &head);
        Ok(match seals.as_slice() {
            [] if count == 0 => None,
            // Migrated but never served: the log has not begun.
            [] if c.conn().log_size().await? == 0 => None,
            [] => Some("the chain written before the log has no seal in the log".into()),
            [seal] if seal.reason.as_deref() == Some(expected.as_str()) => None,
            _ => Some("the chain written before the log does not end where the log's seal says".into()),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tlog::TransparencyLog;
    use crate::audit::{Outcome, actions};
    use crate::keys::seal::MasterKey;

    /// A database whose first events were chained (written before the log):
    /// the log seals the chain's end when it begins, both verify together,
    /// and moving chain events out of the chain (emptying their link and
    /// rewinding the head) is caught by the seal, not waved through.
    #[tokio::test]
    async fn the_chain_before_the_log_is_sealed_in_it_and_a_rewound_chain_is_caught() {
        let (store, _dir) = crate::testing::temp_store().await;
        let now = chrono::DateTime::UNIX_EPOCH;
        let old: Vec<AuditEvent> = (0..3)
            .map(|_| AuditEvent::new(actions::TOKEN_ISSUED, Outcome::Success, now))
            .collect();
        let mut tx = store.begin().await.unwrap();
        tx.conn().append_chained(&old).await.unwrap();
        tx.commit().await.unwrap();
        let master = MasterKey::from_bytes(&[7; 32]).unwrap();
        let log = TransparencyLog::open(store.clone(), "https://mayfly.test", &[&master], now)
            .await
            .unwrap();
        // A second start seals nothing more.
        TransparencyLog::open(store.clone(), "https://mayfly.test", &[&master], now)
            .await
            .unwrap();
        AuditLog::new(store.clone())
            .append(&[AuditEvent::new(actions::TOKEN_ISSUED, Outcome::Success, now)])
            .await
            .unwrap();
        while log.integrate(now).await.unwrap().is_some() {}
        let audit = AuditLog::new(store.clone());
        let v = audit.verify(None, &[], &[], None).await.unwrap();
        assert!(v.ok, "{v:?}");
        // The chain's three, then the log's two: the seal and the new one.
        assert_eq!(v.checked, 3 + 2);
        assert_eq!(store.read().await.unwrap().conn().chain_seals().await.unwrap().len(), 1);

        // The last chained event is made to look like a log entry and the
        // chain's head is moved back over it.
        let Pooled::Sqlite(mut c) = store.read().await.unwrap() else {
            unreachable!()
        };
        let second = old[1].chain_hash(&old[0].chain_hash(crate::audit::GENESIS));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TRIGGER audit_events_no_update;
             UPDATE audit_events SET prev_hash = '' WHERE seq = 3;
             UPDATE audit_chain SET head = '{second}', count = 2 WHERE id = 1;"
        )))
        .execute(&mut *c)
        .await
        .unwrap();
        drop(c);
        let v = audit.verify(None, &[], &[], None).await.unwrap();
        assert!(!v.ok);
        assert!(v.problem.unwrap().contains("does not end where the log's seal says"));
    }

    /// An integrated event deleted from the middle of the log, or two
    /// events' places swapped, is caught by `verify`.
    #[tokio::test]
    async fn a_deleted_or_reordered_event_is_caught() {
        for tamper in [
            "DROP TRIGGER audit_events_no_delete;
             DELETE FROM audit_events WHERE seq = (SELECT seq FROM audit_leaves WHERE log_index = 5);",
            // Events 3 and 4 trade places in the log.
            "DROP TRIGGER audit_leaves_no_update;
             CREATE TEMP TABLE was AS SELECT log_index, seq FROM audit_leaves WHERE log_index IN (3, 4);
             UPDATE audit_leaves SET seq = -seq WHERE log_index IN (3, 4);
             UPDATE audit_leaves SET seq = (SELECT seq FROM was WHERE was.log_index = 7 - audit_leaves.log_index)
             WHERE log_index IN (3, 4);",
        ] {
            let (store, _dir) = crate::testing::temp_store().await;
            let now = chrono::DateTime::UNIX_EPOCH;
            let master = MasterKey::from_bytes(&[7; 32]).unwrap();
            let log = TransparencyLog::open(store.clone(), "https://mayfly.test", &[&master], now)
                .await
                .unwrap();
            let audit = AuditLog::new(store.clone());
            for i in 0..8 {
                let mut e = AuditEvent::new(actions::TOKEN_ISSUED, Outcome::Success, now);
                e.reason = Some(format!("event {i}"));
                audit.append(&[e]).await.unwrap();
            }
            while log.integrate(now).await.unwrap().is_some() {}
            assert!(audit.verify(None, &[], &[], None).await.unwrap().ok);
            let Pooled::Sqlite(mut c) = store.read().await.unwrap() else {
                unreachable!()
            };
            sqlx::raw_sql(tamper).execute(&mut *c).await.unwrap();
            drop(c);
            let v = audit.verify(None, &[], &[], None).await.unwrap();
            assert!(!v.ok, "{tamper}: {v:?}");
        }
    }
}
