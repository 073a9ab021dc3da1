//! Signing keys held by an OpenBao/Vault transit engine. mayfly stores only a
//! key's name (`mayfly-{kid}`) and public half; the private half is generated
//! inside transit, marked non-exportable, and never leaves it. Concurrent
//! signatures for one key go out as one `batch_input` request, so the cost of
//! a round trip is shared the way the lease writer shares a commit. Nothing
//! here ever logs or returns the transit token.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::batch::BatchSigner;
use crate::jose::{Alg, VerifyingKey};

/// Where transit is and how mayfly authenticates to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitConfig {
    /// `http(s)://host:port`, without `/v1`.
    pub addr: String,
    /// A file holding the token (an OpenBao agent sink, a mounted secret);
    /// read again when it changes.
    pub token_file: PathBuf,
    /// The transit engine's mount path.
    pub mount: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    #[error("transit at {addr} is unreachable: {why}")]
    Unreachable { addr: String, why: String },
    #[error("transit refused {what}: HTTP {status}: {why}")]
    Refused { what: String, status: u16, why: String },
    #[error("transit answered {what} with something unexpected: {why}")]
    Unexpected { what: String, why: String },
    #[error("cannot read MAYFLY_TRANSIT_TOKEN_FILE {path}: {why}")]
    TokenFile { path: String, why: String },
}

/// How long one request to transit may take before the mint answers 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Signatures asked for one key in one request, at most.
const MAX_BATCH: usize = 512;
/// Batch requests in flight per key: enough to keep the round trip busy,
/// few enough that waiting requests gather into the next batch.
const IN_FLIGHT: usize = 4;

/// A P-256 SubjectPublicKeyInfo is this fixed prefix and the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The transit engine: a client, its token, and what it last answered.
pub struct Transit {
    config: TransitConfig,
    http: reqwest::Client,
    token: RwLock<SecretString>,
    /// Whether the last request reached transit and was answered as expected.
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Transit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transit")
            .field("addr", &self.config.addr)
            .field("mount", &self.config.mount)
            .finish_non_exhaustive()
    }
}

fn key_name(kid: &str) -> String {
    format!("mayfly-{kid}")
}

fn read_token(path: &std::path::Path) -> Result<SecretString, TransitError> {
    let failed = |why: String| TransitError::TokenFile {
        path: path.display().to_string(),
        why,
    };
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?);
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("the file is empty".into()));
    }
    Ok(SecretString::from(token.to_string()))
}

/// The raw signature in a transit answer (`vault:v1:<base64url>`, as
/// `marshaling_algorithm=jws` gives it).
fn decode_signature(alg: Alg, text: &str) -> Result<Vec<u8>, String> {
    let encoded = text
        .strip_prefix("vault:v1:")
        .ok_or_else(|| "not a signature by key version 1".to_string())?;
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .or_else(|_| STANDARD.decode(encoded))
        .map_err(|_| "the signature is not base64".to_string())?;
    if raw.len() != 64 {
        return Err(format!("a {} signature of {} bytes", alg.as_str(), raw.len()));
    }
    Ok(raw)
}

/// The public key transit reports for version 1 of a key, as JWS wants it.
fn decode_public(alg: Alg, text: &str) -> Result<Vec<u8>, String> {
    match alg {
        Alg::Es256 => {
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            let der = STANDARD
                .decode(body.trim())
                .map_err(|_| "the PEM is not base64".to_string())?;
            match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
                Some(point) if point.len() == 65 && point[0] == 4 => Ok(point.to_vec()),
                _ => Err("not an uncompressed P-256 public key".into()),
            }
        }
        Alg::EdDsa => STANDARD
            .decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| "not an Ed25519 public key".into()),
    }
}

