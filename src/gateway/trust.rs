//! Whether a caller's token is good, decided at the gateway: signature
//! against mayfly's JWKS (refetched on an unknown `kid`), the claims, the
//! revocation rules followed from mayfly's feed by long poll, and
//! introspection for tokens with an `act` chain (chain revocations are not
//! visible offline). Never lets a token through on a stale feed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::jose::jwt::{self, Jwk, JwkSet, JwtError};
use crate::tokens::claims::AccessClaims;

/// Verified tokens kept (then the cache starts over).
const VERIFIED_CACHE: usize = 50_000;
/// How long an introspection answer for an `act` token is trusted.
const INTROSPECTION_TTL: Duration = Duration::from_secs(1);
/// How often an unknown `kid` may cause a JWKS fetch.
const JWKS_REFETCH_GAP: Duration = Duration::from_secs(1);
const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// The feed's long poll, under mayfly's bound of 25 s.
const FEED_WAIT_SECONDS: u64 = 20;
const FEED_PAGE: usize = 1000;
/// How long tokens are still accepted after the feed last answered: a
/// healthy feed answers at least every `FEED_WAIT_SECONDS`.
pub const FEED_GRACE: Duration = Duration::from_secs(45);
/// `nbf` tolerance for clocks a little ahead of the gateway's.
const LEEWAY_SECONDS: i64 = 5;

