//! Master-key rotation for keys sealed in the database: `mayfly keys
//! rewrap` re-seals each private half under the new master key. Keys held
//! elsewhere (transit) have nothing sealed here and are left alone.

use chrono::{DateTime, Utc};

use super::rotation::{RotationError, key_event};
use super::{KeyError, MasterKeys};
use crate::audit::{Caller, actions};
use crate::storage::Store;

/// `mayfly keys rewrap`: re-seals every stored private key under the current
/// master key, opening those sealed under the previous one. Returns how many
/// keys were re-sealed. Safe to run again; keys already under the current
/// master key are left alone.
pub async fn rewrap(store: &Store, masters: &MasterKeys, now: DateTime<Utc>) -> Result<usize, RotationError> {
    let mut count = 0;
    let master = &masters.current;
    let keys = store.read().await?.conn().list_keys().await?;
    for k in keys {
        let Some(sealed) = &k.sealed_private else { continue };
        if master.open(sealed, k.kid.as_bytes()).is_ok() {
            continue;
        }
        let plain = masters
            .previous
            .as_ref()
            .and_then(|p| p.open(sealed, k.kid.as_bytes()).ok())
            .ok_or_else(|| KeyError::WrongMasterKey {
                kid: k.kid.clone(),
                given: master.id.clone(),
                sealed_under: k.master_key_id.clone(),
            })?;
        let mut tx = store.begin().await?;
        tx.conn()
            .reseal_key(&k.kid, &master.seal(&plain, k.kid.as_bytes()), &master.id)
            .await?;
        let reason = format!("sealed under master key {} (was {})", master.id, k.master_key_id);
        let event = key_event(
            actions::KEY_REWRAPPED,
            &k.kid,
            now,
            reason,
            &Caller::system("mayfly keys rewrap"),
        );
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await?;
        count += 1;
    }
    Ok(count)
}
