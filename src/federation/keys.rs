//! The signing keys of external issuers, fetched from their OIDC discovery
//! document and JWKS, only for issuers some trust policy names (a token
//! never chooses where mayfly connects). HTTPS only, plain HTTP for loopback
//! issuers (tests); timeouts and a size cap on every fetch; keys cached per
//! issuer and refetched when an unknown `kid` appears, at most every
//! `REFETCH_COOLDOWN`. One slow issuer only ever delays its own tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jwt::{Jwk, JwkSet};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 512 * 1024;
const KEEP: Duration = Duration::from_secs(600);
const REFETCH_COOLDOWN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("issuer URL not allowed: {0}")]
    NotAllowed(String),
    #[error("cannot fetch the issuer's keys: {0}")]
    Unreachable(String),
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
    entries: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Whether mayfly may connect to `url`: https, or http to a loopback host.
pub fn allowed(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else { return false };
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        },
        _ => false,
    }
}

impl IssuerKeys {
    pub fn new() -> Self {
        // ring is the only crypto provider in this binary; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            entries: Arc::default(),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        if !allowed(url) {
            return Err(FetchError::NotAllowed(url.chars().take(200).collect()));
        }
        let unreachable = |e: &dyn std::fmt::Display| FetchError::Unreachable(e.to_string());
        let mut res = self.http.get(url).send().await.map_err(|e| unreachable(&e))?;
        if !res.status().is_success() {
            return Err(FetchError::Unreachable(format!("{url} answered {}", res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| unreachable(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(FetchError::Unreachable(format!(
                    "{url} sent more than {MAX_BODY} bytes"
                )));
            }
        }
        serde_json::from_slice(&body).map_err(|e| unreachable(&e))
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<Jwk>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let discovery: Discovery = self
            .get_json(&format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ))
            .await?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
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
                    tracing::warn!(issuer, error = %e, "cannot refresh an issuer's keys; using the cached ones");
                    Ok(old.keys.clone())
                }
                None => Err(e),
            },
        }
    }
}

impl Default for IssuerKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_https_or_loopback_http_issuers_are_contacted() {
        assert!(allowed("https://token.actions.githubusercontent.com"));
        assert!(allowed("http://127.0.0.1:9000/x") && allowed("http://localhost/x") && allowed("http://[::1]/"));
        for bad in [
            "http://issuer.example",
            "http://10.0.0.1/",
            "file:///etc/passwd",
            "ftp://x",
            "not a url",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }
}
