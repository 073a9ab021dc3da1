//! One MCP request through the gateway, top-down: find the route, check the
//! token, judge each JSON-RPC element against the tool policy, forward with
//! the route's credential (never the caller's token), pass the answer back
//! as it streams, and record one audit event per request with its outcome.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Gateway, answer, upstream};
use super::config::{Route, Upstream};
use super::events::{McpEvent, Outcome};
use super::policy::{Policy, RoutePolicy, Verdict};
use super::stdio::Processes;
use super::trust::{Caller, Refusal};

/// Larger request bodies are refused (413).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub static SESSION: HeaderName = HeaderName::from_static("mcp-session-id");

/// A route and what the gateway holds for it.
pub struct RouteState {
    pub route: Route,
    pub policy: Arc<RoutePolicy>,
    /// Session id → the workload that opened it (`tenant/sub`).
    sessions: Mutex<HashMap<String, String>>,
    stdio: Option<Processes>,
    /// `{origin}/.well-known/oauth-protected-resource{path}` of the resource.
    pub metadata_url: String,
}

impl RouteState {
    pub fn new(route: Route) -> Self {
        let metadata_url = match url::Url::parse(&route.resource) {
            Ok(u) => format!(
                "{}/.well-known/oauth-protected-resource{}",
                u.origin().ascii_serialization(),
                u.path().trim_end_matches('/')
            ),
            Err(_) => String::new(),
        };
        RouteState {
            policy: Arc::new(RoutePolicy::new(route.resource.clone())),
            sessions: Mutex::new(HashMap::new()),
            stdio: match &route.upstream {
                Upstream::Command(argv) => Some(Processes::new(argv.clone())),
                Upstream::Http(_) => None,
            },
            metadata_url,
            route,
        }
    }

    fn serves(&self, path: &str) -> bool {
        let p = &self.route.path;
        p == "/" || path == p || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
    }
}

impl Gateway {
    pub fn route_for(&self, path: &str) -> Option<Arc<RouteState>> {
        // The longest path wins, so `/a/b` is not taken by `/a`.
        self.routes
            .iter()
            .filter(|r| r.serves(path))
            .max_by_key(|r| r.route.path.len())
            .cloned()
    }
}

/// One JSON-RPC element of a request, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: Option<Value>,
    pub method: String,
    pub name: Option<String>,
    pub arguments_sha256: Option<String>,
}

impl Call {
    fn of(msg: &Value) -> Option<Call> {
        let method = msg.get("method")?.as_str()?.to_string();
        let params = msg.get("params");
        let name = match method.as_str() {
            "tools/call" | "prompts/get" => params.and_then(|p| p.get("name")),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => params.and_then(|p| p.get("uri")),
            _ => None,
        }
        .and_then(Value::as_str)
        .map(|s| s.chars().take(256).collect());
        let arguments_sha256 = params.and_then(|p| p.get("arguments")).map(|a| {
            let digest = ring::digest::digest(&ring::digest::SHA256, canonical(a).as_bytes());
            crate::keys::seal::hex(digest.as_ref())
        });
        Some(Call {
            id: msg.get("id").filter(|id| !id.is_null()).cloned(),
            method: method.chars().take(128).collect(),
            name,
            arguments_sha256,
        })
    }

    fn stream(method: &Method) -> Call {
        Call {
            id: None,
            method: method.as_str().to_string(),
            name: None,
            arguments_sha256: None,
        }
    }
}

/// JSON with object keys sorted, so equal arguments hash alike however they were written.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// What every event of one HTTP request shares.
pub struct Ctx {
    pub gw: Arc<Gateway>,
    pub route: Arc<RouteState>,
    pub caller: Option<Arc<Caller>>,
    pub session: Option<String>,
    pub source: String,
    pub started: Instant,
}

impl Ctx {
    fn event(&self, call: &Call, outcome: Outcome, reason: Option<&str>, error_code: Option<i64>, status: u16) -> McpEvent {
        McpEvent {
            id: uuid::Uuid::now_v7(),
            at: chrono::Utc::now(),
            resource: self.route.route.resource.clone(),
            lease_id: self.caller.as_ref().and_then(|c| c.lease_id),
            method: call.method.clone(),
            name: call.name.clone(),
            arguments_sha256: call.arguments_sha256.clone(),
            outcome,
            reason: reason.map(str::to_string),
            error_code,
            http_status: Some(status),
            latency_ms: Some(self.started.elapsed().as_secs_f64() * 1000.0),
            session: self.session.as_ref().map(|s| s.chars().take(256).collect()),
            request_id: call.id.as_ref().map(|id| match id {
                Value::String(s) => s.chars().take(128).collect(),
                other => other.to_string(),
            }),
            source: Some(self.source.clone()),
        }
    }

