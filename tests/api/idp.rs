//! A small OIDC IdP of our own on loopback, for people's sign-in: discovery,
//! a JWKS, an authorization endpoint that signs the configured person in
//! without a form (it redirects straight back with a code), and a token
//! endpoint that checks the client secret and the PKCE verifier before it
//! answers with an id_token. It can be told to answer wrongly (nonce,
//! audience, signature). It also serves MCP clients' metadata documents
//! (CIMD) at `/clients/{name}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::oidc::{Signer, ec_signer, now, sign_with};

pub const IDP_CLIENT: &str = "mayfly-at-acme";
pub const IDP_SECRET: &str = "idp-client-secret-do-not-leak";

/// What the IdP gets wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    WrongNonce,
    WrongAudience,
    BadSignature,
}

struct Pending {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Clone)]
struct Shared {
    url: String,
    key: Arc<Signer>,
    forger: Arc<Signer>,
    person: Arc<Mutex<Value>>,
    fault: Arc<Mutex<Fault>>,
    codes: Arc<Mutex<HashMap<String, Pending>>>,
    documents: Arc<Mutex<HashMap<String, Value>>>,
}

pub struct TestIdp {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "issuer": s.url, "jwks_uri": format!("{}/jwks", s.url),
        "authorization_endpoint": format!("{}/authorize", s.url), "token_endpoint": format!("{}/token", s.url),
        "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"keys": [s.key.jwk("idp-1")]}))
}

/// Signs the configured person in at once: straight back with a code.
async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let ok = q.get("client_id").map(String::as_str) == Some(IDP_CLIENT)
        && q.get("response_type").map(String::as_str) == Some("code")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("scope").is_some_and(|s| s.split(' ').any(|x| x == "openid"));
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = uuid::Uuid::new_v4().to_string();
    let redirect_uri = q["redirect_uri"].clone();
    s.codes.lock().unwrap().insert(
        code.clone(),
        Pending {
            nonce: q.get("nonce").cloned().unwrap_or_default(),
            challenge: q.get("code_challenge").cloned().unwrap_or_default(),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let mut url = reqwest::Url::parse(&redirect_uri).unwrap();
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or_default());
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

async fn token(State(s): State<Shared>, headers: HeaderMap, Form(f): Form<HashMap<String, String>>) -> Response {
    let expected = format!("Basic {}", STANDARD.encode(format!("{IDP_CLIENT}:{IDP_SECRET}")));
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    let Some(p) = f.get("code").and_then(|c| s.codes.lock().unwrap().remove(c)) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    if challenge != p.challenge || f.get("redirect_uri") != Some(&p.redirect_uri) {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    }
    let fault = *s.fault.lock().unwrap();
    let t = now();
    let mut claims = s.person.lock().unwrap().clone();
    claims["iss"] = json!(s.url);
    claims["aud"] = json!(if fault == Fault::WrongAudience {
        "someone-else"
    } else {
        IDP_CLIENT
    });
    claims["nonce"] = json!(if fault == Fault::WrongNonce {
        "not-the-nonce"
    } else {
        p.nonce.as_str()
    });
    claims["iat"] = json!(t);
    claims["exp"] = json!(t + 300);
    let signer = if fault == Fault::BadSignature {
        &s.forger
    } else {
        &s.key
    };
    let id_token = sign_with(signer, &json!({"alg": "ES256", "kid": "idp-1", "typ": "JWT"}), &claims);
    Json(json!({"access_token": "idp-access", "token_type": "Bearer", "id_token": id_token})).into_response()
}

async fn document(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.documents.lock().unwrap().get(&name) {
        Some(doc) => Json(doc.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl TestIdp {
    pub async fn start() -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            url: url.clone(),
            key: Arc::new(ec_signer()),
            forger: Arc::new(ec_signer()),
            person: Arc::new(Mutex::new(
                json!({"sub": "00u1alice", "email": "alice@acme.test", "email_verified": true, "name": "Alice",
                       "groups": "engineering"}),
            )),
            fault: Arc::new(Mutex::new(Fault::None)),
            codes: Arc::default(),
            documents: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/clients/{name}", get(document))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestIdp { url, shared, task }
    }

    /// The next sign-ins are this person (id_token claims, `iss`/`aud`/`nonce` aside).
    pub fn sign_in_as(&self, claims: Value) {
        *self.shared.person.lock().unwrap() = claims;
    }

    pub fn fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Publishes an MCP client's metadata document; returns its URL (the client id).
    pub fn client_document(&self, name: &str, redirect_uris: &[&str]) -> String {
        let id = format!("{}/clients/{name}", self.url);
        let doc = json!({"client_id": id, "client_name": format!("{name} (test IDE)"), "redirect_uris": redirect_uris,
                         "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                         "token_endpoint_auth_method": "none"});
        self.shared.documents.lock().unwrap().insert(name.to_string(), doc);
        id
    }

    /// A document as given (for malformed ones).
    pub fn raw_document(&self, name: &str, doc: Value) -> String {
        self.shared.documents.lock().unwrap().insert(name.to_string(), doc);
        format!("{}/clients/{name}", self.url)
    }
}
