//! The audit trail against someone with database access: events cannot be
//! changed or deleted in place (a cut tail is `transparency.rs`'s), and
//! reading it is bounded like any admin list.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Backend, TestApp, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    audit_lists_and_console_reads_wait_in_the_list_gate_like_lease_lists,
    console_stats_count_one_bounded_window_and_console_tenants_are_capped,
    the_database_refuses_to_change_or_delete_an_audit_event,
);

/// A GET with a bearer token: status, `Retry-After`, body.
async fn get_raw(app: &TestApp, token: &str, path: &str) -> (StatusCode, Option<String>, Value) {
    let res = app.http.get(app.url(path)).bearer_auth(token).send().await.unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

/// Audit lists (any filter), the console's stats and its tenant counts take
/// slots of the same gate as lease lists: with a tenant's slots held, or the
/// whole gate, they answer exactly what a lease list answers (503
/// `unavailable`, `Retry-After: 1`) at once instead of queueing on the pool;
/// minting goes on unharmed.
async fn audit_lists_and_console_reads_wait_in_the_list_gate_like_lease_lists(b: Backend) {
    use mayfly::storage::gate::PER_TENANT;
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let reads = [
        "/v1/tenants/acme/audit",
        "/v1/tenants/acme/audit?action=token.issued&limit=5",
        "/v1/tenants/acme/audit?since=2020-01-01T00:00:00Z",
        "/console/stats?tenant=acme",
        "/v1/tenants/acme/revocations",
    ];
    for path in reads.iter().chain(&["/v1/tenants/acme/leases", "/console/tenants"]) {
        let (s, _, body) = get_raw(&app, &f.admin, path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }

    // The tenant's own slots, held as a running list holds them.
    let mut held = Vec::new();
    for _ in 0..PER_TENANT {
        held.push(app.store.list_read("acme").await.unwrap());
    }
    let busy = get_raw(&app, &f.admin, "/v1/tenants/acme/leases").await;
    assert_eq!(busy.0, StatusCode::SERVICE_UNAVAILABLE, "{}", busy.2);
    assert_eq!(busy.1.as_deref(), Some("1"));
    assert_eq!(busy.2["error"], "unavailable", "{}", busy.2);
    for path in reads {
        assert_eq!(get_raw(&app, &f.admin, path).await, busy, "{path}");
    }
    drop(held);
    for path in reads {
        let (s, _, body) = get_raw(&app, &f.admin, path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }

    // The whole gate, one slot per tenant: every tenant waits, the global
    // admin's tenant counts too.
    let mut held = Vec::new();
    for i in 0.. {
        match app.store.list_read(&format!("other{i}")).await {
            Ok(read) => held.push(read),
            Err(mayfly::storage::StoreError::Busy(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!held.is_empty());
    for path in reads.iter().chain(&["/console/tenants"]) {
        assert_eq!(get_raw(&app, &f.admin, path).await, busy, "{path}");
    }
    // What the gate bounds is reading, never minting: with every slot held,
    // a client still mints and its resource server still introspects.
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let token = app.mint(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);
    drop(held);
    let (s, _, body) = get_raw(&app, &f.admin, "/console/tenants").await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// `/console/stats` reads one 30-minute window of the audit trail (what it
/// answers says which), so events before it cost nothing and count nothing;
/// `/console/tenants` answers at most 200 tenants a page.
async fn console_stats_count_one_bounded_window_and_console_tenants_are_capped(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    app.advance(40 * 60);
    let admin = app.global_admin_token().await;
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    let denied = app.ask_token(&f.ci, "https://mcp.nowhere.test/x", &[]).await;
    assert_eq!(denied.status(), StatusCode::BAD_REQUEST);

    let (s, _, stats) = get_raw(&app, &admin, "/console/stats?tenant=acme").await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    let from = chrono::DateTime::parse_from_rfc3339(stats["from"].as_str().unwrap()).unwrap();
    let to = chrono::DateTime::parse_from_rfc3339(stats["to"].as_str().unwrap()).unwrap();
    assert_eq!((to - from).num_minutes(), 30, "{stats}");
    let minutes = stats["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 30);
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("minted"), sum("denied")),
        (2, 1),
        "the mint 40 minutes ago is outside: {stats}"
    );
    assert_eq!(minutes[29]["minted"], 2, "{stats}");
    app.advance(31 * 60);
    let admin = app.global_admin_token().await;
    let (_, _, stats) = get_raw(&app, &admin, "/console/stats?tenant=acme").await;
    let minutes = stats["minutes"].as_array().unwrap();
    assert_eq!(
        minutes.iter().map(|m| m["minted"].as_u64().unwrap()).sum::<u64>(),
        0,
        "{stats}"
    );

    let (s, _, body) = get_raw(&app, &admin, "/console/tenants?limit=201").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    for t in ["beta", "gamma"] {
        app.created(&admin, "/v1/tenants", serde_json::json!({"id": t})).await;
    }
    let (s, _, page) = get_raw(&app, &admin, "/console/tenants?limit=2").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["items"][0]["id"], "acme");
    assert_eq!(page["items"][0]["live_leases"], 0, "all expired by now: {page}");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, _, rest) = get_raw(&app, &admin, &format!("/console/tenants?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"][0]["id"], "gamma", "{rest}");
}

/// audit_events is append-only in the database itself: an UPDATE or DELETE
/// from any connection is refused by a trigger, and the events stay as written.
async fn the_database_refuses_to_change_or_delete_an_audit_event(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    // Integrated first: a log index appearing is not a change.
    crate::transparency::logged_events(&app, &f.admin, "acme").await;
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

/// In the wrong directory, a read-only command creates nothing: no data
/// directory, no master key, no database (issue 26, finding 4).
#[test]
fn audit_verify_against_a_missing_sqlite_database_creates_nothing() {
    let dir = std::env::temp_dir().join(format!("mayfly-nowhere-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/mayfly-data/mayfly.db", dir.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["audit", "verify"])
        .env("MAYFLY_DATABASE_URL", &url)
        .env_remove("MAYFLY_MASTER_KEY")
        .env_remove("MAYFLY_ISSUER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no database at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "a read-only command created {}", dir.display());
}
