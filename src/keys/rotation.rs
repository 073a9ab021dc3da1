//! The signing-key lifecycle: `next` (published, not signing) → `active`
//! (signing) → `retired` (published until every token it signed has expired)
//! → `removed` (private half destroyed, public half kept for audit). Every
//! replica runs the schedule; each step happens under the audit-chain row
//! lock and on the database's clock, so exactly one rotation happens per
//! period however many replicas race for it. A key is published at least
//! MAYFLY_KEY_PUBLISH_LEAD before it signs, so a verifier holding a JWKS
//! no older than its max-age never meets an unknown `kid`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{KeySet, KeyState, StoredKey, generate};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, actions};
use crate::leases::{Revocation, Selector};
use crate::storage::keys::NewKey;
use crate::storage::{NewRevocation, StoreError, Tx};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] super::KeyError),
    #[error("key {0} is not published (already revoked or removed)")]
    NotPublished(String),
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// How often replicas look at the schedule, and reload keys: a small
/// fraction of the publish lead, between 100 ms and 5 s.
pub fn tick_interval(lead: Duration) -> Duration {
    (lead / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// A retired key stays published until its last token has expired: the
/// ceiling on token lifetimes plus the publish lead as allowance for clock
/// skew and for replicas still signing with it until they reload.
fn removal_grace(state: &AppState) -> TimeDelta {
    delta(state.config.max_ttl) + delta(state.config.key_publish_lead)
}

fn key_event(
    action: &str,
    kid: &str,
    now: DateTime<Utc>,
    reason: String,
    admin: Option<serde_json::Value>,
) -> AuditEvent {
    let mut e = AuditEvent::new(action, Outcome::Success, now);
    e.reason = Some(format!("{kid}: {reason}"));
    e.admin = admin.or_else(|| Some(json!({"system": "key-rotation"})));
    e
}

/// Generates a key, seals it and stores it in `state`.
pub async fn create_key(
    state: &AppState,
    tx: &mut Tx,
    key_state: KeyState,
    now: DateTime<Utc>,
    activates_at: Option<DateTime<Utc>>,
) -> Result<String, RotationError> {
    let alg = state.config.signing_alg;
    let generated = generate(alg)?;
    let kid = generated.verifying.kid.clone();
    let sealed = state.master.seal(&generated.pkcs8, kid.as_bytes());
    tx.insert_key(&NewKey {
        kid: &kid,
        alg: alg.as_str(),
        state: key_state.as_str(),
        public_jwk: &generated.verifying.jwk(),
        sealed_private: &sealed,
        master_key_id: &state.master.id,
        now,
        activates_at,
    })
    .await?;
    Ok(kid)
}

fn find(keys: &[StoredKey], s: KeyState) -> Option<&StoredKey> {
    keys.iter().find(|k| k.state() == Some(s))
}

/// Retires the active key (if any) and activates `next`.
async fn promote(
    tx: &mut Tx,
    keys: &[StoredKey],
    next: &str,
    now: DateTime<Utc>,
    events: &mut Vec<AuditEvent>,
    admin: Option<serde_json::Value>,
) -> Result<(), RotationError> {
    if let Some(active) = find(keys, KeyState::Active) {
        tx.set_key_state(&active.kid, KeyState::Retired.as_str(), now).await?;
    }
    tx.set_key_state(next, KeyState::Active.as_str(), now).await?;
    let from = find(keys, KeyState::Active).map_or("none".to_string(), |k| k.kid.clone());
    events.push(key_event(
        actions::KEY_ROTATED,
        next,
        now,
        format!("now signing; retired {from}"),
        admin,
    ));
    Ok(())
}

/// One look at the schedule. Returns whether anything changed.
pub async fn tick(state: &AppState) -> Result<bool, RotationError> {
    let mut tx = state.store.begin().await?;
    tx.lock_chain().await?;
    let now = tx.db_now(state.clock.now()).await?;
    let keys = tx.list_keys().await?;
    let period = delta(state.config.key_rotation_period);
    let lead = delta(state.config.key_publish_lead);
    let mut events = Vec::new();

    let mut next = find(&keys, KeyState::Next).cloned();
    if let Some(n) = &next {
        let due = n.activates_at.is_none_or(|t| t <= now);
        let published_long_enough = n.created_at + lead <= now;
        if due && published_long_enough {
            promote(&mut tx, &keys, &n.kid, now, &mut events, None).await?;
            next = None;
        }
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
        let kid = create_key(state, &mut tx, KeyState::Next, now, Some(activates_at)).await?;
        events.push(key_event(
            actions::KEY_CREATED,
            &kid,
            now,
            format!("published; signs from {activates_at}"),
            None,
        ));
    }
    let grace = removal_grace(state);
    for k in keys.iter().filter(|k| k.state() == Some(KeyState::Retired)) {
        if k.retired_at.is_some_and(|t| t + grace <= now) {
            tx.set_key_state(&k.kid, KeyState::Removed.as_str(), now).await?;
            events.push(key_event(
                actions::KEY_REMOVED,
                &k.kid,
                now,
                "every token it signed has expired; private key destroyed".into(),
                None,
            ));
        }
    }
    if events.is_empty() {
        return Ok(false); // dropping the transaction rolls back the lock-taking no-op
    }
    tx.append_audit(&events).await?;
    tx.notify_keys_changed().await?;
    tx.commit().await?;
    reload(state).await?;
    Ok(true)
}

/// `POST /v1/keys/rotate`: the prepared key signs from now on (it has been
/// published since it was prepared), and a new one is prepared.
pub async fn rotate_now(state: &AppState, admin: serde_json::Value) -> Result<String, RotationError> {
    let mut tx = state.store.begin().await?;
    tx.lock_chain().await?;
    let now = tx.db_now(state.clock.now()).await?;
    let keys = tx.list_keys().await?;
    let mut events = Vec::new();
    let next = match find(&keys, KeyState::Next) {
        Some(n) => n.kid.clone(),
        None => create_key(state, &mut tx, KeyState::Next, now, Some(now)).await?,
    };
    promote(&mut tx, &keys, &next, now, &mut events, Some(admin.clone())).await?;
    let activates_at = now + delta(state.config.key_rotation_period);
    let prepared = create_key(state, &mut tx, KeyState::Next, now, Some(activates_at)).await?;
    events.push(key_event(
        actions::KEY_CREATED,
        &prepared,
        now,
        format!("published; signs from {activates_at}"),
        Some(admin),
    ));
    tx.append_audit(&events).await?;
    tx.notify_keys_changed().await?;
    tx.commit().await?;
    reload(state).await?;
    Ok(next)
}

/// `POST /v1/keys/{kid}/revoke`: the key leaves the JWKS at once, every token
/// it signed is revoked (a rule, like any other revocation), its private half
/// is destroyed, and if it was signing a fresh key takes over.
pub async fn revoke_key(
    state: &AppState,
    kid: &str,
    admin: serde_json::Value,
    reason: &str,
) -> Result<Revocation, RotationError> {
    let mut tx = state.store.begin().await?;
    tx.lock_chain().await?;
    let now = tx.db_now(state.clock.now()).await?;
    let keys = tx.list_keys().await?;
    let key = keys.iter().find(|k| k.kid == kid).ok_or(StoreError::NotFound)?;
    let was = key.state();
    if !was.is_some_and(KeyState::is_published) {
        return Err(RotationError::NotPublished(kid.to_string()));
    }
    tx.set_key_state(kid, KeyState::Revoked.as_str(), now).await?;
    let selector = Selector::Key(kid.to_string());
    let rule = tx
        .insert_revocation(&NewRevocation {
            id: Uuid::now_v7(),
            tenant_id: None,
            selector: &selector,
            reason,
            created_by: Some(admin.clone()),
            now,
            // Even a replica that has not reloaded yet cannot sign a token that survives.
            prune_after: now + delta(state.config.max_ttl) * 2 + delta(state.config.key_publish_lead),
            forever: true,
        })
        .await?;
    let mut events = vec![key_event(
        actions::KEY_REVOKED,
        kid,
        now,
        format!("{reason} (revocation {})", rule.id),
        Some(admin.clone()),
    )];
    if was == Some(KeyState::Active) {
        // Emergency: a fresh key signs at once; verifiers refetch on its unknown kid.
        let fresh = create_key(state, &mut tx, KeyState::Active, now, Some(now)).await?;
        events.push(key_event(
            actions::KEY_ROTATED,
            &fresh,
            now,
            format!("emergency replacement for revoked {kid}"),
            Some(admin),
        ));
    }
    tx.append_audit(&events).await?;
    tx.notify_keys_changed().await?;
    tx.commit().await?;
    state.sweeper.notify_one();
    reload(state).await?;
    Ok(rule)
}

/// Loads the keyring from the store.
pub async fn reload(state: &AppState) -> Result<(), RotationError> {
    let rows = state.store.list_keys().await?;
    match KeySet::from_stored(&rows, &state.master, state.master_previous.as_ref()) {
        Ok(set) => {
            state.keyring.replace(set);
            state.keyring.set_stale(false);
            Ok(())
        }
        Err(e) => {
            state.keyring.set_stale(true);
            Err(e.into())
        }
    }
}

/// The schedule, in every replica.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick_timer = tokio::time::interval(tick_interval(state.config.key_publish_lead));
        loop {
            tick_timer.tick().await;
            if let Err(e) = tick(&state).await {
                tracing::warn!(error = %e, "key rotation step failed; will retry");
            }
        }
    })
}

