//! One MCP request through the gateway, top-down: find the route, check the
//! token, judge each JSON-RPC element against the tool policy, forward with
//! the route's credential (never the caller's token), pass the answer back
//! as it streams, and record one audit event per request with its outcome.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::config::{Route, Upstream};
use super::dpop::{self, Scheme, authorization};
use super::events::{McpEvent, Outcome, clip};
use super::policy::{Policy, RoutePolicy, Verdict};
use super::session::SessionError;
use super::stdio::Processes;
use super::trust::{Caller, Refusal};
use super::{Gateway, answer, upstream};

/// Larger request bodies are refused (413).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub static SESSION: HeaderName = HeaderName::from_static("mcp-session-id");

/// A route and what the gateway holds for it.
pub struct RouteState {
    pub route: Route,
    pub policy: Arc<RoutePolicy>,
    stdio: Option<Arc<Processes>>,
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
            stdio: match &route.upstream {
                Upstream::Command { argv, credential_env } => Some(Processes::new(
                    argv.clone(),
                    credential_env.clone().zip(route.credential.clone()),
                )),
                Upstream::Http(_) => None,
            },
            metadata_url,
            route,
        }
    }

    /// The route's own path only: nothing under it reaches the upstream
    /// (its credential is good for more than the MCP endpoint).
    fn serves(&self, path: &str) -> bool {
        let p = self.route.path.as_str();
        path == p || path.strip_suffix('/') == Some(p)
    }
}

