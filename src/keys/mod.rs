//! Signing keys: generation (ring), sealing at rest, the in-memory keyring the
//! mint path signs with, and the JWKS document verifiers fetch. Private
//! material never leaves this module except sealed.

mod batch;
pub mod custody;
mod destruction;
pub mod pkcs11;
mod refresh;
pub mod rewrap;
pub mod rotation;
pub mod seal;
pub mod sql;
pub mod transit;
pub mod unseal;

pub use custody::{Custody, MasterKeys, Vault};
pub use rotation::{KeyService, Schedule};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

pub use seal::MasterKey;

pub use crate::jose::{Alg, VerifyingKey};
use crate::jose::{SignError, Signer, Signing};

impl TryFrom<String> for KeyState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        KeyState::parse(&s).ok_or_else(|| format!("unknown key state `{s}` in store"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Next,
    Active,
    Retired,
    Revoked,
    Removed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
            KeyState::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<KeyState> {
        Some(match s {
            "next" => KeyState::Next,
            "active" => KeyState::Active,
            "retired" => KeyState::Retired,
            "revoked" => KeyState::Revoked,
            "removed" => KeyState::Removed,
            _ => return None,
        })
    }

    /// Published in the JWKS and accepted when verifying.
    pub fn is_published(self) -> bool {
        matches!(self, KeyState::Next | KeyState::Active | KeyState::Retired)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("stored key {kid} is unusable: {why}")]
    Stored { kid: String, why: String },
    #[error(
        "the master key (id {given}) does not open signing key {kid}, sealed under master key id {sealed_under}; \
         pass the master key this database was created with"
    )]
    WrongMasterKey {
        kid: String,
        given: String,
        sealed_under: String,
    },
}

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A key that can sign. Debug never shows private material.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pair: Pair,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_pkcs8(kid: String, alg: Alg, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let stored = |why: &str| KeyError::Stored {
            kid: kid.clone(),
            why: why.to_string(),
        };
        let pair = match alg {
            Alg::Es256 => Pair::Es256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .map_err(|_| stored("not a P-256 PKCS#8 key"))?,
            ),
            Alg::EdDsa => {
                Pair::EdDsa(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| stored("not an Ed25519 PKCS#8 key"))?)
            }
        };
        Ok(Self { kid, alg, pair, rng })
    }

    /// Signs in place: ring needs no I/O for a key held in memory.
    pub fn sign_now(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.pair {
            Pair::Es256(p) => p
                .sign(&self.rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| SignError {
                    kid: self.kid.clone(),
                    why: "the system random number generator failed".into(),
                }),
            Pair::EdDsa(p) => Ok(p.sign(message).as_ref().to_vec()),
        }
    }

    fn public_bytes(&self) -> &[u8] {
        match &self.pair {
            Pair::Es256(p) => p.public_key().as_ref(),
            Pair::EdDsa(p) => p.public_key().as_ref(),
        }
    }
}

/// The local signer: a key sealed in the database under the master key,
/// opened into memory.
impl Signer for SigningKey {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn alg(&self) -> Alg {
        self.alg
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> Signing<'a> {
        let signed = self.sign_now(message);
        Box::pin(std::future::ready(signed))
    }
}

/// A freshly generated key: the signer, its public half, and the PKCS#8
/// document to seal.
pub struct Generated {
    pub signing: SigningKey,
    pub verifying: VerifyingKey,
    pub pkcs8: Zeroizing<Vec<u8>>,
}

pub fn generate(alg: Alg) -> Result<Generated, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = Zeroizing::new(
        match alg {
            Alg::Es256 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
            Alg::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .map_err(|_| KeyError::Generate)?
        .as_ref()
        .to_vec(),
    );
    let provisional = SigningKey::from_pkcs8(String::new(), alg, &pkcs8)?;
    let public = provisional.public_bytes().to_vec();
    // kid = RFC 7638 thumbprint: stable, and derived from nothing secret.
    let unnamed = VerifyingKey::new(String::new(), alg, public.clone()).map_err(|_| KeyError::Generate)?;
    let kid = unnamed.thumbprint();
    let signing = SigningKey {
        kid: kid.clone(),
        ..provisional
    };
    let verifying = VerifyingKey::new(kid, alg, public).map_err(|_| KeyError::Generate)?;
    Ok(Generated {
        signing,
        verifying,
        pkcs8,
    })
}

