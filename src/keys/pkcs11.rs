//! Signing keys held by a PKCS#11 token (an HSM; SoftHSM2 in tests). Keys
//! are generated inside the token as sensitive, non-extractable objects
//! labelled with their `kid`; mayfly reads back only the public point and
//! asks the token for signatures (CKM_ECDSA over a SHA-256 digest, which
//! returns the raw `r || s` JWS wants). Calls into the module block, so they
//! run on blocking threads, each with a session of its own from a small pool.
//! The PIN is read from a file, used to log in, and never kept in a log or an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::batch::BatchSigner;
use crate::jose::{Alg, VerifyingKey};

/// Which module, which token, and the file holding its user PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    pub pin_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {module}: {why}")]
    Module { module: String, why: String },
    #[error("no PKCS#11 token labelled `{0}` (MAYFLY_PKCS11_TOKEN)")]
    NoToken(String),
    #[error("cannot read MAYFLY_PKCS11_PIN_FILE {path}: {why}")]
    PinFile { path: String, why: String },
    #[error("the PKCS#11 token `{token}` refused the PIN (MAYFLY_PKCS11_PIN_FILE): {why}")]
    Login { token: String, why: String },
    #[error("PKCS#11 {what} failed: {why}")]
    Call { what: &'static str, why: String },
}

/// Sessions open at once: one per blocking signer, as the module allows.
const SESSIONS: usize = 4;
/// How long one call into the token may take before the mint answers 503.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The named curve P-256, DER-encoded (CKA_EC_PARAMS).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One initialised context per module and process: PKCS#11 allows one
/// `C_Initialize` per application, however many signers share it.
fn context(module: &Path) -> Result<Pkcs11, HsmError> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = loaded.get(module) {
        return Ok(ctx.clone());
    }
    let failed = |why: String| HsmError::Module {
        module: module.display().to_string(),
        why,
    };
    let ctx = Pkcs11::new(module).map_err(|e| failed(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    loaded.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn read_pin(path: &Path) -> Result<SecretString, HsmError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| HsmError::PinFile {
        path: path.display().to_string(),
        why: e.to_string(),
    })?);
    Ok(SecretString::from(text.trim_end_matches(['\n', '\r']).to_string()))
}

fn call(what: &'static str) -> impl Fn(CkError) -> HsmError {
    move |e| HsmError::Call {
        what,
        why: e.to_string(),
    }
}

/// The public point of an EC key as JWS wants it (65 bytes, uncompressed),
/// from CKA_EC_POINT (a DER OCTET STRING around it, or the bare point).
fn ec_point(raw: &[u8]) -> Option<Vec<u8>> {
    let point = match raw {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        _ if raw.len() == 65 => raw,
        _ => return None,
    };
    (point[0] == 0x04).then(|| point.to_vec())
}

