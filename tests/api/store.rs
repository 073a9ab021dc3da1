//! The store's conformance suite: the same behaviours checked on SQLite and
//! on Postgres, straight through `Store`, without a server. Tenant isolation
//! lives inside the queries, so it is checked here too.

use chrono::TimeDelta;
use mayfly::leases::Lease;
use mayfly::storage::{Store, StoreError};
use mayfly::tenants::{Client, ClientKind, Resource, Tenant};
use uuid::Uuid;

use crate::harness::{Backend, Database};
use crate::on_both_backends;

on_both_backends!(
    reads_are_scoped_to_the_tenant_inside_the_query,
    unique_identifiers_are_conflicts_and_missing_rows_are_not_found,
    key_states_move_only_along_the_lifecycle,
    whatever_revokes_an_ancestor_lease_revokes_its_descendants_minted_after_the_rule,
);

async fn store(b: Backend) -> (Store, Database) {
    let db = Database::fresh(b).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    (store, db)
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: id.into(),
        created_at: mayfly::clock::Clock::now(&mayfly::clock::SystemClock),
        max_live_leases: None,
        max_mints_per_second: None,
    }
}

fn resource(tenant: &str, uri: &str) -> Resource {
    let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
    Resource {
        id: Uuid::now_v7(),
        tenant_id: tenant.into(),
        uri: uri.into(),
        canonical_uri: uri.into(),
        name: uri.into(),
        scopes: vec!["read".into()],
        default_ttl_seconds: 60,
        max_ttl_seconds: 600,
        created_at: now,
        updated_at: now,
        tools: None,
    }
}

fn client(tenant: &str, id: &str) -> Client {
    let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
    Client {
        workflows: vec!["release".into()],
        max_ttl_seconds: 600,
        ..Client::new(tenant, id, ClientKind::Ci, now)
    }
}

fn lease(tenant: &str) -> Lease {
    let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
    Lease {
        seq: 0,
        id: Uuid::now_v7(),
        tenant_id: tenant.into(),
        workflow: "release".into(),
        workload: "w".into(),
        client_id: format!("{tenant}-ci"),
        actor: None,
        resource: format!("https://mcp.{tenant}.test"),
        scopes: vec!["read".into()],
        kid: "k".into(),
        issued_at: now,
        expires_at: now + TimeDelta::minutes(10),
        revoked_at: None,
        revocation_id: None,
        source: None,
        request_id: None,
        federated: None,
        policy_id: None,
        parent_id: None,
        jkt: None,
        links: Default::default(),
    }
}

async fn reads_are_scoped_to_the_tenant_inside_the_query(b: Backend) {
    let (store, _db) = store(b).await;
    let (a_res, b_res) = (resource("a", "https://mcp.a.test"), resource("b", "https://mcp.b.test"));
    let b_lease = lease("b");
    let mut tx = store.begin().await.unwrap();
    let mut c = tx.conn();
    for t in ["a", "b"] {
        c.insert_tenant(&tenant(t)).await.unwrap();
        c.insert_client(&client(t, &format!("{t}-ci"))).await.unwrap();
    }
    c.insert_resource(&a_res).await.unwrap();
    c.insert_resource(&b_res).await.unwrap();
    c.insert_leases(&[lease("a"), b_lease.clone()]).await.unwrap();
    tx.commit().await.unwrap();

    let mut pooled = store.read().await.unwrap();
    let mut c = pooled.conn();
    assert!(matches!(c.get_client("a", "b-ci").await, Err(StoreError::NotFound)));
    assert_eq!(c.get_client("b", "b-ci").await.unwrap().tenant_id, "b");
    assert!(matches!(c.get_resource("a", b_res.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        c.find_resource_by_uri("a", "https://mcp.b.test").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(c.get_lease("a", b_lease.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        c.lease_status(b_lease.id, Some("a")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        c.lease_status(b_lease.id, Some("b")).await.unwrap().lease.id,
        b_lease.id
    );
    let clients = c.list_clients("a", "", 100).await.unwrap();
    assert_eq!(
        clients.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(),
        ["a-ci"]
    );
    let resources = c.list_resources("a", "", 100).await.unwrap();
    assert_eq!(resources.len(), 1);
    let leases = c
        .list_leases(
            "a",
            &Default::default(),
            mayfly::clock::Clock::now(&mayfly::clock::SystemClock),
            i64::MAX,
            100,
        )
        .await
        .unwrap();
    assert!(leases.iter().all(|l| l.lease.tenant_id == "a") && leases.len() == 1);
}

async fn unique_identifiers_are_conflicts_and_missing_rows_are_not_found(b: Backend) {
    let (store, _db) = store(b).await;
    let mut tx = store.begin().await.unwrap();
    tx.conn().insert_tenant(&tenant("a")).await.unwrap();
    tx.conn().insert_tenant(&tenant("b")).await.unwrap();
    tx.conn()
        .insert_resource(&resource("a", "https://mcp.x.test"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.conn().insert_tenant(&tenant("a")).await,
        Err(StoreError::Conflict(_))
    ));
    drop(tx);
    // A resource URI belongs to one tenant.
    let mut tx = store.begin().await.unwrap();
    let taken = tx.conn().insert_resource(&resource("b", "https://mcp.x.test")).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))));
    drop(tx);
    let mut pooled = store.read().await.unwrap();
    assert!(matches!(
        pooled.conn().get_tenant("nope").await,
        Err(StoreError::NotFound)
    ));
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.conn()
            .delete_client("a", "nobody", mayfly::clock::Clock::now(&mayfly::clock::SystemClock))
            .await,
        Err(StoreError::NotFound)
    ));
}

