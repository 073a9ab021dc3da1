//! Lease lookups for introspection, shared: concurrent checks hand their
//! lease ids to one task, which reads each gathered set with one query (lease
//! rows with their revocation probe) and answers every waiter. A few such
//! queries run at once, so a slow one does not hold up the next set. It
//! never answers from memory: a token the database does not know is never
//! active, even if a signing key leaked.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::sql::LeaseStatus;
use crate::storage::{Store, StoreError};

/// Most leases read by one query.
const MAX_BATCH: usize = 256;
/// Queries in flight at once.
const IN_FLIGHT: usize = 4;

type Answer = Result<Option<LeaseStatus>, Arc<StoreError>>;

#[derive(Clone, Debug)]
pub struct LeaseProbe {
    queue: mpsc::Sender<(Uuid, oneshot::Sender<Answer>)>,
}

async fn answer(store: Store, items: Vec<(Uuid, oneshot::Sender<Answer>)>) {
    let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    let found = async { store.read().await?.conn().lease_statuses(&ids).await }.await;
    metrics::histogram!("mayfly_introspection_batch_size").record(items.len() as f64);
    match found {
        Ok(rows) => {
            let by_id: HashMap<Uuid, LeaseStatus> = rows.into_iter().map(|s| (s.lease.id, s)).collect();
            for (id, reply) in items {
                let _ = reply.send(Ok(by_id.get(&id).cloned()));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for (_, reply) in items {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

impl LeaseProbe {
    /// Starts the gathering task; it ends when the last `LeaseProbe` is dropped.
    pub fn spawn(store: Store) -> Self {
        let (queue, mut rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // While every slot is busy, more requests gather for the next query.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let items = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                let store = store.clone();
                tokio::spawn(async move {
                    answer(store, items).await;
                    drop(slot);
                });
            }
        });
        Self { queue }
    }

    /// The lease with the first rule revoking it; None if there is no such lease.
    pub async fn status(&self, id: Uuid) -> Result<Option<LeaseStatus>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Unavailable("the lease probe has stopped".into());
        self.queue.send((id, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map_err(StoreError::unshare)
    }
}
