//! Where private halves live (MAYFLY_SIGNER). `local`: sealed in the
//! database under the master key and opened into memory. `transit`: inside an
//! OpenBao/Vault transit engine, which signs; mayfly holds the name and the
//! public half only. A stored key opens by where its row says it lives, so a
//! deployment moves from one to the other at its next rotation.

use std::sync::Arc;

use ring::rand::SecureRandom;

use super::transit::{Transit, TransitSigner};
use super::{Alg, KeyError, KeySet, MasterKey, SigningKey, StoredKey, VerifyingKey, generate};
use crate::jose::Signer;

/// Where one key's private half is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Custody {
    Local,
    Transit,
}

impl Custody {
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Local => "local",
            Custody::Transit => "transit",
        }
    }
}

impl TryFrom<String> for Custody {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "local" => Ok(Custody::Local),
            "transit" => Ok(Custody::Transit),
            _ => Err(format!("unknown key custody `{s}` in store")),
        }
    }
}

/// The master keys that seal private halves: the current one, and the one
/// being rotated away from while `mayfly keys rewrap` runs.
#[derive(Debug)]
pub struct MasterKeys {
    pub current: MasterKey,
    pub previous: Option<MasterKey>,
}

/// A key just made, ready to store.
pub struct Made {
    pub kid: String,
    pub verifying: VerifyingKey,
    /// The sealed private half (local keys only).
    pub sealed: Option<Vec<u8>>,
    pub master_key_id: String,
    pub custody: Custody,
}

/// Where new keys are made, and how stored ones open and are destroyed.
#[derive(Debug)]
pub struct Vault {
    pub masters: Arc<MasterKeys>,
    pub transit: Option<Arc<Transit>>,
    /// Where new keys go.
    pub new_keys: Custody,
}

fn transit_error(kid: &str) -> impl Fn(super::transit::TransitError) -> KeyError + '_ {
    move |e| KeyError::Stored {
        kid: kid.to_string(),
        why: e.to_string(),
    }
}

impl Vault {
    pub fn local(masters: Arc<MasterKeys>) -> Self {
        Self {
            masters,
            transit: None,
            new_keys: Custody::Local,
        }
    }

    fn transit_for(&self, kid: &str) -> Result<&Arc<Transit>, KeyError> {
        self.transit.as_ref().ok_or_else(|| KeyError::Stored {
            kid: kid.to_string(),
            why: "it is held in transit, and MAYFLY_TRANSIT_ADDR is not set".into(),
        })
    }

    /// Makes a key where new keys go.
    pub async fn make(&self, alg: Alg) -> Result<Made, KeyError> {
        let master = &self.masters.current;
        match self.new_keys {
            Custody::Local => {
                let generated = generate(alg)?;
                let kid = generated.verifying.kid.clone();
                Ok(Made {
                    sealed: Some(master.seal(&generated.pkcs8, kid.as_bytes())),
                    kid,
                    verifying: generated.verifying,
                    master_key_id: master.id.clone(),
                    custody: Custody::Local,
                })
            }
            Custody::Transit => {
                // The kid names the transit key, so it exists before the key
                // does: 128 random bits, hex (transit names allow no `=`).
                let mut raw = [0u8; 16];
                ring::rand::SystemRandom::new()
                    .fill(&mut raw)
                    .map_err(|_| KeyError::Generate)?;
                let kid: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                let transit = self.transit_for(&kid)?;
                let verifying = transit.create(&kid, alg).await.map_err(transit_error(&kid))?;
                Ok(Made {
                    kid,
                    verifying,
                    sealed: None,
                    master_key_id: master.id.clone(),
                    custody: Custody::Transit,
                })
            }
        }
    }

    /// A signer for a stored key.
    pub fn open(&self, row: &StoredKey) -> Result<Arc<dyn Signer>, KeyError> {
        match row.custody {
            Custody::Local => {
                let sealed = row.sealed_private.as_deref().ok_or_else(|| KeyError::Stored {
                    kid: row.kid.clone(),
                    why: "active key has no private material".into(),
                })?;
                let pkcs8 = self.open_sealed(row, sealed)?;
                Ok(Arc::new(SigningKey::from_pkcs8(row.kid.clone(), row.alg, &pkcs8)?))
            }
            Custody::Transit => {
                let transit = self.transit_for(&row.kid)?.clone();
                Ok(Arc::new(TransitSigner::open(transit, row.kid.clone(), row.alg)))
            }
        }
    }

    /// While the master key is being rotated, keys not yet rewrapped open with the previous one.
    fn open_sealed(&self, row: &StoredKey, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        let (master, previous) = (&self.masters.current, self.masters.previous.as_ref());
        let opened = master.open(sealed, row.kid.as_bytes()).or_else(|e| match previous {
            Some(p) => p.open(sealed, row.kid.as_bytes()),
            None => Err(e),
        });
        opened.map_err(|_| KeyError::WrongMasterKey {
            kid: row.kid.clone(),
            given: master.id.clone(),
            sealed_under: row.master_key_id.clone(),
        })
    }

    pub fn load(&self, rows: &[StoredKey]) -> Result<KeySet, KeyError> {
        KeySet::from_stored(rows, |row| self.open(row))
    }

    /// Start-up check: every key that may still sign opens where it lives,
    /// so a wrong master key or an unreachable transit stops start-up
    /// instead of surfacing at the next rotation.
    pub async fn check(&self, rows: &[StoredKey]) -> Result<(), KeyError> {
        if let Some(transit) = &self.transit {
            transit.check().await.map_err(transit_error("(token check)"))?;
        }
        for row in rows
            .iter()
            .filter(|r| matches!(r.state, super::KeyState::Next | super::KeyState::Active))
        {
            match row.custody {
                Custody::Local => {
                    if let Some(sealed) = row.sealed_private.as_deref() {
                        self.open_sealed(row, sealed)?;
                    }
                }
                Custody::Transit => {
                    let transit = self.transit_for(&row.kid)?;
                    if !transit.holds(&row.kid).await.map_err(transit_error(&row.kid))? {
                        return Err(KeyError::Stored {
                            kid: row.kid.clone(),
                            why: format!("transit at {} has no key mayfly-{}", transit.addr(), row.kid),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Destroys a removed or revoked key where it lives. A local key's
    /// sealed half went with its row's update; a transit key is deleted there.
    pub async fn destroy(&self, row: &StoredKey) -> Result<(), KeyError> {
        match row.custody {
            Custody::Local => Ok(()),
            Custody::Transit => self
                .transit_for(&row.kid)?
                .destroy(&row.kid)
                .await
                .map_err(transit_error(&row.kid)),
        }
    }

    /// The signer backend's name and, for an outside one, whether it is
    /// answering and why not (for `/readyz`).
    pub fn health(&self) -> (&'static str, bool, Option<String>) {
        match &self.transit {
            Some(t) => {
                let (ok, why) = t.health();
                ("transit", ok, why)
            }
            None => ("local", true, None),
        }
    }
}
