//! What an admin sends to register or change a client, and the pure checks
//! on it: keys, rate limits, and what a change takes away (which ends the
//! client's tokens).

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::directory::{ScopeName, scope_names};
use super::{Client, ClientKind, Grant, invalid, uri};
use crate::error::Error;

/// A grant as an admin writes it: a resource URI and scopes it defines.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    #[schema(max_length = 2048)]
    pub resource: String,
    #[schema(min_items = 1, max_items = 100, inline)]
    pub scopes: Vec<ScopeName>,
}

impl From<GrantBody> for Grant {
    fn from(g: GrantBody) -> Self {
        Grant {
            resource: g.resource,
            scopes: scope_names(g.scopes),
        }
    }
}

/// A workflow name, or `*` for any.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = r"^(\*|[A-Za-z0-9][A-Za-z0-9._:/-]{0,127})$", max_length = 128)]
#[serde(transparent)]
pub struct WorkflowName(pub String);

/// `POST /v1/tenants/{tenant}/clients`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// Generated (`{tenant}-…`) if absent.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", max_length = 128)]
    pub client_id: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub kind: ClientKind,
    /// The workflows it may mint for, or `["*"]`; required unless the kind is
    /// `resource_server` (which never mints).
    #[schema(min_items = 1, max_items = 100, inline)]
    pub workflows: Option<Vec<WorkflowName>>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub grants: Vec<GrantBody>,
    /// Defaults to MAYFLY_DEFAULT_TTL.
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ttl_seconds: Option<i64>,
    /// resource_server only: the resource URIs whose tokens it may introspect
    /// (default: every resource of its tenant).
    #[schema(max_items = 100)]
    pub serves: Option<Vec<String>>,
    /// An anchored pattern (`^…$`) every `workload` it mints for must match.
    #[schema(max_length = 256)]
    pub workload_pattern: Option<String>,
    /// Mints per second it may make (per replica); absent: only the tenant's limit.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_mints_per_second: Option<i64>,
    /// Public keys for private_key_jwt (`{"keys": [...]}`: RSA, P-256 or Ed25519).
    /// A client registered with keys gets no secret.
    pub jwks: Option<serde_json::Value>,
    /// Agent clients of this tenant that may act for this client's tokens.
    #[schema(max_items = 100)]
    pub delegates: Option<Vec<String>>,
}

/// `PATCH /v1/tenants/{tenant}/clients/{client_id}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(min_items = 1, max_items = 100, inline)]
    pub workflows: Option<Vec<WorkflowName>>,
    #[schema(max_items = 100)]
    pub grants: Option<Vec<GrantBody>>,
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ttl_seconds: Option<i64>,
    /// Disabling ends every token the client holds, at once.
    pub disabled: Option<bool>,
    #[schema(max_items = 100)]
    pub serves: Option<Vec<String>>,
    /// `""` removes the pattern.
    #[schema(max_length = 256)]
    pub workload_pattern: Option<String>,
    /// 0 removes the client's own rate limit.
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_mints_per_second: Option<i64>,
    /// Replaces the client's public keys.
    pub jwks: Option<serde_json::Value>,
    /// Replaces the agents that may act for its tokens (`[]`: none).
    #[schema(max_items = 100)]
    pub delegates: Option<Vec<String>>,
}

/// `POST …/clients/{client_id}/secrets`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRotation {
    /// How long the current secret keeps working (default 3600, 0 = at once).
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<i64>,
}

/// A new secret, shown once.
pub struct Rotated {
    pub client: Client,
    pub secret: SecretString,
    pub previous_expires_at: DateTime<Utc>,
}

/// A JWK set of public signing keys: 1 to 10 usable keys, nothing private.
pub fn check_jwks(jwks: serde_json::Value) -> Result<serde_json::Value, Error> {
    let bad = |why: &str| Error::from(invalid("jwks", why.to_string()));
    let set: crate::federation::jwt::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|_| bad("must be a JWK set {\"keys\": [...]}"))?;
    if set.keys.is_empty() || set.keys.len() > 10 {
        return Err(bad("list 1 to 10 keys"));
    }
    if set.keys.iter().any(|k| k.get("d").is_some() || k.get("k").is_some()) {
        return Err(bad(
            "contains private or symmetric key material; register public keys only",
        ));
    }
    if set.usable().len() != set.keys.len() {
        return Err(bad(
            "every key must be RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA) for signing",
        ));
    }
    Ok(jwks)
}

/// A rate limit: 1 to a million per second.
pub fn check_rate(field: &'static str, rate: Option<i64>) -> Result<Option<i64>, Error> {
    match rate {
        Some(r) if !(1..=1_000_000).contains(&r) => Err(invalid(field, "must be between 1 and 1000000").into()),
        r => Ok(r),
    }
}

/// What a change took away from a client, if anything: tokens minted under
/// the old terms must not outlive them.
pub fn taken_away(before: &Client, after: &Client) -> Option<&'static str> {
    if after.disabled && !before.disabled {
        return Some("client disabled");
    }
    let still = |w: &String| after.workflows.iter().any(|a| a == "*" || a == w);
    if before.workflows.iter().any(|w| !still(w)) {
        return Some("workflow removed");
    }
    let holds = |g: &Grant, scope: &String| {
        let canonical = uri::canonicalize(&g.resource).ok();
        after
            .grants
            .iter()
            .any(|a| uri::canonicalize(&a.resource).ok() == canonical && a.scopes.contains(scope))
    };
    if before.grants.iter().any(|g| g.scopes.iter().any(|s| !holds(g, s))) {
        return Some("grant or scope removed");
    }
    if after.max_ttl_seconds < before.max_ttl_seconds || after.workload_pattern != before.workload_pattern {
        return Some("client narrowed");
    }
    None
}

pub fn workflow_names(w: Vec<WorkflowName>) -> Vec<String> {
    w.into_iter().map(|w| w.0).collect()
}