/// Who is calling, as their verified token says.
#[derive(Debug)]
pub struct Caller {
    pub claims: AccessClaims,
    pub kid: Option<String>,
    pub lease_id: Option<Uuid>,
    /// The `sub` of every actor in the `act` chain, outermost first.
    pub actors: Vec<String>,
    scopes: HashSet<String>,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 `invalid_token`, with this reason.
    Invalid(&'static str),
    /// 503: the gateway cannot tell (no keys, a stale feed, introspection down).
    Unavailable(&'static str),
}

/// One revocation rule as the feed gives it.
#[derive(Debug, Clone, Deserialize)]
struct Rule {
    id: Uuid,
    tenant: Option<String>,
    selector: Selector,
    cutoff_seq: Option<i64>,
    issued_before: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Selector {
    workflow: Option<String>,
    workload: Option<String>,
    client_id: Option<String>,
    lease_id: Option<Uuid>,
    kid: Option<String>,
}

impl Rule {
    fn matches(&self, c: &Caller) -> bool {
        if self.tenant.as_deref().is_some_and(|t| t != c.claims.tenant) {
            return false;
        }
        let s = &self.selector;
        let selected = if let Some(w) = &s.workflow {
            *w == c.claims.workflow
        } else if let Some(w) = &s.workload {
            *w == c.claims.sub || c.actors.iter().any(|a| a == w)
        } else if let Some(id) = &s.client_id {
            *id == c.claims.client_id
        } else if let Some(l) = &s.lease_id {
            Some(*l) == c.lease_id
        } else if let Some(k) = &s.kid {
            Some(k) == c.kid.as_ref()
        } else {
            // The whole tenant; a rule naming nothing at all never matches.
            self.tenant.is_some()
        };
        selected
            && match (self.cutoff_seq, c.claims.lease_seq) {
                (None, _) => true,
                (Some(cutoff), Some(seq)) => seq <= cutoff,
                (Some(_), None) => c.claims.iat <= self.issued_before.timestamp(),
            }
    }
}

#[derive(Deserialize)]
struct FeedPage {
    items: Vec<Rule>,
    next_cursor: Option<String>,
}

pub struct Trust {
    issuer: String,
    http: reqwest::Client,
    client_id: String,
    secret: SecretString,
    keys: RwLock<Arc<Vec<Jwk>>>,
    jwks_fetched: Mutex<Option<Instant>>,
    rules: RwLock<Vec<Rule>>,
    rule_ids: Mutex<HashSet<Uuid>>,
    /// Bumped on every new rule: cached verdicts older than it are re-judged.
    rules_version: AtomicU64,
    feed_ok_at: Mutex<Option<Instant>>,
    /// How long the gateway goes on without a fresh feed.
    feed_grace: Duration,
    verified: Mutex<HashMap<String, Arc<Caller>>>,
    introspected: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Trust {
    pub fn new(
        issuer: String,
        http: reqwest::Client,
        client_id: String,
        secret: SecretString,
        feed_grace: Duration,
    ) -> Self {
        Trust {
            issuer,
            http,
            client_id,
            secret,
            keys: RwLock::new(Arc::new(Vec::new())),
            jwks_fetched: Mutex::new(None),
            rules: RwLock::new(Vec::new()),
            rule_ids: Mutex::new(HashSet::new()),
            rules_version: AtomicU64::new(0),
            feed_ok_at: Mutex::new(None),
            feed_grace,
            verified: Mutex::new(HashMap::new()),
            introspected: Mutex::new(HashMap::new()),
        }
    }

    pub fn jwks_loaded(&self) -> bool {
        self.keys.read().map(|k| !k.is_empty()).unwrap_or(false)
    }

    /// Seconds since the feed last answered, if it ever did.
    pub fn feed_lag(&self) -> Option<Duration> {
        self.feed_ok_at.lock().ok().and_then(|t| t.map(|t| t.elapsed()))
    }

    pub fn feed_fresh(&self) -> bool {
        self.feed_lag().is_some_and(|lag| lag <= self.feed_grace)
    }

    async fn fetch_jwks(&self) -> Result<(), reqwest::Error> {
        let set: JwkSet = self
            .http
            .get(format!("{}/.well-known/jwks.json", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let usable = set.usable();
        if let Ok(mut keys) = self.keys.write() {
            *keys = Arc::new(usable);
        }
        Ok(())
    }

    /// Fetches the JWKS if it was not fetched within `gap`.
    async fn refresh_jwks(&self, gap: Duration) {
        {
            let Ok(mut last) = self.jwks_fetched.lock() else { return };
            if last.is_some_and(|t| t.elapsed() < gap) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(e) = self.fetch_jwks().await {
            tracing::warn!(error = %e, "cannot fetch mayfly's JWKS");
            if let Ok(mut last) = self.jwks_fetched.lock() {
                // Let the next request try again soon.
                *last = Some(Instant::now() - gap + JWKS_REFETCH_GAP.min(gap));
            }
        }
    }

    /// Keeps the JWKS fresh and follows the revocation feed, until the process ends.
    pub async fn follow(self: Arc<Self>) {
        let keys = {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    me.refresh_jwks(Duration::ZERO).await;
                    let wait = if me.jwks_loaded() {
                        JWKS_REFRESH
                    } else {
                        Duration::from_secs(1)
                    };
                    tokio::time::sleep(wait).await;
                }
            })
        };
        let mut cursor: Option<String> = None;
        let mut caught_up = false;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.poll_feed(cursor.as_deref(), &mut caught_up).await {
                Ok(next) => {
                    backoff = Duration::from_millis(200);
                    if next.is_some() {
                        cursor = next;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow mayfly's revocation feed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if keys.is_finished() {
                return;
            }
        }
    }

    /// One poll: new rules are in force before this returns. The feed
    /// counts as fresh only once a page came back short (caught up).
    async fn poll_feed(&self, after: Option<&str>, caught_up: &mut bool) -> Result<Option<String>, reqwest::Error> {
        // Until caught up, pages are fetched at once, so the gateway is ready without waiting.
        let wait = if *caught_up { FEED_WAIT_SECONDS } else { 0 };
        let mut req = self
            .http
            .get(format!("{}/v1/revocations", self.issuer))
            .basic_auth(&self.client_id, Some(self.secret.expose_secret()))
            .timeout(Duration::from_secs(FEED_WAIT_SECONDS + 15))
            .query(&[("wait", wait.to_string()), ("limit", FEED_PAGE.to_string())]);
        if let Some(after) = after {
            req = req.query(&[("after", after)]);
        }
        let page: FeedPage = req.send().await?.error_for_status()?.json().await?;
        *caught_up = page.items.len() < FEED_PAGE;
        self.add_rules(page.items);
        if *caught_up && let Ok(mut ok) = self.feed_ok_at.lock() {
            *ok = Some(Instant::now());
        }
        Ok(page.next_cursor)
    }

    fn add_rules(&self, rules: Vec<Rule>) {
        let Ok(mut ids) = self.rule_ids.lock() else { return };
        let fresh: Vec<Rule> = rules.into_iter().filter(|r| ids.insert(r.id)).collect();
        if fresh.is_empty() {
            return;
        }
        if let Ok(mut all) = self.rules.write() {
            all.extend(fresh);
        }
        self.rules_version.fetch_add(1, Ordering::SeqCst);
    }

    fn revoked(&self, caller: &Caller) -> bool {
        self.rules
            .read()
            .map(|rules| rules.iter().any(|r| r.matches(caller)))
            .unwrap_or(true)
    }

    /// Checks `token` for a route whose resource is `resource`.
    pub async fn check(&self, token: &str, resource: &str, now: i64) -> Result<Arc<Caller>, Refusal> {
        if !self.feed_fresh() {
            return Err(Refusal::Unavailable("the revocation feed is not fresh"));
        }
        let cached = self.verified.lock().ok().and_then(|m| m.get(token).cloned());
        let caller = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.verify(token).await?);
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= VERIFIED_CACHE {
                        m.clear();
                    }
                    m.insert(token.to_string(), c.clone());
                }
                c
            }
        };
        let claims = &caller.claims;
        if claims.aud.trim_end_matches('/') != resource.trim_end_matches('/') {
            return Err(Refusal::Invalid("the token is for another resource"));
        }
        if now >= claims.exp {
            return Err(Refusal::Invalid("the token has expired"));
        }
        if claims.nbf > now + LEEWAY_SECONDS {
            return Err(Refusal::Invalid("the token is not valid yet"));
        }
        if self.revoked(&caller) {
            return Err(Refusal::Invalid("the token has been revoked"));
        }
        if claims.act.is_some() && !self.introspect(token, &claims.jti).await? {
            return Err(Refusal::Invalid("the token has been revoked"));
        }
        Ok(caller)
    }

    async fn verify(&self, token: &str) -> Result<Caller, Refusal> {
        let parsed = jwt::parse(token).map_err(|_| Refusal::Invalid("the token is malformed"))?;
        if !parsed
            .header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Err(Refusal::Invalid("not an access token (typ at+jwt)"));
        }
        let keys = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        let verdict = match parsed.verify(&keys) {
            Err(JwtError::UnknownKey) => {
                // A key published since the last fetch, or a forged kid: fetch at most once a second.
                self.refresh_jwks(JWKS_REFETCH_GAP).await;
                let keys = self.keys.read().map(|k| k.clone()).unwrap_or_default();
                if keys.is_empty() {
                    return Err(Refusal::Unavailable("mayfly's signing keys are not loaded"));
                }
                parsed.verify(&keys)
            }
            other => other,
        };
        verdict.map_err(|_| Refusal::Invalid("the token's signature does not verify"))?;
        let claims: AccessClaims = serde_json::from_value(serde_json::Value::Object(parsed.claims.clone()))
            .map_err(|_| Refusal::Invalid("the token's claims are not mayfly's"))?;
        if claims.iss != self.issuer {
            return Err(Refusal::Invalid("the token is from another issuer"));
        }
        let mut actors = Vec::new();
        let mut act = claims.act.as_ref();
        while let Some(a) = act {
            if let Some(sub) = a.get("sub").and_then(|s| s.as_str()) {
                actors.push(sub.to_string());
            }
            act = a.get("act");
        }
        Ok(Caller {
            lease_id: Uuid::parse_str(&claims.jti).ok(),
            scopes: claims.scopes().map(str::to_string).collect(),
            kid: parsed.header.kid.clone(),
            actors,
            claims,
        })
    }

