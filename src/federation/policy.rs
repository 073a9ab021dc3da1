//! Trust policies: which external tokens a tenant accepts in place of a
//! stored secret, and what they become. Matching is pure: the signature has
//! been checked before, and every condition that fails is named, so the
//! audit trail says why a token was refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::tenants::{Grant, invalid, matches_whole, validate_workflow, validate_workload};

/// Allowance for clocks on `exp`, `nbf` and `iat`.
pub const SKEW_SECONDS: i64 = 60;

/// A condition on one claim: an exact value, one of several, or an anchored pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ClaimCondition {
    Exact(String),
    AnyOf(Vec<String>),
    Pattern(PatternCondition),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternCondition {
    /// Anchored: `^…$`.
    pub pattern: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrustPolicy {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub subject: Option<String>,
    pub subject_pattern: Option<String>,
    #[sqlx(json)]
    pub claims: BTreeMap<String, ClaimCondition>,
    pub max_token_age_seconds: Option<i64>,
    pub single_use: bool,
    pub workflow_template: String,
    pub workload_template: String,
    #[sqlx(json)]
    pub grants: Vec<Grant>,
    pub max_ttl_seconds: i64,
    pub owner: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The client this policy authenticates through private_key_jwt.
    pub client_id: Option<String>,
    /// Agent clients allowed to act for the subjects this policy matches.
    /// Naming any makes the policy delegation-only: its subjects' tokens are
    /// honoured for these agents, never exchanged for a bare token.
    #[sqlx(json)]
    pub actors: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a matching token becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub workflow: String,
    pub workload: String,
    pub subject: String,
    pub jti: Option<String>,
    /// Until when the token can be replayed (its `exp`), for `single_use`.
    pub exp: i64,
}

/// The condition a token failed; safe to show and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

fn mismatch(why: impl Into<String>) -> Mismatch {
    Mismatch(why.into())
}

/// An anchored pattern, compiled; refused if it would match anything.
pub fn anchored(field: &'static str, pattern: &str) -> Result<regex_lite::Regex, crate::tenants::Invalid> {
    if pattern.len() > 512 || !pattern.starts_with('^') || !pattern.ends_with('$') {
        return Err(invalid(
            field,
            "must be an anchored pattern `^…$` of at most 512 characters",
        ));
    }
    // Judged as it is applied (`tenants::matches_whole`): wrapped whole, so a
    // top-level `|` cannot unanchor one branch.
    let re = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| invalid(field, format!("does not compile: {e}")))?;
    let probes = [
        "",
        "x",
        "repo:octo/app:ref:refs/heads/main",
        "system:serviceaccount:default:default",
        "0",
    ];
    if probes.iter().filter(|p| re.is_match(p)).count() >= 3 {
        return Err(invalid(field, "matches nearly anything; name what it must match"));
    }
    Ok(re)
}

/// Subject formats whose owner can be read from the subject itself: the
/// prefix, and what ends the owner (GitHub `repo:OWNER/…`, GitLab
/// `project_path:GROUP/…`, Kubernetes `system:serviceaccount:NAMESPACE:…`).
const OWNED_SUBJECTS: [(&str, char, &str); 3] = [
    ("repo:", '/', "a GitHub owner (`^repo:acme/…`)"),
    ("project_path:", '/', "a GitLab group (`^project_path:acme/…`)"),
    (
        "system:serviceaccount:",
        ':',
        "a Kubernetes namespace (`^system:serviceaccount:agents:…`)",
    ),
];

/// Claims that pin the owner when a condition names exact values.
const OWNER_CLAIMS: [&str; 9] = [
    "repository_owner",
    "repository_owner_id",
    "repository",
    "repository_id",
    "namespace_path",
    "namespace_id",
    "project_path",
    "project_id",
    "kubernetes.io.namespace",
];

/// What a pattern matches literally from its start (`^repo:acme/.+` →
/// `repo:acme/`): up to the first construct that could vary.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.strip_prefix('^').unwrap_or(pattern).chars().peekable();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => e,
                _ => break,
            },
            '.' | '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '$' | '^' => break,
            c => c,
        };
        // A quantifier after it makes this character optional or repeatable.
        match chars.peek() {
            Some('?' | '*' | '{') => break,
            Some('+') => {
                out.push(literal);
                break;
            }
            _ => out.push(literal),
        }
    }
    out
}

