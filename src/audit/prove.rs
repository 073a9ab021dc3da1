//! `mayfly audit prove`: one event against a checkpoint kept elsewhere. The
//! checkpoint's signature is checked with the log's key (pinned by the
//! caller, or the stored one), the event's content is hashed again, and its
//! audit path is checked against the checkpoint's root, so what the
//! database says about the event is trusted only as far as the proof goes.

use serde::Serialize;
use uuid::Uuid;

use super::merkle::{leaf_hash, verify_inclusion};
use super::note::{NoteVerifier, parse_checkpoint};
use super::tlog::{ProofError, inclusion_proof};
use crate::storage::{Store, StoreError};

#[derive(Debug, Serialize)]
pub struct ProveReport {
    pub ok: bool,
    pub event: Uuid,
    pub log_index: Option<u64>,
    pub tree_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

pub async fn prove(
    store: &Store,
    event: Uuid,
    note: &str,
    pinned: Option<&NoteVerifier>,
) -> Result<ProveReport, StoreError> {
    let mut report = ProveReport {
        ok: false,
        event,
        log_index: None,
        tree_size: None,
        problem: None,
    };
    let stored = super::verify::stored_verifier_key(store)
        .await?
        .and_then(|k| NoteVerifier::parse(&k).ok());
    let Some(key) = pinned.or(stored.as_ref()) else {
        report.problem = Some("this database has no audit log key".into());
        return Ok(report);
    };
    let Some((size, root)) = key
        .open(note)
        .ok()
        .and_then(|t| parse_checkpoint(t).ok())
        .map(|(_, n, r)| (n, r))
    else {
        report.problem = Some("the checkpoint is not signed by the log's key".into());
        return Ok(report);
    };
    report.tree_size = Some(size);
    let Some(entry) = store.read().await?.conn().log_entry_of(event).await? else {
        report.problem = Some("the event is not in the log (not integrated yet, or not in this database)".into());
        return Ok(report);
    };
    let index = entry.log_index as u64;
    report.log_index = Some(index);
    let content = entry.event.content_hash();
    if entry.leaf[..] != content[..] {
        report.problem = Some("the event's content differs from what the log recorded".into());
        return Ok(report);
    }
    if index >= size {
        report.problem = Some(format!(
            "the event was logged at {index}, after this checkpoint of {size}"
        ));
        return Ok(report);
    }
    let proof = match inclusion_proof(store, index, size).await {
        Ok(p) => p,
        Err(ProofError::Store(e)) => return Err(e),
        Err(ProofError::OutOfRange(m)) => {
            report.problem = Some(format!("the log cannot prove against this checkpoint: {m}"));
            return Ok(report);
        }
    };
    if verify_inclusion(&leaf_hash(&content), index, size, &proof, &root) {
        report.ok = true;
    } else {
        report.problem = Some("the event's audit path does not lead to the checkpoint's root".into());
    }
    Ok(report)
}
