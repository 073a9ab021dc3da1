//! Tenants and what lives in them: resources (MCP servers), clients and their
//! grants. Validation of every name and value an admin can send lives here,
//! pure, so the HTTP layer only translates.

pub mod authn;
pub mod brake;
pub mod catalog;
mod client_input;
pub mod clients;
pub mod directory;
pub mod redirect;
pub mod secret;
pub mod sql;
pub mod tools;
pub mod uri;

pub use authn::{Authenticator, Credentials};
pub use catalog::Catalog;
pub use directory::Directory;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The hidden tenant that owns the global admin client `mayfly-admin`.
pub const SYSTEM_TENANT: &str = "_system";
pub const BOOTSTRAP_ADMIN: &str = "mayfly-admin";
/// Scope of the global admin on the admin API.
pub const GLOBAL_ADMIN_SCOPE: &str = "mayfly:admin";

pub fn tenant_admin_scope(tenant: &str) -> String {
    format!("mayfly:tenant:{tenant}:admin")
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Past this many live leases, mints answer 429.
    pub max_live_leases: Option<i64>,
    /// Past this rate (per replica), mints answer 429.
    pub max_mints_per_second: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Resource {
    pub id: Uuid,
    pub tenant_id: String,
    pub uri: String,
    pub canonical_uri: String,
    pub name: String,
    #[sqlx(json)]
    pub scopes: Vec<String>,
    pub default_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The per-tool policy gateways enforce; None: any valid token, any tool.
    #[sqlx(json(nullable))]
    pub tools: Option<tools::ToolPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    Ci,
    Agent,
    Service,
    ResourceServer,
    /// A person's MCP client (IDE, desktop app): public, signs people in
    /// through the authorization code flow, at its `redirect_uris`.
    Interactive,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Ci => "ci",
            ClientKind::Agent => "agent",
            ClientKind::Service => "service",
            ClientKind::ResourceServer => "resource_server",
            ClientKind::Interactive => "interactive",
        }
    }
}

impl TryFrom<String> for ClientKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "ci" => Ok(ClientKind::Ci),
            "agent" => Ok(ClientKind::Agent),
            "service" => Ok(ClientKind::Service),
            "resource_server" => Ok(ClientKind::ResourceServer),
            "interactive" => Ok(ClientKind::Interactive),
            other => Err(format!("unknown client kind `{other}` in store")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub resource: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Client {
    pub client_id: String,
    pub tenant_id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: ClientKind,
    #[sqlx(json)]
    pub workflows: Vec<String>,
    #[sqlx(json)]
    pub grants: Vec<Grant>,
    pub max_ttl_seconds: i64,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// resource_server only: canonical URIs whose tokens it may introspect
    /// (None: every resource of its tenant).
    #[sqlx(json(nullable))]
    pub serves: Option<Vec<String>>,
    /// An anchored pattern every minted `workload` must match.
    pub workload_pattern: Option<String>,
    /// Mints per second this client may make (per replica).
    pub max_mints_per_second: Option<i64>,
    /// Public keys it authenticates with (private_key_jwt), a JWK set.
    #[sqlx(json(nullable))]
    pub jwks: Option<serde_json::Value>,
    /// Agent clients allowed to act for this client's tokens (token exchange).
    #[sqlx(json(nullable))]
    pub delegates: Option<Vec<String>>,
    /// RFC 9449 / RFC 7591: every token it gets is bound to a DPoP key.
    pub dpop_bound_access_tokens: bool,
    /// interactive only: where the authorization code flow may answer it.
    #[sqlx(json(nullable))]
    pub redirect_uris: Option<Vec<String>>,
    /// The tenant's catalog version this client was read at, if it came
    /// from the catalog: minting with it commits only while that holds.
    #[sqlx(skip)]
    pub catalog_version: Option<catalog::Stamp>,
}

impl Client {
    /// A new, enabled client with nothing granted: callers fill in what
    /// they register (`Client { workflows, grants, ..Client::new(…) }`).
    pub fn new(tenant_id: &str, client_id: &str, kind: ClientKind, at: DateTime<Utc>) -> Self {
        Self {
            client_id: client_id.to_string(),
            tenant_id: tenant_id.to_string(),
            name: client_id.to_string(),
            kind,
            workflows: Vec::new(),
            grants: Vec::new(),
            max_ttl_seconds: 900,
            disabled: false,
            created_at: at,
            updated_at: at,
            serves: None,
            workload_pattern: None,
            max_mints_per_second: None,
            jwks: None,
            delegates: None,
            dpop_bound_access_tokens: false,
            redirect_uris: None,
            catalog_version: None,
        }
    }

    pub fn may_mint_for(&self, workflow: &str) -> bool {
        allows_workflow(&self.workflows, workflow)
    }

    pub fn implied_workflow(&self) -> Option<&str> {
        implied_workflow(&self.workflows)
    }
}

/// Whether a list of workflows (`*` for any) allows `workflow`.
pub fn allows_workflow(workflows: &[String], workflow: &str) -> bool {
    workflows.iter().any(|w| w == "*" || w == workflow)
}

/// The workflow used when a request names none: only when the list allows
/// exactly one (MCP SDK clients send no `workflow`).
pub fn implied_workflow(workflows: &[String]) -> Option<&str> {
    match workflows {
        [only] if only != "*" => Some(only),
        _ => None,
    }
}

/// A validation failure: which field, and why, in words safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

pub fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

fn check_chars(
    field: &'static str,
    value: &str,
    max: usize,
    first: fn(char) -> bool,
    rest: fn(char) -> bool,
    what: &str,
) -> Result<(), Invalid> {
    let mut chars = value.chars();
    let ok = value.len() <= max && chars.next().is_some_and(first) && chars.all(rest);
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("must be {what}, at most {max} characters")))
    }
}