impl Gateway {
    pub fn route_for(&self, path: &str) -> Option<Arc<RouteState>> {
        self.routes.iter().find(|r| r.serves(path)).cloned()
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
        .map(|s| clip(s, 256));
        let arguments_sha256 = params.and_then(|p| p.get("arguments")).map(|a| {
            let digest = ring::digest::digest(&ring::digest::SHA256, canonical(a).as_bytes());
            crate::keys::seal::hex(digest.as_ref())
        });
        Some(Call {
            id: msg.get("id").filter(|id| !id.is_null()).cloned(),
            method: clip(&method, 128),
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
    fn event(
        &self,
        call: &Call,
        outcome: Outcome,
        reason: Option<&str>,
        error_code: Option<i64>,
        status: u16,
    ) -> McpEvent {
        McpEvent {
            id: uuid::Uuid::now_v7(),
            at: self.gw.clock.now(),
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
            session: self.session.as_deref().map(|s| clip(s, 256)),
            request_id: call.id.as_ref().map(|id| match id {
                Value::String(s) => clip(s, 128),
                other => clip(&other.to_string(), 128),
            }),
            source: Some(self.source.clone()),
        }
    }

    pub fn record(&self, call: &Call, outcome: Outcome, reason: Option<&str>, error_code: Option<i64>, status: u16) {
        self.gw
            .events
            .record(self.event(call, outcome, reason, error_code, status));
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
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

fn challenge(route: &RouteState, scheme: Scheme, extra: &str) -> HeaderValue {
    let value = match scheme {
        Scheme::Bearer => format!("Bearer resource_metadata=\"{}\"{extra}", route.metadata_url),
        Scheme::Dpop => format!(
            "DPoP algs=\"{}\", resource_metadata=\"{}\"{extra}",
            crate::jose::dpop::ALGORITHMS.join(" "),
            route.metadata_url
        ),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The scheme a caller's token needs, to challenge with.
fn caller_scheme(caller: &Caller) -> Scheme {
    match caller.claims.cnf {
        Some(_) => Scheme::Dpop,
        None => Scheme::Bearer,
    }
}

/// 401 with the challenge of the scheme at fault (with no token: both, so
/// a client may pick either, RFC 9449 §7.1).
fn unauthorized(route: &RouteState, at_fault: Option<(Scheme, &str, &str)>) -> Response {
    let (error, reason) = at_fault.map_or(("invalid_token", None), |(_, e, r)| (e, Some(r)));
    let mut res = json_error(
        StatusCode::UNAUTHORIZED,
        error,
        reason.unwrap_or("a mayfly access token for this resource is required"),
    );
    let h = res.headers_mut();
    match at_fault {
        None => {
            h.insert(header::WWW_AUTHENTICATE, challenge(route, Scheme::Bearer, ""));
            h.append(header::WWW_AUTHENTICATE, challenge(route, Scheme::Dpop, ""));
        }
        Some((scheme, error, reason)) => {
            let extra = format!(", error=\"{error}\", error_description=\"{reason}\"");
            h.insert(header::WWW_AUTHENTICATE, challenge(route, scheme, &extra));
        }
    }
    res
}

pub fn unavailable(why: &str) -> Response {
    let mut res = json_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", why);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

/// Elements a JSON-RPC batch may hold.
const MAX_BATCH: usize = 100;

fn parse_error(message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": message}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Every request to a route.
pub async fn handle(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let Some(route) = gw.route_for(req.uri().path()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no route at this path");
    };
    let method = req.method().clone();
    if !matches!(method, Method::POST | Method::GET | Method::DELETE) {
        let mut res = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST, GET or DELETE",
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
        return res;
    }
    let (parts, body) = req.into_parts();
    let session = match parts.headers.get_all(&SESSION).iter().collect::<Vec<_>>()[..] {
        [] => None,
        [one] => match one.to_str() {
            Ok(s) => Some(s.to_string()),
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_session",
                    "Mcp-Session-Id is not visible ASCII",
                );
            }
        },
        _ => return json_error(StatusCode::BAD_REQUEST, "invalid_session", "one Mcp-Session-Id at most"),
    };
    let mut ctx = Ctx {
        gw: gw.clone(),
        route: route.clone(),
        caller: None,
        session,
        source: peer.ip().to_string(),
        started,
    };

    // The request: one JSON-RPC message or a batch, or a stream (GET, DELETE).
    let messages = if method == Method::POST {
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "bodies are limited to 4 MiB",
            );
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) if items.is_empty() => return parse_error("an empty batch"),
            Ok(Value::Array(items)) if items.len() > MAX_BATCH => {
                return parse_error("at most 100 messages in a batch");
            }
            Ok(Value::Array(items)) => items,
            Ok(msg @ Value::Object(_)) => vec![msg],
            _ => {
                let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}});
                return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
            }
        }
    } else {
        Vec::new()
    };
    let calls: Vec<Call> = match method {
        Method::POST => messages.iter().filter_map(Call::of).collect(),
        _ => vec![Call::stream(&method)],
    };
    // Answers are matched to requests by id: two requests with one id could hide one.
    let mut ids = HashSet::new();
    if !calls
        .iter()
        .filter_map(|c| c.id.as_ref())
        .all(|id| ids.insert(id.to_string()))
    {
        return parse_error("two requests with the same id");
    }

    if gw.events.full() {
        metrics::counter!("mayfly_gateway_refused_unrecorded_total").increment(1);
        return unavailable("the audit log cannot take events: refusing to act unrecorded");
    }
    // Until the caller is known, a refusal is one event however many elements it carried.
    let first = calls.first().cloned().unwrap_or_else(|| Call::stream(&method));
    let Some((scheme, token)) = authorization(&parts.headers) else {
        return ctx.refuse(std::slice::from_ref(&first), "no_token", unauthorized(&route, None));
    };
    let now = gw.clock.now().timestamp();
    let caller = match gw.trust.check(token, &route.route.resource, now).await {
        Ok(c) => c,
        Err(Refusal::Invalid(why)) => {
            return ctx.refuse(
                std::slice::from_ref(&first),
                "invalid_token",
                unauthorized(&route, Some((scheme, "invalid_token", why))),
            );
        }
        Err(Refusal::Unavailable(why)) => {
            return ctx.refuse(std::slice::from_ref(&first), "unavailable", unavailable(why));
        }
    };
    let Some(policy) = route.policy.get() else {
        return ctx.refuse(
            std::slice::from_ref(&first),
            "unavailable",
            unavailable("the resource's policy is not loaded yet"),
        );
    };
    if caller.claims.tenant != policy.tenant {
        let res = unauthorized(
            &route,
            Some((scheme, "invalid_token", "the token is for another tenant")),
        );
        return ctx.refuse(std::slice::from_ref(&first), "invalid_token", res);
    }
    // A valid token presented without its key is still that lease's event.
    ctx.caller = Some(caller.clone());
    let presented = dpop::Presented {
        headers: &parts.headers,
        scheme,
        token,
        method: method.as_str(),
        htu: &route.route.resource,
        now,
    };
    if let Err((error, why)) = dpop::check(&presented, &caller, &gw.proofs) {
        let res = unauthorized(&route, Some((caller_scheme(&caller), error, &why)));
        return ctx.refuse(std::slice::from_ref(&first), error, res);
    }
    let owner = format!("{}/{}", caller.claims.tenant, caller.claims.sub);
    let upstream_session = match &ctx.session {
        None => None,
        Some(sealed) => match gw.sessions.open(&route.route.resource, &owner, sealed) {
            Ok(id) => Some(id),
            Err(SessionError::NotYours) => {
                let res = json_error(
                    StatusCode::FORBIDDEN,
                    "session_not_yours",
                    "this session was opened by another workload",
                );
                return ctx.refuse(&calls, "session_of_another_workload", res);
            }
            Err(SessionError::Malformed) => {
                let res = json_error(
                    StatusCode::NOT_FOUND,
                    "session_not_found",
                    "no such session: initialize again",
                );
                return ctx.refuse(&calls, "unknown_session", res);
            }
        },
    };
    if let Some(res) = judge(&ctx, &route, &policy, &caller, &calls) {
        return res;
    }

    // What was judged is what is sent: the parsed messages, not the raw bytes.
    let body = match messages.len() {
        0 => Bytes::new(),
        1 => Bytes::from(serde_json::to_vec(&messages[0]).unwrap_or_default()),
        _ => Bytes::from(serde_json::to_vec(&messages).unwrap_or_default()),
    };
    let answer = match &route.stdio {
        Some(processes) => upstream::stdio_answer(processes, &method, upstream_session.as_deref(), &messages).await,
        None => {
            let out = upstream::Outgoing {
                headers: &parts.headers,
                method: &method,
                session: upstream_session.as_deref(),
                body,
                caller: &caller,
            };
            upstream::http_answer(&gw, &route, out).await
        }
    };
    let mut answer = match answer {
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
    // The caller gets the upstream's session id sealed to its workload.
    if let Some(id) = answer.headers.get(&SESSION).and_then(|v| v.to_str().ok()) {
        let sealed = gw.sessions.seal(&route.route.resource, &owner, id);
        match HeaderValue::from_str(&sealed) {
            Ok(v) => answer.headers.insert(SESSION.clone(), v),
            Err(_) => answer.headers.remove(&SESSION),
        };
    }
    let listing = calls.iter().any(|c| c.method == "tools/list");
    answer::respond(ctx, answer, calls, listing, policy, caller).await
}

/// The tool policy over every element: one refused element refuses the request.
fn judge(ctx: &Ctx, route: &RouteState, policy: &Policy, caller: &Caller, calls: &[Call]) -> Option<Response> {
    for call in calls.iter().filter(|c| c.method == "tools/call") {
        let tool = call.name.as_deref().unwrap_or_default();
        let (reason, res) = match route
            .policy
            .judge(policy, &caller.claims.sub, tool, |s| caller.has_scope(s))
        {
            Verdict::Allow => continue,
            Verdict::Step(scopes) => {
                let scope = scopes.join(" ");
                let mut res = json_error(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    &format!("calling {tool} needs the scopes: {scope}"),
                );
                let extra = format!(", error=\"insufficient_scope\", scope=\"{scope}\"");
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    challenge(route, caller_scheme(caller), &extra),
                );
                ("insufficient_scope", res)
            }
            Verdict::NotListed => (
                "tool_not_allowed",
                json_error(
                    StatusCode::FORBIDDEN,
                    "tool_not_allowed",
                    "the resource's policy does not list this tool",
                ),
            ),
            Verdict::Limited(after) => {
                let mut res = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many calls of this tool",
                );
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
