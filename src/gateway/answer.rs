//! Passing the upstream's answer back: streamed through a tap that settles
//! each request's audit event as its response goes by, or, for a
//! `tools/list`, read whole and filtered to the tools the caller may call.

use std::collections::{HashMap, HashSet};
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

/// How much of an answer is read to learn its outcome, or to filter a `tools/list`.
const MAX_SCAN: usize = 4 * 1024 * 1024;

/// Passes the answer on: streamed through a tap that records each request's
/// outcome as its response goes by, or, for a `tools/list`, read whole and filtered.
pub async fn respond(
    ctx: Ctx,
    answer: Answer,
    calls: Vec<Call>,
    listing: HashSet<String>,
    policy: Arc<Policy>,
    caller: Arc<Caller>,
) -> Response {
    let status = answer.status;
    let sse = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut watch = Watch {
        ctx,
        sse,
        buf: Vec::new(),
        data: String::new(),
        pending: HashMap::new(),
        status: status.as_u16(),
        overflow: false,
    };
    for call in calls {
        match (&call.id, status.is_success(), status == StatusCode::ACCEPTED) {
            // A notification or a stream: the status is its outcome.
            (None, true, _) | (Some(_), true, true) => watch.ctx.record(&call, Outcome::Success, None, None, watch.status),
            (_, false, _) => watch
                .ctx
                .record(&call, Outcome::UpstreamError, Some("upstream_status"), None, watch.status),
            (Some(id), true, false) => {
                watch.pending.insert(id.to_string(), call);
            }
        }
    }
    let mut builder = Response::builder().status(status);
    if let Some(h) = builder.headers_mut() {
        *h = answer.headers;
    }
    let body = if listing.is_empty() || !status.is_success() {
        Body::from_stream(Tap { inner: answer.body, watch: Some(watch) })
    } else {
        let mut whole = Vec::new();
        let mut stream = answer.body;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) if whole.len() + c.len() <= MAX_SCAN => whole.extend_from_slice(&c),
                // Too large to filter: nothing of it is passed on unfiltered.
                _ => {
                    watch.pending.clear();
                    return json_error(StatusCode::BAD_GATEWAY, "upstream_error", "the tool list could not be read");
                }
            }
        }
        let keep = |tool: &str| RoutePolicy::visible(&policy, tool, |s| caller.has_scope(s));
        let filtered = if sse {
            filter_sse(&whole, &listing, &keep)
        } else {
            filter_json(&whole, &listing, &keep)
        };
        watch.feed(&filtered);
        watch.finish();
        if let Some(h) = builder.headers_mut() {
            h.remove(header::CONTENT_LENGTH);
        }
        Body::from(filtered)
    };
    builder.body(body).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Drops the tools the caller may not call from `tools/list` answers.
fn filter_message(msg: &mut Value, listing: &HashSet<String>, keep: &impl Fn(&str) -> bool) {
    let ours = msg.get("id").is_some_and(|id| listing.contains(&id.to_string()));
    if let Some(tools) = msg.pointer_mut("/result/tools").and_then(Value::as_array_mut).filter(|_| ours) {
        tools.retain(|t| t.get("name").and_then(Value::as_str).is_some_and(keep));
    }
}

fn filter_json(body: &[u8], listing: &HashSet<String>, keep: &impl Fn(&str) -> bool) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            match &mut v {
                Value::Array(items) => items.iter_mut().for_each(|m| filter_message(m, listing, keep)),
                m => filter_message(m, listing, keep),
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        // Not JSON: nothing a client could read a tool from.
        Err(_) => body.to_vec(),
    }
}

