//! Passing the upstream's answer back, settling each request's audit event
//! as its response goes by. SSE streams pass event by event; where the
//! resource has a tool map, any `tools` list in them is cut to the tools the
//! caller may call. A JSON answer to a `tools/list` is read whole and cut
//! likewise; an answer that cannot be read is not passed on unfiltered.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::events::Outcome;
use super::policy::{Policy, RoutePolicy};
use super::proxy::{Call, Ctx, json_error};
use super::trust::Caller;
use super::upstream::{Answer, ByteStream};

/// How much of an answer is held to learn its outcome or to filter it: a
/// JSON body, or one SSE event.
const MAX_SCAN: usize = 4 * 1024 * 1024;

/// Which tools the caller may see; absent when the resource has no tool map.
struct Filter {
    policy: Arc<Policy>,
    caller: Arc<Caller>,
}

impl Filter {
    /// Cuts every `tools` list in `msg` (one message or a batch). Whatever
    /// request it answers: an id is the upstream's to get wrong.
    fn apply(&self, msg: &mut Value) -> bool {
        match msg {
            Value::Array(items) => items.iter_mut().fold(false, |cut, m| self.apply(m) | cut),
            _ => match msg.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
                Some(tools) => {
                    let keep = |t: &Value| {
                        t.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| RoutePolicy::visible(&self.policy, n, |s| self.caller.has_scope(s)))
                    };
                    tools.retain(keep);
                    true
                }
                None => false,
            },
        }
    }
}

pub async fn respond(
    ctx: Ctx,
    answer: Answer,
    calls: Vec<Call>,
    listing: bool,
    policy: Arc<Policy>,
    caller: Arc<Caller>,
) -> Response {
    let status = answer.status;
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let sse = content_type.starts_with("text/event-stream");
    let filter = policy.tools.is_some().then(|| Filter { policy, caller });
    let mut watch = Watch {
        ctx,
        status: status.as_u16(),
        pending: HashMap::new(),
        json: Vec::new(),
        event: Vec::new(),
        scanned: 0,
        overflow: false,
        sse,
        filter,
    };
    for call in calls {
        match (&call.id, status.is_success(), status == StatusCode::ACCEPTED) {
            // A notification or a stream: the status is its outcome.
            (None, true, _) | (Some(_), true, true) => {
                watch.ctx.record(&call, Outcome::Success, None, None, watch.status)
            }
            (_, false, _) => watch.ctx.record(
                &call,
                Outcome::UpstreamError,
                Some("upstream_status"),
                None,
                watch.status,
            ),
            (Some(id), true, false) => {
                watch.pending.insert(id.to_string(), call);
            }
        }
    }
    let mut builder = Response::builder().status(status);
    if let Some(h) = builder.headers_mut() {
        *h = answer.headers;
        h.remove(header::CONTENT_LENGTH);
    }
    let must_filter = watch.filter.is_some() && status.is_success() && !sse && listing;
    let body = if must_filter {
        let mut whole = Vec::new();
        let mut stream = answer.body;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) if whole.len() + c.len() <= MAX_SCAN => whole.extend_from_slice(&c),
                _ => return watch.unreadable(),
            }
        }
        let Ok(mut msg) = serde_json::from_slice::<Value>(&whole) else {
            return watch.unreadable();
        };
        watch.settle(&msg);
        if let Some(f) = &watch.filter {
            f.apply(&mut msg);
        }
        watch.finish();
        Body::from(serde_json::to_vec(&msg).unwrap_or_default())
    } else {
        Body::from_stream(Tap {
            inner: answer.body,
            watch: Some(watch),
            ready: VecDeque::new(),
        })
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Reads an answer as it passes, settling each request when its response goes by.
struct Watch {
    ctx: Ctx,
    status: u16,
    /// JSON-RPC id → the request still waiting for its response.
    pending: HashMap<String, Call>,
    /// A JSON body so far (only while requests wait for it).
    json: Vec<u8>,
    /// The SSE event being received, and how far it was searched for its end.
    event: Vec<u8>,
    scanned: usize,
    overflow: bool,
    sse: bool,
    filter: Option<Filter>,
}

impl Watch {
    /// Takes a chunk; queues what may be passed on.
    fn push(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), std::io::Error> {
        if !self.sse {
            if !self.pending.is_empty() && !self.overflow {
                if self.json.len() + chunk.len() > MAX_SCAN {
                    self.overflow = true;
                    self.json = Vec::new();
                } else {
                    self.json.extend_from_slice(&chunk);
                }
            }
            out.push_back(chunk);
            return Ok(());
        }
        self.event.extend_from_slice(&chunk);
        while let Some(end) = self.event_end() {
            let raw: Vec<u8> = self.event.drain(..end).collect();
            self.scanned = 0;
            out.push_back(self.pass_event(raw));
        }
        if self.event.len() > MAX_SCAN {
            // One event this large cannot be checked: it is not passed on.
            self.overflow = true;
            return Err(std::io::Error::other("an SSE event too large to check"));
        }
        Ok(())
    }

    /// Where the first complete event ends (after its blank line), if it has.
    fn event_end(&mut self) -> Option<usize> {
        let mut line_start = self.scanned;
        while let Some(nl) = self.event[self.scanned..].iter().position(|b| *b == b'\n') {
            let at = self.scanned + nl;
            let line = &self.event[line_start..at];
            self.scanned = at + 1;
            if line.is_empty() || line == b"\r" {
                return Some(at + 1);
            }
            line_start = at + 1;
        }
        // Resume at the start of the unfinished line next time.
        self.scanned = line_start;
        None
    }

    /// One whole SSE event: settled, and cut if it lists tools.
    fn pass_event(&mut self, raw: Vec<u8>) -> Bytes {
        let text = String::from_utf8_lossy(&raw);
        let mut data = Vec::new();
        let mut other = String::new();
        for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
            match line.strip_prefix("data:") {
                Some(d) => data.push(d.strip_prefix(' ').unwrap_or(d)),
                None if !line.is_empty() => {
                    other.push_str(line);
                    other.push('\n');
                }
                None => {}
            }
        }
        if data.is_empty() {
            return Bytes::from(raw);
        }
        let joined = data.join("\n");
        let Ok(mut msg) = serde_json::from_str::<Value>(&joined) else {
            // What the gateway cannot read it cannot filter: with a tool map,
            // such an event is not passed on (a bare `\r` line end, say, could
            // hide a tools list from this parser and not from the client's).
            if self.filter.is_some() && !joined.trim().is_empty() {
                return Bytes::new();
            }
            return Bytes::from(raw);
        };
        self.settle(&msg);
        match &self.filter {
            Some(f) if f.apply(&mut msg) => Bytes::from(format!("{other}data: {msg}\n\n")),
            _ => Bytes::from(raw),
        }
    }

    fn settle(&mut self, msg: &Value) {
        match msg {
            Value::Array(items) => items.iter().for_each(|m| self.settle(m)),
            _ => {
                let Some(id) = msg.get("id") else { return };
                if msg.get("result").is_none() && msg.get("error").is_none() {
                    return;
                }
                if let Some(call) = self.pending.remove(&id.to_string()) {
                    let code = msg.pointer("/error/code").and_then(Value::as_i64);
                    let outcome = if code.is_some() {
                        Outcome::UpstreamError
                    } else {
                        Outcome::Success
                    };
                    self.ctx
                        .record(&call, outcome, code.map(|_| "jsonrpc_error"), code, self.status);
                }
            }
        }
    }

    /// An answer that had to be read and could not be: 502, and recorded so.
    fn unreadable(mut self) -> Response {
        self.overflow = true;
        self.status = StatusCode::BAD_GATEWAY.as_u16();
        self.finish();
        json_error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the MCP server's answer could not be read",
        )
    }

    /// The answer ended (or the caller left): requests never answered are recorded so.
    fn finish(&mut self) {
        if !self.sse && !self.json.is_empty() {
            if let Ok(msg) = serde_json::from_slice::<Value>(&self.json) {
                self.settle(&msg);
            }
            self.json = Vec::new();
        }
        for (_, call) in std::mem::take(&mut self.pending) {
            let reason = if self.overflow {
                "answer_unreadable"
            } else {
                "no_answer"
            };
            self.ctx
                .record(&call, Outcome::UpstreamError, Some(reason), None, self.status);
        }
        metrics::histogram!("mayfly_gateway_request_seconds").record(self.ctx.started.elapsed().as_secs_f64());
    }
}

