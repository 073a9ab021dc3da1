//! Client authentication by secret. Unknown clients, wrong secrets and
//! disabled clients all fail alike to the caller; the reason goes only to
//! the audit log.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{Client, secret};
use crate::storage::{Store, StoreError};

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
    Failed(AuthFailure, Option<Client>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn authenticate(
    store: &Store,
    now: DateTime<Utc>,
    client_id: &str,
    presented: &SecretString,
) -> Result<Client, AuthError> {
    let client = match store.get_client(client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            // Same work as a real check, so timing does not reveal which ids exist.
            let _ = secret::matches(presented, &[0u8; 32]);
            return Err(AuthError::Failed(AuthFailure::UnknownClient, None));
        }
        Err(e) => return Err(e.into()),
    };
    let digests = store.live_secret_digests(client_id, now).await?;
    // Check every live secret (at most two) without stopping at the first match.
    let matched = digests
        .iter()
        .fold(false, |ok, d| secret::matches(presented, d) | ok);
    if !matched {
        return Err(AuthError::Failed(AuthFailure::BadSecret, Some(client)));
    }
    if client.disabled {
        return Err(AuthError::Failed(AuthFailure::Disabled, Some(client)));
    }
    Ok(client)
}
