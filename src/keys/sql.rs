//! Signing keys as stored: public JWK, sealed private half, lifecycle state.
//! Each transition has its own statement; none can be reached by a typo, and
//! only `remove` and `revoke` destroy private material.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use crate::keys::{Alg, Custody, KeyState, StoredKey};
use crate::storage::{Conn, Result, StoreError, run};

macro_rules! key_columns {
    () => {
        "kid, alg, state, public_jwk, sealed_private, master_key_id, custody, created_at, activates_at, activated_at, retired_at, \
         removed_at, destroyed_at"
    };
}

/// A key to insert.
pub struct NewKey<'a> {
    pub kid: &'a str,
    pub alg: Alg,
    pub state: KeyState,
    pub public_jwk: &'a serde_json::Value,
    /// Local keys only; a key held elsewhere stores nothing private here.
    pub sealed_private: Option<&'a [u8]>,
    pub master_key_id: &'a str,
    pub custody: Custody,
    pub now: DateTime<Utc>,
    pub activates_at: Option<DateTime<Utc>>,
}

fn found(n: u64) -> Result<()> {
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

impl Conn<'_> {
    pub async fn list_keys(&mut self) -> Result<Vec<StoredKey>> {
        Ok(run!(self, c => sqlx::query_as::<_, StoredKey>(concat!(
            "SELECT ", key_columns!(), " FROM signing_keys ORDER BY created_at, kid"))
            .fetch_all(c).await)?)
    }

    pub async fn count_active_keys(&mut self) -> Result<i64> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM signing_keys WHERE state = 'active'")
            .fetch_one(c).await)?,
        )
    }

    /// How many leases a key signed (for `GET /v1/keys`).
    pub async fn tokens_signed(&mut self, kid: &str) -> Result<i64> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM leases WHERE kid = $1")
            .bind(kid).fetch_one(c).await)?,
        )
    }

    pub async fn insert_key(&mut self, k: &NewKey<'_>) -> Result<()> {
        let activated = (k.state == KeyState::Active).then_some(k.now);
        run!(self, c => sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private, master_key_id, created_at,
                                       activates_at, activated_at, custody)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(k.kid).bind(k.alg.as_str()).bind(k.state.as_str()).bind(Json(k.public_jwk)).bind(k.sealed_private)
            .bind(k.master_key_id).bind(k.now).bind(k.activates_at).bind(activated).bind(k.custody.as_str())
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// `next` → `active`.
    pub async fn activate_key(&mut self, kid: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE signing_keys SET state = 'active', activated_at = $2 WHERE kid = $1 AND state = 'next'")
            .bind(kid).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// `active` → `retired`: published, no longer signing.
    pub async fn retire_key(&mut self, kid: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE signing_keys SET state = 'retired', retired_at = $2 WHERE kid = $1 AND state = 'active'")
            .bind(kid).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// `retired` → `removed`: the private half is destroyed, the public half
    /// kept for audit. A local key's sealed half goes with this update; a key
    /// held elsewhere is destroyed there next (`mark_destroyed`).
    pub async fn remove_key(&mut self, kid: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE signing_keys SET state = 'removed', removed_at = $2, sealed_private = NULL,
                    destroyed_at = CASE WHEN custody = 'local' THEN $2 END
             WHERE kid = $1 AND state = 'retired'")
            .bind(kid).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Any published key → `revoked`: unpublished and its private half destroyed at once.
    pub async fn revoke_key(&mut self, kid: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE signing_keys SET state = 'revoked', retired_at = $2, sealed_private = NULL,
                    destroyed_at = CASE WHEN custody = 'local' THEN $2 END
             WHERE kid = $1 AND state IN ('next', 'active', 'retired')")
            .bind(kid).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Re-seals one key's private half (master-key rotation).
    pub async fn reseal_key(&mut self, kid: &str, sealed: &[u8], master_key_id: &str) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE signing_keys SET sealed_private = $2, master_key_id = $3 WHERE kid = $1 AND sealed_private IS NOT NULL")
            .bind(kid).bind(sealed).bind(master_key_id).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// The key held elsewhere was destroyed there.
    pub async fn mark_destroyed(&mut self, kid: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE signing_keys SET destroyed_at = $2
             WHERE kid = $1 AND state IN ('removed', 'revoked') AND destroyed_at IS NULL")
            .bind(kid).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }
}
