//! Liveness, readiness and Prometheus metrics.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The process-wide recorder (the `metrics` facade has one global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
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
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "OK.", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready to mint: database reachable, signing key loaded, lease writer
/// running. With MAYFLY_METRICS_LISTEN the details are served only there,
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
    let ready = database && signing_key && lease_writer;
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database: detailed.then_some(database),
        signing_key: detailed.then_some(signing_key),
        lease_writer: detailed.then_some(lease_writer),
        backend: detailed.then_some(web.store.backend()),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition (404 here when MAYFLY_METRICS_LISTEN moves it to its own listener).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain"),
        (status = 404, description = "Served on the operations listener instead.")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if state.web.ops_listen.is_some() {
        return StatusCode::NOT_FOUND.into_response();
    }
    metrics_private(State(state)).await
}

pub async fn metrics_private(State(AppState { web, .. }): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        web.metrics.render(),
    )
        .into_response()
}
