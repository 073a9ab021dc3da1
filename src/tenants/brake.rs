//! The brake on failed authentications (client secrets, assertions, external
//! tokens), and the aggregation of their audit events. Both are in memory,
//! per replica.
//!
//! A correct credential always passes: secrets are 256-bit random, so a
//! guess is hopeless, and refusing the right secret during a storm would let
//! anyone behind the same NAT (a CI provider's runners) lock a known client
//! out. Only failures are slowed: once a client is being guessed at from a
//! source, or the source is over its budget across client ids, its failures
//! are answered 429 instead of 401 until the minute is over. IPv6 sources
//! count per /64, the block one host typically controls.

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

    /// Seconds to wait when the source is over its budget across client ids
    /// (what `record_failure` answered last): checked before any work.
    pub fn over_budget(&self, source: IpAddr, now: DateTime<Utc>) -> Option<i64> {
        let key = (source_key(source), String::new());
        (self.count(&key, now) > self.limit.saturating_mul(10)).then(|| wait(now))
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

/// Distinct failure events one source may have written at once per minute;
/// past it, its failures are only counted.
pub const SOURCE_BUDGET: u32 = 20;
/// Most (source, tenant, minute) entries held; past it failures are only
/// counted in one total.
const MAX_PENDING: usize = 10_000;

/// What a failure is aggregated under within a source's minute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    /// The tenant the failure concerned (None: no tenant known, such as an
    /// unknown client id) and its reason: written at once the first time in
    /// the minute, within the source's budget.
    Tenant(Option<String>, Option<String>),
    /// Past the source's budget: counted, written when the minute closes.
    OverBudget,
}

type FailureKey = (i64, IpAddr, Scope);

#[derive(Debug, Default)]
struct Pending {
    entries: HashMap<FailureKey, (u32, AuditEvent)>,
    /// (minute, source) → entries written at once.
    written: HashMap<(i64, IpAddr), u32>,
    /// Failures past `MAX_PENDING`, per minute.
    untracked: HashMap<i64, u64>,
}

/// Failure events, aggregated: the first per (source, tenant, reason,
/// minute) is written at once, up to `SOURCE_BUDGET` per source; the rest of
/// that minute are counted and written as one event when the minute is
/// over. A storm costs a bounded number of events, not one per request,
/// however many client ids, issuers or tenants it names (a client id is not
/// part of the key: an unknown one has no tenant); the attacker-chosen parts
/// of an event's reason are bounded and stripped of control characters.
#[derive(Debug, Default)]
pub struct FailureLog {
    pending: Mutex<Pending>,
}

impl FailureLog {
    /// Notes a failure; returns the event to write now if it is the first of
    /// its kind this minute and the source is within its budget.
    pub fn note(&self, source: IpAddr, mut event: AuditEvent) -> Option<AuditEvent> {
        event.reason = event.reason.map(|r| crate::audit::sanitize(&r, 300));
        let m = minute(event.at);
        let ip = source_key(source);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let key = (m, ip, Scope::Tenant(event.tenant.clone(), event.reason.clone()));
        if let Some((count, latest)) = p.entries.get_mut(&key) {
            *count += 1;
            *latest = event;
            return None;
        }
        let over = p.written.get(&(m, ip)).copied().unwrap_or(0) >= SOURCE_BUDGET;
        let key = if over { (m, ip, Scope::OverBudget) } else { key };
        if let Some((count, latest)) = p.entries.get_mut(&key) {
            *count += 1;
            *latest = event;
            return None;
        }
        if p.entries.len() >= MAX_PENDING {
            *p.untracked.entry(m).or_default() += 1;
            return None;
        }
        if over {
            // Counted from one: the first is not written now either.
            p.entries.insert(key, (1, event));
            return None;
        }
        *p.written.entry((m, ip)).or_default() += 1;
        p.entries.insert(key, (0, event.clone()));
        Some(event)
    }

    /// One event per (source, tenant) for minutes before `now`'s that saw
    /// more failures than the one already written, one per source over its
    /// budget, and one for failures past the table's bound.
    pub fn drain_closed(&self, now: DateTime<Utc>) -> Vec<AuditEvent> {
        let current = minute(now);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let closed: Vec<FailureKey> = p.entries.keys().filter(|(m, _, _)| *m < current).cloned().collect();
        let mut out = Vec::new();
        for key in closed {
            if let Some((more, mut event)) = p.entries.remove(&key)
                && more > 0
            {
                let why = event.reason.take().unwrap_or_default();
                event.reason = Some(match key.2 {
                    Scope::Tenant(..) => format!("{why}: {more} more failed authentications in this minute"),
                    Scope::OverBudget => format!(
                        "{more} failed authentications in this minute past this source's budget of {SOURCE_BUDGET} events; last: {why}"
                    ),
                });
                if key.2 == Scope::OverBudget {
                    event.tenant = None;
                    event.client_id = None;
                }
                event.id = uuid::Uuid::now_v7();
                out.push(event);
            }
        }
        p.written.retain(|(m, _), _| *m >= current);
        let untracked: Vec<(i64, u64)> = p
            .untracked
            .iter()
            .filter(|(m, _)| **m < current)
            .map(|(m, n)| (*m, *n))
            .collect();
        for (m, n) in untracked {
            p.untracked.remove(&m);
            let at = DateTime::from_timestamp(m * 60 + 59, 0).unwrap_or(now);
            let mut event = AuditEvent::new(
                crate::audit::actions::CLIENT_AUTH_FAILED,
                crate::audit::Outcome::Denied,
                at,
            );
            event.reason = Some(format!(
                "{n} more failed authentications in this minute, from too many sources to itemise"
            ));
            out.push(event);
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
            e.tenant = Some("acme".into());
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

    #[test]
    fn rotating_client_ids_or_tenants_from_one_source_writes_a_bounded_number_of_events() {
        let log = FailureLog::default();
        let source: IpAddr = "203.0.113.9".parse().unwrap();
        let mut written = 0;
        for i in 0..300 {
            let mut e = AuditEvent::new("token.denied", Outcome::Denied, at(1));
            // Unknown client ids carry no tenant: all one entry.
            e.client_id = Some(format!("made-up-{i}"));
            e.reason = Some("unknown_client\u{1b}[31m".into());
            written += usize::from(log.note(source, e).is_some());
            // Each of 300 tenants named once.
            let mut e = AuditEvent::new("token.denied", Outcome::Denied, at(1));
            e.tenant = Some(format!("t{i}"));
            e.reason = Some("x".repeat(5000));
            if let Some(e) = log.note(source, e) {
                written += 1;
                assert!(e.reason.unwrap().chars().count() <= 301, "bounded");
            }
        }
        assert_eq!(written, SOURCE_BUDGET as usize, "the source's budget, then counts");
        let summary = log.drain_closed(at(61));
        let over: Vec<_> = summary
            .iter()
            .filter(|e| {
                e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("past this source's budget"))
            })
            .collect();
        assert_eq!(over.len(), 1);
        let counted = format!("{} failed", 300 - (SOURCE_BUDGET - 1));
        assert!(
            over[0].reason.as_deref().unwrap().starts_with(&counted),
            "{:?}",
            over[0].reason
        );
        assert!(summary.len() <= 2, "{summary:?}");
        assert!(summary.iter().all(|e| !e.reason.as_deref().unwrap().contains('\u{1b}')));
    }
}
