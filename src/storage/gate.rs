//! Bounds on admin list queries (leases, audit events, the console's tenant
//! counts and per-minute stats), so a tenant admin scanning its whole
//! history cannot starve minting: each runs in a read transaction with a
//! statement timeout, at most two at a time per tenant and a quarter of the
//! pool across tenants; past that a list answers "busy" (503 `unavailable`,
//! `Retry-After: 1`) at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Pool, Result, Store, StoreError, Tx, TxInner};

/// How long one admin list statement may run.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// List slots one tenant may hold at once.
pub const PER_TENANT: usize = 2;

#[derive(Debug)]
pub struct ReadGate {
    all: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl ReadGate {
    pub fn new(total: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(total.max(1))),
            tenants: Mutex::default(),
        }
    }

    fn enter(&self, tenant: &str) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let busy = || StoreError::Busy("too many list queries running; retry shortly".into());
        let per_tenant = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            if tenants.len() > 10_000 {
                tenants.retain(|_, s| s.available_permits() < PER_TENANT);
            }
            tenants
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_TENANT)))
                .clone()
        };
        let mine = per_tenant.try_acquire_owned().map_err(|_| busy())?;
        let ours = self.all.clone().try_acquire_owned().map_err(|_| busy())?;
        Ok((mine, ours))
    }
}

/// A bounded read transaction; dropping it ends the read and frees its slot.
pub struct ListRead {
    pub tx: Tx,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Store {
    /// A read transaction for one of `tenant`'s admin lists: a slot in the
    /// gate, and a statement timeout (Postgres enforces it; on SQLite the
    /// caller's future is bounded by the same time).
    pub async fn list_read(&self, tenant: &str) -> Result<ListRead> {
        let permits = self.gate.enter(tenant)?;
        let tx = match &self.pool {
            Pool::Postgres(p) => {
                let mut t = p.begin().await?;
                // Custom plans too: a list's statement is prepared once per
                // connection, and a generic plan cannot know a filter is
                // selective (an audit list by a rare action would walk the
                // whole trail by `seq` instead of the action index).
                sqlx::query(
                    "SELECT set_config('statement_timeout', $1, true), \
                            set_config('plan_cache_mode', 'force_custom_plan', true)",
                )
                .bind(LIST_TIMEOUT.as_millis().to_string())
                .execute(&mut *t)
                .await?;
                Tx::new(TxInner::Postgres(t))
            }
            // A deferred transaction: reads take no write lock.
            Pool::Sqlite(p) => Tx::new(TxInner::Sqlite(p.begin().await?)),
        };
        Ok(ListRead { tx, _permits: permits })
    }
}

/// Runs a list query under the statement timeout on every backend.
pub async fn bounded<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(LIST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(StoreError::Busy("the list query took too long; narrow it".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_two_list_slots_and_the_rest_wait_for_nobody() {
        let gate = ReadGate::new(3);
        let a1 = gate.enter("a").unwrap();
        let _a2 = gate.enter("a").unwrap();
        assert!(
            matches!(gate.enter("a"), Err(StoreError::Busy(_))),
            "a third list of one tenant"
        );
        let _b = gate.enter("b").unwrap();
        assert!(
            matches!(gate.enter("c"), Err(StoreError::Busy(_))),
            "the whole gate is full"
        );
        drop(a1);
        assert!(gate.enter("c").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_past_its_time_is_busy_not_hung() {
        let slow = bounded(std::future::pending::<Result<()>>());
        assert!(matches!(slow.await, Err(StoreError::Busy(_))));
    }
}
