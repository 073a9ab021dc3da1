//! Signing keys as stored: public JWK, sealed private half, lifecycle state.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Result, Store, Tx, on_pool, on_tx};
use crate::keys::StoredKey;

impl Store {
    pub async fn list_keys(&self) -> Result<Vec<StoredKey>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, StoredKey>(
            "SELECT kid, alg, state, public_jwk, sealed_private, master_key_id, created_at, activated_at, retired_at
             FROM signing_keys ORDER BY created_at")
            .fetch_all(c).await)?)
    }
}

impl Tx {
    pub async fn count_active_keys(&mut self) -> Result<i64> {
        Ok(
            on_tx!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM signing_keys WHERE state = 'active'")
            .fetch_one(&mut **c).await)?,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_key(
        &mut self,
        kid: &str,
        alg: &str,
        state: &str,
        public_jwk: &serde_json::Value,
        sealed_private: &[u8],
        master_key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let activated = (state == "active").then_some(now);
        on_tx!(self, c => sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private, master_key_id, created_at, activated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(kid).bind(alg).bind(state).bind(Json(public_jwk)).bind(sealed_private)
            .bind(master_key_id).bind(now).bind(activated)
            .execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    /// Takes the audit chain lock first: used to serialise start-up work
    /// (bootstrap, first key) across replicas.
    pub async fn lock_chain(&mut self) -> Result<()> {
        on_tx!(self, c => sqlx::query("UPDATE audit_chain SET count = count WHERE id = 1")
            .execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }
}
