//! The signing keys of external issuers, fetched from their OIDC discovery
//! document and JWKS, only for issuers some trust policy names (a token
//! never chooses where mayfly connects) and `Reach` allows: the JWKS on the
//! issuer's own origin, no redirects, internal addresses dropped after DNS
//! resolution; timeouts and a size cap on every fetch; keys cached per
//! issuer and refetched when an unknown `kid` appears, at most every
//! `REFETCH_COOLDOWN`. One slow issuer only ever delays its own tokens.
//! Why a fetch failed goes to the audit trail, never to the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::reach::Reach;
use crate::jose::jwt::{Jwk, JwkSet};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 512 * 1024;
const KEEP: Duration = Duration::from_secs(600);
const REFETCH_COOLDOWN: Duration = Duration::from_secs(2);

/// Why an issuer's keys could not be had. Every cause reads the same to the
/// caller (a closed port, a 404 and a refused address must not be told
/// apart: that would make mayfly a port scanner); [`FetchError::detail`] is
/// for the audit trail and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("cannot verify the token's issuer")]
    NotAllowed(String),
    #[error("cannot verify the token's issuer")]
    Unreachable(String),
}

impl FetchError {
    /// What went wrong, for the audit trail: never shown to the caller.
    pub fn detail(&self) -> String {
        match self {
            Self::NotAllowed(why) => format!("issuer not allowed: {why}"),
            Self::Unreachable(why) => format!("cannot fetch the issuer's keys: {why}"),
        }
    }
}

/// An error and its causes, one line (reqwest's own text omits the cause:
/// "connection refused", the resolver's refusal).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn shorten(text: &str) -> String {
    text.chars().take(300).collect()
}

#[derive(Debug, Clone)]
struct Entry {
    keys: Arc<Vec<Jwk>>,
    fetched: Instant,
}

/// One issuer's cache, locked while it is being fetched.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// Per-issuer caches; each issuer has its own lock, so a hanging issuer
/// holds up only requests for it.
#[derive(Clone)]
pub struct IssuerKeys {
    http: reqwest::Client,
    reach: Reach,
    entries: Arc<Mutex<HashMap<String, Slot>>>,
}

impl IssuerKeys {
    pub fn new(reach: Reach) -> Self {
        // ring is the only crypto provider in this binary; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No proxy: the addresses checked must be the ones connected to.
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(reach.resolver())
            .build()
            .unwrap_or_default();
        Self {
            http,
            reach,
            entries: Arc::default(),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: reqwest::Url) -> Result<T, FetchError> {
        self.reach
            .target(&url)
            .map_err(|e| FetchError::NotAllowed(shorten(&format!("{url}: {e}"))))?;
        let unreachable = |e: &dyn std::error::Error| FetchError::Unreachable(shorten(&chain(e)));
        let mut res = self.http.get(url.clone()).send().await.map_err(|e| unreachable(&e))?;
        if !res.status().is_success() {
            return Err(FetchError::Unreachable(shorten(&format!(
                "{url} answered {}",
                res.status()
            ))));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| unreachable(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(FetchError::Unreachable(shorten(&format!(
                    "{url} sent more than {MAX_BODY} bytes"
                ))));
            }
        }
        serde_json::from_slice(&body)
            .map_err(|e| FetchError::Unreachable(shorten(&format!("{url} sent no usable JSON: {e}"))))
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<Jwk>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let not_allowed = |why: String| FetchError::NotAllowed(shorten(&why));
        let origin = self
            .reach
            .issuer(issuer)
            .map_err(|e| not_allowed(format!("{issuer}: {e}")))?;
        let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let discovery_url =
            reqwest::Url::parse(&discovery_url).map_err(|_| not_allowed(format!("{issuer}: not a URL")))?;
        let discovery: Discovery = self.get_json(discovery_url).await?;
        // The issuer's document must not send mayfly elsewhere.
        let jwks_uri = reqwest::Url::parse(&discovery.jwks_uri)
            .map_err(|_| not_allowed(format!("{issuer}: its jwks_uri is not a URL")))?;
        if jwks_uri.origin() != origin.origin() {
            return Err(not_allowed(format!(
                "{issuer}: its jwks_uri {jwks_uri} is not on the issuer's origin"
            )));
        }
        let set: JwkSet = self.get_json(jwks_uri).await?;
        Ok(set.usable())
    }

    /// The issuer's keys, refetched when none carries `kid` (cooldown permitting).
    pub async fn keys(&self, issuer: &str, kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, FetchError> {
        let slot = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(issuer.to_string())
            .or_default()
            .clone();
        let mut entry = slot.lock().await;
        let now = Instant::now();
        if let Some(e) = entry.as_ref() {
            let known = kid.is_none_or(|kid| e.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
            let fresh = now.duration_since(e.fetched) < KEEP;
            let cooling = now.duration_since(e.fetched) < REFETCH_COOLDOWN;
            if (known && fresh) || cooling {
                return Ok(e.keys.clone());
            }
        }
        match self.fetch(issuer).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *entry = Some(Entry {
                    keys: keys.clone(),
                    fetched: now,
                });
                Ok(keys)
            }
            // Keep serving what we had while the issuer is down.
            Err(e) => match entry.as_ref() {
                Some(old) => {
                    tracing::warn!(issuer, error = %e.detail(), "cannot refresh an issuer's keys; using the cached ones");
                    Ok(old.keys.clone())
                }
                None => {
                    tracing::warn!(issuer, error = %e.detail(), "cannot fetch an issuer's keys");
                    Err(e)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{FetchError, IssuerKeys};
    use crate::federation::reach::{AllowedIssuer, Reach};

    /// Fetches `issuer`'s keys and returns the error, asserting that nothing
    /// connected to `listener` meanwhile.
    async fn refused_without_connecting(
        keys: &IssuerKeys,
        issuer: &str,
        listener: &tokio::net::TcpListener,
    ) -> FetchError {
        let e = keys.keys(issuer, None).await.unwrap_err();
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "{issuer}: mayfly connected");
        assert_eq!(e.to_string(), "cannot verify the token's issuer");
        e
    }

    #[tokio::test]
    async fn refused_issuers_are_never_contacted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = IssuerKeys::new(Reach::default());
        for issuer in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("https://127.0.0.1:{port}"),
            format!("https://localhost.:{port}"),
            format!("https://[::ffff:127.0.0.1]:{port}"),
        ] {
            let e = refused_without_connecting(&strict, &issuer, &listener).await;
            assert!(e.detail().contains("loopback"), "{issuer}: {}", e.detail());
        }
        // Past the URL checks, the client's resolver drops what a name resolves to.
        let e = strict
            .http
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(super::chain(&e).contains("refused (loopback)"), "{}", super::chain(&e));
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "the resolver let mayfly connect");
        // Loopback allowed, but the operator's allowlist names another issuer.
        let other = AllowedIssuer::parse("https://token.actions.githubusercontent.com").unwrap();
        let listed = IssuerKeys::new(Reach::new(true, vec![other]));
        let e = refused_without_connecting(&listed, &format!("http://127.0.0.1:{port}"), &listener).await;
        assert!(e.detail().contains("MAYFLY_FEDERATION_ISSUERS"), "{}", e.detail());
    }
}