/// A tenant in a URL path: a slug, or the system tenant (global admins only;
/// the authorization check sees to that, as no tenant admin scope names it).
pub fn is_tenant_path(id: &str) -> bool {
    id == SYSTEM_TENANT || validate_tenant_id(id).is_ok()
}

pub fn validate_tenant_id(id: &str) -> Result<(), Invalid> {
    check_chars(
        "id",
        id,
        63,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        "a slug of lower-case letters, digits and `-`",
    )
}

pub fn validate_client_id(id: &str) -> Result<(), Invalid> {
    check_chars(
        "client_id",
        id,
        128,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
        "letters, digits, `.`, `_` and `-`, starting with a letter or digit",
    )
}

pub fn validate_workflow(field: &'static str, name: &str) -> Result<(), Invalid> {
    check_chars(
        field,
        name,
        128,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'),
        "letters, digits, `.`, `_`, `-`, `:` and `/`, starting with a letter or digit",
    )
}

/// Whether `pattern` matches the whole of `value`. Stored patterns start with
/// `^` and end with `$`, but `^a$|b` does too: the match is anchored around
/// the whole pattern as well. A pattern that no longer compiles matches nothing.
pub fn matches_whole(pattern: &str, value: &str) -> bool {
    regex_lite::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(value))
}

pub fn validate_workload(field: &'static str, name: &str) -> Result<(), Invalid> {
    check_chars(
        field,
        name,
        256,
        |c| c.is_ascii_graphic() && c != '"' && c != '\\',
        |c| c.is_ascii_graphic() && c != '"' && c != '\\',
        "visible ASCII without quotes or backslashes",
    )
}

/// RFC 6749 §3.3 scope-token.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

pub fn validate_name(field: &'static str, name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(invalid(field, "must be 1 to 200 characters, no control characters"));
    }
    Ok(())
}

/// Scopes an admin declares on a resource.
pub fn validate_resource_scopes(scopes: &[String]) -> Result<(), Invalid> {
    if scopes.is_empty() || scopes.len() > 100 {
        return Err(invalid("scopes", "a resource defines 1 to 100 scopes"));
    }
    for (i, s) in scopes.iter().enumerate() {
        if !is_scope_token(s) {
            return Err(invalid("scopes", format!("`{s}` is not a valid scope token")));
        }
        if s.starts_with("mayfly:") {
            return Err(invalid("scopes", "scopes starting with `mayfly:` are reserved"));
        }
        if scopes[..i].contains(s) {
            return Err(invalid("scopes", format!("`{s}` is listed twice")));
        }
    }
    Ok(())
}

