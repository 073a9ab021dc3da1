//! The brake on guessing client secrets, and the aggregation of failure
//! events. Both are in memory, per replica.
//!
//! A client being guessed at from a source is refused even with its correct
//! secret until the minute is over (so guessing cannot continue under cover
//! of a valid secret). Nobody else is: a correct secret of a client that is
//! not itself being guessed at always passes, so one noisy caller behind a
//! shared NAT or proxy cannot lock out an office. An address over its
//! budget across client ids gets its failures answered 429 instead of 401.
//! IPv6 sources count per /64, the block one host typically controls.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::audit::AuditEvent;

/// The address a brake counts under: IPv4 as is, IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
        v4 => v4,
    }
}

fn minute(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}

fn wait(now: DateTime<Utc>) -> i64 {
    60 - now.timestamp().rem_euclid(60)
}

#[derive(Debug)]
pub struct Brake {
    limit: u32,
    /// (source, client id) → (minute, failures); client id "" is the source's total.
    seen: Mutex<HashMap<(IpAddr, String), (i64, u32)>>,
}

impl Brake {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: Mutex::default(),
        }
    }

    fn count(&self, key: &(IpAddr, String), now: DateTime<Utc>) -> u32 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(key) {
            Some((m, n)) if *m == minute(now) => *n,
            _ => 0,
        }
    }

    /// Seconds to wait when `client` is being guessed at from `source`.
    pub fn braked(&self, source: IpAddr, client: &str, now: DateTime<Utc>) -> Option<i64> {
        let key = (source_key(source), client.to_string());
        (self.count(&key, now) >= self.limit).then(|| wait(now))
    }

    /// Counts a failure; returns seconds to wait when the source is now over
    /// its budget across client ids (ten times the per-client limit).
    pub fn record_failure(&self, source: IpAddr, client: &str, now: DateTime<Utc>) -> Option<i64> {
        let ip = source_key(source);
        let m = minute(now);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, (at, _)| *at == m);
        }
        let mut total = 0;
        for key in [(ip, client.to_string()), (ip, String::new())] {
            let entry = seen.entry(key).or_insert((m, 0));
            if entry.0 != m {
                *entry = (m, 0);
            }
            entry.1 = entry.1.saturating_add(1);
            total = entry.1;
        }
        (total > self.limit.saturating_mul(10)).then(|| wait(now))
    }
}

/// One source and client id in one minute.
type FailureKey = (i64, IpAddr, Option<String>);

/// Failure events, aggregated: the first per (source, client id, minute) is
/// written at once; the rest of that minute are counted and written as one
/// event when the minute is over. A storm costs a few events, not one per
/// request under the audit-chain lock.
#[derive(Debug, Default)]
pub struct FailureLog {
    pending: Mutex<HashMap<FailureKey, (u32, AuditEvent)>>,
}

impl FailureLog {
    /// Notes a failure; returns the event to write now if it is the first of its minute.
    pub fn note(&self, source: IpAddr, event: AuditEvent) -> Option<AuditEvent> {
        let key = (minute(event.at), source_key(source), event.client_id.clone());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&key) {
            Some((count, latest)) => {
                *count += 1;
                *latest = event;
                None
            }
            None => {
                pending.insert(key, (0, event.clone()));
                Some(event)
            }
        }
    }

    /// One event per (source, client id) for minutes before `now`'s that saw
    /// more failures than the one already written.
    pub fn drain_closed(&self, now: DateTime<Utc>) -> Vec<AuditEvent> {
        let current = minute(now);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let closed: Vec<FailureKey> = pending.keys().filter(|(m, _, _)| *m < current).cloned().collect();
        let mut out = Vec::new();
        for key in closed {
            if let Some((more, mut event)) = pending.remove(&key)
                && more > 0
            {
                let why = event.reason.take().unwrap_or_default();
                event.reason = Some(format!("{why}: {more} more failed authentications in this minute"));
                event.id = uuid::Uuid::now_v7();
                out.push(event);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(6_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_guessed_client_is_braked_but_other_clients_from_the_same_address_are_not() {
        let b = Brake::new(3);
        let office: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            b.record_failure(office, "ci", at(0));
        }
        assert_eq!(b.braked(office, "ci", at(10)), Some(50));
        assert_eq!(b.braked(office, "agent", at(10)), None, "a colleague's client passes");
        // Rotating made-up ids: failures past ten times the limit answer 429 ...
        let over = (0..40)
            .filter_map(|i| b.record_failure(office, &format!("x{i}"), at(20)))
            .count();
        assert!(over > 0);
        // ... while a client nobody guessed at still passes, and the minute resets all.
        assert_eq!(b.braked(office, "agent", at(20)), None);
        assert_eq!(b.braked(office, "ci", at(60)), None);
    }

    #[test]
    fn ipv6_sources_count_per_64_block() {
        let b = Brake::new(2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let sibling: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        b.record_failure(one, "ci", at(0));
        b.record_failure(sibling, "ci", at(0));
        assert!(
            b.braked(one, "ci", at(1)).is_some(),
            "rotating inside a /64 does not escape"
        );
        assert!(b.braked(elsewhere, "ci", at(1)).is_none());
        assert_eq!(
            source_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_failure_storm_is_one_event_now_and_one_count_when_the_minute_closes() {
        let log = FailureLog::default();
        let source: IpAddr = "203.0.113.5".parse().unwrap();
        let event = |s| {
            let mut e = AuditEvent::new("client.auth_failed", Outcome::Denied, at(s));
            e.client_id = Some("ci".into());
            e.reason = Some("bad_secret".into());
            e
        };
        assert!(log.note(source, event(1)).is_some());
        for s in 2..50 {
            assert!(log.note(source, event(s)).is_none());
        }
        assert!(log.drain_closed(at(59)).is_empty(), "the minute is still open");
        let summary = log.drain_closed(at(61));
        assert_eq!(summary.len(), 1);
        assert!(summary[0].reason.as_deref().unwrap().contains("48 more failed"));
        assert!(log.drain_closed(at(200)).is_empty());
    }
}
