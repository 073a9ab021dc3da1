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
    }
}

/// A manual clock starting at the wall-clock time.
pub fn test_clock() -> std::sync::Arc<ManualClock> {
    std::sync::Arc::new(ManualClock::new(SystemClock.now()))
}
