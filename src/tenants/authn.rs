//! Client authentication by secret. Unknown clients, wrong secrets and
//! disabled clients all fail alike to the caller; the reason goes only to
//! the audit log. Repeated failures are braked per source and client id.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{Client, secret};
use crate::audit::{AuditEvent, AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
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

/// Client credentials as presented (`client_secret_basic` or `_post`).
pub struct Credentials {
    pub client_id: String,
    pub secret: SecretString,
}

/// Checks one client's secret against its stored digests. Unknown, wrong
/// and disabled all fail; the reason is for the audit log only.
pub async fn check_secret(
    store: &Store,
    now: DateTime<Utc>,
    client_id: &str,
    presented: &SecretString,
) -> Result<Client, AuthError> {
    let found = store.read().await?.conn().client_for_auth(client_id, now).await;
    let (client, digests) = match found {
        Ok(found) => found,
        Err(StoreError::NotFound) => {
            // The same query ran; spend the same comparison, so timing does
            // not reveal which ids exist.
            let _ = secret::matches(presented, &[0u8; 32]);
            return Err(AuthError::Failed(AuthFailure::UnknownClient, None));
        }
        Err(e) => return Err(e.into()),
    };
    // Check every live secret (at most two) without stopping at the first match.
    let matched = digests.iter().fold(false, |ok, d| secret::matches(presented, d) | ok);
    if !matched {
        return Err(AuthError::Failed(AuthFailure::BadSecret, Some(client)));
    }
    if client.disabled {
        return Err(AuthError::Failed(AuthFailure::Disabled, Some(client)));
    }
    Ok(client)
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

/// Client authentication as a service: the brake on repeated failures, the
/// secret check, and the audit event for each failure (never the secret).
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    throttle: Arc<FailureThrottle>,
}

impl Authenticator {
    pub fn new(store: Store, audit: AuditLog, clock: Arc<dyn Clock>, failure_limit: u32) -> Self {
        Self {
            store,
            audit,
            clock,
            throttle: Arc::new(FailureThrottle::new(failure_limit)),
        }
    }

    pub async fn authenticate(&self, creds: &Credentials, origin: &Origin) -> Result<Client, Refused> {
        let source: Option<std::net::IpAddr> = origin.source.parse().ok();
        let source = source.map(|ip| (ip, creds.client_id.chars().take(128).collect::<String>()));
        let now = self.clock.now();
        if let Some(wait) = self.throttle.retry_after(source.clone(), now) {
            return Err(Refused::Throttled(wait));
        }
        match check_secret(&self.store, now, &creds.client_id, &creds.secret).await {
            Ok(client) => Ok(client),
            Err(AuthError::Failed(why, client)) => {
                let mut event = AuditEvent::new(actions::CLIENT_AUTH_FAILED, Outcome::Denied, now);
                event.reason = Some(why.as_str().to_string());
                // Only a well-formed id is recorded: a pasted secret must not land in the log.
                let looks_like_secret = creds.client_id.starts_with(secret::PREFIX.trim_end_matches('_'));
                event.client_id = (super::validate_client_id(&creds.client_id).is_ok() && !looks_like_secret)
                    .then(|| creds.client_id.clone());
                event.tenant = client.map(|c| c.tenant_id);
                event.request_id = Some(origin.request_id.clone());
                event.source = Some(origin.source.clone());
                self.audit.append(&[event]).await?;
                metrics::counter!("mayfly_client_auth_failures_total").increment(1);
                self.throttle.record_failure(source, now);
                Err(Refused::Invalid)
            }
            Err(AuthError::Store(e)) => Err(e.into()),
        }
    }
}

/// Brute-force brake: after `limit` failed authentications of one client id
/// from one source address within a minute, further attempts for that pair
/// are refused until the minute is over (good credentials included, so
/// guessing cannot continue under cover of a valid secret). Keyed by the pair
/// so one noisy caller behind a shared proxy address cannot lock out every
/// other client. In memory, per replica.
#[derive(Debug)]
pub struct FailureThrottle {
    limit: u32,
    seen: std::sync::Mutex<std::collections::HashMap<ThrottleKey, (i64, u32)>>,
}

/// Source address and the client id presented.
pub type ThrottleKey = (std::net::IpAddr, String);

impl FailureThrottle {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: Default::default(),
        }
    }

    /// Seconds to wait if `source` is over its limit in the current minute.
    /// Seconds to wait if this pair is over its limit, or its source address
    /// over ten times the limit across all client ids (so rotating made-up
    /// ids buys an attacker only a little more).
    pub fn retry_after(&self, source: Option<ThrottleKey>, now: DateTime<Utc>) -> Option<i64> {
        let (ip, client) = source?;
        let minute = now.timestamp().div_euclid(60);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let over = |key: &ThrottleKey, limit: u32| matches!(seen.get(key), Some((m, n)) if *m == minute && *n >= limit);
        let whole_source = (ip, String::new());
        (over(&(ip, client), self.limit) || over(&whole_source, self.limit.saturating_mul(10)))
            .then(|| 60 - now.timestamp().rem_euclid(60))
    }

    pub fn record_failure(&self, source: Option<ThrottleKey>, now: DateTime<Utc>) {
        let Some((ip, client)) = source else { return };
        let minute = now.timestamp().div_euclid(60);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, (m, _)| *m == minute);
        }
        for key in [(ip, client), (ip, String::new())] {
            let entry = seen.entry(key).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_braked_after_its_limit_until_the_minute_is_over() {
        let t = FailureThrottle::new(2);
        let ip = Some(("10.0.0.1".parse().unwrap(), "c".to_string()));
        let other = Some(("10.0.0.2".parse().unwrap(), "c".to_string()));
        let now = DateTime::from_timestamp(6_000_010, 0).unwrap();
        t.record_failure(ip.clone(), now);
        assert_eq!(t.retry_after(ip.clone(), now), None);
        t.record_failure(ip.clone(), now);
        assert_eq!(t.retry_after(ip.clone(), now), Some(50));
        assert_eq!(t.retry_after(other, now), None);
        let same_ip_other_client = Some(("10.0.0.1".parse().unwrap(), "d".to_string()));
        assert_eq!(t.retry_after(same_ip_other_client.clone(), now), None);
        // Rotating client ids from one address hits the per-address budget (10 x limit).
        for i in 0..18 {
            t.record_failure(Some(("10.0.0.1".parse().unwrap(), format!("made-up-{i}"))), now);
        }
        assert_eq!(t.retry_after(same_ip_other_client, now), Some(50));
        assert_eq!(t.retry_after(ip, now + chrono::TimeDelta::seconds(50)), None);
    }
}