fn filter_sse(body: &[u8], listing: &HashSet<String>, keep: &impl Fn(&str) -> bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    for event in text.split("\n\n") {
        if event.trim().is_empty() {
            continue;
        }
        let mut data = Vec::new();
        for line in event.lines() {
            match line.strip_prefix("data:") {
                Some(d) => data.push(d.strip_prefix(' ').unwrap_or(d)),
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if !data.is_empty() {
            let joined = data.join("\n");
            match serde_json::from_str::<Value>(&joined) {
                Ok(mut msg) => {
                    filter_message(&mut msg, listing, keep);
                    out.push_str(&format!("data: {msg}\n"));
                }
                Err(_) => joined.lines().for_each(|l| out.push_str(&format!("data: {l}\n"))),
            }
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Reads an answer as it passes, settling each request when its response goes by.
struct Watch {
    ctx: Ctx,
    sse: bool,
    buf: Vec<u8>,
    data: String,
    /// JSON-RPC id → the request still waiting for its response.
    pending: HashMap<String, Call>,
    status: u16,
    overflow: bool,
}

impl Watch {
    fn feed(&mut self, chunk: &[u8]) {
        if self.pending.is_empty() || self.overflow {
            return;
        }
        if self.buf.len() + chunk.len() > MAX_SCAN {
            self.overflow = true;
            self.buf.clear();
            return;
        }
        self.buf.extend_from_slice(chunk);
        if !self.sse {
            return;
        }
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let data = std::mem::take(&mut self.data);
                if let Ok(msg) = serde_json::from_str::<Value>(&data) {
                    self.settle(&msg);
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
    }

    fn settle(&mut self, msg: &Value) {
        match msg {
            Value::Array(items) => items.iter().for_each(|m| self.settle(m)),
            _ => {
                let Some(id) = msg.get("id") else { return };
                let answered = msg.get("result").is_some() || msg.get("error").is_some();
                if !answered {
                    return;
                }
                if let Some(call) = self.pending.remove(&id.to_string()) {
                    let code = msg.pointer("/error/code").and_then(Value::as_i64);
                    let outcome = if code.is_some() { Outcome::UpstreamError } else { Outcome::Success };
                    self.ctx.record(&call, outcome, code.map(|_| "jsonrpc_error"), code, self.status);
                }
            }
        }
    }

    /// The answer ended (or the caller left): requests never answered are recorded so.
    fn finish(&mut self) {
        if !self.sse && !self.buf.is_empty() {
            if let Ok(msg) = serde_json::from_slice::<Value>(&self.buf) {
                self.settle(&msg);
            }
            self.buf.clear();
        }
        for (_, call) in std::mem::take(&mut self.pending) {
            let reason = if self.overflow { "answer_too_large_to_read" } else { "no_answer" };
            self.ctx.record(&call, Outcome::UpstreamError, Some(reason), None, self.status);
        }
        metrics::histogram!("mayfly_gateway_request_seconds").record(self.ctx.started.elapsed().as_secs_f64());
    }
}

struct Tap {
    inner: ByteStream,
    watch: Option<Watch>,
}

impl Stream for Tap {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(w) = self.watch.as_mut() {
                    w.feed(chunk);
                }
            }
            Poll::Ready(_) => {
                if let Some(mut w) = self.watch.take() {
                    w.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
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

    #[test]
    fn a_listed_answer_keeps_only_the_tools_the_caller_may_call_in_json_and_in_sse() {
        let listing: HashSet<String> = [json!(3).to_string()].into();
        let keep = |t: &str| t == "echo";
        let body = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "echo"}, {"name": "delete_repository"}]}});
        let out: Value = serde_json::from_slice(&filter_json(body.to_string().as_bytes(), &listing, &keep)).unwrap();
        assert_eq!(out["result"]["tools"], json!([{"name": "echo"}]));
        let sse = format!("event: message\nid: 1\ndata: {body}\n\n");
        let out = String::from_utf8(filter_sse(sse.as_bytes(), &listing, &keep)).unwrap();
        assert!(out.contains("event: message\n") && out.contains("\"echo\"") && !out.contains("delete_repository"), "{out}");
        let other: HashSet<String> = [json!(4).to_string()].into();
        let untouched = String::from_utf8(filter_sse(sse.as_bytes(), &other, &keep)).unwrap();
        assert!(untouched.contains("delete_repository"), "another request's answer is not ours to filter");
    }
}
