//! The audit log as a transparency log: one integrator at a time (across
//! replicas, by holding the log row) takes committed events off the queue in
//! batches, gives them consecutive log indexes, folds them into the RFC 6962
//! tree, stores the subtree hashes proofs need, and signs a checkpoint per
//! batch with the log's Ed25519 key (sealed under the master key; it never
//! leaves this process unsealed). Proofs are served from what is stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::merkle::{Hash, Subtrees, empty_root, leaf_hash};
use super::note::{NoteSigner, checkpoint_body};
use super::tree::{Kept, NodeId, completed};
use super::tree_sql::TreeHead;
use crate::keys::seal::{MasterKey, SealError};
use crate::storage::{Conn, Store, StoreError};

/// Events integrated per batch (and per signed checkpoint) at most.
pub const BATCH: i64 = 4096;
/// How long the integrator rests after a batch that was not full: events
/// are logged at most about this long (plus a batch's work) after commit,
/// and a quiet log signs at most two checkpoints a second.
pub const INTEGRATE_EVERY: Duration = Duration::from_millis(500);
const KEY_AAD: &[u8] = b"mayfly audit log key v1";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit log key does not open under the master key (or the previous one): {0}")]
    Key(#[from] SealError),
    #[error("the stored audit log key is malformed")]
    BadKey,
}

/// A proof request the log cannot answer: a size past the tree, an index
/// past the size.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    OutOfRange(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The log's origin line: the issuer without its scheme, then `/audit`
/// (C2SP origins are schema-less); fixed when the key is made.
pub fn origin_of(issuer: &str) -> String {
    let host = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    format!("{}/audit", host.trim_end_matches('/'))
}

/// A batch ready to store.
struct Batch {
    leaves: Vec<(i64, Hash)>,
    nodes: Vec<(NodeId, Hash)>,
    head: TreeHead,
    from: u64,
    full: bool,
}

impl Batch {
    /// Counted, once stored.
    fn done(&self) -> Integrated {
        let size = self.head.size as u64;
        metrics::counter!("mayfly_audit_integrated_total").increment(size - self.from);
        metrics::gauge!("mayfly_audit_log_size").set(size as f64);
        Integrated { size, full: self.full }
    }
}

/// What one integration did: the log's new size, and whether the batch was
/// full (more may be waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integrated {
    pub size: u64,
    pub full: bool,
}

#[derive(Clone)]
pub struct TransparencyLog {
    store: Store,
    signer: Arc<NoteSigner>,
    origin: Arc<str>,
    verifier_key: Arc<str>,
}

impl std::fmt::Debug for TransparencyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransparencyLog")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Opens the sealed key with the current master key, else the previous one.
fn open_key(sealed: &[u8], masters: &[&MasterKey]) -> Result<Ed25519KeyPair, LogError> {
    let mut last = SealError::Open;
    for m in masters {
        match m.open(sealed, KEY_AAD) {
            Ok(pkcs8) => return Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| LogError::BadKey),
            Err(e) => last = e,
        }
    }
    Err(LogError::Key(last))
}

