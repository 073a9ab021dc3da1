//! Client authentication by secret. Unknown clients, wrong secrets and
//! disabled clients all fail alike to the caller; the reason goes only to
//! the audit log. A correct secret always passes; repeated failures are
//! braked per source and client id, and their events aggregated.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;

use super::brake::{Brake, FailureLog};
use super::catalog::{Catalog, Checked};
use super::{Client, secret};
use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::storage::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    UnknownClient,
    BadSecret,
    Disabled,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownClient => "unknown_client",
            AuthFailure::BadSecret => "bad_secret",
            AuthFailure::Disabled => "client_disabled",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("client authentication failed: {}", .0.as_str())]
    Failed(AuthFailure, Option<Box<Client>>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Client credentials as presented (`client_secret_basic` or `_post`).
pub struct Credentials {
    pub client_id: String,
    pub secret: SecretString,
}

/// Checks one client's secret against the catalog. Unknown, wrong and
/// disabled all fail; the reason is for the audit log only.
pub async fn check_secret(catalog: &Catalog, client_id: &str, presented: &SecretString) -> Result<Client, AuthError> {
    match catalog.check_secret(client_id, presented).await? {
        Checked::Valid(client) => Ok(client),
        Checked::Unknown => Err(AuthError::Failed(AuthFailure::UnknownClient, None)),
        Checked::BadSecret(client) => Err(AuthError::Failed(AuthFailure::BadSecret, Some(Box::new(client)))),
        Checked::Disabled(client) => Err(AuthError::Failed(AuthFailure::Disabled, Some(Box::new(client)))),
    }
}

/// Why a caller is refused, in a form each error shape can take.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("too many failed authentications; retry in {0} s")]
    Throttled(i64),
    #[error("client authentication failed")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Client authentication as a service: the brake on guessing, the secret
/// check, and aggregated audit events for failures (never the secret).
#[derive(Clone)]
pub struct Authenticator {
    catalog: Arc<Catalog>,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    brake: Arc<Brake>,
    failures: Arc<FailureLog>,
}

impl Authenticator {
    pub fn new(
        catalog: Arc<Catalog>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        brake: Arc<Brake>,
        failures: Arc<FailureLog>,
    ) -> Self {
        Self {
            catalog,
            audit,
            clock,
            brake,
            failures,
        }
    }

    pub async fn authenticate(&self, creds: &Credentials, origin: &Origin) -> Result<Client, Refused> {
        let source: Option<IpAddr> = origin.source.parse().ok();
        let client_key: String = creds.client_id.chars().take(128).collect();
        let now = self.clock.now();
        match check_secret(&self.catalog, &creds.client_id, &creds.secret).await {
            // A correct secret passes whatever storm its client is under.
            Ok(client) => Ok(client),
            Err(AuthError::Failed(why, client)) => {
                let mut event = origin.event(actions::CLIENT_AUTH_FAILED, Outcome::Denied, now);
                event.reason = Some(why.as_str().to_string());
                // Only a well-formed id is recorded: a pasted secret must not land in the log.
                let looks_like_secret = creds.client_id.starts_with(secret::PREFIX.trim_end_matches('_'));
                event.client_id = (super::validate_client_id(&creds.client_id).is_ok() && !looks_like_secret)
                    .then(|| creds.client_id.clone());
                event.tenant = client.map(|c| c.tenant_id);
                metrics::counter!("mayfly_client_auth_failures_total").increment(1);
                let Some(ip) = source else {
                    self.audit.append(&[event]).await?;
                    return Err(Refused::Invalid);
                };
                if let Some(first) = self.failures.note(ip, event) {
                    self.audit.append(&[first]).await?;
                }
                // Guessed at already (this failure is past the limit), or the
                // source past its budget across ids: answered 429.
                let guessed = self.brake.braked(ip, &client_key, now);
                match self.brake.record_failure(ip, &client_key, now).or(guessed) {
                    Some(wait) => Err(Refused::Throttled(wait)),
                    None => Err(Refused::Invalid),
                }
            }
            Err(AuthError::Store(e)) => Err(e.into()),
        }
    }

    /// Writes the aggregated failure events of closed minutes.
    pub async fn flush_failures(&self) -> Result<usize, StoreError> {
        let events = self.failures.drain_closed(self.clock.now());
        self.audit.append(&events).await?;
        Ok(events.len())
    }

    /// Flushes every few seconds until the task is dropped.
    pub async fn run_flush(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            if let Err(e) = self.flush_failures().await {
                tracing::warn!(error = %e, "cannot write aggregated authentication failures; will retry");
            }
        }
    }
}
