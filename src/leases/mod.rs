//! Leases (one per issued token) and revocation rules. A rule is a selector
//! plus a cutoff in the database's lease sequence: every lease of the tenant
//! that matches the selector and was numbered at or before the cutoff is
//! revoked. Checking a token costs one indexed lookup, whatever the number of
//! live leases; tokens minted after the rule are untouched.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub mod ledger;
pub mod probe;
pub mod revocations;
pub mod rules_sql;
pub mod sql;
pub mod sweeper;

pub use ledger::Ledger;
pub use probe::LeaseProbe;
pub use revocations::{Cover, Revocations};
pub use sweeper::Sweeper;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub seq: i64,
    pub id: Uuid,
    pub tenant_id: String,
    pub workflow: String,
    pub workload: String,
    pub client_id: String,
    #[sqlx(json(nullable))]
    pub actor: Option<serde_json::Value>,
    pub resource: String,
    #[sqlx(json)]
    pub scopes: Vec<String>,
    pub kid: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revocation_id: Option<Uuid>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// The external identity a federated token was issued to:
    /// `{issuer, subject, jti, policy, policy_name}`.
    #[sqlx(json(nullable))]
    pub federated: Option<serde_json::Value>,
    /// The trust policy that accepted it.
    pub policy_id: Option<Uuid>,
    /// The lease a delegated token was exchanged from.
    pub parent_id: Option<Uuid>,
    /// The RFC 7638 thumbprint of the DPoP key the token is bound to (None:
    /// a bearer token).
    pub jkt: Option<String>,
    /// Written beside the lease (not a column): what revocation must reach it by.
    #[sqlx(skip)]
    pub links: Links,
}

/// What a delegated lease is linked to, so that a rule reaching any of its
/// chain reaches it: its actors (workloads), the leases it was exchanged
/// from (the subject's and the actor token's, with theirs), the clients of
/// those leases and of the actors, and the keys that signed those leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    pub actors: Vec<String>,
    pub ancestors: Vec<Uuid>,
    pub clients: Vec<String>,
    pub kids: Vec<String>,
}

impl Links {
    /// Adds `other`'s links and `lease` itself (as an ancestor, with its
    /// client and key), keeping each link once.
    pub fn inherit(&mut self, lease: &Lease, other: Links) {
        fn add<T: PartialEq>(to: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
            for item in items {
                if !to.contains(&item) {
                    to.push(item);
                }
            }
        }
        add(&mut self.ancestors, [lease.id]);
        add(&mut self.clients, [lease.client_id.clone()]);
        add(&mut self.kids, [lease.kid.clone()]);
        add(&mut self.actors, other.actors);
        add(&mut self.ancestors, other.ancestors);
        add(&mut self.clients, other.clients);
        add(&mut self.kids, other.kids);
    }
}

/// What a revocation rule matches within its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Tenant,
    Workflow(String),
    Workload(String),
    Client(String),
    Lease(Uuid),
    /// Every token a signing key signed, in every tenant.
    Key(String),
}

impl Selector {
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Tenant => "tenant",
            Selector::Workflow(_) => "workflow",
            Selector::Workload(_) => "workload",
            Selector::Client(_) => "client_id",
            Selector::Lease(_) => "lease_id",
            Selector::Key(_) => "kid",
        }
    }

    pub fn value(&self) -> String {
        match self {
            Selector::Tenant => String::new(),
            Selector::Workflow(v) | Selector::Workload(v) | Selector::Client(v) | Selector::Key(v) => v.clone(),
            Selector::Lease(id) => id.to_string(),
        }
    }

    pub fn from_parts(kind: &str, value: &str) -> Option<Selector> {
        Some(match kind {
            "tenant" => Selector::Tenant,
            "workflow" => Selector::Workflow(value.into()),
            "workload" => Selector::Workload(value.into()),
            "client_id" => Selector::Client(value.into()),
            "lease_id" => Selector::Lease(value.parse().ok()?),
            "kid" => Selector::Key(value.into()),
            _ => return None,
        })
    }
}

/// A revocation rule: a selector and a cutoff in the lease sequence.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub seq: i64,
    pub id: Uuid,
    /// None for key rules, which span tenants.
    pub tenant_id: Option<String>,
    pub selector: Selector,
    pub cutoff_seq: i64,
    pub issued_before: DateTime<Utc>,
    pub reason: String,
    pub created_by: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// Lease rows marked so far (the background sweep adds as it goes).
    pub leases_revoked: i64,
    /// When every matching lease row had been marked.
    pub marked_at: Option<DateTime<Utc>>,
}

/// Why a lease is not (or no longer) active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    Unknown,
    Expired,
    Revoked,
    NotYetValid,
}

impl Inactive {
    pub fn as_str(self) -> &'static str {
        match self {
            Inactive::Unknown => "unknown_lease",
            Inactive::Expired => "expired",
            Inactive::Revoked => "revoked",
            Inactive::NotYetValid => "not_yet_valid",
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kind() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec!["tenant", "workflow", "workload", "client_id", "lease_id", "kid"])
                .prop_map(str::to_string),
            any::<String>(),
        ]
    }

    /// Values a lease id selector sees: UUIDs in their various spellings, and junk.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
            any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string().to_uppercase()),
            any::<u128>().prop_map(|n| Uuid::from_u128(n).urn().to_string()),
            "[0-9a-fA-F{}-]{0,40}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Whatever is parsed is written back the same way (the store keeps kind and value).
        #[test]
        fn selectors_never_panic_and_round_trip(kind in kind(), value in value()) {
            if let Some(selector) = Selector::from_parts(&kind, &value) {
                prop_assert_eq!(selector.kind(), kind.as_str());
                prop_assert_eq!(Selector::from_parts(selector.kind(), &selector.value()), Some(selector));
            }
        }
    }
}