impl TransparencyLog {
    /// The log over `store`, making its key on first use (the first replica
    /// to record one wins; every replica then reads that one).
    pub async fn open(
        store: Store,
        issuer: &str,
        masters: &[&MasterKey],
        now: DateTime<Utc>,
    ) -> Result<Self, LogError> {
        let current = masters.first().ok_or(LogError::BadKey)?;
        seal_chain(&store, now).await?;
        let mut c = store.read().await?;
        if c.conn().log_key().await?.sealed_key.is_none() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| LogError::BadKey)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| LogError::BadKey)?;
            let sealed = current.seal(pkcs8.as_ref(), KEY_AAD);
            c.conn()
                .init_log_key(&origin_of(issuer), pair.public_key().as_ref(), &sealed)
                .await?;
        }
        let stored = c.conn().log_key().await?;
        drop(c);
        let (Some(origin), Some(sealed)) = (stored.origin, stored.sealed_key) else {
            return Err(LogError::BadKey);
        };
        let pair = open_key(&sealed, masters)?;
        if stored.public_key.as_deref() != Some(pair.public_key().as_ref()) {
            return Err(LogError::BadKey);
        }
        let signer = NoteSigner::new(&origin, pair);
        Ok(Self {
            store,
            verifier_key: signer.verifier_key().into(),
            signer: Arc::new(signer),
            origin: origin.into(),
        })
    }

    /// Re-seals the log's key under `current` if it is sealed under
    /// `previous` (`mayfly keys rewrap`); true if it did.
    pub async fn reseal(store: &Store, current: &MasterKey, previous: &MasterKey) -> Result<bool, LogError> {
        let mut tx = store.begin().await?;
        let Some(sealed) = tx.conn().log_key().await?.sealed_key else {
            return Ok(false);
        };
        if current.open(&sealed, KEY_AAD).is_ok() {
            return Ok(false);
        }
        let pkcs8 = previous.open(&sealed, KEY_AAD)?;
        tx.conn().reseal_log_key(&current.seal(&pkcs8, KEY_AAD)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `name+hash+base64(0x01 || key)`: what verifiers pin.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// A checkpoint: the C2SP body, then one extension line with the time
    /// it was signed (verifiers that do not know it ignore it).
    fn sign(&self, size: u64, root: &Hash, at: &DateTime<Utc>) -> String {
        let body = checkpoint_body(&self.origin, size, root);
        self.signer.sign(&format!("{body}time {}\n", crate::clock::rfc3339(at)))
    }

    /// Integrates one batch, if this replica holds the log and events wait.
    /// On Postgres the batch is built inside the transaction that holds the
    /// log's row (writers never wait for it). On SQLite, whose one write
    /// lock every writer needs, it is built on a read connection and the
    /// write transaction only stores it; this process is the only
    /// integrator there (the data directory is locked to one server).
    pub async fn integrate(&self, now: DateTime<Utc>) -> Result<Option<Integrated>, StoreError> {
        if self.store.backend() == "postgres" {
            let mut tx = self.store.begin().await?;
            let Some(size) = tx.conn().hold_log().await? else {
                return Ok(None);
            };
            let Some(batch) = self.prepare(&mut tx.conn(), size, now).await? else {
                return Ok(None);
            };
            tx.conn()
                .extend_log(size, &batch.leaves, &batch.nodes, &batch.head)
                .await?;
            tx.commit().await?;
            return Ok(Some(batch.done()));
        }
        let size = self.store.read().await?.conn().log_size().await?;
        let batch = {
            let mut read = self.store.read().await?;
            self.prepare(&mut read.conn(), size, now).await?
        };
        let Some(batch) = batch else { return Ok(None) };
        let mut tx = self.store.begin().await?;
        if tx.conn().hold_log().await? != Some(size) {
            return Ok(None);
        }
        tx.conn()
            .extend_log(size, &batch.leaves, &batch.nodes, &batch.head)
            .await?;
        tx.commit().await?;
        Ok(Some(batch.done()))
    }

    /// The next batch over a log of `size` events: leaves, the subtrees
    /// they complete, the signed head. A leaf is the content hash its
    /// writer recorded, so an event changed while it waited no longer
    /// matches its leaf (`audit verify` finds it).
    async fn prepare(&self, conn: &mut Conn<'_>, size: i64, now: DateTime<Utc>) -> Result<Option<Batch>, StoreError> {
        let pending = conn.pending_hashes(BATCH).await?;
        if pending.is_empty() {
            return Ok(None);
        }
        let from = size as u64;
        let to = from + pending.len() as u64;
        let full = pending.len() as i64 == BATCH;
        let mut kept = Kept::default();
        // What is stored must still be what was signed last, or this batch
        // would sign a fork built on damaged rows.
        let last = conn.latest_tree_head().await?;
        if from > 0 || last.is_some() {
            let stored = fetch(conn, &mut kept, |k| k.root(from).unwrap_or_else(|e| match e {})).await?;
            if last.is_none_or(|last| last.size as u64 != from || last.root[..] != stored[..]) {
                tracing::error!(
                    size = from,
                    "the stored audit tree differs from its last signed checkpoint; not integrating"
                );
                return Err(StoreError::Conflict(
                    "the stored audit tree differs from its last signed checkpoint: run `mayfly audit verify`".into(),
                ));
            }
        }
        let mut leaves = Vec::with_capacity(pending.len());
        for (i, (seq, hash)) in pending.iter().enumerate() {
            let content = match super::checkpoint::unhex(hash).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                Some(h) => h,
                None => {
                    // Not written by mayfly: a leaf no content matches.
                    tracing::error!(seq, "an audit event's recorded hash is malformed");
                    let mut h = [0u8; 32];
                    h.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, hash.as_bytes()).as_ref());
                    h
                }
            };
            let start = from + i as u64;
            kept.known.insert(NodeId { level: 0, start }, leaf_hash(&content));
            leaves.push((*seq, content));
        }
        let mut nodes = Vec::new();
        // Lowest level first: each is computed from stored ones and those
        // just computed; one read per level for what is not at hand.
        for level_nodes in group_by_level(completed(from, to)) {
            fetch(conn, &mut kept, |k| {
                for id in &level_nodes {
                    let _ = k.compute(*id);
                }
            })
            .await?;
            for id in level_nodes {
                let h = kept.compute(id);
                kept.known.insert(id, h);
                nodes.push((id, h));
            }
        }
        let root = fetch(conn, &mut kept, |k| k.root(to).unwrap_or_else(|e| match e {})).await?;
        let head = TreeHead {
            size: to as i64,
            root: root.to_vec(),
            at: now,
            note: self.sign(to, &root, &now),
        };
        Ok(Some(Batch {
            leaves,
            nodes,
            head,
            from,
            full,
        }))
    }

    /// Integrates until the queue is empty, every `every` while it is,
    /// until the task is dropped. Every replica runs it; one integrates.
    pub async fn run(self, clock: Arc<dyn crate::clock::Clock>, every: Duration) {
        loop {
            match self.integrate(clock.now()).await {
                Ok(Some(n)) if n.full => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot integrate audit events; will retry"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The latest signed checkpoint; before the first batch, one of the
    /// empty tree signed now. Admin reads take a slot of `gate`'s share of
    /// the list gate (a tenant, or the system tenant for global admins), so
    /// proofs cannot crowd out minting.
    pub async fn checkpoint(&self, gate: &str, now: DateTime<Utc>) -> Result<TreeHead, StoreError> {
        let head = self.store.list_read(gate).await?.tx.conn().latest_tree_head().await?;
        Ok(head.unwrap_or_else(|| TreeHead {
            size: 0,
            root: empty_root().to_vec(),
            at: now,
            note: self.sign(0, &empty_root(), &now),
        }))
    }

    /// The RFC 6962 leaf hash at `index` and its event's tenant.
    pub async fn leaf(&self, gate: &str, index: u64) -> Result<Option<(Hash, Option<String>)>, StoreError> {
        let Ok(i) = i64::try_from(index) else { return Ok(None) };
        let row = self.store.list_read(gate).await?.tx.conn().log_leaf(i).await?;
        Ok(row.and_then(|(h, tenant)| Some((leaf_hash(&<[u8; 32]>::try_from(h.as_slice()).ok()?), tenant))))
    }

    /// The audit path of leaf `index` in the tree of `size` leaves, leaf first.
    pub async fn inclusion(&self, gate: &str, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        let mut read = self.store.list_read(gate).await?;
        inclusion_in(&mut read.tx.conn(), index, size).await
    }

    /// The proof that the tree of `from` leaves is a prefix of that of `to`.
    pub async fn consistency(&self, gate: &str, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        let mut read = self.store.list_read(gate).await?;
        let mut c = read.tx.conn();
        let logged = c.log_size().await? as u64;
        if to > logged || from > to {
            return Err(ProofError::OutOfRange(format!(
                "no proof from {from} to {to} (the log has {logged})"
            )));
        }
        let mut kept = Kept::default();
        Ok(fetch(&mut c, &mut kept, |k| {
            k.consistency_proof(from, to).unwrap_or_else(|e| match e {})
        })
        .await?)
    }
}

/// The audit path of leaf `index` in the tree of `size` leaves, leaf
/// first, from what `store` keeps.
pub async fn inclusion_proof(store: &Store, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    inclusion_in(&mut store.read().await?.conn(), index, size).await
}

async fn inclusion_in(c: &mut Conn<'_>, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    let logged = c.log_size().await? as u64;
    if size > logged || index >= size {
        return Err(ProofError::OutOfRange(format!(
            "index {index} is not in a tree of {size} (the log has {logged})"
        )));
    }
    let mut kept = Kept::default();
    Ok(fetch(c, &mut kept, |k| {
        k.inclusion_proof(index, size).unwrap_or_else(|e| match e {})
    })
    .await?)
}

/// On a database whose events were chained before the log, writes once the
/// event that records the chain's length and head, so its end is in the
/// signed tree: a chain cut or rewound later no longer matches it.
async fn seal_chain(store: &Store, now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.conn().lock_chain().await?;
    let (head, count) = tx.conn().audit_head().await?;
    if count > 0 && tx.conn().chain_seals().await?.is_empty() {
        let mut event = super::Caller::system("audit log").event(super::actions::CHAIN_SEALED, now);
        event.reason = Some(super::chain_seal_reason(count, &head));
        tx.conn().append_audit(&[event]).await?;
    }
    tx.commit().await
}

fn group_by_level(ids: Vec<NodeId>) -> Vec<Vec<NodeId>> {
    let mut out: Vec<Vec<NodeId>> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some(group) if group[0].level == id.level => group.push(id),
            _ => out.push(vec![id]),
        }
    }
    out
}

/// Runs `f` over `kept`; if it read stored hashes not at hand, fetches
/// them (one read) and runs it again. A hash the store should hold and
/// does not is a damaged log.
async fn fetch<T>(conn: &mut Conn<'_>, kept: &mut Kept, f: impl Fn(&Kept) -> T) -> Result<T, StoreError> {
    let out = f(kept);
    let missing: BTreeSet<NodeId> = kept.take_missing();
    if missing.is_empty() {
        return Ok(out);
    }
    let found = conn.stored_hashes(&missing).await?;
    if found.len() != missing.len() {
        return Err(StoreError::Conflict(
            "the audit log is missing stored subtree hashes: run `mayfly audit verify`".into(),
        ));
    }
    kept.known.extend(found);
    let out = f(kept);
    debug_assert!(kept.take_missing().is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_issuer_without_its_scheme() {
        assert_eq!(origin_of("https://mayfly.example.com"), "mayfly.example.com/audit");
        assert_eq!(origin_of("http://127.0.0.1:8080/"), "127.0.0.1:8080/audit");
    }
}
