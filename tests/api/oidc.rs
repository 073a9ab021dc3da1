//! A fake OIDC issuer for federation tests: discovery and a JWKS on a
//! loopback port, an RSA and an EC signing key, tokens shaped like GitHub
//! Actions', GitLab CI's and Kubernetes' — and it can rotate keys or hang.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};

/// A 2048-bit RSA test key (PKCS#1 DER), generated once for these tests.
const RSA_KEY: &str = "MIIEowIBAAKCAQEAwrsFTiMnWFCy6h+Qlwd/lrVBVSOtRcWo5zIkjTCcieHgrzCIWPXGSejne7pHSZLQXdBkEld0SWUZACAjWocfq2PO63N4ReYCdxQv5RkiOxCv0hpEtXPjBJQtq4MFKF0GT7DVYSyBABV/yWnwEmsKEN9jvdWx9Q6ifKNXibHp6OH4IDLvdOecVkwpeFP7GV9FVIHemSArJTYGsQTJuTc9W606nYsEQudilZ4JHu0ozXvKa2xfvpv0ujVn7Z/pFfx4dU7SFpQmuL/3a4iGYnSJWcRZKB0aOuK9r9A/T0MxFGCFoq9+n3KhDx3miHMlp4vx0GiWcnqZ5/Q6KtVgAXUGBwIDAQABAoIBAA2Qg9mXYaBpb//BYXaLy1ZJsPqHyNmhNQH0gGRPZxAZv7zPB32+572dRNwIXqU1iLXdlCL3nD5Clb+9qAjLJyhururAI+LRQgmzynRN0GXHOfV2O/lcewtbcQ+knvbaqAZkEzEOLbw+QyUExU2FzvExm8aM/LT30ddsdLwUPG7ViQWAA2dp4BuqQme8HGQs6AJT3gnDD4nblmklTfd3dnHUStbfrHnjK0z89KFnkiJrjNfWPAGOqzVZEVbr8SrG6nN8kzrg+pCcl1VDXd4blGqlZFLf3ozIpzgiG8p8PTjQTxwiZi1GfDU6GfCL39qqOrFdcbv/OiY+WK9DneOF26ECgYEA5NgX133uLtOXJ613uZLrVJekO2YX7LQt3FeyxWKJ0cXmMwPCr7lBk0g+hHoFJWmjmNqR4Ie0H6ubOKUZzWC+gBpKND54Cfyscx0UzkWTFIqwZHquDU+F87anWB8jbkwb5S8FTzV/r3jYQnQnaJAFIszKfrUsgEjdt0sDDmRn3WcCgYEA2dadH1fLQbP1k1Stdk4zVF0hgd+E2TMM9Evlh7FR+Smjg6bpwqtLg/t1ZAsYUjwJzozD0DXeIn+I69U0bWixTEoQC0o+EeW97ZIgI4K84iyPNHf2i66JJ6b4XQ5iAQZL8JHvuMFAYv/zPG6D4u6kVOuXHWzbD0R+/uaSPhJ9jmECgYB+lDCL13IZoJvpLIAeu29DuST0XgI5wWfkivWtTFXjHE26Rgg33oaxCrLZ4Axcp1QARlWOFkHBitAuwtPE0BBPFzuYLj2DeKmCesF5Xu593EC5M0p2vlffeFaT3ZVheuOrHxkWuQbJblRgXZM2uQK+Pvx6nYfh5WwN6IXmPg9dXQKBgQCrtZLWoPKT0NGzl5y/03Z8eoiuAc2LE8WTT7wW0Lwn5h2A6fH7Q+DboTvwZxp9v9uPF8BGACAgG12HX+DamRqgYwTwkU4J94lVmciBlU1kDvG2zxTlF+f+/Itrdqnj2t3DPJW0kYg6QTyvFwIYwDmCws20IRkvmLNuI7uE+DhGIQKBgCpFUeejioTvWsG8gSPLhAJX31DQdu4RbpltjZdQtS5+DB6+AHckHz2/Bm3vjKo/L7vCbs/c4qMyCaN4ctNJzFauNABqqWvw45euoZMQKhBHj/9icrkeSd/J1Hk6m2pwNNr9NXW1YNh8CrWJ+TplJp3/YSDUKnFXwIP8R1gyy6LE";

pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    pub fn jwk(&self, kid: &str) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            Signer::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig).unwrap();
                sig
            }
            Signer::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
        }
    }
}

pub fn ec_signer() -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    Signer::Ec(EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap())
}

pub fn rsa_signer() -> Signer {
    Signer::Rsa(RsaKeyPair::from_der(&STANDARD.decode(RSA_KEY).unwrap()).unwrap())
}

/// The published keys, by kid.
type Keys = Arc<Mutex<Vec<(String, Arc<Signer>)>>>;

#[derive(Clone)]
struct Shared {
    keys: Keys,
    hang: Arc<AtomicBool>,
    /// JWKS requests held by `hang` so far.
    held: Arc<AtomicUsize>,
    url: String,
    /// Where discovery points for the JWKS, when not at `{url}/jwks`.
    jwks_uri: Arc<Mutex<Option<String>>>,
}

