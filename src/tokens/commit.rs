//! Group commit for minting: concurrent mints hand their lease and audit
//! event to one writer task, which commits whatever has queued up in one
//! transaction and then answers each of them. A token is still returned only
//! after its own lease is durable; under load many leases share one commit
//! (and one turn of the audit-chain lock) instead of queueing for their own.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::audit::AuditEvent;
use crate::leases::Lease;
use crate::storage::{Store, StoreError};

/// Most leases committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// Each request gets its lease's sequence number, or the batch's error.
type Reply = oneshot::Sender<Result<i64, Arc<StoreError>>>;

/// Commits leases with their audit events, atomically. If the connection
/// fails before the commit is sent (nothing can have been written), the
/// batch is retried once on a fresh connection; a failed commit is not
/// retried, since its outcome is unknown.
async fn record(store: &Store, items: &[(Lease, AuditEvent)]) -> Result<Vec<i64>, StoreError> {
    let leases: Vec<Lease> = items.iter().map(|(l, _)| l.clone()).collect();
    let events: Vec<AuditEvent> = items.iter().map(|(_, e)| e.clone()).collect();
    let mut retried = false;
    loop {
        let staged = async {
            let mut tx = store.begin().await?;
            let seqs = tx.conn().insert_leases(&leases).await?;
            tx.conn().append_audit(&events).await?;
            Ok::<_, StoreError>((tx, seqs))
        }
        .await;
        match staged {
            Ok((tx, seqs)) => return tx.commit().await.map(|()| seqs),
            Err(e) if e.is_unavailable() && !retried => {
                tracing::warn!(error = %e, "lease batch failed before commit; retrying once");
                retried = true;
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IssueWriter {
    queue: mpsc::Sender<(Lease, AuditEvent, Reply)>,
}

impl IssueWriter {
    /// Starts the writer task; it ends when the last `IssueWriter` is dropped.
    pub fn spawn(store: Store) -> Self {
        let (queue, mut rx) = mpsc::channel::<(Lease, AuditEvent, Reply)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (items, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|(l, e, r)| ((l, e), r)).unzip();
                let result = record(&store, &items).await.map_err(Arc::new);
                metrics::histogram!("mayfly_mint_batch_size").record(items.len() as f64);
                for (i, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(match &result {
                        Ok(seqs) => seqs
                            .get(i)
                            .copied()
                            .ok_or_else(|| Arc::new(StoreError::Corrupt("lease batch lost a row".into()))),
                        Err(e) => Err(e.clone()),
                    });
                }
            }
        });
        Self { queue }
    }

    /// Commits one lease with its audit event; returns, once it is durable,
    /// the lease's sequence number.
    pub async fn commit(&self, lease: Lease, event: AuditEvent) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Unavailable("the lease writer has stopped".into());
        self.queue.send((lease, event, tx)).await.map_err(|_| gone())?;
        match rx.await.map_err(|_| gone())? {
            Ok(seq) => Ok(seq),
            // Shared by the whole batch: each request keeps the batch error's class.
            Err(shared) => Err(Arc::try_unwrap(shared).unwrap_or_else(|e| match &*e {
                StoreError::Unavailable(_) => StoreError::Unavailable(e.to_string()),
                StoreError::NotFound => StoreError::NotFound,
                StoreError::Conflict(c) => StoreError::Conflict(c.clone()),
                other => StoreError::Corrupt(other.to_string()),
            })),
        }
    }

    /// False once the writer task has stopped (it would only on a panic).
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }
}
