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
    let (client, digests) = match store.client_for_auth(client_id, now).await {
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
