//! What an operator runs and alerts on (issue 26, findings 9 and 11): the
//! store's flags after the commands that work on a store, and metrics that
//! exist from the start: live leases per tenant, the active key's age, and
//! counters at zero before their first event.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Backend, MASTER_KEY, TestApp, fixture};
use crate::on_both_backends;

on_both_backends!(the_store_flags_work_after_migrate_audit_and_keys);

/// `mayfly audit verify --database-url … --master-key-file …`: the flags
/// after the subcommand win over the environment (which here names a store
/// that does not exist).
async fn the_store_flags_work_after_migrate_audit_and_keys(b: Backend) {
    let app = TestApp::on(b).start().await;
    fixture(&app, "acme").await;
    let url = app.db.url.clone();
    let dir = std::env::temp_dir().join(format!("mayfly-ops-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("master.key");
    std::fs::write(&key_file, MASTER_KEY).unwrap();
    let nowhere = format!("sqlite://{}/nothing/mayfly.db", dir.display());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args(args)
            .env("MAYFLY_DATABASE_URL", &nowhere)
            .env_remove("MAYFLY_MASTER_KEY")
            .env_remove("MAYFLY_MASTER_KEY_FILE")
            .env_remove("MAYFLY_ISSUER")
            .output()
            .unwrap()
    };
    let key = key_file.to_str().unwrap();
    let out =
        tokio::task::block_in_place(|| run(&["audit", "verify", "--database-url", &url, "--master-key-file", key]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["checked"].as_i64().unwrap() > 0, "{report}");
    let out = tokio::task::block_in_place(|| run(&["migrate", "--database-url", &url]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the flag, the environment's (missing) store is refused as before.
    let out = tokio::task::block_in_place(|| run(&["audit", "verify", "--master-key-file", key]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));
    assert!(
        !dir.join("nothing").exists(),
        "nothing was created where the environment pointed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn metrics(app: &TestApp) -> String {
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

/// A restarted replica counts live leases per tenant at once, publishes the
/// active key's age, and shows its counters before their first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_leases_per_tenant_key_age_and_zeroed_counters_are_exported() {
    let app = TestApp::on(Backend::Sqlite).start().await;
    let f = fixture(&app, "livecount").await;
    for _ in 0..3 {
        app.mint_at(&f.ci, &f.resource, &[]).await;
    }
    let db = app.stop().await;
    let app = TestApp::on_db(db).start().await;
    let text = metrics(&app).await;
    for counter in [
        "mayfly_tokens_issued_total",
        "mayfly_signing_failures_total",
        "mayfly_client_auth_failures_total",
        "mayfly_leases_marked_revoked_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(counter)),
            "{counter} is absent:\n{text}"
        );
    }
    let age = text
        .lines()
        .find_map(|l| l.strip_prefix("mayfly_signing_key_age_seconds "))
        .unwrap_or_else(|| panic!("no key age:\n{text}"));
    assert!(age.parse::<f64>().unwrap() >= 0.0);
    // Counted when the sweeper starts; polled, as it runs beside the server.
    let mut live = None;
    for _ in 0..50 {
        live = metrics(&app).await.lines().find_map(|l| {
            l.strip_prefix("mayfly_live_leases{tenant=\"livecount\"} ")
                .map(str::to_string)
        });
        if live.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The fixture's admin token is the system tenant's; three CI tokens are livecount's.
    assert_eq!(live.as_deref(), Some("3"));
}
