//! Lease lookups for introspection, shared: concurrent checks hand their
//! lease ids to one task, which reads each gathered set with one query (lease
//! rows with their revocation probe) and answers every waiter. A few such
//! queries run at once, so a slow one does not hold up the next set. It
//! never answers from memory: a token the database does not know is never
//! active, even if a signing key leaked.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::sql::LeaseStatus;
use crate::storage::gather::Gather;
use crate::storage::{Store, StoreError};

/// Most leases read by one query.
const MAX_BATCH: usize = 256;
/// Queries in flight at once.
const IN_FLIGHT: usize = 4;

type Answer = Result<Option<LeaseStatus>, Arc<StoreError>>;

#[derive(Clone, Debug)]
pub struct LeaseProbe {
    gather: Gather<Uuid, Answer>,
}

/// One query for a gathered set of lease ids; an answer per id, in order.
async fn answer(store: Store, ids: Vec<Uuid>) -> Vec<Answer> {
    let found = async { store.read().await?.conn().lease_statuses(&ids).await }.await;
    metrics::histogram!("mayfly_introspection_batch_size").record(ids.len() as f64);
    match found {
        Ok(rows) => {
            let by_id: HashMap<Uuid, LeaseStatus> = rows.into_iter().map(|s| (s.lease.id, s)).collect();
            ids.iter().map(|id| Ok(by_id.get(id).cloned())).collect()
        }
        Err(e) => {
            let e = Arc::new(e);
            ids.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

impl LeaseProbe {
    /// Starts the gathering task; it ends when the last `LeaseProbe` is dropped.
    pub fn spawn(store: Store) -> Self {
        Self {
            gather: Gather::spawn(MAX_BATCH, IN_FLIGHT, move |ids| answer(store.clone(), ids)),
        }
    }

    /// The lease with the first rule revoking it; None if there is no such lease.
    pub async fn status(&self, id: Uuid) -> Result<Option<LeaseStatus>, StoreError> {
        let gone = || StoreError::Unavailable("the lease probe has stopped".into());
        self.gather.ask(id).await.ok_or_else(gone)?.map_err(StoreError::unshare)
    }
}
