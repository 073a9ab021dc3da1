//! Auto-unseal: the master key as a data key wrapped by an OpenBao/Vault
//! transit encryption key (MAYFLY_MASTER_KEY_TRANSIT_KEY). The first replica
//! to start makes 32 random bytes, has transit wrap them and stores only the
//! ciphertext; every start asks transit to unwrap it, and to rewrap it under
//! the transit key's latest version, so rotating the wrapping key in transit
//! needs nothing but a restart. Someone with the database alone can open no
//! sealed key; the plaintext exists only in this process's memory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::json;
use zeroize::Zeroizing;

use super::MasterKey;
use super::seal::fill_random;
use super::transit::{Transit, TransitError};
use crate::storage::{Conn, Result as StoreResult, Store, StoreError, run};

#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error("auto-unseal: {0}")]
    Transit(#[from] TransitError),
    #[error("auto-unseal: {0}")]
    Store(#[from] StoreError),
    #[error(
        "auto-unseal: the stored master key is wrapped by transit key `{stored}`, not `{given}` \
         (MAYFLY_MASTER_KEY_TRANSIT_KEY)"
    )]
    OtherKey { stored: String, given: String },
    #[error("auto-unseal: transit did not return a 32-byte key")]
    Malformed,
}

#[derive(Debug, sqlx::FromRow)]
struct Wrap {
    transit_key: String,
    ciphertext: String,
}

impl Conn<'_> {
    async fn master_key_wrap(&mut self) -> StoreResult<Option<Wrap>> {
        Ok(run!(self, c => sqlx::query_as::<_, Wrap>(
            "SELECT transit_key, ciphertext FROM master_key_wraps WHERE id = 1")
            .fetch_optional(c).await)?)
    }

    /// Stores the first wrap; another replica's, stored first, wins.
    async fn insert_master_key_wrap(&mut self, key: &str, ciphertext: &str, now: DateTime<Utc>) -> StoreResult<()> {
        run!(self, c => sqlx::query(
            "INSERT INTO master_key_wraps (id, transit_key, ciphertext, created_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO NOTHING")
            .bind(key).bind(ciphertext).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    async fn rewrap_master_key(&mut self, old: &str, new: &str, now: DateTime<Utc>) -> StoreResult<()> {
        run!(self, c => sqlx::query(
            "UPDATE master_key_wraps SET ciphertext = $2, rewrapped_at = $3 WHERE id = 1 AND ciphertext = $1")
            .bind(old).bind(new).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}

async fn wrap(transit: &Transit, key: &str, plaintext: &[u8]) -> Result<String, TransitError> {
    let path = transit.mount_path(&format!("encrypt/{key}"));
    let answer = transit
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"plaintext": STANDARD.encode(plaintext)})),
        )
        .await?;
    answer["data"]["ciphertext"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| TransitError::Unexpected {
            what: format!("encrypt with {key}"),
            why: "no ciphertext".into(),
        })
}

async fn unwrap(transit: &Transit, key: &str, ciphertext: &str) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    let path = transit.mount_path(&format!("decrypt/{key}"));
    let mut answer = transit
        .call(reqwest::Method::POST, &path, Some(json!({"ciphertext": ciphertext})))
        .await?;
    let encoded = match answer["data"]["plaintext"].take() {
        serde_json::Value::String(text) => Zeroizing::new(text),
        _ => return Err(UnsealError::Malformed),
    };
    let plain = Zeroizing::new(
        STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| UnsealError::Malformed)?,
    );
    if plain.len() != 32 {
        return Err(UnsealError::Malformed);
    }
    Ok(plain)
}

/// The master key, unwrapped by transit (made and wrapped on first start).
pub async fn master_key(
    store: &Store,
    transit: &Transit,
    key: &str,
    now: DateTime<Utc>,
) -> Result<MasterKey, UnsealError> {
    let mut stored = store.read().await?.conn().master_key_wrap().await?;
    if stored.is_none() {
        let mut fresh = Zeroizing::new([0u8; 32]);
        fill_random(fresh.as_mut());
        let ciphertext = wrap(transit, key, fresh.as_ref()).await?;
        let mut tx = store.begin().await?;
        tx.conn().insert_master_key_wrap(key, &ciphertext, now).await?;
        tx.commit().await?;
        tracing::info!(transit_key = key, "made a master key wrapped by transit");
        stored = store.read().await?.conn().master_key_wrap().await?;
    }
    let stored = stored.ok_or(StoreError::NotFound)?;
    if stored.transit_key != key {
        return Err(UnsealError::OtherKey {
            stored: stored.transit_key,
            given: key.to_string(),
        });
    }
    let plain = unwrap(transit, key, &stored.ciphertext).await?;
    let master = MasterKey::from_bytes(&plain).map_err(|_| UnsealError::Malformed)?;
    // Under the wrapping key's latest version, so old versions can be retired in transit.
    let path = transit.mount_path(&format!("rewrap/{key}"));
    let rewrapped = transit
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"ciphertext": stored.ciphertext})),
        )
        .await?;
    if let Some(new) = rewrapped["data"]["ciphertext"]
        .as_str()
        .filter(|c| *c != stored.ciphertext)
    {
        let mut tx = store.begin().await?;
        tx.conn().rewrap_master_key(&stored.ciphertext, new, now).await?;
        tx.commit().await?;
        tracing::info!(
            transit_key = key,
            "rewrapped the master key under the transit key's latest version"
        );
    }
    Ok(master)
}
