//! Group commit for minting: concurrent mints hand their lease and audit
//! event to one writer task, which commits whatever has queued up in one
//! transaction (one multi-row insert each for leases and events) and then
//! answers each of them. A token is still returned only after its own lease
//! is durable; under load many leases share one commit instead of queueing
//! for their own. Batches do not wait for each other: audit events share no
//! row (the transparency log integrates them afterwards).
//!
//! A single-use value the mint rests on (a DPoP proof's `jti`) is spent in
//! the same transaction: a value spent before (by this batch, another batch
//! or another replica) takes its lease out again and answers `Spent`, so a
//! replayed proof costs no extra round trip and never yields a token.
//!
//! Each token is signed inside its lease's transaction, once the lease has
//! its sequence number and before the commit, all of a batch's at once (an
//! outside signer such as transit gets them as one request). A lease whose
//! token cannot be signed (the HSM or transit is down) is taken out again:
//! no lease is committed without its token, no token returned without its lease.
//!
//! A lease decided on the in-memory catalog carries the tenant's catalog
//! version; inside the batch's transaction, holding the writer-order row in
//! shared mode (every catalog change takes it exclusively, first), a lease
//! whose version moved is taken out
//! again and its request alone is told `Stale`. A batch that fails for any other reason
//! than the database going away is split: each lease is tried on its own, so
//! one bad lease fails only its own request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::audit::AuditEvent;
use crate::leases::Lease;
use crate::storage::gather::Gather;
use crate::storage::{Store, StoreError};
use crate::tenants::catalog::Stamp;

/// Most leases committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Batches in flight at once: one commits while the next inserts its leases.
const IN_FLIGHT: usize = 2;
/// How long a batch's statements, and then its commit, may take: a database
/// host that died without closing its sockets (a partition, a power cut)
/// would otherwise hold the writer until the kernel gives up on TCP.
const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Signs a lease's token once its sequence number is known.
pub type Seal = Arc<dyn Fn(i64) -> BoxFuture<'static, Result<String, crate::jose::SignError>> + Send + Sync>;

/// A committed lease: its sequence number and, when a seal was given, its signed token.
#[derive(Debug, Clone)]
pub struct Committed {
    pub seq: i64,
    pub token: Option<String>,
}

/// Each request gets its committed lease, or its own or the batch's error.
type Answer = Result<Committed, Arc<StoreError>>;

/// A single-use value to spend with a lease: recorded in `used_assertions`
/// under `(key, jti)` until `until`.
#[derive(Debug, Clone)]
pub struct Spend {
    pub key: String,
    pub jti: String,
    pub until: DateTime<Utc>,
}

/// A lease to commit, its audit event, the catalog version it was decided
/// on (None: not decided on the catalog), and what it spends.
struct Pending {
    lease: Lease,
    event: AuditEvent,
    check: Option<Stamp>,
    spend: Option<Spend>,
    seal: Option<Seal>,
}

/// Every token of a batch, signed at once: `None` where no seal was given,
/// or where the lease's proof was spent before (it will not commit).
async fn seal_all(items: &[Pending], seqs: &[i64], spent: &HashSet<usize>) -> Vec<Option<Result<String, String>>> {
    let signing = items.iter().zip(seqs).enumerate().map(|(i, (p, &seq))| {
        let seal = p.seal.clone().filter(|_| !spent.contains(&i));
        async move {
            match seal {
                Some(seal) => Some(seal(seq).await.map_err(|e| e.to_string())),
                None => None,
            }
        }
    });
    futures_util::future::join_all(signing).await
}

