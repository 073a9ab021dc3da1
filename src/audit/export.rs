//! Copies of the log outside the database: integrated events and signed
//! checkpoints as NDJSON, appended to a file and/or POSTed in batches to a
//! log collector. At least once, in log order: each checkpoint line follows
//! the events it covers, and a line's `log_index` (or `tree_size`) is what a
//! collector dedupes on. A file keeps its own place (its last checkpoint
//! line); a URL's place is a row, so any replica may carry on after another.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::tree_sql::TreeHead;
use crate::storage::{Store, StoreError};

/// Where copies go.
#[derive(Debug, Clone)]
pub enum Sink {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the collector answered {0}")]
    Collector(String),
}

/// An event line. A struct, not a JSON map, so the event keeps its
/// canonical field order: its hash can be recomputed from the line as is.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    log_index: i64,
    hash: String,
    event: &'a super::AuditEvent,
}

/// The lines of one checkpoint: the events from `from` up to its size,
/// then the checkpoint itself.
async fn lines(store: &Store, from: u64, head: &TreeHead) -> Result<String, StoreError> {
    let mut out = String::new();
    let mut next = from as i64;
    while next < head.size {
        let page = store
            .read()
            .await?
            .conn()
            .log_entries(next, (head.size - next).min(1000))
            .await?;
        let Some(last) = page.last() else { break };
        next = last.log_index + 1;
        for e in page {
            let line = EventLine {
                kind: "event",
                log_index: e.log_index,
                hash: crate::keys::seal::hex(&e.leaf),
                event: &e.event,
            };
            out.push_str(&serde_json::to_string(&line).unwrap_or_default());
            out.push('\n');
        }
    }
    let line = json!({"type": "checkpoint", "tree_size": head.size, "at": head.at, "note": head.note});
    out.push_str(&line.to_string());
    out.push('\n');
    Ok(out)
}

/// Where a file export stands: the size of the last checkpoint written
/// whole. Reads back from the end at most a few batches' worth.
fn file_position(path: &Path) -> std::io::Result<u64> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(0);
    };
    let len = f.metadata()?.len();
    let window = len.min(16 << 20);
    f.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    f.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    for line in text.lines().rev() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && v["type"] == "checkpoint"
            && let Some(n) = v["tree_size"].as_u64()
        {
            return Ok(n);
        }
    }
    Ok(0)
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // A line cut short by a crash is ended, so the next one starts whole.
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        let mut r = std::fs::File::open(path)?;
        r.seek(SeekFrom::Start(len - 1))?;
        r.read_exact(&mut last)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
    }
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// A URL's row name: a digest, so credentials in the URL are never stored.
fn url_sink(url: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    format!("url:{}", &crate::keys::seal::hex(d.as_ref())[..32])
}

#[derive(Clone)]
pub struct Exporter {
    store: Store,
    sink: Sink,
    http: reqwest::Client,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.sink {
            Sink::File(p) => format!("file {}", p.display()),
            Sink::Url(_) => "url".to_string(),
        };
        f.debug_struct("Exporter").field("sink", &kind).finish_non_exhaustive()
    }
}

impl Exporter {
    pub fn new(store: Store, sink: Sink) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { store, sink, http }
    }

    async fn position(&self) -> Result<u64, ExportError> {
        Ok(match &self.sink {
            Sink::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || file_position(&path))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))??
            }
            Sink::Url(url) => self.store.read().await?.conn().export_position(&url_sink(url)).await? as u64,
        })
    }

    /// Exports what is integrated past the sink's place, one checkpoint at
    /// a time; the number of checkpoints sent.
    pub async fn export(&self) -> Result<usize, ExportError> {
        let mut from = self.position().await?;
        let mut sent = 0;
        loop {
            let heads = self.store.read().await?.conn().tree_heads_page(from as i64, 16).await?;
            if heads.is_empty() {
                return Ok(sent);
            }
            for head in heads {
                let text = lines(&self.store, from, &head).await?;
                match &self.sink {
                    Sink::File(path) => {
                        let path = path.clone();
                        tokio::task::spawn_blocking(move || append(&path, &text))
                            .await
                            .map_err(|e| std::io::Error::other(e.to_string()))??;
                    }
                    Sink::Url(url) => {
                        // On Postgres one replica posts a batch at a time: the
                        // others skip while this one's transaction holds the
                        // sink. (SQLite has one process; a transaction there
                        // would hold the write lock through the POST.)
                        let sink = url_sink(url);
                        let mut hold = match self.store.backend() {
                            "postgres" => Some(self.store.begin().await?),
                            _ => None,
                        };
                        if let Some(tx) = &mut hold
                            && (!tx.conn().try_hold_export(&sink).await?
                                || tx.conn().export_position(&sink).await? as u64 != from)
                        {
                            // Another replica holds it, or sent this meanwhile.
                            return Ok(sent);
                        }
                        let res = self
                            .http
                            .post(url)
                            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                            .body(text)
                            .send()
                            .await
                            .map_err(|e| ExportError::Collector(e.without_url().to_string()))?;
                        if !res.status().is_success() {
                            return Err(ExportError::Collector(res.status().to_string()));
                        }
                        match hold {
                            Some(mut tx) => {
                                tx.conn().set_export_position(&sink, head.size).await?;
                                tx.commit().await?;
                            }
                            None => {
                                self.store
                                    .read()
                                    .await?
                                    .conn()
                                    .set_export_position(&sink, head.size)
                                    .await?
                            }
                        }
                    }
                }
                metrics::counter!("mayfly_audit_exported_total").increment(head.size as u64 - from);
                from = head.size as u64;
                sent += 1;
            }
        }
    }

    /// Exports every `every` until the task is dropped; a failure is
    /// retried from the sink's place.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            if let Err(e) = self.export().await {
                tracing::warn!(error = %e, sink = ?self, "cannot export the audit log; will retry");
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl crate::storage::Conn<'_> {
    /// Holds a URL sink for this transaction (Postgres: an advisory lock, so
    /// replicas take turns; SQLite has one writer process). False if another
    /// replica holds it.
    pub async fn try_hold_export(&mut self, sink: &str) -> crate::storage::Result<bool> {
        if !self.is_postgres() {
            return Ok(true);
        }
        Ok(crate::storage::run!(self, c => sqlx::query_scalar::<_, bool>(
            "SELECT pg_try_advisory_xact_lock(7371, hashtext(current_schema() || $1))")
            .bind(sink).fetch_one(c).await)?)
    }

    /// The next log index a URL sink has not acknowledged.
    pub async fn export_position(&mut self, sink: &str) -> crate::storage::Result<i64> {
        Ok(crate::storage::run!(self, c => sqlx::query_scalar::<_, i64>(
            "SELECT next_index FROM audit_exports WHERE sink = $1").bind(sink).fetch_optional(c).await)?
        .unwrap_or(0))
    }

    /// Moves a sink's place forward to `to` (never back: another replica
    /// may have sent further meanwhile).
    pub async fn set_export_position(&mut self, sink: &str, to: i64) -> crate::storage::Result<()> {
        crate::storage::run!(self, c => sqlx::query(
            "INSERT INTO audit_exports (sink, next_index) VALUES ($1, $2)
             ON CONFLICT (sink) DO UPDATE SET next_index = $2 WHERE audit_exports.next_index < $2")
            .bind(sink).bind(to).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
