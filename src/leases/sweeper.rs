//! Background upkeep of leases: marks the lease rows that revocation rules
//! cover (in bounded batches, after the revocation call has returned), and
//! prunes expired leases and rules that can no longer match anything.
//! Validity never waits for this: introspection consults the rules directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::storage::{Store, StoreError};

/// Lease rows marked per statement: keeps each write short.
pub const MARK_BATCH: i64 = 1000;
const PRUNE_BATCH: i64 = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How often the live-lease gauges are recounted.
const COUNT_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Sweeper {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Expired leases stay queryable this long.
    retention: TimeDelta,
    wake: Arc<Notify>,
    batch: i64,
}

impl Sweeper {
    /// `wake` is the notifier `Revocations` pokes after each rule.
    pub fn new(store: Store, clock: Arc<dyn Clock>, retention: Duration, wake: Arc<Notify>) -> Self {
        Self {
            store,
            clock,
            retention: TimeDelta::from_std(retention).unwrap_or(TimeDelta::days(7)),
            wake,
            batch: MARK_BATCH,
        }
    }

    /// Marks and prunes until the task is dropped: at once when woken, and
    /// every two seconds anyway.
    pub async fn run(self) {
        let mut last_prune: Option<tokio::time::Instant> = None;
        let mut last_count: Option<tokio::time::Instant> = None;
        let mut counted: HashSet<String> = HashSet::new();
        loop {
            if last_count.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
                last_count = Some(tokio::time::Instant::now());
                self.count_live(&mut counted).await;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if let Err(e) = self.mark_revoked().await {
                tracing::warn!(error = %e, "marking revoked leases failed; will retry");
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                match self.prune().await {
                    Ok((0, 0)) => {}
                    Ok((leases, rules)) => tracing::info!(leases, rules, "pruned expired leases and spent rules"),
                    Err(e) => tracing::warn!(error = %e, "pruning failed; will retry"),
                }
            }
        }
    }

    /// Sets `mayfly_live_leases{tenant}` (unexpired, unmarked: a rule's rows
    /// are marked within seconds); a tenant with none left reads 0.
    async fn count_live(&self, counted: &mut HashSet<String>) {
        let now = self.clock.now();
        let counts = match self.store.read().await {
            Ok(mut c) => c.conn().count_live_leases_by_tenant(now).await,
            Err(e) => Err(e),
        };
        match counts {
            Ok(counts) => {
                let mut seen = HashSet::new();
                for (tenant, n) in counts {
                    metrics::gauge!("mayfly_live_leases", "tenant" => tenant.clone()).set(n as f64);
                    seen.insert(tenant);
                }
                for gone in counted.difference(&seen) {
                    metrics::gauge!("mayfly_live_leases", "tenant" => gone.clone()).set(0.0);
                }
                *counted = seen;
            }
            Err(e) => tracing::warn!(error = %e, "counting live leases failed; will retry"),
        }
    }

    /// Marks every lease row covered by a rule not yet fully marked. Returns
    /// the number of rows marked.
    pub async fn mark_revoked(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        let rules = self.store.read().await?.conn().unmarked_revocations(100).await?;
        for rule in rules {
            let mut after = 0;
            loop {
                let mut tx = self.store.begin().await?;
                let (n, last) = tx
                    .conn()
                    .mark_revoked_batch(&rule, self.clock.now(), self.batch, after)
                    .await?;
                tx.commit().await?;
                total += n;
                after = last;
                metrics::counter!("mayfly_leases_marked_revoked_total").increment(n);
                if (n as i64) < self.batch {
                    // Done from here; another replica may still hold a batch, and
                    // then the rule stays open for the next sweep.
                    let mut c = self.store.read().await?;
                    c.conn().finish_revocation_if_marked(&rule, self.clock.now()).await?;
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Deletes leases expired longer than the retention, and rules whose
    /// every possible match has expired. Returns (leases, rules) deleted.
    pub async fn prune(&self) -> Result<(u64, u64), StoreError> {
        let now = self.clock.now();
        let mut c = self.store.read().await?;
        let mut leases = 0;
        loop {
            let n = c.conn().prune_leases(now - self.retention, PRUNE_BATCH).await?;
            leases += n;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        let rules = c.conn().prune_revocations(now).await?;
        // Assertions that have expired can no longer be replayed.
        c.conn().prune_used_assertions(now).await?;
        // People's expired authorization requests and refresh tokens.
        c.conn().prune_people(now).await?;
        Ok((leases, rules))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::audit::Caller;
    use crate::leases::{Cover, Revocations, Selector};
    use crate::testing::{lease, temp_store};

    #[tokio::test]
    async fn rows_are_marked_in_batches_counted_on_the_rule_and_the_rule_finished() {
        let (store, _dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let wake = Arc::new(Notify::new());
        let day = Duration::from_secs(86_400);
        let revocations = Revocations::new(store.clone(), clock.clone(), wake.clone(), day, day);
        let mut sweeper = Sweeper::new(store.clone(), clock.clone(), day, wake);
        sweeper.batch = 3;

        let now = clock.now();
        let mut leases: Vec<_> = (0..7).map(|_| lease("acme", "release", now)).collect();
        leases.push(lease("acme", "nightly", now));
        let mut tx = store.begin().await.unwrap();
        tx.conn().insert_leases(&leases).await.unwrap();
        let rule = revocations
            .record(
                &mut tx,
                &Caller::system("test"),
                Some("acme"),
                &Selector::Workflow("release".into()),
                "test",
                Cover::UpToNow,
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();

        assert_eq!(sweeper.mark_revoked().await.unwrap(), 7, "3 + 3 + 1");
        let mut c = store.read().await.unwrap();
        let rules = c.conn().revocation_feed(None, 0, 10).await.unwrap();
        assert_eq!(rules[0].id, rule.id);
        assert_eq!(rules[0].leases_revoked, 7);
        assert!(rules[0].marked_at.is_some());
        let nightly = c.conn().lease_status(leases[7].id, None).await.unwrap();
        assert!(nightly.lease.revoked_at.is_none());
        let marked = c.conn().lease_status(leases[0].id, None).await.unwrap();
        assert_eq!(marked.lease.revocation_id, Some(rule.id));
        // Nothing left: a second sweep marks nothing.
        assert_eq!(sweeper.mark_revoked().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn expired_leases_are_pruned_after_the_retention() {
        let (store, _dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let sweeper = Sweeper::new(
            store.clone(),
            clock.clone(),
            Duration::from_secs(3600),
            Arc::new(Notify::new()),
        );
        let old = lease("acme", "release", clock.now());
        let mut tx = store.begin().await.unwrap();
        tx.conn().insert_leases(std::slice::from_ref(&old)).await.unwrap();
        tx.commit().await.unwrap();
        clock.advance(TimeDelta::minutes(30));
        assert_eq!(sweeper.prune().await.unwrap(), (0, 0), "expired, but within retention");
        clock.advance(TimeDelta::minutes(60));
        assert_eq!(sweeper.prune().await.unwrap(), (1, 0));
    }
}
