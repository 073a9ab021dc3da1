//! Client ID Metadata Documents (the MCP authorization spec, 2025-11-25):
//! an MCP client's id is the https URL of a JSON document naming it and its
//! redirect URIs. Fetched under federation's SSRF rules (plain-http
//! loopback only when the operator allows loopback issuers), at most 5 KiB,
//! cached for five minutes. The document must name itself (`client_id` =
//! its URL) and be a public client: mayfly holds no secret for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;

use super::idp::{Failed, Outbound};
use crate::tenants::redirect;

const MAX_DOCUMENT: usize = 5 * 1024;
const KEEP: Duration = Duration::from_secs(300);
const MAX_CACHED: usize = 10_000;

/// An MCP client as its metadata document describes it.
#[derive(Debug, Clone)]
pub struct ClientMetadata {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
}

/// Whether a client id is a metadata document URL (rather than a registered id).
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

#[derive(Clone)]
pub struct Documents {
    out: Outbound,
    cache: Arc<Mutex<HashMap<String, (ClientMetadata, Instant)>>>,
}

impl Documents {
    pub fn new(out: Outbound) -> Self {
        Self {
            out,
            cache: Arc::default(),
        }
    }

    /// The client the URL names, fetched (or cached). `Err` says why, for
    /// the audit trail and a plain error page.
    pub async fn client(&self, client_id: &str) -> Result<ClientMetadata, Failed> {
        if let Some((m, at)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(client_id)
            && at.elapsed() < KEEP
        {
            return Ok(m.clone());
        }
        let url = Url::parse(client_id).map_err(|_| Failed("the client id is not a URL".into()))?;
        // The spec: https with a path; no fragment, no credentials, no dot segments.
        if url.path() == "/"
            || url.fragment().is_some()
            || client_id.len() > 2048
            || client_id.contains("/./")
            || client_id.contains("/../")
        {
            return Err(Failed("a client id URL needs a path, and no fragment".into()));
        }
        let doc: Document = self.out.get_json(&url, MAX_DOCUMENT).await?;
        if doc.client_id != client_id {
            return Err(Failed("the metadata document's client_id is not its own URL".into()));
        }
        if doc.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
            return Err(Failed(
                "only public clients (token_endpoint_auth_method none) are supported".into(),
            ));
        }
        if doc
            .grant_types
            .as_ref()
            .is_some_and(|g| !g.iter().any(|g| g == "authorization_code"))
        {
            return Err(Failed("the client does not use the authorization_code grant".into()));
        }
        if doc
            .response_types
            .as_ref()
            .is_some_and(|r| !r.iter().any(|r| r == "code"))
        {
            return Err(Failed("the client does not use response_type code".into()));
        }
        if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > 20 {
            return Err(Failed(
                "the metadata document lists no (or too many) redirect_uris".into(),
            ));
        }
        for uri in &doc.redirect_uris {
            redirect::registrable(uri).map_err(Failed)?;
        }
        let name = doc
            .client_name
            .map(|n| n.chars().filter(|c| !c.is_control()).take(100).collect::<String>())
            .filter(|n| !n.trim().is_empty());
        let m = ClientMetadata {
            client_id: doc.client_id,
            client_name: name,
            redirect_uris: doc.redirect_uris,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: anyone may name a document; a flood of them only empties the cache.
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < KEEP);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(client_id.to_string(), (m.clone(), Instant::now()));
        drop(cache);
        Ok(m)
    }
}
