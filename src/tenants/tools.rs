//! The per-tool policy a resource may carry, which `mayfly gateway` enforces
//! on every `tools/call`: the scopes each tool needs and its call rate. Pure:
//! validated here when an admin sets it, decided here when a gateway asks.
//! A map with no entry for a tool refuses it (default deny); no map at all
//! lets any valid token call any tool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Invalid, invalid};

/// Entries a resource may hold (the gateway keeps the map in memory).
const MAX_TOOLS: usize = 1000;
/// The wildcard entry: tools with no entry of their own.
pub const ANY_TOOL: &str = "*";

/// What one tool needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Every one of these scopes is needed to call the tool (scopes the
    /// resource defines). Empty: any valid token.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub scopes: Vec<String>,
    /// Calls per minute per workload, per gateway replica; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub calls_per_minute: Option<i64>,
}

/// Tool name (or `*`) → rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct ToolPolicy(pub BTreeMap<String, ToolRule>);

/// What a gateway does with one `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDecision<'a> {
    /// Allowed; `calls_per_minute` is the limit to apply, if any.
    Allow { calls_per_minute: Option<i64> },
    /// The token lacks these scopes (MCP step-up: 403 `insufficient_scope`).
    MissingScopes(&'a [String]),
    /// The map has no entry for the tool.
    NotListed,
}

impl ToolPolicy {
    /// The most specific entry: the tool's own, else `*`.
    pub fn rule(&self, tool: &str) -> Option<&ToolRule> {
        self.0.get(tool).or_else(|| self.0.get(ANY_TOOL))
    }

    /// Whether a token holding `granted` may call `tool`.
    pub fn decide<'a>(&'a self, tool: &str, granted: impl Fn(&str) -> bool) -> ToolDecision<'a> {
        match self.rule(tool) {
            None => ToolDecision::NotListed,
            Some(rule) if rule.scopes.iter().all(|s| granted(s)) => ToolDecision::Allow {
                calls_per_minute: rule.calls_per_minute,
            },
            Some(rule) => ToolDecision::MissingScopes(&rule.scopes),
        }
    }

    /// Checks the map against the scopes its resource defines.
    pub fn validate(&self, resource_scopes: &[String]) -> Result<(), Invalid> {
        if self.0.len() > MAX_TOOLS {
            return Err(invalid("tools", format!("at most {MAX_TOOLS} tools")));
        }
        for (name, rule) in &self.0 {
            if !is_tool_name(name) {
                return Err(invalid(
                    "tools",
                    format!("`{name}` is not a tool name (1 to 128 visible ASCII characters, or `*`)"),
                ));
            }
            if rule.scopes.len() > 100 {
                return Err(invalid("tools", format!("`{name}`: at most 100 scopes")));
            }
            if let Some(s) = rule.scopes.iter().find(|s| !resource_scopes.contains(s)) {
                return Err(invalid(
                    "tools",
                    format!("`{name}` needs `{s}`, which the resource does not define"),
                ));
            }
            if rule.calls_per_minute.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
                return Err(invalid(
                    "tools",
                    format!("`{name}`: calls_per_minute must be between 1 and 1000000"),
                ));
            }
        }
        Ok(())
    }
}

/// MCP tool names are free text in the spec; here they are what a header,
/// a log line and a metric label can carry safely.
fn is_tool_name(name: &str) -> bool {
    name == ANY_TOOL || (!name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> ToolPolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_most_specific_entry_decides_and_an_unlisted_tool_is_refused() {
        let p = policy(serde_json::json!({
            "create_issue": {"scopes": ["issues:write"], "calls_per_minute": 30},
            "*": {"scopes": ["issues:read"]}
        }));
        let reader = |s: &str| s == "issues:read";
        assert_eq!(
            p.decide("create_issue", reader),
            ToolDecision::MissingScopes(&["issues:write".to_string()])
        );
        assert_eq!(
            p.decide("list_issues", reader),
            ToolDecision::Allow { calls_per_minute: None }
        );
        let writer = |s: &str| s == "issues:write";
        assert_eq!(
            p.decide("create_issue", writer),
            ToolDecision::Allow {
                calls_per_minute: Some(30)
            }
        );
        let strict = policy(serde_json::json!({"create_issue": {"scopes": []}}));
        assert_eq!(strict.decide("delete_repository", writer), ToolDecision::NotListed);
    }

    #[test]
    fn a_policy_naming_a_scope_the_resource_lacks_or_a_bad_name_is_refused() {
        let scopes = vec!["issues:read".to_string()];
        assert!(
            policy(serde_json::json!({"a": {"scopes": ["issues:read"]}}))
                .validate(&scopes)
                .is_ok()
        );
        let e = policy(serde_json::json!({"a": {"scopes": ["issues:write"]}}))
            .validate(&scopes)
            .unwrap_err();
        assert!(e.message.contains("issues:write"), "{}", e.message);
        assert!(policy(serde_json::json!({"bad name": {}})).validate(&scopes).is_err());
        assert!(
            policy(serde_json::json!({"a": {"calls_per_minute": 0}}))
                .validate(&scopes)
                .is_err()
        );
        assert!(serde_json::from_value::<ToolPolicy>(serde_json::json!({"a": {"scope": []}})).is_err());
    }
}
