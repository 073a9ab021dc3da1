//! Signing keys as stored: public JWK, sealed private half, lifecycle state.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Result, Store, StoreError, Tx, TxInner, on_pool, on_tx};
use crate::keys::StoredKey;

/// A key to insert.
pub struct NewKey<'a> {
    pub kid: &'a str,
    pub alg: &'a str,
    pub state: &'a str,
    pub public_jwk: &'a serde_json::Value,
    pub sealed_private: &'a [u8],
    pub master_key_id: &'a str,
    pub now: DateTime<Utc>,
    pub activates_at: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn list_keys(&self) -> Result<Vec<StoredKey>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, StoredKey>(
            "SELECT kid, alg, state, public_jwk, sealed_private, master_key_id, created_at, activates_at, activated_at,
                    retired_at, removed_at
             FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(c).await)?)
    }

    /// How many leases each key signed (for `GET /v1/keys`).
    pub async fn tokens_signed(&self, kid: &str) -> Result<i64> {
        Ok(
            on_pool!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM leases WHERE kid = $1")
            .bind(kid).fetch_one(c).await)?,
        )
    }

    /// Re-seals one key's private half (master-key rotation).
    pub async fn reseal_key(&self, kid: &str, sealed: &[u8], master_key_id: &str) -> Result<()> {
        on_pool!(self, c => sqlx::query("UPDATE signing_keys SET sealed_private = $2, master_key_id = $3 WHERE kid = $1")
            .bind(kid).bind(sealed).bind(master_key_id).execute(c).await.map(|_| ()))?;
        Ok(())
    }
}

impl Tx {
    pub async fn count_active_keys(&mut self) -> Result<i64> {
        Ok(
            on_tx!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM signing_keys WHERE state = 'active'")
            .fetch_one(&mut **c).await)?,
        )
    }

    pub async fn list_keys(&mut self) -> Result<Vec<StoredKey>> {
        Ok(on_tx!(self, c => sqlx::query_as::<_, StoredKey>(
            "SELECT kid, alg, state, public_jwk, sealed_private, master_key_id, created_at, activates_at, activated_at,
                    retired_at, removed_at
             FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&mut **c).await)?)
    }

    pub async fn insert_key(&mut self, k: &NewKey<'_>) -> Result<()> {
        let activated = (k.state == "active").then_some(k.now);
        on_tx!(self, c => sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private, master_key_id, created_at,
                                       activates_at, activated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(k.kid).bind(k.alg).bind(k.state).bind(Json(k.public_jwk)).bind(k.sealed_private)
            .bind(k.master_key_id).bind(k.now).bind(k.activates_at).bind(activated)
            .execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    /// Moves a key to `state`, stamping the time that state is named after.
    pub async fn set_key_state(&mut self, kid: &str, state: &str, now: DateTime<Utc>) -> Result<()> {
        let sql: &'static str = match state {
            "active" => "UPDATE signing_keys SET state = $2, activated_at = $3 WHERE kid = $1",
            "retired" => "UPDATE signing_keys SET state = $2, retired_at = $3 WHERE kid = $1",
            "revoked" => "UPDATE signing_keys SET state = $2, retired_at = $3, sealed_private = NULL WHERE kid = $1",
            // Removed (or revoked and spent): the private half is destroyed, the public half kept for audit.
            _ => "UPDATE signing_keys SET state = $2, removed_at = $3, sealed_private = NULL WHERE kid = $1",
        };
        let n = on_tx!(self, c => sqlx::query(sql).bind(kid).bind(state).bind(now)
            .execute(&mut **c).await.map(|r| r.rows_affected()))?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Takes the audit chain lock first: used to serialise start-up work
    /// (bootstrap, first key) and key rotation across replicas.
    pub async fn lock_chain(&mut self) -> Result<()> {
        on_tx!(self, c => sqlx::query("UPDATE audit_chain SET count = count WHERE id = 1")
            .execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    /// The database's clock on Postgres (shared by every replica); on the
    /// single-node SQLite store the process clock is the database's clock.
    pub async fn db_now(&mut self, local: DateTime<Utc>) -> Result<DateTime<Utc>> {
        Ok(match &mut self.0 {
            TxInner::Postgres(c) => {
                let t = sqlx::query_scalar::<_, DateTime<Utc>>("SELECT clock_timestamp()")
                    .fetch_one(&mut **c)
                    .await?;
                crate::clock::truncate_micros(t)
            }
            TxInner::Sqlite(_) => local,
        })
    }
}

impl Tx {
    /// Tells every replica (Postgres LISTEN/NOTIFY, delivered at commit) that
    /// the keys changed. SQLite is single-node: nothing to tell.
    pub async fn notify_keys_changed(&mut self) -> Result<()> {
        if let TxInner::Postgres(c) = &mut self.0 {
            sqlx::query("SELECT pg_notify('mayfly_keys', '')")
                .execute(&mut **c)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// A listener for key changes on Postgres; None on SQLite.
    pub async fn key_change_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        match &self.pool {
            super::Pool::Postgres(p) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(p).await?;
                listener.listen("mayfly_keys").await?;
                Ok(Some(listener))
            }
            super::Pool::Sqlite(_) => Ok(None),
        }
    }
}