    pub fn record(&self, call: &Call, outcome: Outcome, reason: Option<&str>, error_code: Option<i64>, status: u16) {
        self.gw.events.record(self.event(call, outcome, reason, error_code, status));
    }

    /// Refuses the whole request: every element is recorded as denied.
    fn refuse(&self, calls: &[Call], reason: &str, res: Response) -> Response {
        let status = res.status().as_u16();
        for c in calls {
            self.record(c, Outcome::Denied, Some(reason), None, status);
        }
        metrics::histogram!("mayfly_gateway_request_seconds").record(self.started.elapsed().as_secs_f64());
        res
    }
}

pub fn json_error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": code, "error_description": description}))).into_response()
}

fn challenge(route: &RouteState, extra: &str) -> HeaderValue {
    let value = format!("Bearer resource_metadata=\"{}\"{extra}", route.metadata_url);
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn unauthorized(route: &RouteState, reason: Option<&str>) -> Response {
    let extra = reason.map_or(String::new(), |r| format!(", error=\"invalid_token\", error_description=\"{r}\""));
    let mut res = json_error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        reason.unwrap_or("a mayfly access token for this resource is required"),
    );
    res.headers_mut().insert(header::WWW_AUTHENTICATE, challenge(route, &extra));
    res
}

pub fn unavailable(why: &str) -> Response {
    let mut res = json_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", why);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Every request to a route.
pub async fn handle(State(gw): State<Arc<Gateway>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let started = Instant::now();
    let Some(route) = gw.route_for(req.uri().path()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no route at this path");
    };
    let method = req.method().clone();
    if !matches!(method, Method::POST | Method::GET | Method::DELETE) {
        let mut res = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "POST, GET or DELETE");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
        return res;
    }
    let (parts, body) = req.into_parts();
    let session = parts
        .headers
        .get(&SESSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut ctx = Ctx {
        gw: gw.clone(),
        route: route.clone(),
        caller: None,
        session,
        source: peer.ip().to_string(),
        started,
    };

    // The request: one JSON-RPC message or a batch, or a stream (GET, DELETE).
    let (body, messages) = if method == Method::POST {
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "bodies are limited to 4 MiB");
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) if !items.is_empty() => (body, items),
            Ok(msg @ Value::Object(_)) => (body, vec![msg]),
            _ => {
                let parse_error = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}});
                return (StatusCode::BAD_REQUEST, axum::Json(parse_error)).into_response();
            }
        }
    } else {
        (Bytes::new(), Vec::new())
    };
    let calls: Vec<Call> = match method {
        Method::POST => messages.iter().filter_map(Call::of).collect(),
        _ => vec![Call::stream(&method)],
    };

    if gw.events.full() {
        metrics::counter!("mayfly_gateway_refused_unrecorded_total").increment(1);
        return unavailable("the audit log cannot take events: refusing to act unrecorded");
    }
    let Some(token) = bearer(&parts.headers) else {
        return ctx.refuse(&calls, "no_token", unauthorized(&route, None));
    };
    let now = chrono::Utc::now().timestamp();
    let caller = match gw.trust.check(token, &route.route.resource, now).await {
        Ok(c) => c,
        Err(Refusal::Invalid(why)) => return ctx.refuse(&calls, "invalid_token", unauthorized(&route, Some(why))),
        Err(Refusal::Unavailable(why)) => return ctx.refuse(&calls, "unavailable", unavailable(why)),
    };
    let Some(policy) = route.policy.get() else {
        return ctx.refuse(&calls, "unavailable", unavailable("the resource's policy is not loaded yet"));
    };
    ctx.caller = Some(caller.clone());
    if caller.claims.tenant != policy.tenant {
        return ctx.refuse(&calls, "invalid_token", unauthorized(&route, Some("the token is for another tenant")));
    }
    let owner = format!("{}/{}", caller.claims.tenant, caller.claims.sub);
    if let Some(session) = &ctx.session {
        let bound = route.sessions.lock().ok().and_then(|s| s.get(session).cloned());
        match bound {
            Some(o) if o != owner => {
                let res = json_error(StatusCode::FORBIDDEN, "session_not_yours", "this session was opened by another workload");
                return ctx.refuse(&calls, "session_of_another_workload", res);
            }
            // Opened at another replica: the first workload to use it here owns it.
            None => bind(&route, session, &owner),
            Some(_) => {}
        }
    }
    if let Some(res) = judge(&ctx, &route, &policy, &caller, &calls) {
        return res;
    }

    let listing: HashSet<String> = calls
        .iter()
        .filter(|c| c.method == "tools/list")
        .filter_map(|c| c.id.as_ref().map(Value::to_string))
        .collect();
    let answer = match &route.stdio {
        Some(processes) => upstream::stdio_answer(processes, &ctx, &method, &messages, &owner).await,
        None => upstream::http_answer(&gw, &route, &parts.headers, &parts.uri, &method, body, &caller).await,
    };
    let answer = match answer {
        Ok(a) => a,
        Err(res) => {
            let status = res.status().as_u16();
            calls
                .iter()
                .for_each(|c| ctx.record(c, Outcome::UpstreamError, Some("upstream_unreachable"), None, status));
            return res;
        }
    };
    metrics::histogram!("mayfly_gateway_upstream_seconds").record(started.elapsed().as_secs_f64());
    if let Some(id) = answer.headers.get(&SESSION).and_then(|v| v.to_str().ok()) {
        if method == Method::DELETE && answer.status.is_success() {
            if let Ok(mut s) = route.sessions.lock() {
                s.remove(id);
            }
        } else {
            bind(&route, id, &owner);
        }
    }
    if method == Method::DELETE && answer.status.is_success()
        && let Some(s) = &ctx.session
        && let Ok(mut sessions) = route.sessions.lock()
    {
        sessions.remove(s);
    }
    answer::respond(ctx, answer, calls, listing, policy, caller).await
}