pub fn validate_ttls(default_ttl: i64, max_ttl: i64, ceiling: i64) -> Result<(), Invalid> {
    if max_ttl < 1 || max_ttl > ceiling {
        return Err(invalid(
            "max_ttl_seconds",
            format!("must be between 1 and the server's ceiling of {ceiling} seconds"),
        ));
    }
    if default_ttl < 1 || default_ttl > max_ttl {
        return Err(invalid("default_ttl_seconds", "must be between 1 and max_ttl_seconds"));
    }
    Ok(())
}

pub fn validate_workflows(workflows: &[String]) -> Result<(), Invalid> {
    if workflows.is_empty() || workflows.len() > 100 {
        return Err(invalid("workflows", "list 1 to 100 workflows, or [\"*\"]"));
    }
    for w in workflows {
        if w != "*" {
            validate_workflow("workflows", w)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn patterns_match_whole_values_even_across_alternation() {
        assert!(matches_whole("^ci-[0-9]+$", "ci-42"));
        assert!(!matches_whole("^ci-[0-9]+$", "ci-42x"));
        // `^a$|b` looks anchored, but its right arm is not.
        assert!(!matches_whole("^a$|b", "xbx"));
        assert!(matches_whole("^a$|b", "b"));
        assert!(!matches_whole("^(", "anything"));
    }

    #[test]
    fn tenant_ids_are_slugs_and_the_system_tenant_is_not_one() {
        assert!(validate_tenant_id("acme").is_ok());
        assert!(validate_tenant_id("acme-2").is_ok());
        for bad in ["", "Acme", "-acme", "acme_x", SYSTEM_TENANT, &"a".repeat(64)] {
            assert!(validate_tenant_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        assert!(is_scope_token("issues:write"));
        for bad in ["", "a b", "a\"b", "a\\b", "é"] {
            assert!(!is_scope_token(bad), "{bad}");
        }
        assert!(validate_resource_scopes(&["mayfly:admin".into()]).is_err());
        assert!(validate_resource_scopes(&["a".into(), "a".into()]).is_err());
    }

    #[test]
    fn a_single_named_workflow_is_implied_but_a_wildcard_is_not() {
        let mut c = Client {
            workflows: vec!["release".into()],
            max_ttl_seconds: 60,
            ..Client::new("t", "c", ClientKind::Ci, DateTime::UNIX_EPOCH)
        };
        assert_eq!(c.implied_workflow(), Some("release"));
        assert!(c.may_mint_for("release") && !c.may_mint_for("deploy"));
        c.workflows = vec!["*".into()];
        assert_eq!(c.implied_workflow(), None);
        assert!(c.may_mint_for("deploy"));
    }

    /// A validator as a predicate, with its length limit.
    type Validator = (fn(&str) -> bool, usize);

    /// Every validator with its length limit, so one property covers them all.
    fn validators() -> [Validator; 5] {
        [
            (is_scope_token, 128),
            (|s| validate_workflow("workflow", s).is_ok(), 128),
            (|s| validate_workload("workload", s).is_ok(), 256),
            (|s| validate_client_id(s).is_ok(), 128),
            (|s| validate_tenant_id(s).is_ok(), 63),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn validators_accept_only_short_ascii(s in any::<String>()) {
            for (accepts, max) in validators() {
                if accepts(&s) {
                    prop_assert!(s.is_ascii() && !s.is_empty() && s.len() <= max, "{s:?}");
                }
            }
        }

        // Mostly valid characters and lengths around the limits, so the
        // accepting side is exercised too.
        #[test]
        fn validators_accept_only_short_ascii_near_the_limits(
            s in r#"[a-zA-Z0-9._:/*\\"-]{0,300}|[a-z0-9-]{60,66}|[a-z0-9]{125,130}|[!-~]{250,260}"#
        ) {
            for (accepts, max) in validators() {
                if accepts(&s) {
                    prop_assert!(s.is_ascii() && !s.is_empty() && s.len() <= max, "{s:?}");
                }
            }
        }
    }
}
