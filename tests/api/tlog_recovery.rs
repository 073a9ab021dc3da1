//! The transparency log across a crash: the real binary, killed (SIGKILL,
//! no shutdown) while mints pour in and its integrator works, then started
//! again on the same store. The log resumes with no gap and no index given
//! twice, every event written is integrated within seconds, and the whole
//! record verifies.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{ADMIN_SECRET, Backend, Database, MASTER_KEY, http_client};
use crate::on_both_backends;

on_both_backends!(
    the_integrator_killed_mid_batch_resumes_with_no_gap_and_no_index_twice,
    an_event_hashed_with_nanoseconds_or_negative_zero_verifies_as_stored,
);

/// A gateway's own clock may say nanoseconds, and a JSON number may be
/// `-0.0`; Postgres keeps neither. The event is hashed as stored, so the
/// log verifies afterwards (it would report the event changed otherwise).
async fn an_event_hashed_with_nanoseconds_or_negative_zero_verifies_as_stored(b: Backend) {
    let app = crate::harness::spawn_app(b).await;
    let f = crate::harness::fixture(&app, "acme").await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:00.123456789Z")
        .unwrap()
        .to_utc();
    let mut event = mayfly::audit::AuditEvent::new("mcp.request", mayfly::audit::Outcome::Success, at);
    event.tenant = Some("acme".into());
    event.mcp = Some(serde_json::json!({"method": "tools/call", "latency_ms": -0.0, "n": [1.5, -0.0]}));
    let mut tx = app.store.begin().await.unwrap();
    tx.conn().append_audit(&[event]).await.unwrap();
    tx.commit().await.unwrap();
    crate::transparency::logged_events(&app, &f.admin, "acme").await;
    let (_, v) = app.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}

fn start(url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .env("MAYFLY_DATABASE_URL", url)
        .env("MAYFLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAYFLY_MASTER_KEY", MASTER_KEY)
        .env("MAYFLY_BOOTSTRAP_ADMIN_SECRET", ADMIN_SECRET)
        .env("RUST_LOG", "warn")
        .env_remove("MAYFLY_ISSUER")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mayfly did not come up at {base}");
}

/// One number from the store.
async fn scalar(b: Backend, url: &str, sql: &'static str) -> i64 {
    match b {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let n = sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let n = sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

async fn the_integrator_killed_mid_batch_resumes_with_no_gap_and_no_index_twice(b: Backend) {
    let db = Database::fresh(b).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    let mut child = start(&db.url, port);
    ready(&http, &base).await;

    // Mints (each one an event) from eight workers until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let form = [
                        ("grant_type", "client_credentials"),
                        ("resource", base.as_str()),
                        ("scope", "mayfly:admin"),
                    ];
                    let res = http
                        .post(format!("{base}/oauth2/token"))
                        .basic_auth("mayfly-admin", Some(ADMIN_SECRET))
                        .form(&form)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => ok += 1,
                        // Down, or coming back: keep going.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                ok
            })
        })
        .collect();
    // Killed while the log is at work: past its first batches, with more queued.
    let deadline = Instant::now() + Duration::from_secs(20);
    while scalar(b, &db.url, "SELECT COUNT(*) FROM audit_tree_heads").await < 3 {
        assert!(Instant::now() < deadline, "the log never integrated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start(&db.url, port);
    ready(&http, &base).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut minted = 0;
    for w in workers {
        minted += w.await.unwrap();
    }
    assert!(minted > 0);

    // Every log event integrated within seconds, once each, with no gap.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = scalar(b, &db.url, "SELECT COUNT(*) FROM audit_events WHERE prev_hash = ''").await;
        let size = scalar(b, &db.url, "SELECT size FROM audit_log").await;
        if size == events {
            break;
        }
        assert!(Instant::now() < deadline, "{events} events, {size} integrated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let size = scalar(b, &db.url, "SELECT size FROM audit_log").await;
    assert!(size as u64 > minted, "every mint's event, and the start-up events");
    assert_eq!(scalar(b, &db.url, "SELECT COUNT(*) FROM audit_leaves").await, size);
    assert_eq!(
        scalar(b, &db.url, "SELECT COALESCE(MAX(log_index), -1) FROM audit_leaves").await,
        size - 1
    );
    assert_eq!(
        scalar(b, &db.url, "SELECT COUNT(DISTINCT seq) FROM audit_leaves").await,
        size
    );
    assert_eq!(scalar(b, &db.url, "SELECT COUNT(*) FROM audit_pending").await, 0);
    child.kill().unwrap();
    child.wait().unwrap();

    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args(["audit", "verify"])
            .env("MAYFLY_DATABASE_URL", url)
            .env("MAYFLY_MASTER_KEY", MASTER_KEY)
            .env_remove("MAYFLY_ISSUER")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains(&format!("\"log_size\": {size}")), "{report}");
}
