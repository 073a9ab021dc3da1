//! Liveness, readiness and Prometheus metrics.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

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
    database: bool,
    signing_key: bool,
    lease_writer: bool,
    backend: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "OK.", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready to mint: database reachable, signing key loaded, lease writer running.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "OK.", body = Readiness), (status = 503, description = "Not ready.", body = Readiness)))]
pub async fn readyz(State(AppState { web, keys, issuer, .. }): State<AppState>) -> Response {
    let database = web.store.ping().await.is_ok();
    let signing_key = keys.keyring().current().active.is_some() && !keys.keyring().is_stale();
    let lease_writer = issuer.is_writing();
    let ready = database && signing_key && lease_writer;
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database,
        signing_key,
        lease_writer,
        backend: web.store.backend(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain")))]
pub async fn metrics(State(AppState { web, .. }): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        web.metrics.render(),
    )
        .into_response()
}