/// The stored key `kid`, as listed.
async fn key(c: &mut mayfly::storage::Conn<'_>, kid: &str) -> mayfly::keys::StoredKey {
    let keys = c.list_keys().await.unwrap();
    keys.into_iter().find(|k| k.kid == kid).unwrap()
}

async fn key_states_move_only_along_the_lifecycle(b: Backend) {
    use mayfly::keys::sql::NewKey;
    use mayfly::keys::{Alg, Custody, KeyState};

    let (store, _db) = store(b).await;
    let jwk = serde_json::json!({"kty": "EC"});
    let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
    let mut tx = store.begin().await.unwrap();
    let mut c = tx.conn();
    c.insert_key(&NewKey {
        kid: "k1",
        alg: Alg::Es256,
        state: KeyState::Next,
        public_jwk: &jwk,
        sealed_private: Some(b"sealed"),
        master_key_id: "m",
        custody: Custody::Local,
        now,
        activates_at: Some(now),
    })
    .await
    .unwrap();
    // A key held in transit: nothing private here.
    c.insert_key(&NewKey {
        kid: "k2",
        alg: Alg::Es256,
        state: KeyState::Next,
        public_jwk: &jwk,
        sealed_private: None,
        master_key_id: "m",
        custody: Custody::Transit,
        now,
        activates_at: Some(now),
    })
    .await
    .unwrap();
    // Only a retired key can be removed, only a next key activated.
    assert!(matches!(c.remove_key("k1", now).await, Err(StoreError::NotFound)));
    assert!(matches!(c.retire_key("k1", now).await, Err(StoreError::NotFound)));
    c.activate_key("k1", now).await.unwrap();
    assert!(matches!(c.activate_key("k1", now).await, Err(StoreError::NotFound)));
    c.retire_key("k1", now).await.unwrap();
    let keys = c.list_keys().await.unwrap();
    assert_eq!(keys[0].state, KeyState::Retired);
    assert!(
        keys[0].sealed_private.is_some(),
        "retiring keeps the private half until removal"
    );
    c.remove_key("k1", now).await.unwrap();
    let keys = c.list_keys().await.unwrap();
    assert_eq!(
        (
            keys[0].state,
            keys[0].sealed_private.is_none(),
            keys[0].destroyed_at.is_some()
        ),
        (KeyState::Removed, true, true),
        "a local key is destroyed with its row's update"
    );
    assert!(matches!(c.revoke_key("k1", now).await, Err(StoreError::NotFound)));
    assert!(matches!(c.mark_destroyed("k1", now).await, Err(StoreError::NotFound)));

    // A transit key's revocation waits for transit to confirm the destruction, once.
    assert!(
        matches!(c.mark_destroyed("k2", now).await, Err(StoreError::NotFound)),
        "still published"
    );
    c.revoke_key("k2", now).await.unwrap();
    let k2 = key(&mut c, "k2").await;
    assert_eq!(
        (k2.state, k2.custody, k2.destroyed_at),
        (KeyState::Revoked, Custody::Transit, None)
    );
    c.mark_destroyed("k2", now).await.unwrap();
    assert!(matches!(c.mark_destroyed("k2", now).await, Err(StoreError::NotFound)));
    let k2 = key(&mut c, "k2").await;
    assert!(k2.destroyed_at.is_some());
    tx.commit().await.unwrap();
}

