//! Creating revocation rules, in one place: the rule, its audit event, its
//! prune time and the sweeper's wake-up. Every path that ends tokens (an
//! admin's revocation, a holder's RFC 7009 call, deleting a client or a
//! tenant, revoking a key) goes through `record`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::rules_sql::NewRevocation;
use super::{Revocation, Selector};
use crate::audit::{Caller, Origin, actions};
use crate::clock::Clock;
use crate::error::Error;
use crate::storage::{Store, StoreError, Tx};

/// Which leases a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Those numbered so far: tokens minted after the rule are untouched.
    UpToNow,
    /// Every lease, whenever numbered: for deleted clients and tenants and
    /// revoked keys, which can have no legitimate later token (one minted
    /// concurrently with the deletion must not survive it).
    Forever,
}

/// `issued_before` of rules that cover every token, whenever issued.
fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC) // 9999-12-31T23:59:59Z
}

#[derive(Clone)]
pub struct Revocations {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Wakes the sweeper once a rule has committed.
    sweeper: Arc<Notify>,
    /// Wakes this replica's long polls of the revocation feed (those of
    /// other replicas find the rule on their next look).
    feed: Arc<Notify>,
    /// Set at shutdown: long polls answer at once, so draining takes no 25 s.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// How long a rule must outlive its creation: every token it can match
    /// has expired by then.
    keep_for: TimeDelta,
}

impl Revocations {
    /// `max_ttl` is the ceiling on token lifetimes and `lead` the key publish
    /// lead (how long a replica may lag behind a key change).
    pub fn new(store: Store, clock: Arc<dyn Clock>, sweeper: Arc<Notify>, max_ttl: Duration, lead: Duration) -> Self {
        let d = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        Self {
            store,
            clock,
            sweeper,
            feed: Arc::new(Notify::new()),
            draining: Arc::default(),
            // Twice the ceiling: a token may have been minted by a replica whose
            // clock lags, under a ceiling that was higher before a restart.
            keep_for: d(max_ttl) * 2 + d(lead),
        }
    }

    /// Records a rule inside `tx` with its `revocation.created` event. Once
    /// the caller commits, the sweeper and the feed's long polls are woken.
    pub async fn record(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        tenant: Option<&str>,
        selector: &Selector,
        reason: &str,
        cover: Cover,
    ) -> Result<Revocation, StoreError> {
        let mut conn = tx.conn();
        // Under the writer-order row (exclusive: lease batches hold it
        // shared until they commit), rules are numbered in commit order and
        // the cutoff sees every lease committed before.
        conn.lock_chain().await?;
        let now = self.clock.now();
        let (cutoff_seq, issued_before) = match cover {
            Cover::UpToNow => (conn.last_lease_seq().await?, now),
            // Offline verifiers compare `iat` with `issued_before`: a rule for
            // every token, present and future, must say so to them too.
            Cover::Forever => (i64::MAX, far_future()),
        };
        let rule = conn
            .insert_revocation(&NewRevocation {
                id: Uuid::now_v7(),
                tenant_id: tenant,
                selector,
                reason,
                created_by: Some(caller.identity.clone()),
                now,
                prune_after: now + self.keep_for,
                cutoff_seq,
                issued_before,
            })
            .await?;
        // People's sessions the rule reaches end with it, for good: a
        // session outlives the rule (which is pruned once its tokens expire).
        let ended = conn.end_sessions_matching(tenant, selector, now, reason).await?;
        // A rule on a session's first lease reaches its later tokens only
        // through the chain, which offline verifiers cannot see: each live
        // one gets a rule of its own.
        if let Selector::Lease(first) = selector {
            for root in ended.into_iter().flatten() {
                for lease in conn.session_leases(root, now).await? {
                    if lease == *first {
                        continue;
                    }
                    conn.insert_revocation(&NewRevocation {
                        id: Uuid::now_v7(),
                        tenant_id: tenant,
                        selector: &Selector::Lease(lease),
                        reason,
                        created_by: Some(caller.identity.clone()),
                        now,
                        prune_after: now + self.keep_for,
                        cutoff_seq: i64::MAX,
                        issued_before: far_future(),
                    })
                    .await?;
                }
            }
        }
        let mut event = caller.event(actions::REVOCATION_CREATED, now);
        event.tenant = tenant.map(str::to_string);
        event.reason = Some(format!("{reason} (revocation {})", rule.id));
        match selector {
            Selector::Tenant | Selector::Key(_) => {}
            Selector::Workflow(w) => event.workflow = Some(w.clone()),
            Selector::Workload(w) => event.workload = Some(w.clone()),
            Selector::Client(c) => event.client_id = Some(c.clone()),
            Selector::Lease(l) => event.lease_id = Some(*l),
        }
        conn.append_audit(&[event]).await?;
        let (sweeper, feed) = (self.sweeper.clone(), self.feed.clone());
        tx.after_commit(move || {
            sweeper.notify_one();
            feed.notify_waiters();
        });
        Ok(rule)
    }

    /// What `wake` signals to the feed's long polls.
    pub fn feed_signal(&self) -> Arc<Notify> {
        self.feed.clone()
    }

