//! The audit trail against someone with database access: events cannot be
//! changed or deleted in place, and a rolled-back tail is caught by the
//! recorded count and by exported checkpoints.

use crate::harness::{Backend, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_rolled_back_audit_tail_is_caught_by_an_exported_checkpoint,
    the_database_refuses_to_change_or_delete_an_audit_event,
);

/// Runs `mayfly audit …` against the app's database with its master key.
fn audit_cli(db_url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .arg("audit")
        .args(args)
        .env("MAYFLY_DATABASE_URL", db_url)
        .env("MAYFLY_MASTER_KEY", crate::harness::MASTER_KEY)
        .env_remove("MAYFLY_ISSUER")
        .output()
        .unwrap()
}

/// Someone with database access drops the tail of the chain, moves the head
/// and the count back and deletes the stored checkpoints: the chain verifies
/// on its own, but not against a checkpoint exported before. A tail dropped
/// without fixing the count is caught by the count alone.
async fn a_rolled_back_audit_tail_is_caught_by_an_exported_checkpoint(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let url = app.db.url.clone();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || audit_cli(&url, &["checkpoint"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = std::env::temp_dir().join(format!("checkpoint-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&exported, &out.stdout).unwrap();
    let checkpoint: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    for _ in 0..3 {
        app.mint(&f.ci.0, &f.ci.1, &form).await;
    }
    let (_, v) = app.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    let _db = app.stop().await; // kept: dropping it would remove the database

    // The tampering, straight in the database.
    let keep = checkpoint["count"].as_i64().unwrap() - 2;
    let raw = |sql: String| {
        let url = url.clone();
        async move {
            match b {
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
                }
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
                }
            }
        }
    };
    let drop_guard = match b {
        Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update;",
        Backend::Sqlite => "DROP TRIGGER audit_events_no_delete;",
    };
    raw(format!(
        "{drop_guard}
         DELETE FROM audit_events WHERE seq > (SELECT seq FROM audit_events ORDER BY seq LIMIT 1 OFFSET {});
         UPDATE audit_chain SET head = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) WHERE id = 1;",
        keep - 1
    ))
    .await;
    let verify = |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                audit_cli(&url, &args)
            })
            .await
            .unwrap()
        }
    };
    let out = verify(vec!["verify".into()]).await;
    assert!(!out.status.success(), "the count alone shows the missing tail");
    raw(format!(
        "UPDATE audit_chain SET count = {keep} WHERE id = 1; DELETE FROM audit_checkpoints;"
    ))
    .await;
    let out = verify(vec!["verify".into()]).await;
    assert!(out.status.success(), "without a checkpoint the cut chain looks whole");
    let out = verify(vec![
        "verify".into(),
        "--checkpoint".into(),
        exported.display().to_string(),
    ])
    .await;
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tail was removed"));
    // A forged checkpoint is refused as such.
    let mut forged = checkpoint.clone();
    forged["count"] = serde_json::json!(keep);
    std::fs::write(&exported, forged.to_string()).unwrap();
    let out = verify(vec![
        "verify".into(),
        "--checkpoint".into(),
        exported.display().to_string(),
    ])
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("not authentic"));
    let _ = std::fs::remove_file(exported);
}

/// audit_events is append-only in the database itself: an UPDATE or DELETE
/// from any connection is refused by a trigger, and the events stay as written.
async fn the_database_refuses_to_change_or_delete_an_audit_event(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let (_, before) = app.get(&f.admin, "/v1/tenants/acme/audit?limit=1000").await;
    assert!(!before["items"].as_array().unwrap().is_empty());
    let tamper = [
        "UPDATE audit_events SET reason = 'nothing to see here'",
        "DELETE FROM audit_events",
    ];
    for sql in tamper {
        let refused = match b {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
                let r = sqlx::query(sql).execute(&pool).await;
                pool.close().await;
                r.map(|_| ())
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
                let r = sqlx::query(sql).execute(&pool).await;
                pool.close().await;
                r.map(|_| ())
            }
        };
        let e = refused.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    let (_, after) = app.get(&f.admin, "/v1/tenants/acme/audit?limit=1000").await;
    assert_eq!(after["items"], before["items"], "the events are as written");
    let (_, v) = app.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}
