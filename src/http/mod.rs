//! The HTTP surface: routes, middleware (request ids, spans, metrics, limits)
//! and one module per resource. Handlers read top-down: extract (the
//! authorization extractors hand them the permitted object) → one service
//! call → response. No domain decision is made here.

pub mod audit;
pub mod auth;
pub mod body;
pub mod clients;
pub mod console;
pub mod discovery;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod leases;
pub mod login_providers;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod people;
pub mod resources;
pub mod revocations;
pub mod session;
pub mod tenants;
pub mod trust_policies;

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Request bodies are small forms and JSON documents.
pub const BODY_LIMIT: usize = 64 * 1024;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of one request: in the span, the audit event and the `x-request-id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Every route, with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(discovery::metadata))
        .routes(routes!(discovery::openid_configuration))
        .routes(routes!(discovery::jwks))
        .routes(routes!(people::authorize))
        .routes(routes!(people::callback))
        .routes(routes!(people::consent))
        .routes(routes!(people::register))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(
            tenants::get_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(resources::create_resource, resources::list_resources))
        .routes(routes!(
            resources::get_resource,
            resources::update_resource,
            resources::delete_resource
        ))
        .routes(routes!(clients::create_client, clients::list_clients))
        .routes(routes!(
            clients::get_client,
            clients::update_client,
            clients::delete_client
        ))
        .routes(routes!(clients::rotate_secret))
        .routes(routes!(trust_policies::create_policy, trust_policies::list_policies))
        .routes(routes!(
            trust_policies::get_policy,
            trust_policies::update_policy,
            trust_policies::delete_policy
        ))
        .routes(routes!(
            login_providers::create_provider,
            login_providers::list_providers
        ))
        .routes(routes!(
            login_providers::get_provider,
            login_providers::update_provider,
            login_providers::delete_provider
        ))
        .routes(routes!(login_providers::list_sessions))
        .routes(routes!(login_providers::revoke_session))
        .routes(routes!(leases::list_leases))
        .routes(routes!(leases::get_lease))
        .routes(routes!(revocations::create_revocation, revocations::list_revocations))
        .routes(routes!(revocations::revocation_feed))
        .routes(routes!(gateway::resource_policy))
        .merge(
            // A batch of events is larger than any admin document.
            OpenApiRouter::new()
                .routes(routes!(gateway::mcp_events))
                .layer(DefaultBodyLimit::max(gateway::EVENTS_BODY_LIMIT)),
        )
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::checkpoint_key))
        .routes(routes!(audit::inclusion))
        .routes(routes!(audit::consistency))
        .routes(routes!(keys::list_keys))
        .routes(routes!(keys::rotate_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    // The console is a client of the API above, not part of its contract.
    let console = console::assets()
        .route(
            "/console/session",
            axum::routing::post(console::sign_in)
                .get(console::whoami)
                .delete(console::sign_out),
        )
        .route("/console/tenants", axum::routing::get(console::tenants))
        .route("/console/stats", axum::routing::get(console::stats));
    router
        .merge(console)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            error::ApiError::internal("handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(make_span))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// The operations listener (MAYFLY_METRICS_LISTEN): metrics and readiness in detail.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(ops::metrics_private))
        .route("/readyz", axum::routing::get(ops::readyz_private))
        .route("/healthz", axum::routing::get(ops::healthz))
        .with_state(state)
}

fn make_span(req: &Request) -> tracing::Span {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let id = req.extensions().get::<RequestId>().map(|r| r.0.as_str()).unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path,
        request_id = id,
        tenant = tracing::field::Empty,
        workflow = tracing::field::Empty,
        workload = tracing::field::Empty,
        client_id = tracing::field::Empty,
    )
}

/// Assigns the request id (never taken from the caller), records metrics, and
/// makes every response uncacheable unless the handler said otherwise.
async fn request_context(mut req: Request, next: Next) -> Response {
    // Postgres text cannot hold NUL; no path or query of ours needs one.
    if req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().to_ascii_lowercase().contains("%00"))
    {
        return error::ApiError::bad_request("invalid_request", "NUL characters are not accepted").into_response();
    }
    let id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let started = Instant::now();
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let labels = [
        ("method", method.to_string()),
        ("path", path.unwrap_or_else(|| "unmatched".into())),
        ("status", res.status().as_u16().to_string()),
    ];
    metrics::counter!("mayfly_http_requests_total", &labels).increment(1);
    metrics::histogram!("mayfly_http_request_duration_seconds", &labels[..2]).record(started.elapsed().as_secs_f64());
    res
}

async fn no_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "no_route", "message": "no such route"})),
    )
        .into_response()
}

/// Records who a request is about in its span (never secrets).
pub fn record_span(tenant: &str, client_id: Option<&str>) {
    let span = tracing::Span::current();
    span.record("tenant", tenant);
    if let Some(c) = client_id {
        span.record("client_id", c);
    }
}

/// Serves the public router on `listener` (and `/metrics` with the detailed
/// `/readyz` on their own listener when `MAYFLY_METRICS_LISTEN` is set) until
/// `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ops = match state.web.ops_listen {
        Some(addr) => {
            let ops_listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, "serving /metrics and /readyz on the operations listener");
            let router = ops_router(state.clone());
            Some(tokio::spawn(async move {
                let _ = axum::serve(ops_listener, router).await;
            }))
        }
        None => None,
    };
    let revocations = state.revocations.clone();
    let app = router(state);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // Long polls of the revocation feed would hold the drain for their whole wait.
        revocations.drain();
    })
    .await;
    if let Some(ops) = ops {
        ops.abort();
    }
    result
}
