//! The HTTP surface: routes, middleware (request ids, spans, metrics, limits)
//! and one module per route group. Handlers read top-down: extract →
//! authorize → domain call → response.

pub mod admin;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod oauth;
pub mod ops;
pub mod records;

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;

/// Request bodies are small forms and JSON documents.
pub const BODY_LIMIT: usize = 64 * 1024;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of one request: in the span, the audit event and the `x-request-id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The router and the list of its paths (for the OpenAPI drift test).
pub struct Routes {
    router: Router<AppState>,
    pub paths: Vec<&'static str>,
}

impl Routes {
    fn route(mut self, path: &'static str, methods: MethodRouter<AppState>) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, methods);
        self
    }
}

pub fn routes() -> Routes {
    Routes {
        router: Router::new(),
        paths: Vec::new(),
    }
    .route("/.well-known/oauth-authorization-server", get(discovery::metadata))
    .route("/.well-known/openid-configuration", get(discovery::metadata))
    .route("/.well-known/jwks.json", get(discovery::jwks))
    .route("/oauth2/authorize", get(oauth::authorize))
    .route("/oauth2/token", post(oauth::token))
    .route("/oauth2/introspect", post(oauth::introspect))
    .route("/oauth2/revoke", post(oauth::revoke))
    .route("/v1/tenants", post(admin::create_tenant).get(admin::list_tenants))
    .route(
        "/v1/tenants/{tenant}",
        get(admin::get_tenant).delete(admin::delete_tenant),
    )
    .route(
        "/v1/tenants/{tenant}/resources",
        post(admin::create_resource).get(admin::list_resources),
    )
    .route(
        "/v1/tenants/{tenant}/resources/{id}",
        get(admin::get_resource)
            .patch(admin::update_resource)
            .delete(admin::delete_resource),
    )
    .route(
        "/v1/tenants/{tenant}/clients",
        post(admin::create_client).get(admin::list_clients),
    )
    .route(
        "/v1/tenants/{tenant}/clients/{client_id}",
        get(admin::get_client)
            .patch(admin::update_client)
            .delete(admin::delete_client),
    )
    .route(
        "/v1/tenants/{tenant}/clients/{client_id}/secrets",
        post(admin::rotate_secret),
    )
    .route("/v1/tenants/{tenant}/leases", get(records::list_leases))
    .route("/v1/tenants/{tenant}/leases/{lease_id}", get(records::get_lease))
    .route(
        "/v1/tenants/{tenant}/revocations",
        post(records::create_revocation).get(records::list_revocations),
    )
    .route("/v1/tenants/{tenant}/audit", get(records::list_audit))
    .route("/v1/revocations", get(records::revocation_feed))
    .route("/v1/audit/verify", get(records::verify_audit))
    .route("/v1/keys", get(records::list_keys))
    .route("/v1/keys/rotate", post(records::rotate_keys))
    .route("/v1/keys/{kid}/revoke", post(records::revoke_key))
    .route("/healthz", get(ops::healthz))
    .route("/readyz", get(ops::readyz))
    .route("/metrics", get(ops::metrics))
}

pub fn router(state: AppState) -> Router {
    routes()
        .router
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
