//! Background upkeep of leases: marks the lease rows that revocation rules
//! cover (in bounded batches, after the revocation call has returned), and
//! prunes expired leases and rules that can no longer match anything.
//! Validity never waits for this: introspection consults the rules directly.

use std::time::Duration;

use chrono::TimeDelta;

use crate::app::AppState;
use crate::storage::StoreError;

/// Lease rows marked per statement: keeps each write short.
pub const MARK_BATCH: i64 = 1000;
const PRUNE_BATCH: i64 = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(300);

pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = state.sweeper.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if let Err(e) = mark_revoked(&state).await {
                tracing::warn!(error = %e, "marking revoked leases failed; will retry");
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                match prune(&state).await {
                    Ok((0, 0)) => {}
                    Ok((leases, rules)) => tracing::info!(leases, rules, "pruned expired leases and spent rules"),
                    Err(e) => tracing::warn!(error = %e, "pruning failed; will retry"),
                }
            }
        }
    })
}

/// Marks every lease row covered by a rule not yet fully marked. Returns the
/// number of rows marked.
pub async fn mark_revoked(state: &AppState) -> Result<u64, StoreError> {
    let mut total = 0;
    for rule in state.store.unmarked_revocations(100).await? {
        let mut after = 0;
        loop {
            let (n, last) = state
                .store
                .mark_revoked_batch(&rule, state.clock.now(), MARK_BATCH, after)
                .await?;
            total += n;
            after = last;
            metrics::counter!("mayfly_leases_marked_revoked_total").increment(n);
            if (n as i64) < MARK_BATCH {
                // Done from here; another replica may still hold a batch, and then the
                // rule stays open for the next sweep.
                state
                    .store
                    .finish_revocation_if_marked(&rule, state.clock.now())
                    .await?;
                break;
            }
        }
    }
    Ok(total)
}

/// Deletes leases expired longer than the retention, and rules whose every
/// possible match has expired. Returns (leases, rules) deleted.
pub async fn prune(state: &AppState) -> Result<(u64, u64), StoreError> {
    let now = state.clock.now();
    let retention = TimeDelta::from_std(state.config.lease_retention).unwrap_or(TimeDelta::days(7));
    let (mut leases, mut rules) = (0, 0);
    loop {
        let (l, r) = state.store.prune(now, now - retention, PRUNE_BATCH).await?;
        (leases, rules) = (leases + l, rules + r);
        if (l as i64) < PRUNE_BATCH {
            return Ok((leases, rules));
        }
    }
}
