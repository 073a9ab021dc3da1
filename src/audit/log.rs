//! The audit log as a service: append events in a transaction of their own,
//! and recompute the whole chain. Appends inside a larger transaction go
//! through `Conn::append_audit` directly, so they commit with what they record.

use super::{AuditEvent, ChainVerifier, ChainedEvent, Verification};
use crate::storage::{AuditFilter, Store, StoreError};

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

    /// A tenant's events, newest first, before sequence `before`.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        before: i64,
        limit: i64,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        self.store
            .read()
            .await?
            .conn()
            .list_audit(tenant, filter, before, limit)
            .await
    }

    /// Walks the chain from the first event to the head recorded when the
    /// walk began (events appended meanwhile are past it).
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        let mut conn = self.store.read().await?;
        let (head, _) = conn.conn().audit_head().await?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let page = conn.conn().audit_chain_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                verifier.check(e);
                if e.hash == head {
                    return Ok(verifier.finish(&head));
                }
            }
        }
        Ok(verifier.finish(&head))
    }
}
