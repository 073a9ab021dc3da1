//! Where private halves live (MAYFLY_SIGNER). `local`: sealed in the
//! database under the master key and opened into memory. `pkcs11`: inside an
//! HSM's token. `transit`: inside an OpenBao/Vault transit engine. The last
//! two sign for mayfly, which holds each key's label and public half only. A stored key opens by where its row says it lives, so a
//! deployment moves from one to the other at its next rotation.

use std::sync::Arc;

use ring::rand::SecureRandom;

use super::pkcs11::Hsm;
use super::transit::Transit;
use super::{Alg, KeyError, KeySet, MasterKey, SigningKey, StoredKey, VerifyingKey, generate};
use crate::jose::Signer;

/// Where one key's private half is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Custody {
    Local,
    Pkcs11,
    Transit,
}

impl Custody {
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Local => "local",
            Custody::Pkcs11 => "pkcs11",
            Custody::Transit => "transit",
        }
    }
}

impl TryFrom<String> for Custody {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "local" => Ok(Custody::Local),
            "pkcs11" => Ok(Custody::Pkcs11),
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
    pub hsm: Option<Arc<Hsm>>,
    pub transit: Option<Arc<Transit>>,
    /// Where new keys go.
    pub new_keys: Custody,
    /// When a failing outside signer was last asked again (`/readyz`).
    pub last_recheck: std::sync::Mutex<Option<std::time::Instant>>,
}

/// An outside signer's error about one key (its message names no secret).
fn outside(kid: &str) -> impl Fn(&dyn std::fmt::Display) -> KeyError + '_ {
    move |e| KeyError::Stored {
        kid: kid.to_string(),
        why: e.to_string(),
    }
}

/// A new key's id for an outside signer, which names the key by it before
/// the key exists: 128 random bits, hex (transit names allow no `=`).
fn random_kid() -> Result<String, KeyError> {
    let mut raw = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| KeyError::Generate)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

impl Vault {
    pub fn local(masters: Arc<MasterKeys>) -> Self {
        Self {
            masters,
            hsm: None,
            transit: None,
            new_keys: Custody::Local,
            last_recheck: std::sync::Mutex::new(None),
        }
    }

    fn hsm_for(&self, kid: &str) -> Result<&Arc<Hsm>, KeyError> {
        self.hsm.as_ref().ok_or_else(|| KeyError::Stored {
            kid: kid.to_string(),
            why: "it is held in a PKCS#11 token, and MAYFLY_PKCS11_MODULE is not set".into(),
        })
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
            custody => {
                let kid = random_kid()?;
                let verifying = match custody {
                    Custody::Pkcs11 => self
                        .hsm_for(&kid)?
                        .create(&kid, alg)
                        .await
                        .map_err(|e| outside(&kid)(&e)),
                    _ => self
                        .transit_for(&kid)?
                        .create(&kid, alg)
                        .await
                        .map_err(|e| outside(&kid)(&e)),
                }?;
                Ok(Made {
                    kid,
                    verifying,
                    sealed: None,
                    master_key_id: master.id.clone(),
                    custody,
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
            Custody::Pkcs11 => Ok(Arc::new(super::pkcs11::signer(
                self.hsm_for(&row.kid)?.clone(),
                row.kid.clone(),
            ))),
            Custody::Transit => {
                let transit = self.transit_for(&row.kid)?.clone();
                Ok(Arc::new(super::transit::signer(transit, row.kid.clone(), row.alg)))
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
            transit.check().await.map_err(|e| outside("(token check)")(&e))?;
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
                Custody::Pkcs11 => {
                    let hsm = self.hsm_for(&row.kid)?;
                    if !hsm.holds(&row.kid).await.map_err(|e| outside(&row.kid)(&e))? {
                        return Err(KeyError::Stored {
                            kid: row.kid.clone(),
                            why: format!(
                                "the PKCS#11 token `{}` has no private key labelled {}",
                                hsm.token(),
                                row.kid
                            ),
                        });
                    }
                }
                Custody::Transit => {
                    let transit = self.transit_for(&row.kid)?;
                    if !transit.holds(&row.kid).await.map_err(|e| outside(&row.kid)(&e))? {
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

    /// Destroys a key where it lives. A local key's sealed half went with
    /// its row's update; an outside key is destroyed there.
    pub async fn destroy(&self, custody: Custody, kid: &str) -> Result<(), KeyError> {
        match custody {
            Custody::Local => Ok(()),
            Custody::Pkcs11 => self.hsm_for(kid)?.destroy(kid).await.map_err(|e| outside(kid)(&e)),
            Custody::Transit => self.transit_for(kid)?.destroy(kid).await.map_err(|e| outside(kid)(&e)),
        }
    }

    /// Whether a failing outside signer may be asked again now (at most once per `every`).
    pub fn may_recheck(&self, every: std::time::Duration) -> bool {
        let mut last = self.last_recheck.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// The signer backend's name and, for an outside one, whether it is
    /// answering and why not (for `/readyz`).
    pub fn health(&self) -> (&'static str, bool, Option<String>) {
        if let Some(hsm) = &self.hsm {
            let (ok, why) = hsm.health();
            return ("pkcs11", ok, why);
        }
        match &self.transit {
            Some(t) => {
                let (ok, why) = t.health();
                ("transit", ok, why)
            }
            None => ("local", true, None),
        }
    }
}