impl Transit {
    /// Connects (nothing is sent yet) and reads the token file.
    pub fn new(config: TransitConfig) -> Result<Self, TransitError> {
        let token = read_token(&config.token_file)?;
        // No proxy from the environment: the token goes to MAYFLY_TRANSIT_ADDR and nowhere else.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TransitError::Unreachable {
                addr: config.addr.clone(),
                why: e.to_string(),
            })?;
        Ok(Self {
            config,
            http,
            token: RwLock::new(token),
            // Start-up checks the token before anything is asked of transit.
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
        })
    }

    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// Whether the last request was answered as expected, and if not, why.
    pub fn health(&self) -> (bool, Option<String>) {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (self.healthy.load(Ordering::Relaxed), last)
    }

    fn record<T>(&self, outcome: Result<T, TransitError>) -> Result<T, TransitError> {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Ok(_) => *last = None,
            // A refusal of one request (a bad input) says nothing about transit's health.
            Err(TransitError::Refused { status, .. }) if *status == 400 => {}
            Err(e) => *last = Some(e.to_string()),
        }
        self.healthy.store(last.is_none(), Ordering::Relaxed);
        outcome
    }

    /// One call about keys and signatures: its outcome is transit's health.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, TransitError> {
        let outcome = self.call_quietly(method, path, body).await;
        self.record(outcome)
    }

    /// One call to the HTTP API under `/v1/`; the answer's JSON (`null` for
    /// 204). A token lookup that succeeds says nothing about whether signing
    /// does, so it leaves the health alone.
    async fn call_quietly(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, TransitError> {
        let what = format!("{method} {path}");
        let url = format!("{}/v1/{path}", self.config.addr.trim_end_matches('/'));
        let token = self.token.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut header =
            reqwest::header::HeaderValue::from_str(token.expose_secret()).map_err(|_| TransitError::TokenFile {
                path: self.config.token_file.display().to_string(),
                why: "the token is not a valid header value".into(),
            })?;
        header.set_sensitive(true);
        let mut request = self.http.request(method, url).header("X-Vault-Token", header);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.map_err(|e| TransitError::Unreachable {
            addr: self.config.addr.clone(),
            why: if e.is_timeout() {
                format!("no answer within {REQUEST_TIMEOUT:?}")
            } else {
                "connection failed".into()
            },
        });
        async {
            let answer = answer?;
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(body);
            }
            if status.as_u16() == 403 {
                // An agent may have written a fresh token; the next call uses it.
                self.reload_token();
            }
            let why = body["errors"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                .unwrap_or_default();
            Err(TransitError::Refused {
                what: what.clone(),
                status: status.as_u16(),
                why: if why.is_empty() { status.to_string() } else { why },
            })
        }
        .await
    }

    pub(super) fn mount_path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.config.mount.trim_matches('/'))
    }

    /// Reads the token file again (it may have been rotated); a file that
    /// cannot be read keeps the token in use.
    pub fn reload_token(&self) {
        match read_token(&self.config.token_file) {
            Ok(token) => *self.token.write().unwrap_or_else(|e| e.into_inner()) = token,
            Err(e) => tracing::warn!(error = %e, "keeping the transit token in use"),
        }
    }

    /// Start-up check: the token is accepted. Says why not.
    pub async fn check(&self) -> Result<(), TransitError> {
        self.call_quietly(reqwest::Method::GET, "auth/token/lookup-self", None)
            .await
            .map(|_| ())
    }

    /// Creates a non-exportable key named for `kid` inside transit and
    /// returns its public half, after checking that a signature it makes
    /// verifies with that half.
    pub async fn create(&self, kid: &str, alg: Alg) -> Result<VerifyingKey, TransitError> {
        let name = key_name(kid);
        let kind = match alg {
            Alg::Es256 => "ecdsa-p256",
            Alg::EdDsa => "ed25519",
        };
        let body = json!({"type": kind, "exportable": false, "allow_plaintext_backup": false});
        self.call(
            reqwest::Method::POST,
            &self.mount_path(&format!("keys/{name}")),
            Some(body),
        )
        .await?;
        let read = self
            .call(reqwest::Method::GET, &self.mount_path(&format!("keys/{name}")), None)
            .await?;
        let unexpected = |why: String| TransitError::Unexpected {
            what: format!("key {name}"),
            why,
        };
        if read["data"]["exportable"] != json!(false) || read["data"]["type"] != json!(kind) {
            return Err(unexpected(format!(
                "expected a non-exportable {kind} key, found type {} exportable {}",
                read["data"]["type"], read["data"]["exportable"]
            )));
        }
        let public = read["data"]["keys"]["1"]["public_key"]
            .as_str()
            .ok_or_else(|| unexpected("no public key for version 1".into()))
            .and_then(|text| decode_public(alg, text).map_err(unexpected))?;
        let verifying = VerifyingKey::new(kid.to_string(), alg, public).map_err(|e| unexpected(e.to_string()))?;
        let probe = format!("mayfly signing key check {kid}");
        let sig = self
            .sign_batch(kid, alg, &[probe.as_bytes()])
            .await?
            .pop()
            .ok_or_else(|| unexpected("no signature".into()))?
            .map_err(unexpected)?;
        if !verifying.verify(probe.as_bytes(), &sig) {
            return Err(unexpected("its signature does not verify with its public key".into()));
        }
        Ok(verifying)
    }

    /// Whether transit still holds the key for `kid`.
    pub async fn holds(&self, kid: &str) -> Result<bool, TransitError> {
        let path = self.mount_path(&format!("keys/{}", key_name(kid)));
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(_) => Ok(true),
            // Transit answers a missing key with 404 and no message; a path
            // nothing serves (a wrong mount) is a 404 with one, and an error.
            Err(TransitError::Refused { status: 404, why, .. }) if why == "404 Not Found" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Destroys the key for `kid` in transit (every version). Destroying a
    /// key that is already gone succeeds.
    pub async fn destroy(&self, kid: &str) -> Result<(), TransitError> {
        let path = self.mount_path(&format!("keys/{}", key_name(kid)));
        if !self.holds(kid).await? {
            return Ok(());
        }
        // Transit refuses to delete a key until it is configured to allow it;
        // set here, at the moment of destruction, not at creation.
        let config = json!({"deletion_allowed": true});
        self.call(reqwest::Method::POST, &format!("{path}/config"), Some(config))
            .await?;
        self.call(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// Signs several messages with one request.
    async fn sign_batch(
        &self,
        kid: &str,
        alg: Alg,
        messages: &[&[u8]],
    ) -> Result<Vec<Result<Vec<u8>, String>>, TransitError> {
        let inputs: Vec<Value> = messages.iter().map(|m| json!({"input": STANDARD.encode(m)})).collect();
        // Version 1 is the key mayfly published; a version made in transit
        // since (by hand, or auto-rotation) is never used to sign.
        let mut body = json!({"batch_input": inputs, "marshaling_algorithm": "jws", "key_version": 1});
        if alg == Alg::Es256 {
            body["hash_algorithm"] = json!("sha2-256");
        }
        let path = self.mount_path(&format!("sign/{}", key_name(kid)));
        let answer = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        let results = answer["data"]["batch_results"]
            .as_array()
            .filter(|r| r.len() == messages.len())
            .ok_or_else(|| TransitError::Unexpected {
                what: format!("sign {}", key_name(kid)),
                why: "not one result per input".into(),
            })?;
        Ok(results
            .iter()
            .map(|r| match r["signature"].as_str() {
                Some(sig) => decode_signature(alg, sig),
                None => Err(r["error"].as_str().unwrap_or("no signature").to_string()),
            })
            .collect())
    }

    /// Keeps the token alive: reads the token file again (an agent may have
    /// replaced it) and renews a renewable token once two thirds of its
    /// lifetime has passed, as OpenBao advises. Runs until dropped.
    pub async fn run_renewal(self: Arc<Self>) {
        loop {
            self.reload_token();
            let wait = match self
                .call_quietly(reqwest::Method::GET, "auth/token/lookup-self", None)
                .await
            {
                Ok(look) => {
                    let ttl = look["data"]["ttl"].as_u64().unwrap_or(0);
                    let creation = look["data"]["creation_ttl"].as_u64().unwrap_or(ttl);
                    let renewable = look["data"]["renewable"].as_bool().unwrap_or(false);
                    if renewable && ttl > 0 && ttl * 3 <= creation {
                        match self
                            .call_quietly(reqwest::Method::POST, "auth/token/renew-self", Some(json!({})))
                            .await
                        {
                            Ok(_) => tracing::info!("renewed the transit token"),
                            Err(e) => tracing::warn!(error = %e, "cannot renew the transit token"),
                        }
                    }
                    // Look again well before the next third of its life has passed.
                    Duration::from_secs((creation / 6).clamp(5, 60))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up the transit token");
                    Duration::from_secs(5)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A signing key held in transit: each batch of signatures is one request.
pub fn signer(transit: Arc<Transit>, kid: String, alg: Alg) -> BatchSigner {
    let key = kid.clone();
    BatchSigner::spawn(kid, alg, MAX_BATCH, IN_FLIGHT, move |messages: Vec<Vec<u8>>| {
        let (transit, kid) = (transit.clone(), key.clone());
        async move {
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            transit.sign_batch(&kid, alg, &refs).await.map_err(|e| e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_and_signatures_decode_as_transit_writes_them() {
        let g = crate::keys::generate(Alg::Es256).unwrap();
        let point = {
            let jwk = g.verifying.jwk();
            let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
            let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
            [&[4u8][..], &x, &y].concat()
        };
        let der = [&P256_SPKI_PREFIX[..], &point].concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &STANDARD.encode(&der)[..64],
            &STANDARD.encode(&der)[64..]
        );
        assert_eq!(decode_public(Alg::Es256, &pem).unwrap(), point);
        assert!(decode_public(Alg::Es256, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
        assert!(decode_public(Alg::EdDsa, &STANDARD.encode([7u8; 31])).is_err());

        let sig = g.signing.sign_now(b"m").unwrap();
        let answer = format!("vault:v1:{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(decode_signature(Alg::Es256, &answer).unwrap(), sig);
        assert!(decode_signature(Alg::Es256, "vault:v1:AAAA").is_err());
        let v2 = format!("vault:v2:{}", URL_SAFE_NO_PAD.encode(&sig));
        assert!(
            decode_signature(Alg::Es256, &v2).is_err(),
            "only version 1 was published"
        );
    }
}