/// A rule that covers leases up to now (a client's, a workflow's) reaches a
/// token exchanged from a lease it covers even when that token was numbered
/// after the rule (an exchange in flight while the rule was written), and
/// reaches through every ancestor: the subject's lease and the actor
/// token's, whatever their client or workflow.
async fn whatever_revokes_an_ancestor_lease_revokes_its_descendants_minted_after_the_rule(b: Backend) {
    use mayfly::leases::rules_sql::NewRevocation;
    use mayfly::leases::{Links, Selector};
    let (store, _db) = store(b).await;
    let now = mayfly::clock::Clock::now(&mayfly::clock::SystemClock);
    let person = Lease {
        client_id: "acme-person".into(),
        ..lease("acme")
    };
    let actor_token = Lease {
        client_id: "acme-agent".into(),
        workflow: "agent-work".into(),
        ..lease("acme")
    };
    let mut tx = store.begin().await.unwrap();
    tx.conn().insert_tenant(&tenant("acme")).await.unwrap();
    let seqs = tx
        .conn()
        .insert_leases(&[person.clone(), actor_token.clone()])
        .await
        .unwrap();
    fn rule(selector: &Selector, cutoff_seq: i64, now: chrono::DateTime<chrono::Utc>) -> NewRevocation<'_> {
        NewRevocation {
            id: Uuid::now_v7(),
            tenant_id: Some("acme"),
            selector,
            reason: "test",
            created_by: None,
            now,
            prune_after: now + TimeDelta::hours(1),
            cutoff_seq,
            issued_before: now,
        }
    }
    // Rules up to the two leases just numbered, as `Cover::UpToNow` writes them.
    let on_person = Selector::Client("acme-person".into());
    let on_workflow = Selector::Workflow("agent-work".into());
    let r1 = tx
        .conn()
        .insert_revocation(&rule(&on_person, seqs[0], now))
        .await
        .unwrap();
    let r2 = tx
        .conn()
        .insert_revocation(&rule(&on_workflow, seqs[1], now))
        .await
        .unwrap();
    // Exchanged afterwards: numbered past both cutoffs.
    // Exchanged leases carry their actor chain (only they descend from others).
    let act = Some(serde_json::json!({"sub": "agent", "client_id": "acme-agent"}));
    let exchanged = |client: &str, from: uuid::Uuid| Lease {
        client_id: client.into(),
        actor: act.clone(),
        links: Links {
            ancestors: vec![from],
            ..Links::default()
        },
        ..lease("acme")
    };
    let from_person = exchanged("acme-agent", person.id);
    let with_actor_token = exchanged("acme-sub", actor_token.id);
    let unrelated = lease("acme");
    tx.conn()
        .insert_leases(&[from_person.clone(), with_actor_token.clone(), unrelated.clone()])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut pooled = store.read().await.unwrap();
    let mut c = pooled.conn();
    let revoked_by = |s: mayfly::leases::sql::LeaseStatus| s.revoked_by;
    assert_eq!(
        revoked_by(c.lease_status(from_person.id, Some("acme")).await.unwrap()),
        Some(r1.id)
    );
    assert_eq!(
        revoked_by(c.lease_status(with_actor_token.id, Some("acme")).await.unwrap()),
        Some(r2.id),
        "a workflow rule on the actor token reaches what was exchanged with it"
    );
    assert_eq!(
        revoked_by(c.lease_status(unrelated.id, Some("acme")).await.unwrap()),
        None
    );
}
