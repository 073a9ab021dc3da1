//! `audit verify` over the transparency log: walks every integrated event in
//! log order, recomputes its content hash and the tree, and checks every
//! stored signed checkpoint and any kept elsewhere against the recomputed
//! roots. Needs no master key: checkpoints are checked with the log's
//! public key (stored, or pinned by the caller).

use std::collections::BTreeMap;

use super::merkle::{Hash, leaf_hash};
use super::note::{NoteVerifier, parse_checkpoint, verifier_key};
use super::tree::Frontier;
use crate::storage::{Store, StoreError};

/// What the walk found: events checked, the log's size, the first event
/// that is not what the log recorded, and what is wrong.
#[derive(Debug, Default)]
pub struct TreeReport {
    pub checked: u64,
    pub size: u64,
    pub first_broken: Option<uuid::Uuid>,
    pub problem: Option<String>,
}

/// The log's stored verifier key, if it has one.
pub async fn stored_verifier_key(store: &Store) -> Result<Option<String>, StoreError> {
    let k = store.read().await?.conn().log_key().await?;
    Ok(match (k.origin, k.public_key) {
        (Some(origin), Some(public)) => Some(verifier_key(&origin, &public)),
        _ => None,
    })
}

/// A checkpoint note's size and root, if `key` signed it.
fn opened(key: &NoteVerifier, note: &str) -> Option<(u64, Hash)> {
    let text = key.open(note).ok()?;
    let (_, size, root) = parse_checkpoint(text).ok()?;
    Some((size, root))
}

/// Walks the log. `exported` are signed checkpoint notes kept outside the
/// database; `key` the verifier key to check them all with. Events whose
/// queue entry was deleted (so they would never be integrated) are counted.
pub async fn verify_tree(store: &Store, key: &NoteVerifier, exported: &[String]) -> Result<TreeReport, StoreError> {
    let mut c = store.read().await?;
    let size = c.conn().log_size().await? as u64;
    let mut report = TreeReport {
        size,
        ..Default::default()
    };
    let outside = c.conn().events_outside_log().await?;
    let fail = |report: &mut TreeReport, id: Option<uuid::Uuid>, problem: String| {
        if report.problem.is_none() {
            report.first_broken = id;
            report.problem = Some(problem);
        }
    };
    // Every root some checkpoint vouches for, by size.
    let mut want: BTreeMap<u64, (Hash, &'static str)> = BTreeMap::new();
    let mut after = -1;
    loop {
        let page = c.conn().tree_heads_page(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.size;
        for h in page {
            if h.size as u64 > size {
                // Integrated after the walk began: past what it checks.
                continue;
            }
            match opened(key, &h.note) {
                Some((n, root)) if n == h.size as u64 && root[..] == h.root[..] => {
                    want.insert(n, (root, "a stored checkpoint"));
                }
                _ => fail(
                    &mut report,
                    None,
                    format!("the stored checkpoint of {} events is not authentic", h.size),
                ),
            }
        }
    }
    for note in exported {
        match opened(key, note) {
            Some((n, root)) => {
                if let Some((other, _)) = want.get(&n)
                    && *other != root
                {
                    fail(&mut report, None, format!("two checkpoints of {n} events disagree"));
                }
                want.insert(n, (root, "a checkpoint kept elsewhere"));
            }
            None => fail(&mut report, None, "a checkpoint kept elsewhere is not authentic".into()),
        }
    }
    let mut frontier = Frontier::default();
    let check_root = |frontier: &Frontier, report: &mut TreeReport| {
        if let Some((root, whose)) = want.get(&frontier.size())
            && *root != frontier.root()
        {
            let n = frontier.size();
            fail(
                report,
                None,
                format!("the log's first {n} events differ from what {whose} saw: events were replaced"),
            );
        }
    };
    check_root(&frontier, &mut report);
    while frontier.size() < size {
        // Never past the size read at the start: the integrator may go on.
        let page = c
            .conn()
            .log_entries(frontier.size() as i64, (size - frontier.size()).min(1000) as i64)
            .await?;
        if page.is_empty() {
            break;
        }
        for e in page {
            if e.log_index as u64 != frontier.size() {
                let n = frontier.size();
                fail(&mut report, Some(e.event.id), format!("log index {n} is missing"));
                return Ok(report);
            }
            let content = e.event.content_hash();
            if e.leaf[..] != content[..] {
                fail(
                    &mut report,
                    Some(e.event.id),
                    "an event's content differs from what the log recorded".into(),
                );
            }
            report.checked += 1;
            frontier.push(leaf_hash(&content));
            check_root(&frontier, &mut report);
        }
    }
    if outside > 0 {
        fail(
            &mut report,
            None,
            format!("{outside} events written for the log are neither in it nor waiting for it"),
        );
    }
    if frontier.size() != size {
        let n = frontier.size();
        fail(
            &mut report,
            None,
            format!("the log has {n} events but its size says {size}"),
        );
    }
    if let Some((&longest, (_, whose))) = want.last_key_value()
        && longest > frontier.size()
    {
        let n = frontier.size();
        fail(
            &mut report,
            None,
            format!("the log has {n} events but {whose} saw {longest}: its tail was removed"),
        );
    }
    Ok(report)
}