/// A subject pattern for a shared issuer (GitHub, GitLab, a cluster) must
/// pin the owner, or a claim condition must: `^repo:.*$` lets every
/// repository in the world mint.
pub fn pinned(pattern: &str, claims: &BTreeMap<String, ClaimCondition>) -> Result<(), crate::tenants::Invalid> {
    let by_claim = claims
        .iter()
        .any(|(name, c)| OWNER_CLAIMS.contains(&name.as_str()) && !matches!(c, ClaimCondition::Pattern(_)));
    // Whatever its spelling (`(?i)`, `[r]epo`, `\x72epo`, `.epo`…), a pattern
    // that takes a subject of some owner nobody named is not pinned.
    const STRANGER: [&str; 6] = [
        "repo:zz-mayfly-stranger/app:ref:refs/heads/main",
        "repo:zz-mayfly-stranger/zz-repo:environment:prod",
        "project_path:zz-mayfly-stranger/app:ref_type:branch:ref:main",
        "project_path:zz-mayfly-stranger/zz-project:ref_type:tag:ref:v1",
        "system:serviceaccount:zz-mayfly-stranger:default",
        "system:serviceaccount:zz-mayfly-stranger:zz-sa",
    ];
    if !by_claim && STRANGER.iter().any(|s| crate::tenants::matches_whole(pattern, s)) {
        return Err(invalid(
            "subject_pattern",
            "matches subjects of any owner (a repository, group or namespace nobody named): pin the owner \
             literally, or add an exact claim condition on it (`repository_owner`, `namespace_path`, \
             `kubernetes.io.namespace`); otherwise anyone using this issuer could mint",
        ));
    }
    let prefix = literal_prefix(pattern);
    for (kind, end, what) in OWNED_SUBJECTS {
        let Some(rest) = prefix.strip_prefix(kind) else {
            continue;
        };
        let owner_fixed = rest.find(end).is_some_and(|i| i > 0);
        if !owner_fixed && !by_claim {
            return Err(invalid(
                "subject_pattern",
                format!(
                    "matches subjects of any owner: pin {what} literally, or add an exact claim condition on the owner \
                     (`repository_owner`, `namespace_path`, `kubernetes.io.namespace`); otherwise anyone using this issuer could mint"
                ),
            ));
        }
    }
    Ok(())
}

/// A claim by dotted path; keys may contain dots themselves
/// (`kubernetes.io.namespace` is `{"kubernetes.io": {"namespace": …}}`).
fn lookup<'a>(claims: &'a serde_json::Map<String, serde_json::Value>, path: &str) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let parts: Vec<&str> = path.split('.').collect();
    for take in (1..parts.len()).rev() {
        let key = parts[..take].join(".");
        if let Some(serde_json::Value::Object(inner)) = claims.get(&key)
            && let Some(v) = lookup(inner, &parts[take..].join("."))
        {
            return Some(v);
        }
    }
    None
}

/// A claim as text: strings as they are, numbers and booleans written out.
fn claim_text(claims: &serde_json::Map<String, serde_json::Value>, path: &str) -> Option<String> {
    match lookup(claims, path)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `{claim}` names in a template, checked for shape.
pub fn template_claims(field: &'static str, template: &str) -> Result<Vec<String>, crate::tenants::Invalid> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| invalid(field, "an unclosed `{`"))?;
        let name = &after[..close];
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
        if !ok {
            return Err(invalid(field, format!("`{{{name}}}` is not a claim name")));
        }
        names.push(name.to_string());
        rest = &after[close + 1..];
    }
    if rest.contains('}') || template.is_empty() || template.len() > 256 {
        return Err(invalid(
            field,
            "must be 1 to 256 characters with balanced `{claim}` placeholders",
        ));
    }
    Ok(names)
}