struct Tap {
    inner: ByteStream,
    watch: Option<Watch>,
    ready: VecDeque<Bytes>,
}

impl Stream for Tap {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            let this = &mut *self;
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let Some(w) = this.watch.as_mut() else {
                        return Poll::Ready(Some(Ok(chunk)));
                    };
                    if let Err(e) = w.push(chunk, &mut this.ready) {
                        if let Some(mut w) = this.watch.take() {
                            w.finish();
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(other) => {
                    if let Some(mut w) = this.watch.take() {
                        // A last event with no blank line after it is incomplete: SSE drops it too.
                        w.finish();
                    }
                    return Poll::Ready(other);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(mut w) = self.watch.take() {
            w.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter() -> Filter {
        let mut map = std::collections::BTreeMap::new();
        map.insert(
            "echo".to_string(),
            crate::tenants::tools::ToolRule {
                scopes: vec![],
                calls_per_minute: None,
            },
        );
        let policy = Policy {
            tenant: "acme".into(),
            scopes: vec![],
            tools: Some(crate::tenants::tools::ToolPolicy(map)),
        };
        Filter {
            policy: Arc::new(policy),
            caller: Arc::new(super::super::trust::tests::caller("w", "bot", &[], 1)),
        }
    }

    #[test]
    fn any_tools_list_is_cut_to_the_tools_the_caller_may_call_whatever_its_id() {
        let f = filter();
        let mut msg = json!({"jsonrpc": "2.0", "id": 1.0, "result": {"tools": [{"name": "echo"}, {"name": "delete_repository"}]}});
        assert!(f.apply(&mut msg));
        assert_eq!(msg["result"]["tools"], json!([{"name": "echo"}]));
        let mut batch = json!([{"id": "x", "result": {"tools": [{"name": "drop_db"}]}}, {"id": 2, "result": {}}]);
        assert!(f.apply(&mut batch));
        assert_eq!(batch[0]["result"]["tools"], json!([]));
    }
}