/// One stored key as the keyring needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    #[sqlx(try_from = "String")]
    pub alg: Alg,
    #[sqlx(try_from = "String")]
    pub state: KeyState,
    pub public_jwk: sqlx::types::Json<serde_json::Value>,
    pub sealed_private: Option<Vec<u8>>,
    pub master_key_id: String,
    #[sqlx(try_from = "String")]
    pub custody: Custody,
    pub created_at: DateTime<Utc>,
    pub activates_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    /// When the private half was confirmed destroyed where it lives.
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// What the keyring holds at one moment: the signer and every published key.
#[derive(Debug, Default)]
pub struct KeySet {
    pub active: Option<Arc<dyn Signer>>,
    /// When the active key started signing (its age is a metric).
    pub active_since: Option<DateTime<Utc>>,
    pub published: HashMap<String, VerifyingKey>,
    pub jwks: JwksDocument,
}

/// The serialized JWKS and its ETag, computed once per key change.
#[derive(Debug, Default, Clone)]
pub struct JwksDocument {
    pub json: Arc<str>,
    pub etag: String,
}

impl KeySet {
    /// Builds the set from stored rows, opening the active key with `open`.
    pub fn from_stored(
        rows: &[StoredKey],
        open: impl Fn(&StoredKey) -> Result<Arc<dyn Signer>, KeyError>,
    ) -> Result<Self, KeyError> {
        let mut set = KeySet::default();
        let mut jwks = Vec::new();
        for row in rows {
            let (state, alg) = (row.state, row.alg);
            if !state.is_published() {
                continue;
            }
            let verifying = VerifyingKey::from_jwk(&row.kid, alg, &row.public_jwk.0).map_err(|e| KeyError::Stored {
                kid: row.kid.clone(),
                why: e.to_string(),
            })?;
            jwks.push(verifying.jwk());
            if state == KeyState::Active {
                set.active = Some(open(row)?);
                set.active_since = row.activated_at.or(Some(row.created_at));
            }
            set.published.insert(row.kid.clone(), verifying);
        }
        let json = json!({ "keys": jwks }).to_string();
        let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
        set.jwks = JwksDocument {
            etag: format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])),
            json: json.into(),
        };
        Ok(set)
    }
}

/// The current key set, swapped whole when keys change.
#[derive(Debug, Default)]
pub struct Keyring {
    current: RwLock<Arc<KeySet>>,
    /// When a reload was last asked for on an unknown `kid` (unix seconds).
    last_demand_reload: std::sync::atomic::AtomicI64,
    /// Set while the stored keys cannot be loaded (the set in use may be old).
    stale: std::sync::atomic::AtomicBool,
}

impl Keyring {
    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an on-demand reload is allowed now (at most one a second, so
    /// tokens with made-up `kid`s cannot turn into a query storm).
    pub fn may_reload(&self) -> bool {
        use std::sync::atomic::Ordering;
        #[allow(clippy::disallowed_methods)] // rate limiting only; no validity decision rests on it
        let now = chrono::Utc::now().timestamp();
        let last = self.last_demand_reload.load(Ordering::Relaxed);
        now > last
            && self
                .last_demand_reload
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the last attempt to load the stored keys failed; `/readyz` reports it.
    pub fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn replace(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_what_their_public_half_verifies() {
        for alg in [Alg::Es256, Alg::EdDsa] {
            let g = generate(alg).unwrap();
            let sig = g.signing.sign_now(b"hello").unwrap();
            assert!(g.verifying.verify(b"hello", &sig));
            assert!(!g.verifying.verify(b"hellO", &sig));
            let back = VerifyingKey::from_jwk(&g.verifying.kid, alg, &g.verifying.jwk()).unwrap();
            assert!(back.verify(b"hello", &sig));
            assert_eq!(g.signing.kid, g.verifying.kid);
            assert_eq!(
                g.verifying.kid,
                g.verifying.thumbprint(),
                "the kid is the RFC 7638 thumbprint"
            );
        }
    }
}
