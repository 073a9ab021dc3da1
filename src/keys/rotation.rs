//! The signing-key lifecycle: `next` (published, not signing) → `active`
//! (signing) → `retired` (published until every token it signed has expired)
//! → `removed` (private half destroyed, public half kept for audit). Every
//! replica runs the schedule; each step happens under the audit-chain row
//! lock and on the database's clock, so exactly one rotation happens per
//! period however many replicas race for it. A key is published at least
//! MAYFLY_KEY_PUBLISH_LEAD before it signs, so a verifier holding a JWKS
//! no older than its max-age never meets an unknown `kid`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::custody::Made;
use super::sql::NewKey;
use super::{Alg, KeyError, KeyState, Keyring, StoredKey, Vault};
use crate::audit::{AuditEvent, Caller, actions};
use crate::clock::Clock;
use crate::error::Error;
use crate::leases::{Cover, Revocation, Revocations, Selector};
use crate::storage::{Store, StoreError, Tx};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<RotationError> for Error {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::Store(e) => Error::or_not_found("key")(e),
            // A key that cannot be generated or opened is a server fault.
            RotationError::Key(e) => Error::Store(StoreError::Corrupt(e.to_string())),
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The rotation schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub period: Duration,
    /// How long a key is published before it signs.
    pub lead: Duration,
    /// The ceiling on token lifetimes.
    pub max_ttl: Duration,
}

