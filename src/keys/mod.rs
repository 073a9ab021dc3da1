//! Signing keys: generation (ring), sealing at rest, the in-memory keyring the
//! mint path signs with, and the JWKS document verifiers fetch. Private
//! material never leaves this module except sealed.

pub mod rotation;
pub mod seal;
pub mod sql;

pub use rotation::{KeyService, Schedule};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

pub use seal::MasterKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Alg {
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

impl TryFrom<String> for Alg {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Alg::parse(&s).ok_or_else(|| format!("unknown signing algorithm `{s}` in store"))
    }
}

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

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.pair {
            // Signing with a valid key and a working RNG does not fail; if the
            // RNG is gone nothing else is safe either.
            Pair::Es256(p) => match p.sign(&self.rng, message) {
                Ok(sig) => sig.as_ref().to_vec(),
                Err(_) => std::process::abort(),
            },
            Pair::EdDsa(p) => p.sign(message).as_ref().to_vec(),
        }
    }

    fn public_bytes(&self) -> &[u8] {
        match &self.pair {
            Pair::Es256(p) => p.public_key().as_ref(),
            Pair::EdDsa(p) => p.public_key().as_ref(),
        }
    }
}

/// A published public key.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub alg: Alg,
    public: Vec<u8>,
}

impl VerifyingKey {
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match self.alg {
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::EdDsa => &signature::ED25519,
        };
        UnparsedPublicKey::new(alg, &self.public).verify(message, sig).is_ok()
    }

    /// The public JWK (RFC 7517) with `kid`, `alg`, `use`.
    pub fn jwk(&self) -> serde_json::Value {
        let mut jwk = thumbprint_members(self.alg, &self.public);
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), json!(self.kid));
            obj.insert("alg".into(), json!(self.alg.as_str()));
            obj.insert("use".into(), json!("sig"));
        }
        jwk
    }

    pub fn from_jwk(kid: &str, alg: Alg, jwk: &serde_json::Value) -> Result<Self, KeyError> {
        let field = |name: &str| -> Result<Vec<u8>, KeyError> {
            jwk.get(name)
                .and_then(|v| v.as_str())
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .ok_or_else(|| KeyError::Stored {
                    kid: kid.to_string(),
                    why: format!("JWK lacks `{name}`"),
                })
        };
        let public = match alg {
            Alg::Es256 => {
                let mut p = vec![4u8];
                p.extend(field("x")?);
                p.extend(field("y")?);
                p
            }
            Alg::EdDsa => field("x")?,
        };
        let expected = match alg {
            Alg::Es256 => 65,
            Alg::EdDsa => 32,
        };
        if public.len() != expected {
            return Err(KeyError::Stored {
                kid: kid.to_string(),
                why: "JWK has the wrong key length".into(),
            });
        }
        Ok(Self {
            kid: kid.to_string(),
            alg,
            public,
        })
    }
}

/// The RFC 7638 required members, in lexicographic order.
fn thumbprint_members(alg: Alg, public: &[u8]) -> serde_json::Value {
    match alg {
        Alg::Es256 => json!({
            "crv": "P-256",
            "kty": "EC",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        }),
        Alg::EdDsa => json!({"crv": "Ed25519", "kty": "OKP", "x": URL_SAFE_NO_PAD.encode(public)}),
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
    let members = thumbprint_members(alg, &public).to_string();
    let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, members.as_bytes()));
    let signing = SigningKey {
        kid: kid.clone(),
        ..provisional
    };
    Ok(Generated {
        signing,
        verifying: VerifyingKey { kid, alg, public },
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
    pub created_at: DateTime<Utc>,
    pub activates_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
}

/// What the keyring holds at one moment: the signer and every published key.
#[derive(Debug, Default)]
pub struct KeySet {
    pub active: Option<Arc<SigningKey>>,
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
    /// Builds the set from stored rows, opening the active key with the master key.
    pub fn from_stored(rows: &[StoredKey], master: &MasterKey, previous: Option<&MasterKey>) -> Result<Self, KeyError> {
        let mut set = KeySet::default();
        let mut jwks = Vec::new();
        for row in rows {
            let (state, alg) = (row.state, row.alg);
            if !state.is_published() {
                continue;
            }
            let verifying = VerifyingKey::from_jwk(&row.kid, alg, &row.public_jwk.0)?;
            jwks.push(verifying.jwk());
            if state == KeyState::Active {
                let sealed = row.sealed_private.as_deref().ok_or_else(|| KeyError::Stored {
                    kid: row.kid.clone(),
                    why: "active key has no private material".into(),
                })?;
                // While the master key is being rotated, keys not yet rewrapped open with the previous one.
                let opened = master.open(sealed, row.kid.as_bytes()).or_else(|e| match previous {
                    Some(p) => p.open(sealed, row.kid.as_bytes()),
                    None => Err(e),
                });
                let pkcs8 = opened.map_err(|_| KeyError::WrongMasterKey {
                    kid: row.kid.clone(),
                    given: master.id.clone(),
                    sealed_under: row.master_key_id.clone(),
                })?;
                set.active = Some(Arc::new(SigningKey::from_pkcs8(row.kid.clone(), alg, &pkcs8)?));
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

/// Start-up check: every stored private key that may still sign must open
/// with the master key (or the previous one), so a wrong key stops start-up
/// instead of surfacing at the next rotation.
pub fn check_all_open(rows: &[StoredKey], master: &MasterKey, previous: Option<&MasterKey>) -> Result<(), KeyError> {
    for row in rows
        .iter()
        .filter(|r| matches!(r.state, KeyState::Next | KeyState::Active))
    {
        let Some(sealed) = row.sealed_private.as_deref() else {
            continue;
        };
        let opens = master.open(sealed, row.kid.as_bytes()).is_ok()
            || previous.is_some_and(|p| p.open(sealed, row.kid.as_bytes()).is_ok());
        if !opens {
            return Err(KeyError::WrongMasterKey {
                kid: row.kid.clone(),
                given: master.id.clone(),
                sealed_under: row.master_key_id.clone(),
            });
        }
    }
    Ok(())
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
            let sig = g.signing.sign(b"hello");
            assert!(g.verifying.verify(b"hello", &sig));
            assert!(!g.verifying.verify(b"hellO", &sig));
            let back = VerifyingKey::from_jwk(&g.verifying.kid, alg, &g.verifying.jwk()).unwrap();
            assert!(back.verify(b"hello", &sig));
            assert_eq!(g.signing.kid, g.verifying.kid);
        }
    }
}
