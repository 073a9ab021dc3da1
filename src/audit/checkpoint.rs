//! Checkpoints of the chain written before the transparency log: its length
//! and head at a moment, MAC'd under a key derived from the master key.
//! Superseded by the log's signed checkpoints (`tlog`), which anyone can
//! check with a public key; these stay verifiable, and `mayfly keys rewrap`
//! re-MACs them when the master key is rotated.

use chrono::{DateTime, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::storage::{Store, StoreError};

/// One checkpoint, as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Checkpoint {
    /// Events in the chain at the checkpoint.
    pub count: i64,
    /// Hash of the last of them.
    pub head: String,
    pub at: DateTime<Utc>,
    /// Hex HMAC-SHA256 over the three fields above.
    pub mac: String,
}

fn message(count: i64, head: &str, at: &DateTime<Utc>) -> String {
    format!(
        "mayfly audit checkpoint v1\n{count}\n{head}\n{}",
        crate::clock::rfc3339(at)
    )
}

impl Checkpoint {
    pub fn new(key: &hmac::Key, count: i64, head: String, at: DateTime<Utc>) -> Self {
        let tag = hmac::sign(key, message(count, &head, &at).as_bytes());
        Self {
            count,
            head,
            at,
            mac: crate::keys::seal::hex(tag.as_ref()),
        }
    }

    /// Whether this checkpoint was made with `key` and not altered since.
    pub fn is_authentic(&self, key: &hmac::Key) -> bool {
        let Some(tag) = unhex(&self.mac) else { return false };
        hmac::verify(key, message(self.count, &self.head, &self.at).as_bytes(), &tag).is_ok()
    }
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Keeps the chain's checkpoints authentic across master-key rotation.
#[derive(Clone)]
pub struct Checkpointer {
    store: Store,
    key: hmac::Key,
}

impl Checkpointer {
    pub fn new(store: Store, key: hmac::Key) -> Self {
        Self { store, key }
    }

    pub fn key(&self) -> &hmac::Key {
        &self.key
    }

    /// Re-MACs under this checkpointer's key every stored checkpoint made
    /// under `previous` (the master key is being rotated: `mayfly keys
    /// rewrap`), so `verify` does not take them for forgeries once the
    /// previous key is gone. One authentic under neither key is left as it
    /// is, for `verify` to report. Returns how many were re-MAC'd.
    pub async fn reseal(&self, previous: &hmac::Key) -> Result<usize, StoreError> {
        let mut tx = self.store.begin().await?;
        let mut resealed = 0;
        for cp in tx.conn().checkpoints().await? {
            if cp.is_authentic(&self.key) || !cp.is_authentic(previous) {
                continue;
            }
            let again = Checkpoint::new(&self.key, cp.count, cp.head.clone(), cp.at);
            tx.conn().replace_checkpoint_mac(&cp.mac, &again.mac).await?;
            resealed += 1;
        }
        tx.commit().await?;
        Ok(resealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_authentic_only_under_its_key_and_unaltered() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        let cp = Checkpoint::new(&key, 42, "ab".repeat(32), DateTime::UNIX_EPOCH);
        assert!(cp.is_authentic(&key));
        assert!(!cp.is_authentic(&other));
        let mut moved = cp.clone();
        moved.count = 41;
        assert!(!moved.is_authentic(&key));
        let mut garbled = cp;
        garbled.mac = "zz".into();
        assert!(!garbled.is_authentic(&key));
    }

    #[tokio::test]
    async fn reseal_moves_the_previous_keys_checkpoints_to_the_current_key_and_no_others() {
        let (store, _dir) = crate::testing::temp_store().await;
        let (previous, current, stranger) = (
            hmac::Key::new(hmac::HMAC_SHA256, b"previous"),
            hmac::Key::new(hmac::HMAC_SHA256, b"current"),
            hmac::Key::new(hmac::HMAC_SHA256, b"stranger"),
        );
        let head = "ab".repeat(32);
        let mut c = store.read().await.unwrap();
        for (key, count) in [(&previous, 1), (&current, 2), (&stranger, 3)] {
            let cp = Checkpoint::new(key, count, head.clone(), DateTime::UNIX_EPOCH);
            c.conn().insert_checkpoint(&cp).await.unwrap();
        }
        drop(c);
        let checkpointer = Checkpointer::new(store.clone(), current.clone());
        assert_eq!(checkpointer.reseal(&previous).await.unwrap(), 1);
        let stored = store.read().await.unwrap().conn().checkpoints().await.unwrap();
        let authentic: Vec<bool> = stored.iter().map(|cp| cp.is_authentic(&current)).collect();
        assert_eq!(authentic, [true, true, false], "a forged one stays a finding");
        assert_eq!(checkpointer.reseal(&previous).await.unwrap(), 0, "once");
    }
}
