//! The IdP leg of a sign-in: the provider's discovery document, the code
//! exchange at its token endpoint (PKCE and the client secret), and the
//! id_token check (signature by the issuer's keys, `iss`, `aud`, `exp`,
//! `nonce`). Every connection goes through federation's `Reach` (no
//! redirects, internal addresses refused after DNS), with a timeout and a
//! size cap. Why something failed goes to the audit trail; the person sees
//! a plain sentence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use crate::federation::keys::IssuerKeys;
use crate::federation::policy::SKEW_SECONDS;
use crate::federation::reach::Reach;
use crate::jose::jwt;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 256 * 1024;
const KEEP_DISCOVERY: Duration = Duration::from_secs(600);

/// Why an outbound call failed: for the audit trail, never for the caller.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

fn failed(why: impl Into<String>) -> Failed {
    Failed(why.into().chars().take(300).collect())
}

/// Outbound HTTP under federation's rules.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    pub reach: Reach,
}

impl Outbound {
    /// Fails rather than fall back to a client without the SSRF rules.
    pub fn new(reach: Reach) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(reach.resolver())
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        Ok(Self { http, reach })
    }

    async fn read(&self, res: reqwest::Response, url: &Url, max: usize) -> Result<Vec<u8>, Failed> {
        let mut res = res;
        if !res.status().is_success() {
            return Err(failed(format!("{url} answered {}", res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| failed(format!("{url}: {e}")))? {
            body.extend_from_slice(&chunk);
            if body.len() > max {
                return Err(failed(format!("{url} sent more than {max} bytes")));
            }
        }
        Ok(body)
    }

    /// GETs JSON from `url`, at most `max` bytes.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url, max: usize) -> Result<T, Failed> {
        self.reach.target(url).map_err(|e| failed(format!("{url}: {e}")))?;
        let res = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| failed(format!("{url}: {e}")))?;
        let body = self.read(res, url, max).await?;
        serde_json::from_slice(&body).map_err(|e| failed(format!("{url} sent no usable JSON: {e}")))
    }

    async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &SecretString)>,
    ) -> Result<serde_json::Value, Failed> {
        self.reach.target(url).map_err(|e| failed(format!("{url}: {e}")))?;
        let mut req = self
            .http
            .post(url.clone())
            .form(form)
            .header("accept", "application/json");
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(id), Some(enc(secret.expose_secret())));
        }
        let res = req.send().await.map_err(|e| failed(format!("{url}: {e}")))?;
        let body = self.read(res, url, MAX_BODY).await?;
        serde_json::from_slice(&body).map_err(|e| failed(format!("{url} sent no usable JSON: {e}")))
    }
}

/// What mayfly needs from an IdP's discovery document.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Endpoints {
    /// Must be the configured issuer (OIDC Discovery §4.3).
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// The company IdPs mayfly signs people in through.
#[derive(Clone)]
pub struct Idp {
    out: Outbound,
    keys: IssuerKeys,
    discovered: Arc<Mutex<HashMap<String, (Endpoints, Instant)>>>,
}

/// A verified sign-in: the id_token's claims.
pub type Claims = serde_json::Map<String, serde_json::Value>;

impl Idp {
    pub fn new(reach: Reach) -> Result<Self, String> {
        Ok(Self {
            keys: IssuerKeys::new(reach.clone()),
            out: Outbound::new(reach)?,
            discovered: Arc::default(),
        })
    }

    pub fn outbound(&self) -> &Outbound {
        &self.out
    }

    /// The provider's endpoints, both on the issuer's origin: the token
    /// endpoint gets the secret, and the authorization endpoint the person.
    pub async fn endpoints(&self, issuer: &str) -> Result<Endpoints, Failed> {
        if let Some((e, at)) = self.discovered.lock().unwrap_or_else(|e| e.into_inner()).get(issuer)
            && at.elapsed() < KEEP_DISCOVERY
        {
            return Ok(e.clone());
        }
        let origin = self
            .out
            .reach
            .issuer(issuer)
            .map_err(|e| failed(format!("{issuer}: {e}")))?;
        let url = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|_| failed(format!("{issuer}: not a URL")))?;
        let e: Endpoints = self.out.get_json(&url, MAX_BODY).await?;
        let token = Url::parse(&e.token_endpoint).map_err(|_| failed("token_endpoint is not a URL"))?;
        if token.origin() != origin.origin() {
            return Err(failed(format!("token_endpoint {token} is not on the issuer's origin")));
        }
        if e.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(failed(format!(
                "the discovery document names another issuer ({})",
                e.issuer
            )));
        }
        // On the issuer's origin too: a provider must not send people (and
        // their single sign-on) to another IdP's endpoint (mix-up).
        let authz = Url::parse(&e.authorization_endpoint).map_err(|_| failed("authorization_endpoint is not a URL"))?;
        if authz.origin() != origin.origin() {
            return Err(failed(format!(
                "authorization_endpoint {authz} is not on the issuer's origin"
            )));
        }
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.to_string(), (e.clone(), Instant::now()));
        Ok(e)
    }

    /// Exchanges the IdP's code for an id_token and checks it.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_in(
        &self,
        issuer: &str,
        client_id: &str,
        secret: Option<&SecretString>,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<Claims, Failed> {
        let endpoints = self.endpoints(issuer).await?;
        let token_url = Url::parse(&endpoints.token_endpoint).map_err(|_| failed("token_endpoint is not a URL"))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        if secret.is_none() {
            form.push(("client_id", client_id));
        }
        let answer = self
            .out
            .post_form(&token_url, &form, secret.map(|s| (client_id, s)))
            .await?;
        let id_token = answer
            .get("id_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| failed("the IdP's answer has no id_token"))?;
        self.check_id_token(issuer, client_id, id_token, nonce, now).await
    }

    /// OIDC Core §3.1.3.7: signature, `iss`, `aud` (and `azp` when several
    /// audiences), `exp`, `iat`, `nonce`.
    pub async fn check_id_token(
        &self,
        issuer: &str,
        client_id: &str,
        id_token: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<Claims, Failed> {
        let token = jwt::parse(id_token).map_err(|e| failed(format!("id_token: {e}")))?;
        let keys = self
            .keys
            .keys(issuer, token.header.kid.as_deref())
            .await
            .map_err(|e| failed(e.detail()))?;
        token
            .verify(&keys)
            .map_err(|e| failed(format!("id_token signature: {e}")))?;
        let claims = token.claims;
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
        if text("iss").map(|i| i.trim_end_matches('/')) != Some(issuer.trim_end_matches('/')) {
            return Err(failed("id_token: wrong iss"));
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(list)) => list.iter().filter_map(|a| a.as_str()).collect(),
            _ => vec![],
        };
        if !audiences.contains(&client_id) {
            return Err(failed("id_token: wrong aud"));
        }
        if audiences.len() > 1 && text("azp") != Some(client_id) {
            return Err(failed("id_token: several audiences and azp is not this client"));
        }
        let t = now.timestamp();
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| failed("id_token: no exp"))?;
        if exp + SKEW_SECONDS <= t {
            return Err(failed("id_token: expired"));
        }
        if claims
            .get("iat")
            .and_then(|v| v.as_i64())
            .is_some_and(|iat| iat > t + SKEW_SECONDS)
        {
            return Err(failed("id_token: issued in the future"));
        }
        if !text("nonce").is_some_and(|n| super::same(n, nonce)) {
            return Err(failed("id_token: wrong nonce"));
        }
        if text("sub").is_none_or(str::is_empty) {
            return Err(failed("id_token: no sub"));
        }
        Ok(claims)
    }
}
