//! Noisy-neighbour limits: a tenant's live leases, and mints per second per
//! tenant and per client. Rates are token buckets per replica (N replicas
//! allow up to N times the rate); the live-lease count is read from the
//! database at most once a second per limited tenant (by one request while
//! the others wait) and counted locally in between, a slot taken before any
//! await, so one replica never overshoots; several may by what the others
//! minted in that second.
//! Past a limit a mint answers 429 with Retry-After; the refusal is audited
//! once per minute per client and limit, not per request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::terms::MintTerms;
use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::storage::{Store, StoreError};

/// How long a tenant's limits and live-lease count are trusted.
const FRESH: Duration = Duration::from_secs(1);

/// A refused mint: which limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub what: &'static str,
    pub retry_after: i64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token at `rate` per second (burst: one second's worth).
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
struct TenantState {
    max_live: Option<i64>,
    max_rate: Option<i64>,
    /// Live leases as last read, plus those committed here since.
    live: i64,
    /// Admitted here and not yet committed or failed: in no count the
    /// database gives, so kept across reads.
    in_flight: i64,
    read_at: Instant,
}

type TenantStates = Arc<Mutex<HashMap<String, TenantState>>>;

/// A live-lease slot taken by an admitted mint: in flight until the lease
/// commits (`committed`), released if the mint ends otherwise (dropped).
#[must_use]
pub struct Slot {
    held: Option<(TenantStates, String)>,
}

impl Slot {
    fn none() -> Self {
        Slot { held: None }
    }

    /// The lease is committed: it counts as live now.
    pub fn committed(mut self) {
        if let Some((tenants, tenant)) = self.held.take()
            && let Some(t) = tenants.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&tenant)
        {
            t.in_flight -= 1;
            t.live += 1;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((tenants, tenant)) = self.held.take()
            && let Some(t) = tenants.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&tenant)
        {
            t.in_flight -= 1;
        }
    }
}

/// A refusal already audited: (minute, client id, limit).
type Refusal = (i64, String, &'static str);

#[derive(Clone)]
pub struct Limits {
    store: Store,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    tenants: TenantStates,
    /// One read of a tenant's limits at a time (a burst reads once).
    reading: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    audited: Arc<Mutex<HashSet<Refusal>>>,
}

impl Limits {
    pub fn new(store: Store, audit: AuditLog, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            audit,
            clock,
            tenants: Arc::default(),
            reading: Arc::default(),
            buckets: Arc::default(),
            audited: Arc::default(),
        }
    }

    fn cached(&self, tenant: &str) -> Option<TenantState> {
        let now = Instant::now();
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .filter(|t| now.duration_since(t.read_at) < FRESH)
            .cloned()
    }

    /// The tenant's limits, read from the database at most once per
    /// `FRESH` and by one request at a time: the others wait for that read
    /// instead of each resetting the local count to what is committed.
    async fn tenant(&self, tenant: &str) -> Result<TenantState, StoreError> {
        if let Some(t) = self.cached(tenant) {
            return Ok(t);
        }
        let gate = self
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_string())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        if let Some(t) = self.cached(tenant) {
            return Ok(t);
        }
        let mut c = self.store.read().await?;
        let row = c.conn().get_tenant(tenant).await?;
        let live = match row.max_live_leases {
            Some(_) => c.conn().count_live_leases(tenant, self.clock.now()).await?,
            None => 0,
        };
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let state = TenantState {
            max_live: row.max_live_leases,
            max_rate: row.max_mints_per_second,
            live,
            in_flight: tenants.get(tenant).map_or(0, |t| t.in_flight),
            read_at: Instant::now(),
        };
        tenants.insert(tenant.to_string(), state.clone());
        Ok(state)
    }

    /// Takes one live-lease slot of `tenant` if it has one left, counting
    /// the leases in flight; the check and the count are one step, so
    /// concurrent mints cannot both take the last.
    fn reserve_live(&self, tenant: &str) -> Option<Slot> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = tenants.get_mut(tenant) else {
            return Some(Slot::none());
        };
        match t.max_live {
            Some(max) if t.live + t.in_flight >= max => None,
            Some(_) => {
                t.in_flight += 1;
                Some(Slot {
                    held: Some((self.tenants.clone(), tenant.to_string())),
                })
            }
            None => Some(Slot::none()),
        }
    }

    fn take(&self, key: String, rate: i64) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let rate = rate as f64;
        buckets
            .entry(key)
            .or_insert(Bucket {
                tokens: rate.max(1.0),
                at: now,
            })
            .take(rate, now)
    }

    /// Whether `client` may mint now; counts the mint against the limits if
    /// so. The slot is released when dropped, or counted as live once its
    /// lease is `committed`.
    pub async fn admit(&self, client: &MintTerms, origin: &Origin) -> Result<Result<Slot, Limited>, StoreError> {
        let tenant = self.tenant(&client.tenant_id).await?;
        let limited = |what| Limited { what, retry_after: 1 };
        let refused = match self.reserve_live(&client.tenant_id) {
            None => limited("max_live_leases"),
            Some(_)
                if tenant
                    .max_rate
                    .is_some_and(|rate| !self.take(format!("t/{}", client.tenant_id), rate)) =>
            {
                limited("tenant max_mints_per_second")
            }
            Some(_)
                if client
                    .max_mints_per_second
                    .is_some_and(|rate| !self.take(format!("c/{}", client.client_id), rate)) =>
            {
                limited("client max_mints_per_second")
            }
            Some(slot) => return Ok(Ok(slot)),
        };
        let limited = refused;
        metrics::counter!("mayfly_tokens_limited_total", "limit" => limited.what).increment(1);
        let now = self.clock.now();
        let minute = now.timestamp().div_euclid(60);
        let first = self.audited.lock().unwrap_or_else(|e| e.into_inner()).insert((
            minute,
            client.client_id.clone(),
            limited.what,
        ));
        if first {
            let mut event = origin.event(actions::TOKEN_DENIED, Outcome::Denied, now);
            event.reason = Some(format!(
                "limited: {} (audited once per minute per client and limit)",
                limited.what
            ));
            event.tenant = Some(client.tenant_id.clone());
            event.client_id = Some(client.client_id.clone());
            self.audit.append(&[event]).await?;
            let mut audited = self.audited.lock().unwrap_or_else(|e| e.into_inner());
            audited.retain(|(m, _, _)| *m >= minute);
        }
        Ok(Err(limited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_per_second_and_refills() {
        let start = Instant::now();
        let mut b = Bucket { tokens: 5.0, at: start };
        assert_eq!((0..10).filter(|_| b.take(5.0, start)).count(), 5);
        assert!(
            b.take(5.0, start + Duration::from_millis(200)),
            "a fifth of a second buys one"
        );
        assert!(!b.take(5.0, start + Duration::from_millis(200)));
        // Idle time refills only up to one second's worth.
        assert_eq!(
            (0..20).filter(|_| b.take(5.0, start + Duration::from_secs(60))).count(),
            5
        );
    }
}
