//! `mayfly gateway`: an MCP-aware reverse proxy in front of MCP servers that
//! cannot check a mayfly token themselves. It checks the caller's token
//! (offline, with the revocation feed followed live), enforces the
//! resource's per-tool policy, holds the upstream's static credential so
//! callers never do, and reports every MCP request to mayfly's audit log,
//! refusing to act when it cannot.

mod answer;
pub mod config;
pub mod dpop;
pub mod events;
pub mod policy;
pub mod proxy;
mod session;
pub mod stdio;
pub mod trust;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

pub use config::{GatewayArgs, GatewayConfig};
use events::Events;
use proxy::RouteState;
use trust::Trust;

pub struct Gateway {
    pub issuer: String,
    pub routes: Vec<Arc<RouteState>>,
    pub trust: Arc<Trust>,
    pub events: Arc<Events>,
    /// To upstreams: no overall timeout, since answers may stream for long.
    pub upstream: reqwest::Client,
    pub sessions: session::SessionSeal,
    /// DPoP proofs already presented to this replica.
    pub proofs: dpop::SeenProofs,
    pub clock: Arc<dyn crate::clock::Clock>,
    metrics: PrometheusHandle,
}

/// Runs the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: GatewayConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // ring is the only crypto provider in this binary; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let to_mayfly = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    // Never follows a redirect: the credential would go along.
    let upstream = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .build()?;
    let trust = Arc::new(Trust::new(
        config.issuer.clone(),
        to_mayfly.clone(),
        config.client_id.clone(),
        config.client_secret.clone(),
        trust::FEED_GRACE,
    ));
    let events = Arc::new(Events::new(
        &config.issuer,
        to_mayfly.clone(),
        config.client_id.clone(),
        config.client_secret.clone(),
        config.audit_buffer_events,
        config.audit_buffer,
    ));
    let routes: Vec<Arc<RouteState>> = config
        .routes
        .into_iter()
        .map(|r| Arc::new(RouteState::new(r)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(trust.clone().follow());
    tasks.spawn(events.clone().deliver());
    for r in &routes {
        tasks.spawn(r.policy.clone().follow(
            config.issuer.clone(),
            to_mayfly.clone(),
            config.client_id.clone(),
            config.client_secret.clone(),
        ));
    }
    let gw = Arc::new(Gateway {
        issuer: config.issuer,
        routes,
        trust,
        events,
        upstream,
        sessions: session::SessionSeal::new(&config.client_secret),
        proofs: dpop::SeenProofs::default(),
        clock: Arc::new(crate::clock::SystemClock),
        metrics: crate::http::ops::metrics_handle(),
    });
    for r in &gw.routes {
        tracing::info!(path = %r.route.path, resource = %r.route.resource, "gateway route");
    }
    tracing::info!(listen = %listener.local_addr()?, issuer = %gw.issuer, "gateway listening");
    let app = Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/oauth-protected-resource", get(metadata_root))
        .route("/.well-known/oauth-protected-resource/{*path}", get(metadata))
        .fallback(proxy::handle)
        .with_state(gw.clone())
        .layer(tower_http::catch_panic::CatchPanicLayer::new());
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Events still queued get a last chance to reach mayfly.
    gw.events.flush(Duration::from_secs(5)).await;
    if gw.events.depth() > 0 {
        tracing::warn!(
            undelivered = gw.events.depth(),
            "audit events could not be delivered before shutdown"
        );
    }
    Ok(served?)
}

/// Ready when mayfly's keys are loaded, the feed is fresh, every route's
/// policy is loaded and the audit queue is under its bound.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let policies = gw.routes.iter().all(|r| r.policy.get().is_some());
    let checks = json!({
        "jwks": gw.trust.jwks_loaded(),
        "feed": gw.trust.feed_fresh(),
        "policies": policies,
        "audit_queue": !gw.events.full(),
    });
    let ready = checks.as_object().is_some_and(|m| m.values().all(|v| v == true));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks})),
    )
        .into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    metrics::gauge!("mayfly_gateway_audit_queue").set(gw.events.depth() as f64);
    if let Some(lag) = gw.trust.feed_lag() {
        metrics::gauge!("mayfly_gateway_feed_lag_seconds").set(lag.as_secs_f64());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

async fn metadata_root(State(gw): State<Arc<Gateway>>) -> Response {
    protected_resource(&gw, "/")
}

async fn metadata(State(gw): State<Arc<Gateway>>, Path(path): Path<String>) -> Response {
    protected_resource(&gw, &format!("/{path}"))
}

/// RFC 9728 metadata for the route at `path`, naming mayfly as its authorization server.
fn protected_resource(gw: &Gateway, path: &str) -> Response {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    // By the route's path, or by its resource's path (the URL the challenge names).
    let resource_path =
        |r: &RouteState| url::Url::parse(&r.route.resource).map(|u| u.path().trim_end_matches('/').to_string());
    let Some(route) = gw
        .routes
        .iter()
        .find(|r| r.route.path == path || resource_path(r).is_ok_and(|p| p == path))
    else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not_found", "error_description": "no route at this path"})),
        )
            .into_response();
    };
    let scopes = route.policy.get().map(|p| p.scopes.clone()).unwrap_or_default();
    axum::Json(json!({
        "resource": route.route.resource,
        "authorization_servers": [gw.issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        // RFC 9449 §5.1: bound tokens are accepted here with a proof.
        "dpop_signing_alg_values_supported": crate::jose::dpop::ALGORITHMS,
    }))
    .into_response()
}
