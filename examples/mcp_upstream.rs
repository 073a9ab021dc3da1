//! The smallest MCP server that takes only one shared static token, as the
//! servers `mayfly gateway` fronts usually do: for `bench/gateway.sh`, to
//! measure the gateway's cost beside the same load sent straight here.
//! Stateless Streamable HTTP: `initialize`, `tools/list` and `tools/call`
//! answered as JSON; anything without `Authorization: Bearer <token>` is 401.
//!
//! `MCP_UPSTREAM_LISTEN=127.0.0.1:18700 MCP_UPSTREAM_TOKEN=… cargo run --release --example mcp_upstream`

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

async fn mcp(State(token): State<Arc<String>>, headers: HeaderMap, Json(req): Json<Value>) -> Response {
    let expected = format!("Bearer {token}");
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let result = match req.get("method").and_then(Value::as_str) {
        Some("initialize") => json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                     "serverInfo": {"name": "mcp-upstream", "version": "1"}}),
        Some("tools/list") => json!({"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "delete_repository", "inputSchema": {"type": "object"}}]}),
        Some("tools/call") => json!({"content": [{"type": "text", "text": "ok"}]}),
        Some(m) if m.starts_with("notifications/") => return StatusCode::ACCEPTED.into_response(),
        _ => {
            return Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}}))
                .into_response();
        }
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("MCP_UPSTREAM_LISTEN").unwrap_or_else(|_| "127.0.0.1:18700".into());
    let token = std::env::var("MCP_UPSTREAM_TOKEN").unwrap_or_else(|_| "static-upstream-token".into());
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(mcp))
        .with_state(Arc::new(token));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await
}