/// `mayfly keys rewrap`: re-seals every stored private key under the current
/// master key, opening those sealed under the previous one. Returns how many
/// keys were re-sealed. Safe to run again; keys already under the current
/// master key are left alone.
pub async fn rewrap(
    store: &crate::storage::Store,
    master: &super::MasterKey,
    previous: Option<&super::MasterKey>,
    now: DateTime<Utc>,
) -> Result<usize, RotationError> {
    let mut count = 0;
    for k in store.list_keys().await? {
        let Some(sealed) = &k.sealed_private else { continue };
        if master.open(sealed, k.kid.as_bytes()).is_ok() {
            continue;
        }
        let plain = previous
            .and_then(|p| p.open(sealed, k.kid.as_bytes()).ok())
            .ok_or_else(|| super::KeyError::WrongMasterKey {
                kid: k.kid.clone(),
                given: master.id.clone(),
                sealed_under: k.master_key_id.clone(),
            })?;
        store
            .reseal_key(&k.kid, &master.seal(&plain, k.kid.as_bytes()), &master.id)
            .await?;
        let mut e = AuditEvent::new(actions::KEY_REWRAPPED, Outcome::Success, now);
        e.reason = Some(format!(
            "{}: sealed under master key {} (was {})",
            k.kid, master.id, k.master_key_id
        ));
        e.admin = Some(json!({"system": "mayfly keys rewrap"}));
        store.append_audit(&[e]).await?;
        count += 1;
    }
    Ok(count)
}