pub fn bind(route: &RouteState, session: &str, owner: &str) {
    if let Ok(mut s) = route.sessions.lock() {
        s.entry(session.chars().take(256).collect()).or_insert_with(|| owner.to_string());
    }
}

/// The tool policy over every element: one refused element refuses the request.
fn judge(ctx: &Ctx, route: &RouteState, policy: &Policy, caller: &Caller, calls: &[Call]) -> Option<Response> {
    for call in calls.iter().filter(|c| c.method == "tools/call") {
        let tool = call.name.as_deref().unwrap_or_default();
        let (reason, res) = match route.policy.judge(policy, &caller.claims.sub, tool, |s| caller.has_scope(s)) {
            Verdict::Allow => continue,
            Verdict::Step(scopes) => {
                let scope = scopes.join(" ");
                let mut res = json_error(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    &format!("calling {tool} needs the scopes: {scope}"),
                );
                let extra = format!(", error=\"insufficient_scope\", scope=\"{scope}\"");
                res.headers_mut().insert(header::WWW_AUTHENTICATE, challenge(route, &extra));
                ("insufficient_scope", res)
            }
            Verdict::NotListed => (
                "tool_not_allowed",
                json_error(StatusCode::FORBIDDEN, "tool_not_allowed", "the resource's policy does not list this tool"),
            ),
            Verdict::Limited(after) => {
                let mut res = json_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many calls of this tool");
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
                ("rate_limited", res)
            }
        };
        // The refused element carries its reason; the rest of the batch falls with it.
        let status = res.status().as_u16();
        for c in calls {
            let why = if std::ptr::eq(c, call) { reason } else { "batch_refused" };
            ctx.record(c, Outcome::Denied, Some(why), None, status);
        }
        return Some(res);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_hash_alike_whatever_their_key_order() {
        let a = Call::of(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"b": [1, {"y": 2, "x": 1}], "a": "s"}}}))
        .unwrap();
        let b = Call::of(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"arguments": {"a": "s", "b": [1, {"x": 1, "y": 2}]}, "name": "echo"}}))
        .unwrap();
        assert_eq!(a.arguments_sha256, b.arguments_sha256);
        assert_eq!(a.arguments_sha256.as_deref().map(str::len), Some(64));
        assert_eq!(a.name.as_deref(), Some("echo"));
    }
}