/// A PKCS#11 token: its sessions, the private-key handles found so far, and
/// what it last answered.
pub struct Hsm {
    config: Pkcs11Config,
    ctx: Pkcs11,
    slot: Slot,
    pin: Mutex<SecretString>,
    idle: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
    /// Set when the token refused the PIN: no login is tried again until the
    /// PIN file says something else (a token locks after a few wrong PINs).
    pin_refused: AtomicBool,
    handles: Mutex<HashMap<String, ObjectHandle>>,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.config.module)
            .field("token", &self.config.token)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the module, finds the token by label and logs in. A wrong PIN
    /// or a missing token stops start-up here, with the reason.
    pub fn open(config: Pkcs11Config) -> Result<Self, HsmError> {
        let ctx = context(&config.module)?;
        let pin = read_pin(&config.pin_file)?;
        let mut slot = None;
        for s in ctx.get_slots_with_token().map_err(call("C_GetSlotList"))? {
            let info = ctx.get_token_info(s).map_err(call("C_GetTokenInfo"))?;
            if info.label().trim_end() == config.token {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| HsmError::NoToken(config.token.clone()))?;
        let hsm = Self {
            ctx,
            slot,
            pin: Mutex::new(pin),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(SESSIONS)),
            pin_refused: AtomicBool::new(false),
            handles: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            config,
        };
        let session = hsm.session()?;
        hsm.give_back(session);
        Ok(hsm)
    }

    /// A logged-in read-write session: an idle one, or a new one.
    fn session(&self) -> Result<Session, HsmError> {
        if let Some(s) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        let refused = |why: String| HsmError::Login {
            token: self.config.token.clone(),
            why,
        };
        let mut pin = self.pin.lock().unwrap_or_else(|e| e.into_inner());
        if self.pin_refused.load(Ordering::Relaxed) {
            let fresh = read_pin(&self.config.pin_file)?;
            if fresh.expose_secret() == pin.expose_secret() {
                return Err(refused(
                    "refused before; not tried again until the PIN file changes".into(),
                ));
            }
            *pin = fresh;
        }
        let session = self.ctx.open_rw_session(self.slot).map_err(call("C_OpenSession"))?;
        // Login is per application and token: the first session logs every one in.
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                self.pin_refused.store(false, Ordering::Relaxed);
                Ok(session)
            }
            Err(e) => {
                let wrong_pin = matches!(
                    e,
                    CkError::Pkcs11(
                        RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired | RvError::PinLenRange,
                        _
                    )
                );
                self.pin_refused.store(wrong_pin, Ordering::Relaxed);
                Err(refused(e.to_string()))
            }
        }
    }

    fn give_back(&self, session: Session) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(session);
    }

    /// Runs `f` with a session on a blocking thread, giving up after
    /// CALL_TIMEOUT (a hung token is an answer, not a hang). The session and
    /// its permit stay with the thread until it returns, so a hung call
    /// holds one slot of the pool, never more. A session that failed is
    /// closed rather than reused, so a token that comes back is found again
    /// without a restart. Only `counts` calls (sessions, signatures) decide
    /// the signer's health.
    async fn with_session<T: Send + 'static>(
        self: &Arc<Self>,
        counts: bool,
        f: impl FnOnce(&Hsm, &Session) -> Result<T, HsmError> + Send + 'static,
    ) -> Result<T, HsmError> {
        let hung = |what: &'static str| HsmError::Call {
            what,
            why: format!("no answer within {CALL_TIMEOUT:?}"),
        };
        let hsm = self.clone();
        let outcome = tokio::time::timeout(CALL_TIMEOUT, async move {
            let permit = hsm.permits.clone().acquire_owned().await.map_err(|_| HsmError::Call {
                what: "session pool",
                why: "closed".into(),
            })?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let session = hsm.session()?;
                let out = f(&hsm, &session);
                if out.is_ok() {
                    hsm.give_back(session);
                }
                out
            })
            .await
            .unwrap_or_else(|e| {
                Err(HsmError::Call {
                    what: "signing thread",
                    why: e.to_string(),
                })
            })
        })
        .await
        .unwrap_or_else(|_| Err(hung("PKCS#11 call")));
        if counts {
            let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
            *last = outcome.as_ref().err().map(|e| e.to_string());
            self.healthy.store(last.is_none(), Ordering::Relaxed);
        }
        outcome
    }

    pub fn token(&self) -> &str {
        &self.config.token
    }

    pub fn health(&self) -> (bool, Option<String>) {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (self.healthy.load(Ordering::Relaxed), last)
    }

    /// Asks the token something cheap (for `/readyz` after a failure).
    pub async fn check(self: &Arc<Self>) -> Result<(), HsmError> {
        self.with_session(true, |_, s| {
            s.get_session_info().map(|_| ()).map_err(call("C_GetSessionInfo"))
        })
        .await
    }

    fn find(session: &Session, kid: &str, class: Option<ObjectClass>) -> Result<Vec<ObjectHandle>, HsmError> {
        let mut template = vec![Attribute::Label(kid.as_bytes().to_vec())];
        template.extend(class.map(Attribute::Class));
        session.find_objects(&template).map_err(call("C_FindObjects"))
    }

    /// The private key for `kid`, from the cache or the token.
    fn private_key(&self, session: &Session, kid: &str) -> Result<ObjectHandle, HsmError> {
        let cached = self.handles.lock().unwrap_or_else(|e| e.into_inner()).get(kid).copied();
        if let Some(h) = cached {
            // A module may reuse the handle of a key destroyed elsewhere: check it is still this kid's.
            let label = session.get_attributes(h, &[AttributeType::Label]).unwrap_or_default();
            if label
                .iter()
                .any(|a| matches!(a, Attribute::Label(l) if l == kid.as_bytes()))
            {
                return Ok(h);
            }
            self.handles.lock().unwrap_or_else(|e| e.into_inner()).remove(kid);
        }
        let found = Self::find(session, kid, Some(ObjectClass::PRIVATE_KEY))?;
        let handle = *found.first().ok_or_else(|| HsmError::Call {
            what: "C_FindObjects",
            why: format!("the token holds no private key labelled {kid}"),
        })?;
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kid.to_string(), handle);
        Ok(handle)
    }

    fn sign_with(&self, session: &Session, kid: &str, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = self.private_key(session, kid)?;
        self.sign_by(session, key, kid, message)
    }

    fn sign_by(&self, session: &Session, key: ObjectHandle, kid: &str, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        match session.sign(&Mechanism::Ecdsa, key, digest.as_ref()) {
            Ok(sig) if sig.len() == 64 => Ok(sig),
            Ok(sig) => Err(HsmError::Call {
                what: "C_Sign",
                why: format!("a signature of {} bytes", sig.len()),
            }),
            Err(e) => {
                // The handle may be stale (the key destroyed, the token reinserted).
                self.handles.lock().unwrap_or_else(|e| e.into_inner()).remove(kid);
                Err(call("C_Sign")(e))
            }
        }
    }

    /// Generates a P-256 key pair inside the token, labelled `kid`: the
    /// private half sensitive and never extractable. Returns the public half
    /// after checking that a signature the token makes verifies with it.
    pub async fn create(self: &Arc<Self>, kid: &str, alg: Alg) -> Result<VerifyingKey, HsmError> {
        if alg != Alg::Es256 {
            return Err(HsmError::Call {
                what: "C_GenerateKeyPair",
                why: "mayfly generates ES256 keys in PKCS#11 tokens only".into(),
            });
        }
        let kid = kid.to_string();
        self.with_session(false, move |hsm, session| {
            let label = Attribute::Label(kid.as_bytes().to_vec());
            let id = Attribute::Id(kid.as_bytes().to_vec());
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                label.clone(),
                id.clone(),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::KeyType(KeyType::EC),
                label,
                id,
            ];
            let (public_key, private_key) = session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(call("C_GenerateKeyPair"))?;
            let checked = hsm.check_new(session, &kid, alg, public_key, private_key);
            if checked.is_err() {
                // Nothing half-made stays in the token.
                hsm.handles.lock().unwrap_or_else(|e| e.into_inner()).remove(&kid);
                let _ = session.destroy_object(private_key);
                let _ = session.destroy_object(public_key);
            }
            checked
        })
        .await
    }

    /// Reads a new key pair's public point back and checks that the token's
    /// signature verifies with it.
    fn check_new(
        &self,
        session: &Session,
        kid: &str,
        alg: Alg,
        public_key: ObjectHandle,
        private_key: ObjectHandle,
    ) -> Result<VerifyingKey, HsmError> {
        let hsm = self;
        {
            let point = session
                .get_attributes(public_key, &[AttributeType::EcPoint])
                .map_err(call("C_GetAttributeValue"))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => ec_point(&p),
                    _ => None,
                })
                .ok_or_else(|| HsmError::Call {
                    what: "C_GetAttributeValue",
                    why: "no uncompressed P-256 point".into(),
                })?;
            let verifying = VerifyingKey::new(kid.to_string(), alg, point).map_err(|e| HsmError::Call {
                what: "C_GetAttributeValue",
                why: e.to_string(),
            })?;
            hsm.handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(kid.to_string(), private_key);
            let probe = format!("mayfly signing key check {kid}");
            let sig = hsm.sign_with(session, kid, probe.as_bytes())?;
            if !verifying.verify(probe.as_bytes(), &sig) {
                return Err(HsmError::Call {
                    what: "C_Sign",
                    why: "the token's signature does not verify with its public key".into(),
                });
            }
            Ok(verifying)
        }
    }

    /// Whether the token holds the private key for `kid`.
    pub async fn holds(self: &Arc<Self>, kid: &str) -> Result<bool, HsmError> {
        let kid = kid.to_string();
        self.with_session(false, move |_, s| {
            Ok(!Self::find(s, &kid, Some(ObjectClass::PRIVATE_KEY))?.is_empty())
        })
        .await
    }

    /// Destroys every object labelled `kid` in the token. Destroying what is
    /// already gone succeeds.
    pub async fn destroy(self: &Arc<Self>, kid: &str) -> Result<(), HsmError> {
        let kid = kid.to_string();
        self.with_session(false, move |hsm, s| {
            hsm.handles.lock().unwrap_or_else(|e| e.into_inner()).remove(&kid);
            for object in Self::find(s, &kid, None)? {
                s.destroy_object(object).map_err(call("C_DestroyObject"))?;
            }
            Ok(())
        })
        .await
    }
}