pub struct FakeIssuer {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    let jwks_uri = s.jwks_uri.lock().unwrap().clone();
    Json(json!({"issuer": s.url, "jwks_uri": jwks_uri.unwrap_or_else(|| format!("{}/jwks", s.url))}))
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    if s.hang.load(Ordering::Relaxed) {
        s.held.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    let keys: Vec<Value> = s.keys.lock().unwrap().iter().map(|(kid, k)| k.jwk(kid)).collect();
    Json(json!({"keys": keys}))
}

/// Signs a compact JWS with an arbitrary header (for forged ones too).
pub fn sign_with(signer: &Signer, header: &Value, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = signer.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub fn now() -> i64 {
    mayfly::clock::Clock::now(&mayfly::clock::SystemClock).timestamp()
}

impl FakeIssuer {
    pub async fn start() -> FakeIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            keys: Arc::new(Mutex::new(vec![
                ("rsa-1".into(), Arc::new(rsa_signer())),
                ("ec-1".into(), Arc::new(ec_signer())),
            ])),
            hang: Arc::default(),
            held: Arc::default(),
            url: url.clone(),
            jwks_uri: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIssuer { url, shared, task }
    }

    fn signer(&self, kid: &str) -> Arc<Signer> {
        let keys = self.shared.keys.lock().unwrap();
        keys.iter().find(|(k, _)| k == kid).map(|(_, s)| s.clone()).unwrap()
    }

    /// A token signed by key `kid`, with `iss` set to this issuer.
    pub fn token(&self, kid: &str, mut claims: Value) -> String {
        claims["iss"] = json!(self.url);
        self.sign(kid, &claims)
    }

    /// A token signed by key `kid` with the claims as given (`iss` too).
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let signer = self.signer(kid);
        sign_with(&signer, &json!({"alg": signer.alg(), "kid": kid, "typ": "JWT"}), claims)
    }

    /// From now on discovery names `uri` as the JWKS.
    pub fn point_jwks_to(&self, uri: &str) {
        *self.shared.jwks_uri.lock().unwrap() = Some(uri.to_string());
    }

    /// An Identity Assertion JWT Authorization Grant (`typ: oauth-id-jag+jwt`)
    /// signed by key `kid`, with `iss` set to this issuer.
    pub fn id_jag(&self, kid: &str, mut claims: Value) -> String {
        claims["iss"] = json!(self.url);
        let signer = self.signer(kid);
        sign_with(
            &signer,
            &json!({"alg": signer.alg(), "kid": kid, "typ": "oauth-id-jag+jwt"}),
            &claims,
        )
    }

    /// Publishes a new EC key (the issuer rotated).
    pub fn add_key(&self, kid: &str) {
        self.shared
            .keys
            .lock()
            .unwrap()
            .push((kid.into(), Arc::new(ec_signer())));
    }

    /// From now on the JWKS endpoint takes 30 seconds to answer.
    pub fn hang(&self) {
        self.shared.hang.store(true, Ordering::Relaxed);
    }

    /// How many JWKS requests `hang` has held so far.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// The public JWK of any signer (to register a client's key).
    pub fn jwk_of(signer: &Signer, kid: &str) -> Value {
        signer.jwk(kid)
    }

    /// The public JWK of one of its keys (to forge an HS256 token with it).
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.signer(kid).jwk(kid)
    }
}

/// Claims shaped like a GitHub Actions OIDC token.
pub fn github(aud: &str, repo: &str, git_ref: &str) -> Value {
    let t = now();
    json!({
        "aud": aud, "sub": format!("repo:{repo}:ref:{git_ref}"), "repository": repo,
        "repository_owner": repo.split('/').next().unwrap(), "repository_owner_id": "1342004",
        "ref": git_ref, "job_workflow_ref": format!("{repo}/.github/workflows/release.yml@{git_ref}"),
        "run_id": "6372681521", "run_attempt": "1", "environment": "prod", "actor": "octocat",
        "iat": t, "nbf": t, "exp": t + 300, "jti": uuid::Uuid::new_v4().to_string()
    })
}

/// Claims shaped like a GitLab CI `id_tokens` token.
pub fn gitlab(aud: &str, project: &str) -> Value {
    let t = now();
    json!({
        "aud": aud, "sub": format!("project_path:{project}:ref_type:branch:ref:main"),
        "project_path": project, "ref": "main", "ref_protected": "true", "pipeline_id": "1094",
        "namespace_path": project.split('/').next().unwrap(),
        "iat": t, "nbf": t, "exp": t + 300, "jti": uuid::Uuid::new_v4().to_string()
    })
}

/// Claims shaped like a Kubernetes projected service-account token.
pub fn kubernetes(aud: &str, namespace: &str, account: &str) -> Value {
    let t = now();
    json!({
        "aud": [aud], "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "5f1c"},
                          "pod": {"name": format!("{account}-7d9f"), "uid": "a1b2"}},
        "iat": t, "nbf": t, "exp": t + 600
    })
}