    /// Shutdown has begun: long polls held now, and any made later, answer at once.
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        self.feed.notify_waiters();
    }

    pub fn draining(&self) -> &std::sync::atomic::AtomicBool {
        &self.draining
    }

    /// An admin's revocation in `tenant`: a lease selector must name one of
    /// the tenant's leases. In force on every replica when this returns.
    pub async fn revoke(
        &self,
        caller: &Caller,
        tenant: &str,
        selector: &Selector,
        reason: &str,
    ) -> Result<Revocation, Error> {
        let mut tx = self.store.begin().await?;
        if let Selector::Lease(id) = selector {
            tx.conn()
                .get_lease(tenant, *id)
                .await
                .map_err(Error::or_not_found("lease"))?;
        }
        // A lease rule also reaches tokens derived from the lease later: an
        // exchange that checked its subject just before this commit.
        let cover = match selector {
            Selector::Lease(_) => Cover::Forever,
            _ => Cover::UpToNow,
        };
        let rule = self
            .record(&mut tx, caller, Some(tenant), selector, reason, cover)
            .await?;
        tx.commit().await?;
        Ok(rule)
    }
}

impl Revocations {
    /// RFC 7009: a client revokes a token it holds, by its lease id. A lease
    /// that is not the client's, or already revoked, is left alone (the
    /// caller answers the same either way).
    pub async fn revoke_held(
        &self,
        tenant: &str,
        client_id: &str,
        lease_id: Uuid,
        origin: &Origin,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        let lease = match tx.conn().get_lease(tenant, lease_id).await {
            Ok(l) if l.revoked_at.is_none() && l.client_id == client_id => l,
            Ok(_) | Err(StoreError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let caller = Caller {
            identity: serde_json::json!({"client_id": client_id}),
            act: None,
            origin: origin.clone(),
        };
        let selector = Selector::Lease(lease_id);
        let reason = "revoked by its holder (RFC 7009)";
        let rule = self
            .record(&mut tx, &caller, Some(tenant), &selector, reason, Cover::Forever)
            .await?;
        let mut event = caller.event(actions::TOKEN_REVOKED, self.clock.now());
        event.tenant = Some(lease.tenant_id);
        event.workflow = Some(lease.workflow);
        event.workload = Some(lease.workload);
        event.client_id = Some(lease.client_id);
        event.resource = Some(lease.resource);
        event.lease_id = Some(lease.id);
        event.reason = Some(format!("revocation {}", rule.id));
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{lease, temp_store};

    #[tokio::test]
    async fn a_rule_covers_leases_numbered_before_it_and_is_audited_with_one_prune_time() {
        let (store, _dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let wake = Arc::new(Notify::new());
        let revocations = Revocations::new(
            store.clone(),
            clock.clone(),
            wake.clone(),
            Duration::from_secs(600),
            Duration::from_secs(60),
        );
        let before = lease("acme", "release", clock.now());
        let mut tx = store.begin().await.unwrap();
        tx.conn().insert_leases(std::slice::from_ref(&before)).await.unwrap();
        tx.commit().await.unwrap();

        let selector = Selector::Workflow("release".into());
        let rule = revocations
            .revoke(&Caller::system("test"), "acme", &selector, "leaked")
            .await
            .unwrap();
        assert_eq!(rule.selector, selector);
        assert_eq!(rule.issued_before, clock.now());
        // Woken: the sweeper would mark the row now.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .unwrap();

        let after = lease("acme", "release", clock.now());
        let mut tx = store.begin().await.unwrap();
        tx.conn().insert_leases(std::slice::from_ref(&after)).await.unwrap();
        tx.commit().await.unwrap();
        let mut c = store.read().await.unwrap();
        assert_eq!(
            c.conn().lease_status(before.id, None).await.unwrap().revoked_by,
            Some(rule.id)
        );
        assert_eq!(c.conn().lease_status(after.id, None).await.unwrap().revoked_by, None);

        let events = c
            .conn()
            .list_audit("acme", &Default::default(), i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(events[0].event.action, actions::REVOCATION_CREATED);
        assert_eq!(events[0].event.workflow.as_deref(), Some("release"));

        // Pruned only once every token it could match has expired: 2 × 600 + 60 s.
        assert_eq!(c.conn().prune_revocations(clock.now()).await.unwrap(), 0);
        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            tx.conn()
                .mark_revoked_batch(&rule, clock.now(), 100, 0)
                .await
                .unwrap()
                .0,
            1
        );
        assert!(tx.conn().finish_revocation_if_marked(&rule, clock.now()).await.unwrap());
        tx.commit().await.unwrap();
        let later = clock.now() + TimeDelta::seconds(1261);
        assert_eq!(c.conn().prune_revocations(later).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_lease_rule_for_another_tenants_lease_is_not_found_and_records_nothing() {
        let (store, _dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let revocations = Revocations::new(
            store.clone(),
            clock.clone(),
            Arc::new(Notify::new()),
            Duration::from_secs(600),
            Duration::from_secs(60),
        );
        let theirs = lease("other", "release", clock.now());
        let mut tx = store.begin().await.unwrap();
        tx.conn().insert_leases(std::slice::from_ref(&theirs)).await.unwrap();
        tx.commit().await.unwrap();
        let err = revocations
            .revoke(&Caller::system("test"), "acme", &Selector::Lease(theirs.id), "x")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound("lease")));
        let mut c = store.read().await.unwrap();
        assert!(c.conn().revocation_feed(None, 0, 10).await.unwrap().is_empty());
    }
}
