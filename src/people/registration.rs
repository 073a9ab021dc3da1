//! RFC 7591 dynamic registration of public clients, for MCP clients that
//! cannot name themselves by a metadata document. Open by design (the MCP
//! spec lets any client register), so it is narrow: public clients only
//! (`token_endpoint_auth_method: none`), the authorization code and
//! refresh grants only, redirect URIs under the same rules as metadata
//! documents, a bounded table, and unused registrations forgotten after a
//! day. A registered client signs people in only where a tenant's login
//! provider allows registered clients.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::sql::RegisteredClient;
use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::storage::{Store, StoreError};
use crate::tenants::redirect;

/// Registered client ids carry this prefix (metadata document ids are URLs).
pub const PREFIX: &str = "mfy_dcr_";
/// At most this many registrations are kept.
const MAX_REGISTERED: i64 = 100_000;

/// `POST /oauth2/register` (RFC 7591 §2). Other metadata is accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegistrationRequest {
    #[schema(min_items = 1, max_items = 10)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub client_name: Option<String>,
    /// `none` (the default) only: people's clients are public.
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
}

/// RFC 7591 §3.2.1.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationResponse {
    pub client_id: String,
    pub client_id_issued_at: i64,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<&'static str>,
    pub response_types: Vec<&'static str>,
    pub token_endpoint_auth_method: &'static str,
}

/// RFC 7591 §3.2.2 error codes.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("too many registered clients; retry later")]
    Full,
    /// Too many registrations or refusals from this source: retry in this many seconds.
    #[error("too many requests; retry in {0} s")]
    Throttled(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Registration {
    store: Store,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
}

fn metadata(why: impl Into<String>) -> RegistrationError {
    RegistrationError::Invalid("invalid_client_metadata", why.into())
}

impl Registration {
    pub fn new(store: Store, audit: AuditLog, clock: Arc<dyn Clock>) -> Self {
        Self { store, audit, clock }
    }

    pub async fn register(
        &self,
        r: RegistrationRequest,
        origin: &Origin,
    ) -> Result<RegistrationResponse, RegistrationError> {
        if r.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
            return Err(metadata(
                "only public clients register: token_endpoint_auth_method none",
            ));
        }
        if let Some(g) = &r.grant_types
            && g.iter().any(|g| g != "authorization_code" && g != "refresh_token")
        {
            return Err(metadata("grant_types: authorization_code and refresh_token only"));
        }
        if r.response_types.as_ref().is_some_and(|t| t.iter().any(|t| t != "code")) {
            return Err(metadata("response_types: code only"));
        }
        if r.redirect_uris.is_empty() || r.redirect_uris.len() > 10 {
            return Err(RegistrationError::Invalid(
                "invalid_redirect_uri",
                "1 to 10 redirect_uris".into(),
            ));
        }
        for uri in &r.redirect_uris {
            if uri.len() > 2048 {
                return Err(RegistrationError::Invalid(
                    "invalid_redirect_uri",
                    "a redirect_uri over 2048 characters".into(),
                ));
            }
            redirect::registrable(uri).map_err(|why| RegistrationError::Invalid("invalid_redirect_uri", why))?;
        }
        let name = r
            .client_name
            .map(|n| n.chars().filter(|c| !c.is_control()).take(100).collect::<String>())
            .filter(|n| !n.trim().is_empty());
        let now = self.clock.now();
        let client = RegisteredClient {
            client_id: super::random_token(PREFIX),
            client_name: name,
            redirect_uris: r.redirect_uris,
            created_at: now,
        };
        let mut tx = self.store.begin().await?;
        if tx.conn().count_registered_clients().await? >= MAX_REGISTERED {
            return Err(RegistrationError::Full);
        }
        tx.conn().insert_registered_client(&client, &origin.source).await?;
        tx.commit().await?;
        let mut e = origin.event(actions::CLIENT_REGISTERED, Outcome::Success, now);
        e.client_id = Some(client.client_id.clone());
        e.reason = Some(format!(
            "registered {:?} with redirect_uris {}",
            client.client_name.as_deref().unwrap_or(""),
            crate::audit::sanitize(&client.redirect_uris.join(" "), 500)
        ));
        self.audit.append(&[e]).await?;
        Ok(RegistrationResponse {
            client_id: client.client_id,
            client_id_issued_at: now.timestamp(),
            client_name: client.client_name,
            redirect_uris: client.redirect_uris,
            grant_types: vec!["authorization_code", "refresh_token"],
            response_types: vec!["code"],
            token_endpoint_auth_method: "none",
        })
    }
}

impl super::People {
    /// RFC 7591 registration, counted against the source's brake: an open
    /// endpoint may not fill the table (or the audit log) at any rate.
    pub async fn register(
        &self,
        r: RegistrationRequest,
        origin: &Origin,
    ) -> Result<RegistrationResponse, RegistrationError> {
        if let Some(wait) = self.braked(origin).or_else(|| self.count(origin, "people:register")) {
            return Err(RegistrationError::Throttled(wait));
        }
        self.registration().register(r, origin).await
    }
}
