//! What the HTTP edge is handed: the services (`AppState`) and the few
//! settings only the edge needs (`Web`). Built once by `app`; read by
//! `http`. Kept apart from both so that neither imports the other's insides
//! (app → http → state, app → state: no circle).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::activity::Activity;
use crate::audit::AuditLog;
use crate::audit::checkpoint::Checkpointer;
use crate::audit::tlog::TransparencyLog;
use crate::clock::Clock;
use crate::config::Cidr;
use crate::delegation::Delegation;
use crate::federation::Federation;
use crate::federation::admin::TrustPolicies;
use crate::grants::TokenEndpoint;
use crate::keys::KeyService;
use crate::leases::{Ledger, Revocations};
use crate::storage::Store;
use crate::tenants::{Authenticator, Directory};
use crate::tokens::issuer::Issuer;
use crate::tokens::validate::Verifier;

/// The services the HTTP layer calls. axum clones the state for every
/// request, so each service sits behind its own `Arc`: a clone is a dozen
/// reference counts, not every service's parts.
#[derive(Clone)]
pub struct AppState {
    /// The token endpoint's pipeline.
    pub tokens: Arc<TokenEndpoint>,
    pub issuer: Arc<Issuer>,
    pub verifier: Arc<Verifier>,
    pub keys: Arc<KeyService>,
    pub revocations: Arc<Revocations>,
    pub authn: Arc<Authenticator>,
    pub directory: Arc<Directory>,
    pub ledger: Arc<Ledger>,
    pub audit: Arc<AuditLog>,
    /// Keys the MAC'd checkpoints of the chain written before the log.
    pub checkpoints: Arc<Checkpointer>,
    /// The transparency log: signed checkpoints and proofs.
    pub tlog: Arc<TransparencyLog>,
    pub federation: Arc<Federation>,
    pub delegation: Arc<Delegation>,
    pub trust_policies: Arc<TrustPolicies>,
    /// What gateways report and read.
    pub activity: Arc<Activity>,
    /// People signing in (the authorization code flow) and their sessions.
    pub people: Arc<crate::people::People>,
    pub web: Arc<Web>,
}

/// What only the HTTP edge needs: proxies to believe, cache lifetimes, the
/// metrics registry, and the store for the readiness probe.
pub struct Web {
    /// Where `/metrics` and the detailed `/readyz` are served instead of
    /// the public listener, when set.
    pub ops_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<Cidr>,
    pub jwks_max_age: Duration,
    pub metrics: PrometheusHandle,
    pub clock: Arc<dyn Clock>,
    pub store: Store,
    /// Binds the console's CSRF token to its session (derived from the master key).
    pub console_csrf: ring::hmac::Key,
}
