//! The per-tool policy of each route's resource, read from mayfly
//! (`/v1/resource-policy`, polled with its ETag) and applied here, and the
//! `calls_per_minute` limits, per workload and tool on this replica. The
//! decision itself is `ToolPolicy::decide`, shared with mayfly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::tenants::tools::{ToolDecision, ToolPolicy};

/// How often a route's policy is re-read (a 304 costs mayfly little).
const REFRESH: Duration = Duration::from_secs(5);
/// Rate-limit cells kept before idle ones are dropped.
const MAX_CELLS: usize = 100_000;

#[derive(Debug, Clone, Deserialize)]
pub struct Policy {
    pub tenant: String,
    pub scopes: Vec<String>,
    pub tools: Option<ToolPolicy>,
}

/// What the gateway does with one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 403 `insufficient_scope`; the scopes the tool needs.
    Step(Vec<String>),
    /// 403: no entry for the tool in the map.
    NotListed,
    /// 429, retry after this many seconds.
    Limited(u64),
}

pub struct RoutePolicy {
    resource: String,
    current: RwLock<Option<Arc<Policy>>>,
    etag: Mutex<Option<String>>,
    /// (workload, tool) → the GCRA theoretical arrival time.
    cells: Mutex<HashMap<(String, String), Instant>>,
}

impl RoutePolicy {
    pub fn new(resource: String) -> Self {
        RoutePolicy {
            resource,
            current: RwLock::new(None),
            etag: Mutex::new(None),
            cells: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self) -> Option<Arc<Policy>> {
        self.current.read().ok().and_then(|p| p.clone())
    }

    /// Re-reads the policy until the process ends.
    pub async fn follow(
        self: Arc<Self>,
        issuer: String,
        http: reqwest::Client,
        client_id: String,
        secret: SecretString,
    ) {
        loop {
            match self.fetch(&issuer, &http, &client_id, &secret).await {
                Ok(()) => tokio::time::sleep(REFRESH).await,
                Err(e) => {
                    tracing::warn!(resource = %self.resource, error = %e, "cannot read the resource's tool policy");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn fetch(
        &self,
        issuer: &str,
        http: &reqwest::Client,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<(), String> {
        let mut req = http
            .get(format!("{issuer}/v1/resource-policy"))
            .basic_auth(client_id, Some(secret.expose_secret()))
            .query(&[("resource", &self.resource)]);
        if let Some(tag) = self.etag.lock().ok().and_then(|t| t.clone()) {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        match res.status() {
            reqwest::StatusCode::NOT_MODIFIED => return Ok(()),
            s if !s.is_success() => {
                let body = res.text().await.unwrap_or_default();
                return Err(format!("{s}: {}", body.chars().take(300).collect::<String>()));
            }
            _ => {}
        }
        let tag = res
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let policy: Policy = res.json().await.map_err(|e| e.to_string())?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(policy));
        }
        if let Ok(mut t) = self.etag.lock() {
            *t = tag;
        }
        Ok(())
    }

    /// May `workload`, holding scopes for which `granted` is true, call `tool`?
    pub fn judge(&self, policy: &Policy, workload: &str, tool: &str, granted: impl Fn(&str) -> bool) -> Verdict {
        let Some(tools) = &policy.tools else {
            return Verdict::Allow;
        };
        match tools.decide(tool, granted) {
            ToolDecision::NotListed => Verdict::NotListed,
            ToolDecision::MissingScopes(s) => Verdict::Step(s.to_vec()),
            ToolDecision::Allow { calls_per_minute: None } => Verdict::Allow,
            ToolDecision::Allow {
                calls_per_minute: Some(limit),
            } => self.take(workload, tool, limit, Instant::now()),
        }
    }

    /// GCRA: `limit` calls a minute, all of them at once if they come in a burst.
    fn take(&self, workload: &str, tool: &str, limit: i64, now: Instant) -> Verdict {
        let interval = Duration::from_secs(60) / (limit.max(1) as u32);
        let tolerance = Duration::from_secs(60).saturating_sub(interval);
        let Ok(mut cells) = self.cells.lock() else {
            return Verdict::Limited(1);
        };
        if cells.len() >= MAX_CELLS {
            cells.retain(|_, tat| *tat > now);
        }
        let tat = cells.entry((workload.to_string(), tool.to_string())).or_insert(now);
        let start = (*tat).max(now);
        if start.saturating_duration_since(now) > tolerance {
            let wait = start.saturating_duration_since(now) - tolerance;
            return Verdict::Limited(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        *tat = start + interval;
        Verdict::Allow
    }

    /// `tools/list`: may the caller see this tool? (Listed and granted; rate limits aside.)
    pub fn visible(policy: &Policy, tool: &str, granted: impl Fn(&str) -> bool) -> bool {
        match &policy.tools {
            None => true,
            Some(tools) => matches!(tools.decide(tool, granted), ToolDecision::Allow { .. }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::tools::ToolRule;

    fn policy() -> Policy {
        let mut map = std::collections::BTreeMap::new();
        map.insert(
            "create_issue".to_string(),
            ToolRule {
                scopes: vec!["issues:write".into()],
                calls_per_minute: Some(2),
            },
        );
        map.insert(
            "*".to_string(),
            ToolRule {
                scopes: vec!["issues:read".into()],
                calls_per_minute: None,
            },
        );
        Policy {
            tenant: "acme".into(),
            scopes: vec![],
            tools: Some(ToolPolicy(map)),
        }
    }

    #[test]
    fn the_most_specific_entry_decides_and_its_rate_is_per_workload_and_tool() {
        let p = RoutePolicy::new("r".into());
        let pol = policy();
        let writer = |s: &str| s == "issues:write";
        assert_eq!(
            p.judge(&pol, "bot", "list_issues", writer),
            Verdict::Step(vec!["issues:read".into()])
        );
        let now = Instant::now();
        assert_eq!(p.take("bot", "create_issue", 2, now), Verdict::Allow);
        assert_eq!(p.take("bot", "create_issue", 2, now), Verdict::Allow);
        assert!(matches!(p.take("bot", "create_issue", 2, now), Verdict::Limited(s) if (1..=30).contains(&s)));
        assert_eq!(
            p.take("other-bot", "create_issue", 2, now),
            Verdict::Allow,
            "another workload has its own budget"
        );
        assert_eq!(
            p.take("bot", "create_issue", 2, now + Duration::from_secs(31)),
            Verdict::Allow,
            "the budget refills"
        );
        assert!(!RoutePolicy::visible(&pol, "list_issues", writer));
        assert!(RoutePolicy::visible(&pol, "create_issue", writer));
    }

    #[test]
    fn no_map_lets_any_tool_through_and_an_empty_map_refuses_all() {
        let p = RoutePolicy::new("r".into());
        let open = Policy {
            tenant: "acme".into(),
            scopes: vec![],
            tools: None,
        };
        assert_eq!(p.judge(&open, "bot", "anything", |_| false), Verdict::Allow);
        let closed = Policy {
            tenant: "acme".into(),
            scopes: vec![],
            tools: Some(ToolPolicy::default()),
        };
        assert_eq!(p.judge(&closed, "bot", "anything", |_| true), Verdict::NotListed);
    }
}
