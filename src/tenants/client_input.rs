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
    /// Public keys for private_key_jwt (`{"keys": [...]}`: 1 to 10 RSA, P-256 or
    /// Ed25519 signing keys). Only `kty`, `kid`, `alg`, `use`, `crv`, `x`, `y`,
    /// `n` and `e` are kept (other members are dropped; the answer shows what
    /// is stored); a key with private members (`d`, `p`, `q`, …) is refused.
    /// A client registered with keys gets no secret.
    pub jwks: Option<serde_json::Value>,
    /// Agent clients of this tenant that may act for this client's tokens.
    #[schema(max_items = 100)]
    pub delegates: Option<Vec<String>>,
    /// Every token it gets is bound to a DPoP key (RFC 9449): a token
    /// request without a proof is refused.
    pub dpop_bound_access_tokens: Option<bool>,
    /// interactive only (and required there): where the authorization code
    /// flow may answer it (1 to 10; https, plain-http loopback, or a
    /// private-use scheme; a loopback one matches on any port).
    #[schema(max_items = 10)]
    pub redirect_uris: Option<Vec<String>>,
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
    /// Replaces the client's public keys (kept and refused as on creation).
    pub jwks: Option<serde_json::Value>,
    /// Replaces the agents that may act for its tokens (`[]`: none).
    #[schema(max_items = 100)]
    pub delegates: Option<Vec<String>>,
    /// Whether every token it gets must be bound to a DPoP key.
    pub dpop_bound_access_tokens: Option<bool>,
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

/// At most this many keys in a client's JWK set.
const MAX_CLIENT_KEYS: usize = 10;

/// Members that carry private or symmetric key material (RFC 7518 §6).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A JWK set of public signing keys: 1 to 10 usable keys, nothing private.
/// What is kept is only the public members a verifier reads (`kty`, `kid`,
/// `alg`, `use`, `crv`, `x`, `y`, `n`, `e`), each bounded: the catalog holds
/// every client of a tenant in memory on every replica, so nothing an admin
/// sends may ride along unbounded.
pub fn check_jwks(jwks: serde_json::Value) -> Result<serde_json::Value, Error> {
    let bad = |why: String| Error::from(invalid("jwks", why));
    let Some(serde_json::Value::Array(keys)) = jwks.get("keys") else {
        return Err(bad("must be a JWK set {\"keys\": [...]}".into()));
    };
    if keys.is_empty() || keys.len() > MAX_CLIENT_KEYS {
        return Err(bad(format!("list 1 to {MAX_CLIENT_KEYS} keys")));
    }
    let mut kept = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        kept.push(public_jwk(key).map_err(|why| bad(format!("key {i}: {why}")))?);
    }
    Ok(serde_json::json!({ "keys": kept }))
}

/// One key reduced to its public members, or why it cannot be registered.
fn public_jwk(key: &serde_json::Value) -> Result<serde_json::Value, String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use crate::jose::jwt::Jwk;

    let Some(members) = key.as_object() else {
        return Err("must be a JWK object".into());
    };
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| members.contains_key(**m)) {
        return Err(format!(
            "contains private or symmetric key material (`{m}`); register public keys only"
        ));
    }
    let text = |name: &str, max: usize| -> Result<Option<String>, String> {
        match members.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{name}` must be a string of 1 to {max} characters")),
        }
    };
    // Decoded sizes: P-256 and Ed25519 coordinates are 32 bytes; RSA moduli
    // 2048 to 8192 bits (what ring verifies), exponents a few bytes.
    let bytes = |name: &str, value: &Option<String>, range: std::ops::RangeInclusive<usize>| match value {
        Some(v) => match URL_SAFE_NO_PAD.decode(v) {
            Ok(b) if range.contains(&b.len()) => Ok(()),
            _ => Err(format!("`{name}` is not a base64url value of the right size")),
        },
        None => Ok(()),
    };
    // Only the members of the key's own type: an RSA key keeps no `x`.
    let kty = text("kty", 8)?.ok_or("`kty` is required")?;
    let (rsa, ec, okp) = (kty == "RSA", kty == "EC", kty == "OKP");
    let of = |wanted: bool, name: &str, max: usize| if wanted { text(name, max) } else { Ok(None) };
    let jwk = Jwk {
        kid: text("kid", 256)?,
        alg: text("alg", 16)?,
        use_: text("use", 16)?,
        crv: of(ec || okp, "crv", 16)?,
        n: of(rsa, "n", 1400)?,
        e: of(rsa, "e", 16)?,
        x: of(ec || okp, "x", 64)?,
        y: of(ec, "y", 64)?,
        kty,
    };
    if jwk.algorithm().is_none() || jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("must be an RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA) signing key".into());
    }
    bytes("n", &jwk.n, 256..=1025)?;
    bytes("e", &jwk.e, 1..=8)?;
    bytes("x", &jwk.x, 32..=32)?;
    bytes("y", &jwk.y, 32..=32)?;
    serde_json::to_value(&jwk).map_err(|_| "cannot be encoded".into())
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