/// Fills a template; a missing or empty claim makes the policy not match.
pub fn render(template: &str, claims: &serde_json::Map<String, serde_json::Value>) -> Result<String, Mismatch> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(mismatch("template"));
        };
        let name = &after[..close];
        let value = claim_text(claims, name).ok_or_else(|| mismatch(format!("claim {name} missing")))?;
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn audience_matches(claims: &serde_json::Map<String, serde_json::Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

impl ClaimCondition {
    fn holds(&self, value: Option<String>) -> bool {
        let Some(value) = value else { return false };
        match self {
            ClaimCondition::Exact(v) => *v == value,
            ClaimCondition::AnyOf(vs) => vs.contains(&value),
            ClaimCondition::Pattern(p) => matches_whole(&p.pattern, &value),
        }
    }
}

/// Every claim condition holds (the first that does not is named).
pub fn conditions_hold(
    conditions: &BTreeMap<String, ClaimCondition>,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Mismatch> {
    for (name, condition) in conditions {
        if !condition.holds(claim_text(claims, name)) {
            return Err(mismatch(format!("claim {name}")));
        }
    }
    Ok(())
}

impl TrustPolicy {
    /// Judges a token whose signature by `self.issuer` has been verified.
    pub fn evaluate(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<Matched, Mismatch> {
        if self.expires_at.is_some_and(|t| t <= now) {
            return Err(mismatch("policy expired"));
        }
        if claims.get("iss").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err(mismatch("issuer"));
        }
        if !audience_matches(claims, &self.audience) {
            return Err(mismatch("audience"));
        }
        let t = now.timestamp();
        let time = |name: &str| claims.get(name).and_then(|v| v.as_i64());
        let exp = time("exp").ok_or_else(|| mismatch("exp missing"))?;
        if exp.saturating_add(SKEW_SECONDS) <= t {
            return Err(mismatch("expired"));
        }
        if time("nbf").is_some_and(|nbf| nbf > t.saturating_add(SKEW_SECONDS)) {
            return Err(mismatch("not yet valid"));
        }
        let iat = time("iat");
        if iat.is_some_and(|iat| iat > t + SKEW_SECONDS) {
            return Err(mismatch("issued in the future"));
        }
        if let Some(max_age) = self.max_token_age_seconds {
            let iat = iat.ok_or_else(|| mismatch("iat missing"))?;
            if t.saturating_sub(iat) > max_age {
                return Err(mismatch("too old"));
            }
        }
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .ok_or_else(|| mismatch("sub missing"))?;
        let subject_ok = match (&self.subject, &self.subject_pattern) {
            (Some(s), _) => s == subject,
            (None, Some(p)) => matches_whole(p, subject),
            (None, None) => false,
        };
        if !subject_ok {
            return Err(mismatch("subject"));
        }
        conditions_hold(&self.claims, claims)?;
        let workflow = render(&self.workflow_template, claims)?;
        validate_workflow("workflow", &workflow).map_err(|_| mismatch("workflow template gives an invalid name"))?;
        let workload = render(&self.workload_template, claims)?;
        validate_workload("workload", &workload).map_err(|_| mismatch("workload template gives an invalid name"))?;
        Ok(Matched {
            workflow,
            workload,
            subject: subject.to_string(),
            jti: claims.get("jti").and_then(|v| v.as_str()).map(str::to_string),
            exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn github_policy() -> TrustPolicy {
        TrustPolicy {
            id: Uuid::nil(),
            tenant_id: "acme".into(),
            name: "release".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            audience: "https://mayfly.acme.test".into(),
            subject: None,
            subject_pattern: Some("^repo:acme/app:ref:refs/heads/main$".into()),
            claims: BTreeMap::from([
                ("repository_owner_id".into(), ClaimCondition::Exact("42".into())),
                ("ref".into(), ClaimCondition::AnyOf(vec!["refs/heads/main".into()])),
            ]),
            max_token_age_seconds: Some(300),
            single_use: true,
            workflow_template: "release".into(),
            workload_template: "github:{repository}@{ref}".into(),
            grants: vec![],
            max_ttl_seconds: 600,
            owner: None,
            expires_at: None,
            client_id: None,
            actors: vec![],
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    fn at(t: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(t, 0).unwrap()
    }

    fn github_token(iat: i64) -> serde_json::Map<String, serde_json::Value> {
        claims(json!({
            "iss": "https://token.actions.githubusercontent.com", "aud": "https://mayfly.acme.test",
            "sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "ref": "refs/heads/main",
            "repository_owner_id": 42, "iat": iat, "nbf": iat, "exp": iat + 300, "jti": "j1"
        }))
    }

    #[test]
    fn a_github_token_becomes_the_templated_workload() {
        let m = github_policy().evaluate(&github_token(1000), at(1010)).unwrap();
        assert_eq!(m.workload, "github:acme/app@refs/heads/main");
        assert_eq!((m.workflow.as_str(), m.jti.as_deref()), ("release", Some("j1")));
    }

    /// An issuer signs whatever numbers it likes: extremes are judged, not
    /// overflowed (a panic in a debug build, a wrapped verdict in release).
    #[test]
    fn extreme_time_claims_are_judged_without_overflow() {
        let p = github_policy();
        for (name, value) in [
            ("exp", i64::MAX),
            ("exp", i64::MIN),
            ("iat", i64::MIN),
            ("nbf", i64::MAX),
        ] {
            let mut c = github_token(1000);
            c.insert(name.into(), json!(value));
            let _ = p.evaluate(&c, at(1010));
        }
        let mut c = github_token(1000);
        c.insert("iat".into(), json!(i64::MIN));
        assert_eq!(p.evaluate(&c, at(1010)).unwrap_err().0, "too old");
    }

    #[test]
    fn each_failed_condition_is_named() {
        let p = github_policy();
        let why = |c: serde_json::Map<String, serde_json::Value>, now| p.evaluate(&c, at(now)).unwrap_err().0;
        let mut c = github_token(1000);
        c.insert("aud".into(), json!("https://other.test"));
        assert_eq!(why(c, 1010), "audience");
        let mut c = github_token(1000);
        c.insert("ref".into(), json!("refs/heads/dev"));
        assert_eq!(why(c, 1010), "claim ref");
        let mut c = github_token(1000);
        c.insert("sub".into(), json!("repo:acme/app:ref:refs/heads/dev"));
        assert_eq!(why(c, 1010), "subject");
        assert_eq!(why(github_token(1000), 2000), "expired");
        let mut old = github_token(1000);
        old.insert("exp".into(), json!(5000));
        assert_eq!(why(old, 1400), "too old");
        let mut c = github_token(1000);
        c.remove("repository");
        assert_eq!(why(c, 1010), "claim repository missing");
    }

    #[test]
    fn kubernetes_claims_with_dotted_keys_fill_templates() {
        let c = claims(json!({"kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "triage"}}}));
        assert_eq!(
            render("k8s:{kubernetes.io.namespace}/{kubernetes.io.serviceaccount.name}", &c).unwrap(),
            "k8s:agents/triage"
        );
        assert!(render("{kubernetes.io.pod.name}", &c).is_err());
    }

    #[test]
    fn a_shared_issuers_subject_pattern_must_pin_the_owner_or_a_claim_must() {
        let none = BTreeMap::new();
        for ok in [
            "^repo:acme/app:ref:refs/heads/main$",
            "^repo:acme/.+:ref:refs/heads/main$",
            "^project_path:acme/infra:ref_type:branch:ref:main$",
            "^system:serviceaccount:agents:.+$",
            "^[a-z]+@acme\\.test$",
            "^repo:acme\\.corp/app:.*$",
            "^r[a-z]+@acme\\.test$",
        ] {
            assert!(pinned(ok, &none).is_ok(), "{ok}");
        }
        for bad in [
            "^repo:.*$",
            "^repo:acme.*$",
            "^repo:acme-?/app:.*$",
            "^repo:[a-z]+/app:ref:refs/heads/main$",
            "^project_path:.+/infra:.*$",
            "^system:serviceaccount:.+:default$",
            "^(?i)repo:.+$",
            "^[r]epo:.+$",
            "^(repo):.+$",
            "^\\x72epo:.+$",
            "^.epo:.+$",
            "^(?i)REPO:.+/app:ref:refs/heads/main$",
        ] {
            let err = pinned(bad, &none).unwrap_err();
            assert!(err.to_string().contains("pin"), "{bad}: {err}");
        }
        let owner = BTreeMap::from([("repository_owner".to_string(), ClaimCondition::Exact("acme".into()))]);
        assert!(pinned("^repo:[a-z-]+/app:ref:refs/heads/main$", &owner).is_ok());
        let loose = BTreeMap::from([(
            "repository_owner".to_string(),
            ClaimCondition::Pattern(PatternCondition { pattern: "^.+$".into() }),
        )]);
        assert!(pinned("^repo:.*$", &loose).is_err(), "a pattern condition does not pin");
    }

    #[test]
    fn patterns_must_be_anchored_and_selective() {
        assert!(anchored("subject_pattern", "^repo:acme/.+:ref:refs/heads/main$").is_ok());
        for bad in [
            "repo:.*",
            "^.*$",
            "^.*",
            "^(.*)$",
            "^[^z]*$",
            "^repo:acme/app:ref:refs/heads/main$|^.*$",
        ] {
            assert!(anchored("subject_pattern", bad).is_err(), "{bad}");
        }
        assert!(template_claims("t", "github:{repository}@{ref}").is_ok());
        for bad in ["{", "}", "{}", "{a b}", ""] {
            assert!(template_claims("t", bad).is_err(), "{bad}");
        }
    }
}