impl Schedule {
    /// How often replicas look at the schedule, and reload keys: a small
    /// fraction of the publish lead, between 100 ms and 5 s.
    pub fn tick_interval(&self) -> Duration {
        (self.lead / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// A retired key stays published until its last token has expired: the
    /// ceiling on token lifetimes plus the publish lead as allowance for
    /// clock skew and for replicas still signing with it until they reload.
    fn removal_grace(&self) -> TimeDelta {
        delta(self.max_ttl) + delta(self.lead)
    }
}

/// Signing keys as a service: the schedule, emergency revocation, and the
/// keyring every replica signs and verifies with.
#[derive(Clone)]
pub struct KeyService {
    pub(super) store: Store,
    pub(super) keyring: Arc<Keyring>,
    pub(super) vault: Arc<Vault>,
    pub(super) alg: Alg,
    pub(super) schedule: Schedule,
    pub(super) clock: Arc<dyn Clock>,
    revocations: Revocations,
    /// When each outside key's destruction last failed (retried after a pause).
    pub(super) destroy_failed: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

pub(super) fn key_event(action: &str, kid: &str, now: DateTime<Utc>, reason: String, caller: &Caller) -> AuditEvent {
    let mut e = caller.event(action, now);
    e.reason = Some(format!("{kid}: {reason}"));
    e
}

pub(super) fn find(keys: &[StoredKey], s: KeyState) -> Option<&StoredKey> {
    keys.iter().find(|k| k.state == s)
}

impl KeyService {
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        alg: Alg,
        schedule: Schedule,
        clock: Arc<dyn Clock>,
        revocations: Revocations,
    ) -> Self {
        Self {
            store,
            keyring: Arc::new(Keyring::default()),
            vault,
            alg,
            schedule,
            clock,
            revocations,
            destroy_failed: Arc::default(),
        }
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Stores a key made ahead (`spares`), or makes one now if none is left
    /// (a race lost to another replica's step; rare, and then an outside
    /// signer's round trip does hold the writer order).
    async fn create_key(
        &self,
        tx: &mut Tx,
        spares: &mut Vec<Made>,
        state: KeyState,
        now: DateTime<Utc>,
        activates_at: Option<DateTime<Utc>>,
    ) -> Result<String, RotationError> {
        let made = match spares.pop() {
            Some(made) => made,
            None => self.vault.make(self.alg).await?,
        };
        tx.conn()
            .insert_key(&NewKey {
                kid: &made.kid,
                alg: self.alg,
                state,
                public_jwk: &made.verifying.jwk(),
                sealed_private: made.sealed.as_deref(),
                master_key_id: &made.master_key_id,
                custody: made.custody,
                now,
                activates_at,
            })
            .await?;
        Ok(made.kid)
    }

    /// Retires the active key (if any) and activates `next`.
    async fn promote(
        tx: &mut Tx,
        keys: &[StoredKey],
        next: &str,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        caller: &Caller,
    ) -> Result<(), RotationError> {
        let from = find(keys, KeyState::Active).map(|k| k.kid.clone());
        if let Some(active) = &from {
            tx.conn().retire_key(active, now).await?;
        }
        tx.conn().activate_key(next, now).await?;
        let from = from.unwrap_or_else(|| "none".into());
        events.push(key_event(
            actions::KEY_ROTATED,
            next,
            now,
            format!("now signing; retired {from}"),
            caller,
        ));
        Ok(())
    }

    /// Commits key changes with their events, tells every replica, reloads
    /// here, then destroys what was removed or revoked where it lives.
    async fn finish(&self, mut tx: Tx, events: &[AuditEvent]) -> Result<(), RotationError> {
        tx.conn().append_audit(events).await?;
        tx.conn().notify_keys_changed().await?;
        tx.commit().await?;
        self.reload().await?;
        // Bounded: the change is committed; a destruction that takes longer is the schedule's to finish.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.destroy_pending()).await;
        Ok(())
    }

    /// First start: makes sure one active signing key exists, then loads the
    /// keyring. A master key that cannot open the stored keys stops start-up.
    pub async fn ensure_signing_key(&self) -> Result<(), RotationError> {
        let mut rows = self.store.read().await?.conn().list_keys().await?;
        if find(&rows, KeyState::Active).is_none() {
            self.with_spares(1, async |spares: &mut Vec<Made>| {
                let mut tx = self.store.begin().await?;
                tx.conn().lock_chain().await?;
                if tx.conn().count_active_keys().await? == 0 {
                    let now = self.clock.now();
                    let kid = self
                        .create_key(&mut tx, spares, KeyState::Active, now, Some(now))
                        .await?;
                    let reason = format!("first signing key ({})", self.alg.as_str());
                    let event = key_event(actions::KEY_CREATED, &kid, now, reason, &Caller::system("bootstrap"));
                    tx.conn().append_audit(&[event]).await?;
                }
                Ok::<_, RotationError>(tx.commit().await?)
            })
            .await?;
            rows = self.store.read().await?.conn().list_keys().await?;
        }
        self.vault.check(&rows).await?;
        self.keyring.replace(self.vault.load(&rows)?);
        Ok(())
    }

    /// Loads the keyring from the store.
    pub async fn reload(&self) -> Result<(), RotationError> {
        let rows = self.store.read().await?.conn().list_keys().await?;
        match self.vault.load(&rows) {
            Ok(set) => {
                self.keyring.replace(set);
                self.keyring.set_stale(false);
                Ok(())
            }
            Err(e) => {
                self.keyring.set_stale(true);
                Err(e.into())
            }
        }
    }

    /// A token named a `kid` this replica has not loaded (another replica just
    /// rotated): reload, at most once a second. Returns whether it reloaded.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        if !self.keyring.may_reload() {
            return false;
        }
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload signing keys");
                false
            }
        }
    }

    /// Whether `tick` has a key to make or move: no signing key (an
    /// emergency revocation found no replacement), no prepared key, a
    /// prepared key due to sign, or a retired key past its grace. Returns how
    /// many keys the step will make.
    fn keys_due(&self, keys: &[StoredKey], now: DateTime<Utc>) -> Option<usize> {
        let lead = delta(self.schedule.lead);
        let grace = self.schedule.removal_grace();
        let next = find(keys, KeyState::Next);
        let active = find(keys, KeyState::Active);
        let promote = next.is_some_and(|n| n.activates_at.is_none_or(|t| t <= now) && n.created_at + lead <= now);
        let remove = keys
            .iter()
            .any(|k| k.state == KeyState::Retired && k.retired_at.is_some_and(|t| t + grace <= now));
        let due = active.is_none() || next.is_none() || promote || remove;
        // A promotion or a missing key makes one key (a missing active and
        // next, two); a removal alone makes none.
        let making = match (active, next) {
            (None, None) => 2,
            (None, Some(_)) | (Some(_), None) => 1,
            (Some(_), Some(_)) => usize::from(promote),
        };
        due.then_some(making)
    }

    /// One look at the schedule. Returns whether anything changed.
    pub async fn tick(&self) -> Result<bool, RotationError> {
        // First without the writer order: most ticks find nothing due, and
        // taking it exclusively would hold lease batches up for nothing.
        let (due, destruction) = {
            let mut c = self.store.read().await?;
            let now = c.conn().db_now(self.clock.now()).await?;
            let keys = c.conn().list_keys().await?;
            (self.keys_due(&keys, now), keys.iter().any(super::destruction::awaiting))
        };
        let Some(making) = due else {
            // A destruction an outside signer did not confirm needs no lock.
            return Ok(destruction && self.destroy_pending().await > 0);
        };
        // Keys are made before the writer order is taken: an HSM's or
        // transit's round trips never hold up lease batches.
        self.with_spares(making, async |spares: &mut Vec<Made>| self.step(spares).await)
            .await
    }

    /// The schedule's step under the writer order, with keys made ahead.
    async fn step(&self, spares: &mut Vec<Made>) -> Result<bool, RotationError> {
        let mut tx = self.store.begin().await?;
        tx.conn().lock_chain().await?;
        let now = tx.conn().db_now(self.clock.now()).await?;
        let keys = tx.conn().list_keys().await?;
        let period = delta(self.schedule.period);
        let lead = delta(self.schedule.lead);
        let system = Caller::system("key-rotation");
        let mut events = Vec::new();

        let mut next = find(&keys, KeyState::Next).cloned();
        let no_active = find(&keys, KeyState::Active).is_none();
        if let Some(n) = &next {
            let due = n.activates_at.is_none_or(|t| t <= now);
            let published_long_enough = n.created_at + lead <= now;
            // With no key signing at all, the prepared key takes over at once.
            if no_active || (due && published_long_enough) {
                Self::promote(&mut tx, &keys, &n.kid, now, &mut events, &system).await?;
                next = None;
            }
        } else if no_active {
            let kid = self
                .create_key(&mut tx, spares, KeyState::Active, now, Some(now))
                .await?;
            let reason = "no key was signing; signs at once".to_string();
            events.push(key_event(actions::KEY_ROTATED, &kid, now, reason, &system));
        }
        if next.is_none() {
            let base = if events.is_empty() {
                find(&keys, KeyState::Active)
                    .and_then(|k| k.activated_at)
                    .unwrap_or(now)
            } else {
                now
            };
            let activates_at = (base + period).max(now + lead);
            let kid = self
                .create_key(&mut tx, spares, KeyState::Next, now, Some(activates_at))
                .await?;
            let reason = format!("published; signs from {activates_at}");
            events.push(key_event(actions::KEY_CREATED, &kid, now, reason, &system));
        }
        let grace = self.schedule.removal_grace();
        for k in keys.iter().filter(|k| k.state == KeyState::Retired) {
            if k.retired_at.is_some_and(|t| t + grace <= now) {
                tx.conn().remove_key(&k.kid, now).await?;
                let reason = "every token it signed has expired; private key destroyed".to_string();
                events.push(key_event(actions::KEY_REMOVED, &k.kid, now, reason, &system));
            }
        }
        if events.is_empty() {
            return Ok(false); // dropping the transaction rolls back the lock-taking no-op
        }
        self.finish(tx, &events).await?;
        Ok(true)
    }

    /// `POST /v1/keys/rotate`: the prepared key signs from now on (it has been
    /// published since it was prepared), and a new one is prepared.
    pub async fn rotate_now(&self, caller: &Caller) -> Result<String, Error> {
        let prepared = find(&self.store.read().await?.conn().list_keys().await?, KeyState::Next).is_some();
        self.with_spares(if prepared { 1 } else { 2 }, async |spares: &mut Vec<Made>| {
            let mut tx = self.store.begin().await?;
            tx.conn().lock_chain().await?;
            let now = tx.conn().db_now(self.clock.now()).await?;
            let keys = tx.conn().list_keys().await?;
            let mut events = Vec::new();
            let next = match find(&keys, KeyState::Next) {
                Some(n) => n.kid.clone(),
                None => self.create_key(&mut tx, spares, KeyState::Next, now, Some(now)).await?,
            };
            Self::promote(&mut tx, &keys, &next, now, &mut events, caller).await?;
            let activates_at = now + delta(self.schedule.period);
            let prepared = self
                .create_key(&mut tx, spares, KeyState::Next, now, Some(activates_at))
                .await?;
            let reason = format!("published; signs from {activates_at}");
            events.push(key_event(actions::KEY_CREATED, &prepared, now, reason, caller));
            self.finish(tx, &events).await?;
            Ok::<_, Error>(next)
        })
        .await
    }

    /// `POST /v1/keys/{kid}/revoke`: the key leaves the JWKS at once, every
    /// token it signed is revoked (a rule, like any other revocation), its
    /// private half is destroyed, and if it was signing a fresh key takes over.
    /// The revocation never waits on an outside signer: if no fresh key can
    /// be made now, the prepared key takes over, or none until the schedule
    /// can make one (mints answer 503 meanwhile; no token of the revoked key survives).
    pub async fn revoke(&self, kid: &str, caller: &Caller, reason: &str) -> Result<Revocation, Error> {
        let keys = self.store.read().await?.conn().list_keys().await?;
        let signing = find(&keys, KeyState::Active).is_some_and(|k| k.kid == kid);
        // Bounded, and a failure is no reason not to revoke.
        let spares = match signing {
            true => match tokio::time::timeout(Duration::from_secs(5), self.spares(1)).await {
                Ok(Ok(made)) => made,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot make a replacement for the revoked signing key; revoking anyway");
                    Vec::new()
                }
                Err(_) => {
                    tracing::error!(
                        "the signer did not make a replacement for the revoked key in time; revoking anyway"
                    );
                    Vec::new()
                }
            },
            false => Vec::new(),
        };
        let mut spares = spares;
        let revoked = self.revoke_with(kid, caller, reason, &mut spares).await;
        self.discard(spares).await;
        revoked
    }

    async fn revoke_with(
        &self,
        kid: &str,
        caller: &Caller,
        reason: &str,
        spares: &mut Vec<Made>,
    ) -> Result<Revocation, Error> {
        let mut tx = self.store.begin().await?;
        tx.conn().lock_chain().await?;
        let now = tx.conn().db_now(self.clock.now()).await?;
        let keys = tx.conn().list_keys().await?;
        let key = keys.iter().find(|k| k.kid == kid).ok_or(Error::NotFound("key"))?;
        if !key.state.is_published() {
            return Err(Error::Conflict(format!("key {kid} is already revoked or removed")));
        }
        let was_active = key.state == KeyState::Active;
        tx.conn().revoke_key(kid, now).await?;
        // Even a replica that has not reloaded yet cannot sign a token that survives.
        let selector = Selector::Key(kid.to_string());
        let rule = self
            .revocations
            .record(&mut tx, caller, None, &selector, reason, Cover::Forever)
            .await?;
        let mut events = vec![key_event(
            actions::KEY_REVOKED,
            kid,
            now,
            format!("{reason} (revocation {})", rule.id),
            caller,
        )];
        if was_active {
            // Emergency: a fresh key signs at once (verifiers refetch on its
            // unknown kid); failing that, the published prepared key.
            let replacement = match (spares.pop(), find(&keys, KeyState::Next)) {
                (Some(made), _) => {
                    let mut one = vec![made];
                    Some(
                        self.create_key(&mut tx, &mut one, KeyState::Active, now, Some(now))
                            .await?,
                    )
                }
                (None, Some(next)) => {
                    tx.conn().activate_key(&next.kid, now).await?;
                    Some(next.kid.clone())
                }
                (None, None) => None,
            };
            if let Some(fresh) = replacement {
                let why = format!("emergency replacement for revoked {kid}");
                events.push(key_event(actions::KEY_ROTATED, &fresh, now, why, caller));
            }
        }
        self.finish(tx, &events).await?;
        Ok(rule)
    }

    /// Every stored key with the number of tokens it signed.
    pub async fn list(&self) -> Result<Vec<(StoredKey, i64)>, StoreError> {
        let mut c = self.store.read().await?;
        let mut out = Vec::new();
        for k in c.conn().list_keys().await? {
            let n = c.conn().tokens_signed(&k.kid).await?;
            out.push((k, n));
        }
        Ok(out)
    }

    /// The schedule, in every replica, until the task is dropped.
    pub async fn run_schedule(self) {
        let mut timer = tokio::time::interval(self.schedule.tick_interval());
        loop {
            timer.tick().await;
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "key rotation step failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::testing::temp_store;

    async fn service(store: &Store, clock: Arc<ManualClock>) -> KeyService {
        crate::testing::key_service(store, clock, 900).await
    }

    fn states(keys: &[(StoredKey, i64)]) -> Vec<KeyState> {
        keys.iter().map(|(k, _)| k.state).collect()
    }

    #[tokio::test]
    async fn ticks_publish_then_promote_then_remove_on_the_schedule() {
        let (store, _dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let keys = service(&store, clock.clone()).await;
        let first = keys.keyring().current().active.as_ref().unwrap().kid().to_string();

        // The first tick prepares the next key, published a period ahead.
        clock.advance(TimeDelta::seconds(1));
        assert!(keys.tick().await.unwrap());
        assert_eq!(states(&keys.list().await.unwrap()), [KeyState::Active, KeyState::Next]);
        assert_eq!(keys.keyring().current().published.len(), 2, "next is published");
        assert!(!keys.tick().await.unwrap(), "nothing due yet");

        // A period later it signs, and a new one is prepared.
        clock.advance(TimeDelta::seconds(3600));
        assert!(keys.tick().await.unwrap());
        let listed = keys.list().await.unwrap();
        assert_eq!(states(&listed), [KeyState::Retired, KeyState::Active, KeyState::Next]);
        assert_ne!(keys.keyring().current().active.as_ref().unwrap().kid(), first);

        // The retired key is removed once its tokens have expired (max TTL + lead).
        clock.advance(TimeDelta::seconds(900 + 600 - 1));
        keys.tick().await.unwrap();
        assert_eq!(keys.list().await.unwrap()[0].0.state, KeyState::Retired);
        clock.advance(TimeDelta::seconds(1));
        assert!(keys.tick().await.unwrap());
        let removed = &keys.list().await.unwrap()[0].0;
        assert_eq!(removed.state, KeyState::Removed);
        assert!(removed.sealed_private.is_none(), "private half destroyed");
        assert!(!keys.keyring().current().published.contains_key(&first));
    }

    #[tokio::test]
    async fn revoking_the_active_key_unpublishes_it_records_a_rule_and_signs_with_a_fresh_one() {
        let (store, _dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let keys = service(&store, clock).await;
        let kid = keys.keyring().current().active.as_ref().unwrap().kid().to_string();
        let rule = keys.revoke(&kid, &Caller::system("test"), "leaked").await.unwrap();
        assert_eq!(rule.selector, Selector::Key(kid.clone()));
        assert_eq!(
            rule.cutoff_seq,
            i64::MAX,
            "covers tokens of replicas that have not reloaded"
        );
        let set = keys.keyring().current();
        assert!(!set.published.contains_key(&kid));
        assert_ne!(set.active.as_ref().unwrap().kid(), kid);
        assert!(matches!(
            keys.revoke(&kid, &Caller::system("test"), "again").await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            keys.revoke("nope", &Caller::system("test"), "x").await,
            Err(Error::NotFound("key"))
        ));
    }
}