    /// Whether mayfly still holds the token active (cached for a second per `jti`).
    async fn introspect(&self, token: &str, jti: &str) -> Result<bool, Refusal> {
        if let Some((at, active)) = self.introspected.lock().ok().and_then(|m| m.get(jti).copied())
            && at.elapsed() < INTROSPECTION_TTL
        {
            return Ok(active);
        }
        #[derive(Deserialize)]
        struct Answer {
            active: bool,
        }
        let answer: Answer = async {
            self.http
                .post(format!("{}/oauth2/introspect", self.issuer))
                .basic_auth(&self.client_id, Some(self.secret.expose_secret()))
                .form(&[("token", token)])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        }
        .await
        .map_err(|_| Refusal::Unavailable("mayfly cannot be asked about a delegated token"))?;
        if let Ok(mut m) = self.introspected.lock() {
            if m.len() >= VERIFIED_CACHE {
                m.retain(|_, (at, _)| at.elapsed() < INTROSPECTION_TTL);
            }
            m.insert(jti.to_string(), (Instant::now(), answer.active));
        }
        Ok(answer.active)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn caller(workflow: &str, sub: &str, actors: &[&str], seq: i64) -> Caller {
        Caller {
            claims: AccessClaims {
                iss: "i".into(),
                sub: sub.into(),
                aud: "r".into(),
                exp: 100,
                iat: 10,
                nbf: 10,
                jti: Uuid::nil().to_string(),
                client_id: "c".into(),
                scope: String::new(),
                tenant: "acme".into(),
                workflow: workflow.into(),
                act: None,
                lease_seq: Some(seq),
                cnf: None,
            },
            kid: Some("k1".into()),
            lease_id: Some(Uuid::nil()),
            actors: actors.iter().map(|s| s.to_string()).collect(),
            scopes: HashSet::new(),
        }
    }

    fn rule(tenant: Option<&str>, selector: Selector, cutoff: Option<i64>) -> Rule {
        Rule {
            id: Uuid::new_v4(),
            tenant: tenant.map(str::to_string),
            selector,
            cutoff_seq: cutoff,
            issued_before: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        }
    }

    #[test]
    fn a_workflow_rule_ends_that_workflow_up_to_its_cutoff_and_no_other() {
        let r = rule(
            Some("acme"),
            Selector {
                workflow: Some("triage".into()),
                ..Default::default()
            },
            Some(5),
        );
        assert!(r.matches(&caller("triage", "bot", &[], 5)));
        assert!(!r.matches(&caller("triage", "bot", &[], 6)), "minted after the rule");
        assert!(!r.matches(&caller("deploy", "bot", &[], 1)));
        let mut other_tenant = caller("triage", "bot", &[], 1);
        other_tenant.claims.tenant = "globex".into();
        assert!(!r.matches(&other_tenant));
    }

    #[test]
    fn a_workload_rule_reaches_the_act_chain_and_a_key_rule_spans_tenants() {
        let r = rule(
            Some("acme"),
            Selector {
                workload: Some("agent-7".into()),
                ..Default::default()
            },
            None,
        );
        assert!(r.matches(&caller("w", "alice", &["agent-7"], 9)));
        assert!(!r.matches(&caller("w", "alice", &["agent-8"], 9)));
        let k = rule(
            None,
            Selector {
                kid: Some("k1".into()),
                ..Default::default()
            },
            None,
        );
        assert!(k.matches(&caller("w", "x", &[], 1)));
        let tenant = rule(Some("acme"), Selector::default(), None);
        assert!(tenant.matches(&caller("w", "x", &[], 1)));
        assert!(!rule(None, Selector::default(), None).matches(&caller("w", "x", &[], 1)));
    }
}
