//! Reading the record: a tenant's leases (with exact activity), its rules,
//! and the revocation feed offline verifiers poll.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::Revocation;
use super::sql::{LeaseFilter, LeaseStatus};
use crate::clock::Clock;
use crate::error::Error;
use crate::storage::gate::bounded;
use crate::storage::{Store, StoreError};

/// How often a long poll of the feed looks for rules other replicas made:
/// the most a revocation waits, past its commit, to reach a follower.
const FEED_LOOK: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Ledger {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl Ledger {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Leases of `tenant`, newest first, before sequence `before`.
    pub async fn leases(
        &self,
        tenant: &str,
        filter: &LeaseFilter,
        before: i64,
        limit: i64,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        let now = self.clock.now();
        let mut read = self.store.list_read(tenant).await?;
        bounded(read.tx.conn().list_leases(tenant, filter, now, before, limit)).await
    }

    pub async fn lease(&self, tenant: &str, id: &str) -> Result<LeaseStatus, Error> {
        let id: Uuid = id.parse().map_err(|_| Error::NotFound("lease"))?;
        self.store
            .read()
            .await?
            .conn()
            .lease_status(id, Some(tenant))
            .await
            .map_err(Error::or_not_found("lease"))
    }

    /// Unexpired, unmarked leases of each of `tenants` (the console's tenant
    /// list): one slot of `caller`'s in the list gate and one statement
    /// timeout for all the counts.
    pub async fn live_leases(&self, caller: &str, tenants: &[&str]) -> Result<Vec<i64>, StoreError> {
        let now = self.clock.now();
        let mut read = self.store.list_read(caller).await?;
        bounded(async {
            let mut counts = Vec::with_capacity(tenants.len());
            for t in tenants {
                counts.push(read.tx.conn().count_live_leases(t, now).await?);
            }
            Ok(counts)
        })
        .await
    }

    /// Rules of `tenant`, newest first (an admin list: gated and timed).
    pub async fn rules(&self, tenant: &str, before: i64, limit: i64) -> Result<Vec<Revocation>, StoreError> {
        let mut read = self.store.list_read(tenant).await?;
        bounded(read.tx.conn().list_revocations(tenant, before, limit)).await
    }

    /// As `feed`, but when nothing is past `after`, waits up to `wait` for a
    /// rule: woken at once by one made on this replica (`changed`), and
    /// looking again every `FEED_LOOK` for one made on another.
    pub async fn follow(
        &self,
        tenant: Option<&str>,
        after: i64,
        limit: i64,
        wait: Duration,
        changed: &Notify,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<Revocation>, StoreError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before the look, so a rule committed during it wakes us.
            let woken = changed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let rules = self.feed(tenant, after, limit).await?;
            let now = Instant::now();
            if !rules.is_empty() || now >= deadline || stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(rules);
            }
            let _ = tokio::time::timeout(FEED_LOOK.min(deadline - now), woken).await;
        }
    }

    /// Rules oldest first after `after`: one tenant's plus key rules, or all.
    pub async fn feed(&self, tenant: Option<&str>, after: i64, limit: i64) -> Result<Vec<Revocation>, StoreError> {
        self.store
            .read()
            .await?
            .conn()
            .revocation_feed(tenant, after, limit)
            .await
    }
}
