//! What one mint is allowed: the client the lease is recorded under, the
//! workflows, grants and lifetime it may have, who names the workload, the
//! rate it may mint at, and the catalog version all of it was read at. Every
//! grant builds these terms from what it verified (a client, a trust policy,
//! a delegation) and the issuer decides against them alone, so no path mints
//! under a client it did not load (and stamp) from the catalog.

use crate::tenants::catalog::Stamp;
use crate::tenants::{self, Client, Grant};

#[derive(Debug, Clone)]
pub struct MintTerms {
    pub tenant_id: String,
    /// Recorded on the lease and the token (`client_id`).
    pub client_id: String,
    /// The workflows a token may name (`*` for any).
    pub workflows: Vec<String>,
    pub grants: Vec<Grant>,
    pub max_ttl_seconds: i64,
    /// An anchored pattern the workload must match.
    pub workload_pattern: Option<String>,
    /// Whether a verified identity named the workload (a trust policy's
    /// template, a delegation's subject) rather than the caller. A
    /// caller-chosen workload that reads as a person (`person:…`, or with an
    /// `@`) needs a pattern that allows it: people are identities mayfly
    /// verifies itself.
    pub workload_verified: bool,
    /// The minting client's own rate limit (per replica).
    pub max_mints_per_second: Option<i64>,
    /// The catalog version the client was read at: the lease commits only
    /// while it holds. None only for terms no catalog client stands behind
    /// (a trust policy that names no client).
    pub stamp: Option<Stamp>,
    /// The client gets sender-constrained tokens only: no DPoP proof, no token.
    pub dpop_bound: bool,
}

impl MintTerms {
    /// A client minting for itself, on everything it is granted.
    pub fn of_client(client: &Client) -> Self {
        Self {
            tenant_id: client.tenant_id.clone(),
            client_id: client.client_id.clone(),
            workflows: client.workflows.clone(),
            grants: client.grants.clone(),
            max_ttl_seconds: client.max_ttl_seconds,
            workload_pattern: client.workload_pattern.clone(),
            workload_verified: false,
            max_mints_per_second: client.max_mints_per_second,
            stamp: client.catalog_version,
            dpop_bound: client.dpop_bound_access_tokens,
        }
    }

    pub fn may_mint_for(&self, workflow: &str) -> bool {
        tenants::allows_workflow(&self.workflows, workflow)
    }

    pub fn implied_workflow(&self) -> Option<&str> {
        tenants::implied_workflow(&self.workflows)
    }
}

/// Whether a caller-chosen workload reads as a person: reserved for
/// identities mayfly verified itself.
pub fn looks_like_person(workload: &str) -> bool {
    workload.starts_with("person:") || workload.contains('@')
}