/// The items (by position) whose spend was spent before: a key twice in the
/// batch spends it for the first only, and a key the store knows for none.
async fn spent_before(conn: &mut crate::storage::Conn<'_>, items: &[Pending]) -> Result<HashSet<usize>, StoreError> {
    let mut firsts: HashMap<(&str, &str), usize> = HashMap::new();
    let mut spent = HashSet::new();
    for (i, p) in items.iter().enumerate() {
        let Some(s) = &p.spend else { continue };
        // The first copy in the batch is the candidate; every later one is a replay.
        match firsts.entry((s.key.as_str(), s.jti.as_str())) {
            std::collections::hash_map::Entry::Occupied(_) => {
                spent.insert(i);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
    let mut wanted: Vec<(&str, &str, DateTime<Utc>)> = firsts
        .iter()
        .filter_map(|(&(key, jti), &i)| items[i].spend.as_ref().map(|s| (key, jti, s.until)))
        .collect();
    // One order for every batch and replica: two inserts waiting on each
    // other's rows in opposite orders would deadlock.
    wanted.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let fresh = conn.use_assertions(&wanted).await?;
    for ((key, jti), i) in firsts {
        if !fresh.contains(&(key.to_string(), jti.to_string())) {
            spent.insert(i);
        }
    }
    Ok(spent)
}

/// Commits the leases whose catalog versions still hold, with their audit
/// events, atomically; the others are answered `Stale`. If the connection
/// fails before the commit is sent (nothing can have been written), the
/// batch is retried once on a fresh connection; a failed commit is not
/// retried, since its outcome is unknown.
async fn record(store: &Store, items: &[Pending]) -> Result<Vec<Answer>, StoreError> {
    let mut retried = false;
    loop {
        let staged = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut tx = store.begin().await?;
            // Leases go in before the writer-order row, so that what a
            // revocation or a catalog change waits for is short.
            let leases: Vec<Lease> = items.iter().map(|p| p.lease.clone()).collect();
            let seqs = tx.conn().insert_leases(&leases).await?;
            // Proofs are spent before it too, and given back below if their lease is
            // taken out as stale, so that its retry may use them.
            let spent = spent_before(&mut tx.conn(), items).await?;
            // Signed before the writer-order row too: on Postgres a slow
            // signer holds up no revocation (SQLite's one writer waits).
            let mut tokens = seal_all(items, &seqs, &spent).await;
            // Under the writer-order row (shared here, exclusive for every
            // catalog change), the sequence read here is exact: if a
            // decision's is still current, nothing in the catalog changed
            // since; otherwise its tenant's version says.
            let global = tx.conn().share_writer_order().await?;
            let mut tenants: Vec<&str> = items
                .iter()
                .filter(|p| p.check.is_some_and(|s| s.global != global))
                .map(|p| p.lease.tenant_id.as_str())
                .collect();
            tenants.sort_unstable();
            tenants.dedup();
            let current = tx.conn().catalog_versions_of(&tenants).await?;
            let holds = |p: &Pending| {
                p.check.is_none_or(|s| {
                    s.global == global || current.get(&p.lease.tenant_id).copied().unwrap_or(0) == s.tenant
                })
            };
            let holding: Vec<bool> = items.iter().map(holds).collect();
            let unsigned: Vec<Option<String>> = tokens
                .iter()
                .map(|t| match t {
                    Some(Err(why)) => Some(why.clone()),
                    _ => None,
                })
                .collect();
            let unspend: Vec<(&str, &str)> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| (!holding[*i] || unsigned[*i].is_some()) && !spent.contains(i))
                .filter_map(|(_, p)| p.spend.as_ref().map(|s| (s.key.as_str(), s.jti.as_str())))
                .collect();
            tx.conn().forget_assertions(&unspend).await?;
            let outcome = |i: usize| match (holding[i], spent.contains(&i), &unsigned[i]) {
                (false, _, _) => Err(StoreError::Stale),
                (true, true, _) => Err(StoreError::Spent),
                (true, false, Some(why)) => Err(StoreError::Withdrawn(why.clone())),
                (true, false, None) => Ok(()),
            };
            let out: Vec<uuid::Uuid> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| outcome(*i).is_err())
                .map(|(_, p)| p.lease.id)
                .collect();
            tx.conn().delete_uncommitted_leases(&out).await?;
            let events: Vec<AuditEvent> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| outcome(*i).is_ok())
                .map(|(_, p)| p.event.clone())
                .collect();
            tx.conn().append_audit(&events).await?;
            let answers: Vec<Answer> = seqs
                .into_iter()
                .enumerate()
                .map(|(i, seq)| {
                    let token = tokens[i].take().and_then(Result::ok);
                    outcome(i).map(|()| Committed { seq, token }).map_err(Arc::new)
                })
                .collect();
            Ok::<_, StoreError>((tx, answers))
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the database did not answer in time".into())));
        match staged {
            Ok((tx, answers)) => {
                // A commit that does not finish has an unknown outcome: answered 503, no token, never retried.
                return match tokio::time::timeout(STEP_TIMEOUT, tx.commit()).await {
                    Ok(committed) => committed.map(|()| answers),
                    Err(_) => Err(StoreError::Unavailable("the commit did not finish in time".into())),
                };
            }
            Err(e) if e.is_unavailable() && !retried => {
                tracing::warn!(error = %e, "lease batch failed before commit; retrying once");
                retried = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Answers for a whole batch: if it failed for a reason of its own (not the
/// database going away), each lease is tried alone so only the bad ones fail.
async fn record_batch(store: &Store, items: &[Pending]) -> Vec<Answer> {
    match record(store, items).await {
        Ok(answers) => answers,
        Err(e) if items.len() > 1 && !e.is_unavailable() => {
            tracing::warn!(error = %e, size = items.len(), "lease batch failed; committing its leases one by one");
            let mut answers = Vec::with_capacity(items.len());
            for item in items {
                answers.push(match record(store, std::slice::from_ref(item)).await {
                    Ok(mut one) => one.pop().unwrap_or_else(|| Err(Arc::new(StoreError::Stale))),
                    Err(e) => Err(Arc::new(e)),
                });
            }
            answers
        }
        Err(e) => {
            let e = Arc::new(e);
            items.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

#[derive(Debug, Clone)]
pub struct IssueWriter {
    gather: Gather<Pending, Answer>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("lease", &self.lease.id).finish()
    }
}

impl IssueWriter {
    /// Starts the writer task; it ends when the last `IssueWriter` is dropped.
    /// While both slots are busy, more mints gather for the next batch.
    pub fn spawn(store: Store) -> Self {
        let gather = Gather::spawn(MAX_BATCH, IN_FLIGHT, move |items: Vec<Pending>| {
            let store = store.clone();
            async move {
                let answers = record_batch(&store, &items).await;
                metrics::histogram!("mayfly_mint_batch_size").record(items.len() as f64);
                answers
            }
        });
        Self { gather }
    }

    /// Commits one lease with its audit event if the tenant's catalog
    /// version is still `check` (when given); returns, once it is durable,
    /// the lease's sequence number and the token `seal` signed for it.
    /// `spend` is spent with it, or the lease is not committed (`Spent`);
    /// a token that cannot be signed leaves no lease either (`Withdrawn`).
    pub async fn commit(
        &self,
        lease: Lease,
        event: AuditEvent,
        check: Option<Stamp>,
        spend: Option<Spend>,
        seal: Option<Seal>,
    ) -> Result<Committed, StoreError> {
        let gone = || StoreError::Unavailable("the lease writer has stopped".into());
        let pending = Pending {
            lease,
            event,
            check,
            spend,
            seal,
        };
        // Shared by the whole batch: each request keeps the batch error's class.
        self.gather
            .ask(pending)
            .await
            .ok_or_else(gone)?
            .map_err(StoreError::unshare)
    }

    /// False once the writer task has stopped (it would only on a panic).
    pub fn is_running(&self) -> bool {
        self.gather.is_running()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::audit::{Outcome, actions};
    use crate::testing::temp_store;

    fn lease(id: Uuid) -> Lease {
        let at = crate::clock::truncate_micros(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000));
        Lease {
            id,
            ..crate::testing::lease("acme", "release", at)
        }
    }

    fn event(at: chrono::DateTime<Utc>) -> AuditEvent {
        AuditEvent::new(actions::TOKEN_ISSUED, Outcome::Success, at)
    }

    /// Three leases reach the writer together; one reuses an id already
    /// committed. Only that request fails; the other two commit, with their
    /// audit events, in the batch's order.
    #[tokio::test]
    async fn one_bad_lease_fails_only_its_own_request() {
        let (store, _dir) = temp_store().await;
        let writer = IssueWriter::spawn(store.clone());
        let taken = Uuid::now_v7();
        let at = lease(taken).issued_at;
        writer.commit(lease(taken), event(at), None, None, None).await.unwrap();

        let (a, bad, b) = tokio::join!(
            writer.commit(lease(Uuid::now_v7()), event(at), None, None, None),
            writer.commit(lease(taken), event(at), None, None, None),
            writer.commit(lease(Uuid::now_v7()), event(at), None, None, None),
        );
        assert!(matches!(bad, Err(StoreError::Conflict(_))), "{bad:?}");
        let (a, b) = (a.unwrap().seq, b.unwrap().seq);
        assert!(a > 1 && b > 1 && a != b);
        let mut c = store.read().await.unwrap();
        let count = c.conn().audit_chain_page(0, 100).await.unwrap().len();
        assert_eq!(count, 3, "one event per committed lease");
        assert_eq!(c.conn().last_lease_seq().await.unwrap(), a.max(b));
    }

    /// A proof's jti spent with its lease: spent before, or twice in one
    /// batch, only the first use commits; the others leave no lease and no
    /// event behind.
    #[tokio::test]
    async fn a_value_spent_before_or_twice_in_a_batch_commits_only_its_first_lease() {
        let (store, _dir) = temp_store().await;
        let writer = IssueWriter::spawn(store.clone());
        let at = lease(Uuid::now_v7()).issued_at;
        let spend = |jti: &str| {
            Some(Spend {
                key: "dpop:k".into(),
                jti: jti.into(),
                until: at + chrono::Duration::minutes(2),
            })
        };
        writer
            .commit(lease(Uuid::now_v7()), event(at), None, spend("old"), None)
            .await
            .unwrap();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let (again, first, twice, other, again_too) = tokio::join!(
            writer.commit(lease(ids[0]), event(at), None, spend("old"), None),
            writer.commit(lease(ids[1]), event(at), None, spend("new"), None),
            writer.commit(lease(ids[2]), event(at), None, spend("new"), None),
            writer.commit(lease(ids[3]), event(at), None, spend("other"), None),
            writer.commit(lease(ids[4]), event(at), None, spend("old"), None),
        );
        // A value spent before stays spent however many copies share a batch.
        assert!(matches!(again, Err(StoreError::Spent)), "{again:?}");
        assert!(matches!(again_too, Err(StoreError::Spent)), "{again_too:?}");
        assert_eq!(
            [&first, &twice].iter().filter(|r| r.is_ok()).count(),
            1,
            "{first:?} {twice:?}"
        );
        assert!([&first, &twice].iter().any(|r| matches!(r, Err(StoreError::Spent))));
        other.unwrap();
        let mut c = store.read().await.unwrap();
        let count = c.conn().audit_chain_page(0, 100).await.unwrap().len();
        assert_eq!(count, 3, "one event per committed lease");
        let committed = [false, first.is_ok(), twice.is_ok(), true, false];
        for (id, ok) in ids.iter().zip(committed) {
            let found = c.conn().lease_status(*id, None).await;
            assert_eq!(found.is_ok(), ok, "lease {id}: {found:?}");
        }
        drop(c);
        // A lease taken out as stale gives its value back: its retry may use it.
        let moved = Some(crate::tenants::catalog::Stamp {
            tenant: 999_999,
            global: 999_999,
        });
        let stale = writer
            .commit(lease(Uuid::now_v7()), event(at), moved, spend("retried"), None)
            .await;
        assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
        writer
            .commit(lease(Uuid::now_v7()), event(at), None, spend("retried"), None)
            .await
            .unwrap();
    }

    /// A token that cannot be signed takes its lease out again: no lease, no
    /// event, its proof given back; the other leases of the batch commit
    /// with their tokens, each signed with its own sequence number.
    #[tokio::test]
    async fn a_lease_whose_token_cannot_be_signed_is_not_committed() {
        let (store, _dir) = temp_store().await;
        let writer = IssueWriter::spawn(store.clone());
        let at = lease(Uuid::now_v7()).issued_at;
        let seal = |ok: bool| -> Option<Seal> {
            Some(Arc::new(move |seq| {
                Box::pin(async move {
                    match ok {
                        true => Ok(format!("token-{seq}")),
                        false => Err(crate::jose::SignError {
                            kid: "k".into(),
                            why: "the HSM is away".into(),
                        }),
                    }
                })
            }))
        };
        let spend = Some(Spend {
            key: "dpop:k".into(),
            jti: "proof".into(),
            until: at + chrono::Duration::minutes(2),
        });
        let (good, bad) = (Uuid::now_v7(), Uuid::now_v7());
        let (signed, unsigned) = tokio::join!(
            writer.commit(lease(good), event(at), None, None, seal(true)),
            writer.commit(lease(bad), event(at), None, spend.clone(), seal(false)),
        );
        let signed = signed.unwrap();
        assert_eq!(signed.token, Some(format!("token-{}", signed.seq)));
        assert!(
            matches!(&unsigned, Err(StoreError::Withdrawn(why)) if why.contains("HSM")),
            "{unsigned:?}"
        );
        let mut c = store.read().await.unwrap();
        assert!(c.conn().lease_status(good, None).await.is_ok());
        assert!(
            c.conn().lease_status(bad, None).await.is_err(),
            "no lease without its token"
        );
        assert_eq!(
            c.conn().audit_chain_page(0, 100).await.unwrap().len(),
            1,
            "no event either"
        );
        drop(c);
        // The proof was given back: a retry that can be signed may use it.
        writer
            .commit(lease(Uuid::now_v7()), event(at), None, spend, seal(true))
            .await
            .unwrap();
    }
}
