//! Liveness, readiness and Prometheus metrics.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Latency buckets, in seconds: histograms (unlike summaries) add up across
/// replicas, so an operator can alert on the fleet's p99.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The process-wide recorder (the `metrics` facade has one global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &BATCH_BUCKETS))
            {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The server's counters, at 0 from start: a rate alert needs the series to
/// exist before the first event (an absent series alerts on nothing).
pub fn zero_counters() {
    for name in [
        "mayfly_tokens_issued_total",
        "mayfly_signing_failures_total",
        "mayfly_client_auth_failures_total",
        "mayfly_federation_refusals_total",
        "mayfly_leases_marked_revoked_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for result in ["accepted", "duplicate", "rejected"] {
        metrics::counter!("mayfly_mcp_events_total", "result" => result).increment(0);
    }
    for active in ["true", "false"] {
        metrics::counter!("mayfly_introspections_total", "active" => active).increment(0);
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// The details are absent on the public listener when MAYFLY_METRICS_LISTEN is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_writer: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
    /// The Postgres host written to, when MAYFLY_DATABASE_URL names several.
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<String>,
    /// Where signing keys live (`local`, `transit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<&'static str>,
    /// Whether the signer answers; with `signer_error` saying why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    signer_ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer_error: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "OK.", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready to mint: database reachable, signing key loaded, signer answering
/// (an outside one: transit), lease writer running. With MAYFLY_METRICS_LISTEN the details are served only there,
/// and this answers with `status` alone.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "OK.", body = Readiness), (status = 503, description = "Not ready.", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let detailed = state.web.ops_listen.is_none();
    readiness(state, detailed).await
}

pub async fn readyz_private(State(state): State<AppState>) -> Response {
    readiness(state, true).await
}

async fn readiness(AppState { web, keys, issuer, .. }: AppState, detailed: bool) -> Response {
    let database = web.store.ping().await.is_ok();
    let signing_key = keys.keyring().current().active.is_some() && !keys.keyring().is_stale();
    let lease_writer = issuer.is_writing();
    let (signer, signer_ready, signer_error) = keys.signer_health().await;
    let ready = database && signing_key && lease_writer && signer_ready;
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database: detailed.then_some(database),
        signing_key: detailed.then_some(signing_key),
        lease_writer: detailed.then_some(lease_writer),
        backend: detailed.then_some(web.store.backend()),
        primary: web.store.primary().filter(|_| detailed),
        signer: detailed.then_some(signer),
        signer_ready: detailed.then_some(signer_ready),
        signer_error: signer_error.filter(|_| detailed),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition, on the public listener for loopback callers
/// only (after trusted-proxy resolution): tenant names and traffic are not
/// the internet's business. 404 otherwise, and always when
/// MAYFLY_METRICS_LISTEN moves it to its own listener.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain"),
        (status = 404, description = "Not for this caller, or served on the operations listener instead.")))]
pub async fn metrics(State(state): State<AppState>, origin: crate::audit::Origin) -> Response {
    let loopback = origin
        .source
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback());
    if state.web.ops_listen.is_some() || !loopback {
        return StatusCode::NOT_FOUND.into_response();
    }
    metrics_private(State(state)).await
}

pub async fn metrics_private(State(AppState { web, keys, .. }): State<AppState>) -> Response {
    // Alert when it grows past the rotation period: rotation has stopped.
    if let Some(since) = keys.keyring().current().active_since {
        let age = (web.clock.now() - since).num_milliseconds() as f64 / 1000.0;
        metrics::gauge!("mayfly_signing_key_age_seconds").set(age.max(0.0));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        web.metrics.render(),
    )
        .into_response()
}
