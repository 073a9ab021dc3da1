//! Helpers for the unit tests of domain services: a migrated SQLite store in
//! a temporary directory, and ready-made rows.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::clock::{Clock, ManualClock, SystemClock};
use crate::leases::Lease;
use crate::storage::Store;

/// Removes the directory when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn temp_store() -> (Store, TempDir) {
    let dir = std::env::temp_dir().join(format!("mayfly-unit-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::connect(&format!("sqlite://{}/mayfly.db", dir.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, TempDir(dir))
}

/// A ten-minute lease of `tenant` for `workflow`, issued at `now`.
pub fn lease(tenant: &str, workflow: &str, now: DateTime<Utc>) -> Lease {
    Lease {
        seq: 0,
        id: Uuid::now_v7(),
        tenant_id: tenant.into(),
        workflow: workflow.into(),
        workload: "w".into(),
        client_id: format!("{tenant}-ci"),
        actor: None,
        resource: "https://mcp.test/x".into(),
        scopes: vec!["read".into()],
        kid: "k1".into(),
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

/// A manual clock starting at the wall-clock time.
pub fn test_clock() -> std::sync::Arc<ManualClock> {
    std::sync::Arc::new(ManualClock::new(SystemClock.now()))
}

/// A key service with one active ES256 key: rotation hourly, published ten
/// minutes ahead, tokens of at most `max_ttl` seconds.
pub async fn key_service(store: &Store, clock: std::sync::Arc<ManualClock>, max_ttl: u64) -> crate::keys::KeyService {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::keys::{Alg, KeyService, MasterKey, MasterKeys, Schedule, Vault};
    use crate::leases::Revocations;

    let schedule = Schedule {
        period: Duration::from_secs(3600),
        lead: Duration::from_secs(600),
        max_ttl: Duration::from_secs(max_ttl),
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let revocations = Revocations::new(store.clone(), clock.clone(), wake, schedule.max_ttl, schedule.lead);
    let masters = Arc::new(MasterKeys {
        current: MasterKey::from_bytes(&[7u8; 32]).unwrap(),
        previous: None,
    });
    let vault = Arc::new(Vault::local(masters));
    let keys = KeyService::new(store.clone(), vault, Alg::Es256, schedule, clock, revocations);
    keys.ensure_signing_key().await.unwrap();
    keys
}
