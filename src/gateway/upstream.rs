//! Sending a request on to the route's MCP server: over HTTP to the route's
//! URL exactly, with the route's credential in place of the caller's token
//! (and, if configured, headers naming the caller), or to the stdio server
//! process of the session.

use std::pin::Pin;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::Gateway;
use super::config::Upstream;
use super::proxy::{RouteState, SESSION, json_error, unavailable};
use super::stdio::{Processes, StdioError};
use super::trust::Caller;

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The upstream's answer, before it is passed on.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ByteStream,
}

impl Answer {
    fn empty(status: StatusCode, headers: HeaderMap) -> Answer {
        Answer {
            status,
            headers,
            body: Box::pin(futures_util::stream::empty()),
        }
    }
}

/// What goes upstream.
pub struct Outgoing<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    /// The upstream's own session id (unsealed).
    pub session: Option<&'a str>,
    pub body: Bytes,
    pub caller: &'a Caller,
}

/// Headers passed from the caller to the upstream, and back. Nothing else,
/// least of all `Authorization`, crosses.
const REQUEST_HEADERS: [&str; 3] = ["content-type", "accept", "mcp-protocol-version"];
const RESPONSE_HEADERS: [&str; 4] = [
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "cache-control",
];

pub async fn http_answer(gw: &Gateway, route: &RouteState, out: Outgoing<'_>) -> Result<Answer, Response> {
    let Upstream::Http(url) = &route.route.upstream else {
        return Err(unavailable("no upstream"));
    };
    let mut headers = HeaderMap::new();
    for name in REQUEST_HEADERS {
        if let Some(v) = out.headers.get(name) {
            headers.insert(HeaderName::from_static(name), v.clone());
        }
    }
    // Resumption of a GET stream; the id is the upstream's own.
    if let Some(v) = out.headers.get("last-event-id").filter(|_| out.method == Method::GET) {
        headers.insert(HeaderName::from_static("last-event-id"), v.clone());
    }
    if let Some(v) = out.session.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(SESSION.clone(), v);
    }
    if let Some(cred) = &route.route.credential
        && let Ok(mut v) = HeaderValue::from_str(cred.expose_secret())
    {
        v.set_sensitive(true);
        headers.insert(route.route.header.clone(), v);
    }
    if route.route.forward_identity {
        identity_headers(out.caller, &mut headers);
    }
    let req = gw
        .upstream
        .request(out.method.clone(), url.clone())
        .headers(headers)
        .body(out.body);
    let res = match tokio::time::timeout(std::time::Duration::from_secs(60), req.send()).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            tracing::warn!(route = %route.route.path, error = %e.without_url(), "upstream unreachable");
            return Err(json_error(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "the MCP server did not answer",
            ));
        }
        Err(_) => {
            return Err(json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the MCP server did not answer in time",
            ));
        }
    };
    let mut back = HeaderMap::new();
    for name in RESPONSE_HEADERS {
        if let Some(v) = res.headers().get(name) {
            back.insert(HeaderName::from_static(name), v.clone());
        }
    }
    Ok(Answer {
        status: res.status(),
        headers: back,
        body: Box::pin(res.bytes_stream().map(|r| r.map_err(std::io::Error::other))),
    })
}

fn identity_headers(caller: &Caller, out: &mut HeaderMap) {
    let c = &caller.claims;
    let act = c.act.as_ref().map(|a| a.to_string());
    let fields: [(&'static str, Option<&str>); 7] = [
        ("mcp-caller-tenant", Some(&c.tenant)),
        ("mcp-caller-workflow", Some(&c.workflow)),
        ("mcp-caller-workload", Some(&c.sub)),
        ("mcp-caller-client", Some(&c.client_id)),
        ("mcp-caller-sub", Some(&c.sub)),
        ("mcp-caller-act", act.as_deref()),
        ("mcp-caller-lease", Some(&c.jti)),
    ];
    for (name, value) in fields {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            out.insert(HeaderName::from_static(name), v);
        }
    }
}

/// A stdio server: `initialize` without a session starts its process.
pub async fn stdio_answer(
    processes: &Processes,
    method: &Method,
    session: Option<&str>,
    messages: &[Value],
) -> Result<Answer, Response> {
    let mut headers = HeaderMap::new();
    let session = match (method, session) {
        (&Method::GET, _) => {
            let msg = "this route has no server-initiated stream";
            return Err(json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", msg));
        }
        (&Method::DELETE, Some(s)) => {
            let status = if processes.end(s) {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::NOT_FOUND
            };
            return Ok(Answer::empty(status, headers));
        }
        (_, Some(s)) => s.to_string(),
        (&Method::POST, None)
            if messages
                .iter()
                .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize")) =>
        {
            processes.start().map_err(|e| match e {
                StdioError::Full => unavailable("too many sessions on this route"),
                other => {
                    tracing::warn!(error = %other, "cannot start the stdio MCP server");
                    json_error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        "the MCP server did not start",
                    )
                }
            })?
        }
        _ => {
            let msg = "send Mcp-Session-Id, or initialize first";
            return Err(json_error(StatusCode::BAD_REQUEST, "session_required", msg));
        }
    };
    if let Ok(v) = HeaderValue::from_str(&session) {
        headers.insert(SESSION.clone(), v);
    }
    let answers = processes.exchange(&session, messages).await.map_err(|e| match e {
        StdioError::NoSession => json_error(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no such session: initialize again",
        ),
        other => {
            tracing::warn!(error = %other, "the stdio MCP server failed");
            json_error(StatusCode::BAD_GATEWAY, "upstream_error", "the MCP server failed")
        }
    })?;
    let body = match answers.len() {
        0 => return Ok(Answer::empty(StatusCode::ACCEPTED, headers)),
        _ if messages.len() == 1 => serde_json::to_vec(&answers[0]),
        _ => serde_json::to_vec(&answers),
    }
    .unwrap_or_default();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(Answer {
        status: StatusCode::OK,
        headers,
        body: Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(body)) })),
    })
}
