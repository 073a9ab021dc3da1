//! The gateway's audit queue: every MCP request it handled, delivered in
//! batches to mayfly (`POST /v1/mcp-events`), at least once (the event id
//! dedupes). Bounded in size and age: when mayfly cannot take events for
//! longer than the bound, the gateway refuses requests rather than act
//! unrecorded. Never holds an argument value, only its digest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;

/// Events per delivery (mayfly's bound).
const BATCH: usize = 1000;
/// Bytes per delivery, under mayfly's body limit of 2 MiB.
const BATCH_BYTES: usize = 1536 * 1024;

/// One MCP request, as `POST /v1/mcp-events` takes it.
#[derive(Debug, Clone, Serialize)]
pub struct McpEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub resource: String,
    pub lease_id: Option<Uuid>,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    UpstreamError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

struct Queued {
    event: McpEvent,
    since: Instant,
}

pub struct Events {
    queue: Mutex<VecDeque<Queued>>,
    wake: Notify,
    max_events: usize,
    max_age: Duration,
    url: String,
    http: reqwest::Client,
    client_id: String,
    secret: SecretString,
}

#[derive(serde::Deserialize)]
struct Report {
    #[serde(default)]
    rejected: Vec<serde_json::Value>,
}

impl Events {
    pub fn new(
        issuer: &str,
        http: reqwest::Client,
        client_id: String,
        secret: SecretString,
        max_events: usize,
        max_age: Duration,
    ) -> Self {
        Events {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            max_events,
            max_age,
            url: format!("{issuer}/v1/mcp-events"),
            http,
            client_id,
            secret,
        }
    }

    pub fn depth(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Whether the queue is past its bound: then requests are refused.
    pub fn full(&self) -> bool {
        let Ok(q) = self.queue.lock() else { return true };
        q.len() >= self.max_events || q.front().is_some_and(|e| e.since.elapsed() > self.max_age)
    }

    pub fn record(&self, event: McpEvent) {
        metrics::counter!("mayfly_gateway_requests_total", "method" => metric_method(&event.method), "outcome" => event.outcome.as_str())
            .increment(1);
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(Queued {
                event,
                since: Instant::now(),
            });
            // Batch under load; one event alone still leaves at once.
            if q.len() == 1 || q.len() >= BATCH {
                self.wake.notify_one();
            }
        }
    }

    /// Delivers until the process ends.
    pub async fn deliver(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        // Shrinks when mayfly refuses a batch as malformed, to find the event at fault.
        let mut limit = BATCH;
        loop {
            let batch = self.next_batch(limit);
            metrics::gauge!("mayfly_gateway_audit_queue").set(self.depth() as f64);
            if batch.is_empty() {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                continue;
            }
            match self.send(&batch).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    limit = BATCH;
                    self.drop_front(batch.len());
                    // A short pause gathers the next batch under load.
                    if batch.len() < BATCH {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(Failure::Refused) if batch.len() > 1 => limit = batch.len() / 2,
                Err(Failure::Refused) => {
                    // mayfly will never take this one event: counted and dropped, not retried forever.
                    metrics::counter!("mayfly_gateway_audit_rejected_total").increment(1);
                    tracing::warn!("mayfly refused an audit event as malformed; dropped");
                    self.drop_front(1);
                    limit = BATCH;
                }
                Err(Failure::Unavailable(e)) => {
                    tracing::warn!(error = %e, queued = self.depth(), "cannot deliver audit events to mayfly");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Delivers what is queued, until `deadline` (at shutdown).
    pub async fn flush(&self, deadline: Duration) {
        let _ = tokio::time::timeout(deadline, async {
            while self.depth() > 0 {
                let batch = self.next_batch(BATCH);
                match self.send(&batch).await {
                    Ok(()) => self.drop_front(batch.len()),
                    Err(Failure::Refused) => self.drop_front(1),
                    Err(Failure::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .await;
    }

    /// The oldest events, at most `limit` and `BATCH_BYTES` of them.
    fn next_batch(&self, limit: usize) -> Vec<McpEvent> {
        let Ok(q) = self.queue.lock() else { return Vec::new() };
        let mut bytes = 0;
        q.iter()
            .take(limit)
            .take_while(|e| {
                bytes += serde_json::to_vec(&e.event).map(|v| v.len() + 1).unwrap_or(0);
                bytes <= BATCH_BYTES
            })
            .map(|e| e.event.clone())
            .collect()
    }

    fn drop_front(&self, n: usize) {
        if let Ok(mut q) = self.queue.lock() {
            let n = n.min(q.len());
            q.drain(..n);
        }
    }

    async fn send(&self, batch: &[McpEvent]) -> Result<(), Failure> {
        #[derive(Serialize)]
        struct Batch<'a> {
            events: &'a [McpEvent],
        }
        let res = self
            .http
            .post(&self.url)
            .basic_auth(&self.client_id, Some(self.secret.expose_secret()))
            .json(&Batch { events: batch })
            .send()
            .await
            .map_err(|e| Failure::Unavailable(e.without_url().to_string()))?;
        match res.status() {
            s if s.is_success() => {}
            s @ (reqwest::StatusCode::BAD_REQUEST
            | reqwest::StatusCode::PAYLOAD_TOO_LARGE
            | reqwest::StatusCode::UNPROCESSABLE_ENTITY) => {
                tracing::warn!(status = %s, events = batch.len(), "mayfly refused a batch of audit events");
                return Err(Failure::Refused);
            }
            s => return Err(Failure::Unavailable(format!("mayfly answered {s}"))),
        }
        let report: Report = res.json().await.map_err(|e| Failure::Unavailable(e.to_string()))?;
        if !report.rejected.is_empty() {
            // Never accepted, whatever is retried (an unknown lease, another resource): counted, not kept.
            metrics::counter!("mayfly_gateway_audit_rejected_total").increment(report.rejected.len() as u64);
            tracing::warn!(rejected = report.rejected.len(), "mayfly rejected audit events");
        }
        Ok(())
    }
}

enum Failure {
    /// mayfly will not take this batch as it is.
    Refused,
    /// mayfly cannot be reached or is failing: try again.
    Unavailable(String),
}

/// `s` cut to at most `max` bytes, at a character boundary (mayfly's bounds are in bytes).
pub fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Bounded label values: a caller cannot grow the metric's cardinality.
fn metric_method(method: &str) -> &'static str {
    match method {
        "initialize" => "initialize",
        "tools/call" => "tools/call",
        "tools/list" => "tools/list",
        "resources/read" => "resources/read",
        "resources/list" => "resources/list",
        "prompts/get" => "prompts/get",
        "prompts/list" => "prompts/list",
        "ping" => "ping",
        "GET" => "GET",
        "DELETE" => "DELETE",
        m if m.starts_with("notifications/") => "notifications",
        _ => "other",
    }
}
