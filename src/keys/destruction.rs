//! Keys held outside the database (an HSM's token, transit), seen from the
//! key service: made ahead of the writer order, given back when a step did
//! not use them, destroyed where they live once removed or revoked, and
//! asked whether they still answer (for `/readyz`). The database is the
//! record; the outside signer is told after the fact, and what it did not
//! confirm is retried, never forgotten.

use std::time::{Duration, Instant};

use super::custody::Made;
use super::rotation::{KeyService, RotationError, key_event};
use super::{Custody, StoredKey};
use crate::audit::{Caller, actions};
use crate::storage::StoreError;

/// How long a destruction that failed waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// How often `/readyz` may ask a failing outside signer again.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// A key that may no longer sign whose private half may still exist elsewhere.
pub(super) fn awaiting(k: &StoredKey) -> bool {
    !k.state.is_published() && k.destroyed_at.is_none() && k.custody != Custody::Local
}

impl KeyService {
    /// Makes `n` keys where new keys live, before the writer order is taken.
    pub(super) async fn spares(&self, n: usize) -> Result<Vec<Made>, RotationError> {
        let mut made = Vec::with_capacity(n);
        for _ in 0..n {
            match self.vault.make(self.alg).await {
                Ok(m) => made.push(m),
                Err(e) => {
                    self.discard(made).await;
                    return Err(e.into());
                }
            }
        }
        Ok(made)
    }

    /// Runs a key step with `n` keys made ahead, then destroys whichever it
    /// did not store, whatever the step's outcome. (A key it stored is never
    /// destroyed here: if the commit's outcome is unknown, its row may exist.)
    pub(super) async fn with_spares<T, E: From<RotationError>>(
        &self,
        n: usize,
        step: impl AsyncFnOnce(&mut Vec<Made>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut spares = self.spares(n).await?;
        let outcome = step(&mut spares).await;
        self.discard(spares).await;
        outcome
    }

    /// Destroys keys made ahead that no row refers to (another replica took
    /// the step first, or nothing was due after all). Best effort: one left
    /// behind names no stored key and never signs.
    pub(super) async fn discard(&self, spares: Vec<Made>) {
        for made in spares.into_iter().filter(|m| m.custody != Custody::Local) {
            if let Err(e) = self.vault.destroy(made.custody, &made.kid).await {
                tracing::warn!(error = %e, kid = %made.kid, "cannot destroy an unused signing key");
            }
        }
    }

    /// Destroys, where they live, the removed and revoked keys not yet
    /// confirmed destroyed, recording each confirmation with a
    /// `key.destroyed` event. Idempotent, so replicas racing here do no harm;
    /// a key whose destruction failed is tried again after a pause, and does
    /// not hold up the others. Returns how many were confirmed.
    pub async fn destroy_pending(&self) -> usize {
        let rows = match self.store.read().await {
            Ok(mut c) => c.conn().list_keys().await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list keys to destroy");
                return 0;
            }
        };
        let mut destroyed = 0;
        for row in rows.iter().filter(|k| awaiting(k)) {
            let recently_failed = self
                .destroy_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&row.kid)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER);
            if recently_failed {
                continue;
            }
            match self.destroy_one(row).await {
                Ok(confirmed) => {
                    destroyed += usize::from(confirmed);
                    self.destroy_failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&row.kid);
                }
                Err(e) => {
                    tracing::warn!(error = %e, kid = %row.kid, "cannot destroy a removed signing key yet; will retry");
                    self.destroy_failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(row.kid.clone(), Instant::now());
                }
            }
        }
        destroyed
    }

    async fn destroy_one(&self, row: &StoredKey) -> Result<bool, RotationError> {
        self.vault.destroy(row.custody, &row.kid).await?;
        let mut tx = self.store.begin().await?;
        let now = tx.conn().db_now(self.clock.now()).await?;
        match tx.conn().mark_destroyed(&row.kid, now).await {
            Ok(()) => {
                let reason = format!("private key destroyed in {}", row.custody.as_str());
                let system = Caller::system("key-rotation");
                let event = key_event(actions::KEY_DESTROYED, &row.kid, now, reason, &system);
                tx.conn().append_audit(&[event]).await?;
                tx.commit().await?;
                Ok(true)
            }
            Err(StoreError::NotFound) => Ok(false), // another replica recorded it first
            Err(e) => Err(e.into()),
        }
    }

    /// The signer backend, whether it answers, and why not. An outside
    /// signer that failed last is asked again, by signing with the active
    /// key as a mint would, at most every two seconds; `/readyz` sees it come
    /// back without waiting for a mint.
    pub async fn signer_health(&self) -> (&'static str, bool, Option<String>) {
        let health = self.vault.health();
        if health.1 || !self.vault.may_recheck(RECHECK_EVERY) {
            return health;
        }
        if let Some(active) = self.keyring().current().active.clone() {
            let _ = active.sign(b"mayfly readiness probe").await;
        }
        self.vault.health()
    }
}