/// Signatures in one batch, at most (on one session, in one blocking call).
const MAX_BATCH: usize = 64;

/// A signing key held in a PKCS#11 token: each batch of signatures is made
/// on one session in one blocking call, up to one batch per session at once.
pub fn signer(hsm: Arc<Hsm>, kid: String) -> BatchSigner {
    let key = kid.clone();
    BatchSigner::spawn(kid, Alg::Es256, MAX_BATCH, SESSIONS, move |messages: Vec<Vec<u8>>| {
        let (hsm, kid) = (hsm.clone(), key.clone());
        async move {
            hsm.with_session(true, move |hsm, s| {
                // The key's handle is looked up (and checked) once per batch.
                let key = hsm.private_key(s, &kid)?;
                Ok(messages
                    .iter()
                    .map(|m| hsm.sign_by(s, key, &kid, m).map_err(|e| e.to_string()))
                    .collect())
            })
            .await
            .map_err(|e| e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_come_wrapped_in_an_octet_string_or_bare() {
        let point = [&[4u8][..], &[9u8; 64]].concat();
        assert_eq!(ec_point(&[&[0x04, 0x41][..], &point].concat()), Some(point.clone()));
        assert_eq!(ec_point(&point), Some(point.clone()));
        assert_eq!(ec_point(&point[..64]), None);
        assert_eq!(ec_point(&[&[0x04, 0x41][..], &[2u8; 65]].concat()), None, "compressed");
    }
}
