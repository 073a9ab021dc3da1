//! The audit log as a transparency log (issue 22): every event gets a log
//! index within about a second; checkpoints are C2SP signed notes checked
//! with the log's key; inclusion and consistency proofs check with RFC 9162
//! verifiers against roots recomputed here from the events as served; no
//! writer waits on another's audit row; a cut tail or a changed event is
//! caught by a checkpoint kept elsewhere.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mayfly::audit::AuditEvent;
use mayfly::audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use mayfly::audit::note::{NoteVerifier, parse_checkpoint};
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Backend, TestApp, fixture, spawn_app, tenant_admin};
use crate::on_both_backends;

on_both_backends!(
    every_event_is_logged_and_proved_against_a_signed_checkpoint,
    proofs_refuse_bad_input_and_other_tenants_events,
    a_cut_log_tail_or_a_changed_event_is_caught_and_prove_checks_one_event,
    the_log_is_posted_to_a_collector_at_least_once_and_in_order,
);

/// A text GET with a bearer token: status and body.
async fn text(app: &TestApp, token: &str, path: &str) -> (StatusCode, String) {
    let res = app.http.get(app.url(path)).bearer_auth(token).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The log's key, from the API.
async fn log_key(app: &TestApp, token: &str) -> NoteVerifier {
    let (s, key) = text(app, token, "/v1/audit/checkpoint/key").await;
    assert_eq!(s, StatusCode::OK, "{key}");
    NoteVerifier::parse(&key).unwrap()
}

/// Polls `f` every 50 ms until it gives a value, for at most ten seconds:
/// the integrator runs on its own time (at most about a second behind).
async fn until<T, Fut: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> Fut) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The latest checkpoint once it covers at least `size` events: the note,
/// its size and root, the signature checked with `key`.
async fn checkpoint_of(app: &TestApp, token: &str, key: &NoteVerifier, size: u64) -> (String, u64, Hash) {
    until(&format!("a checkpoint of {size} events"), || async {
        let (s, note) = text(app, token, "/v1/audit/checkpoint").await;
        assert_eq!(s, StatusCode::OK, "{note}");
        let body = key.open(&note).expect("signed by the log's key");
        let (origin, n, root) = parse_checkpoint(body).unwrap();
        // Named after the issuer the log began under; it stays (a restart
        // here listens on a new port, hence a new issuer).
        assert!(
            origin.starts_with("127.0.0.1:") && origin.ends_with("/audit"),
            "{origin}"
        );
        (n >= size).then_some((note, n, root))
    })
    .await
}

/// The tenant's events once every one is integrated, oldest first.
pub async fn logged_events(app: &TestApp, token: &str, tenant: &str) -> Vec<Value> {
    let mut events = until("every event has a log index", || async {
        let (_, page) = app.get(token, &format!("/v1/tenants/{tenant}/audit?limit=1000")).await;
        let items = page["items"].as_array().unwrap().clone();
        items.iter().all(|e| e["log_index"].is_u64()).then_some(items)
    })
    .await;
    events.reverse();
    events
}

/// The content hash of an event as served, recomputed here.
fn content_hash(e: &Value) -> [u8; 32] {
    let event: AuditEvent = serde_json::from_value(e.clone()).unwrap();
    event.content_hash()
}

fn hashes(proof: &Value) -> Vec<Hash> {
    proof
        .as_array()
        .unwrap()
        .iter()
        .map(|h| STANDARD.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect()
}

/// Each event's served `hash` is the SHA-256 of its content as served; its
/// inclusion proof leads from that to the signed root; a later checkpoint
/// is consistent with an earlier one; a wrong leaf or root is refused.
async fn every_event_is_logged_and_proved_against_a_signed_checkpoint(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    for _ in 0..3 {
        app.mint(&f.ci.0, &f.ci.1, &form).await;
    }
    let events = logged_events(&app, &f.admin, "acme").await;
    assert!(
        events.len() >= 8,
        "the fixture's changes and three mints: {}",
        events.len()
    );
    let key = log_key(&app, &f.admin).await;
    let last = events.iter().map(|e| e["log_index"].as_u64().unwrap()).max().unwrap();
    let (_, size, root) = checkpoint_of(&app, &f.admin, &key, last + 1).await;
    let mut indexes = Vec::new();
    for e in &events {
        let content = content_hash(e);
        assert_eq!(e["hash"], mayfly::keys::seal::hex(&content), "{e}");
        assert_eq!(e["prev_hash"], "", "a log entry has no chain link");
        let index = e["log_index"].as_u64().unwrap();
        indexes.push(index);
        let (s, p) = app
            .get(
                &f.admin,
                &format!("/v1/audit/proofs/inclusion?index={index}&tree_size={size}"),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        let leaf = leaf_hash(&content);
        assert_eq!(p["leaf_hash"], STANDARD.encode(leaf));
        let proof = hashes(&p["proof"]);
        assert!(verify_inclusion(&leaf, index, size, &proof, &root), "{e}");
        assert!(!verify_inclusion(&leaf_hash(b"another"), index, size, &proof, &root));
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), events.len(), "one index per event");

    for _ in 0..2 {
        app.mint(&f.ci.0, &f.ci.1, &form).await;
    }
    let (_, later, later_root) = checkpoint_of(&app, &f.admin, &key, size + 2).await;
    let (s, c) = app
        .get(
            &f.admin,
            &format!("/v1/audit/proofs/consistency?from={size}&to={later}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let proof = hashes(&c["proof"]);
    assert!(verify_consistency(size, later, &proof, &root, &later_root));
    assert!(!verify_consistency(size, later, &proof, &leaf_hash(b"x"), &later_root));

    let (_, v) = app.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["log_size"].as_u64().unwrap() >= later, "{v}");
}

/// Proofs answer 400 `invalid_query` to sizes past the log and indexes past
/// the size, 401 without a token; a tenant admin gets proofs of its own
/// tenant's events and a 404 for another's, a global admin for any.
async fn proofs_refuse_bad_input_and_other_tenants_events(b: Backend) {
    let app = spawn_app(b).await;
    let acme = fixture(&app, "acme").await;
    fixture(&app, "beta").await;
    let global = acme.admin.clone();
    let beta_events = logged_events(&app, &global, "beta").await;
    let beta_index = beta_events[0]["log_index"].as_u64().unwrap();
    let acme_index = logged_events(&app, &global, "acme").await[0]["log_index"]
        .as_u64()
        .unwrap();
    let key = log_key(&app, &global).await;
    let (_, size, _) = checkpoint_of(&app, &global, &key, beta_index.max(acme_index) + 1).await;
    let acme_admin = tenant_admin(&app, &global, "acme").await;

    let proof = |token: String, index: u64| {
        let app = &app;
        async move {
            app.get(
                &token,
                &format!("/v1/audit/proofs/inclusion?index={index}&tree_size={size}"),
            )
            .await
        }
    };
    assert_eq!(proof(acme_admin.clone(), acme_index).await.0, StatusCode::OK);
    let (s, body) = proof(acme_admin.clone(), beta_index).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    assert_eq!(proof(global.clone(), beta_index).await.0, StatusCode::OK);
    let (s, _) = text(&app, &acme_admin, "/v1/audit/checkpoint").await;
    assert_eq!(s, StatusCode::OK, "a tenant admin reads checkpoints");

    for path in [
        format!("/v1/audit/proofs/inclusion?index={size}&tree_size={size}"),
        format!("/v1/audit/proofs/inclusion?index=0&tree_size={}", size + 1_000_000),
        "/v1/audit/proofs/inclusion?index=abc&tree_size=1".to_string(),
        "/v1/audit/proofs/inclusion?index=0".to_string(),
        "/v1/audit/proofs/inclusion?index=0&tree_size=1&extra=1".to_string(),
        "/v1/audit/proofs/consistency?from=0&to=1".to_string(),
        format!("/v1/audit/proofs/consistency?from={}&to={size}", size + 1),
        format!("/v1/audit/proofs/consistency?from=1&to={}", size + 1_000_000),
    ] {
        let (s, body) = app.get(&global, &path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("invalid_"),
            "{path}: {body}"
        );
    }
    for path in [
        "/v1/audit/checkpoint",
        "/v1/audit/checkpoint/key",
        "/v1/audit/proofs/consistency?from=1&to=1",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// Runs `mayfly audit …` against the app's database: status and stdout.
async fn audit_cli(db_url: &str, args: &[String]) -> (bool, String) {
    let (url, args) = (db_url.to_string(), args.to_vec());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .arg("audit")
            .args(&args)
            .env("MAYFLY_DATABASE_URL", url)
            .env("MAYFLY_MASTER_KEY", crate::harness::MASTER_KEY)
            .env_remove("MAYFLY_ISSUER")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success(), stdout + &String::from_utf8_lossy(&out.stderr))
}

/// Runs SQL straight in the app's database, its guards first switched off:
/// what someone with database access can do.
async fn tamper(b: Backend, url: &str, sql: &str) {
    let guards = match b {
        Backend::Postgres => {
            "ALTER TABLE audit_events DISABLE TRIGGER USER; ALTER TABLE audit_leaves DISABLE TRIGGER USER;
             ALTER TABLE audit_nodes DISABLE TRIGGER USER; ALTER TABLE audit_tree_heads DISABLE TRIGGER USER;"
        }
        Backend::Sqlite => {
            "DROP TRIGGER IF EXISTS audit_events_no_delete; DROP TRIGGER IF EXISTS audit_events_no_update;
             DROP TRIGGER IF EXISTS audit_leaves_no_delete; DROP TRIGGER IF EXISTS audit_nodes_no_delete;
             DROP TRIGGER IF EXISTS audit_tree_heads_no_delete;"
        }
    };
    let sql = sqlx::AssertSqlSafe(format!("{guards}\n{sql}"));
    match b {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// A checkpoint kept outside the database (`mayfly audit checkpoint`):
/// `audit prove` shows one event is in it, and refuses an event logged
/// after it. Then someone with database access cuts the log's tail below
/// the checkpoint, its stored heads and nodes too: the cut log verifies on
/// its own, but not against the kept checkpoint, and a forged checkpoint is
/// refused as such. An event changed in place is located.
async fn a_cut_log_tail_or_a_changed_event_is_caught_and_prove_checks_one_event(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let events = logged_events(&app, &f.admin, "acme").await;
    let key = log_key(&app, &f.admin).await;
    let last = events.iter().map(|e| e["log_index"].as_u64().unwrap()).max().unwrap();
    checkpoint_of(&app, &f.admin, &key, last + 1).await;
    let url = app.db.url.clone();
    let (ok, note) = audit_cli(&url, &["checkpoint".into()]).await;
    assert!(ok, "{note}");
    let (_, size, _) = parse_checkpoint(key.open(&note).unwrap()).unwrap();
    let kept = std::env::temp_dir().join(format!("checkpoint-{}.note", uuid::Uuid::new_v4().simple()));
    std::fs::write(&kept, &note).unwrap();
    let kept_arg = kept.display().to_string();
    let first = events[0]["id"].as_str().unwrap().to_string();
    let first_index = events[0]["log_index"].as_u64().unwrap();
    let (ok, out) = audit_cli(
        &url,
        &["prove".into(), first.clone(), "--checkpoint".into(), kept_arg.clone()],
    )
    .await;
    assert!(ok, "{out}");

    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    for _ in 0..3 {
        app.mint(&f.ci.0, &f.ci.1, &form).await;
    }
    let events = logged_events(&app, &f.admin, "acme").await;
    checkpoint_of(&app, &f.admin, &key, size + 3).await;
    let newest = events.last().unwrap()["id"].as_str().unwrap().to_string();
    let (ok, out) = audit_cli(&url, &["prove".into(), newest, "--checkpoint".into(), kept_arg.clone()]).await;
    assert!(!ok && out.contains("after this checkpoint"), "{out}");
    let (ok, out) = audit_cli(&url, &["verify".into(), "--checkpoint".into(), kept_arg.clone()]).await;
    assert!(ok, "{out}");
    let _db = app.stop().await; // kept: dropping it would remove the database

    let cut = size - 2;
    tamper(
        b,
        &url,
        &format!(
            "DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_leaves WHERE log_index >= {cut});
             DELETE FROM audit_leaves WHERE log_index >= {cut};
             DELETE FROM audit_nodes WHERE start + (1 << level) > {cut};
             DELETE FROM audit_tree_heads WHERE size > {cut};
             UPDATE audit_log SET size = {cut} WHERE id = 1;"
        ),
    )
    .await;
    let (ok, out) = audit_cli(&url, &["verify".into()]).await;
    assert!(ok, "without a kept checkpoint the cut log looks whole: {out}");
    let (ok, out) = audit_cli(&url, &["verify".into(), "--checkpoint".into(), kept_arg.clone()]).await;
    assert!(!ok, "{out}");
    let report: Value = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        report["problem"].as_str().unwrap().contains("tail was removed"),
        "{report}"
    );
    let (ok, out) = audit_cli(
        &url,
        &["prove".into(), first.clone(), "--checkpoint".into(), kept_arg.clone()],
    )
    .await;
    assert!(!ok && out.contains("cannot prove"), "{out}");

    let forged = note.replacen(&format!("\n{size}\n"), &format!("\n{cut}\n"), 1);
    std::fs::write(&kept, forged).unwrap();
    let (ok, out) = audit_cli(&url, &["verify".into(), "--checkpoint".into(), kept_arg.clone()]).await;
    assert!(!ok && out.contains("not authentic"), "{out}");
    let _ = std::fs::remove_file(&kept);

    tamper(
        b,
        &url,
        &format!(
            "UPDATE audit_events SET reason = 'nothing to see'
             WHERE seq = (SELECT seq FROM audit_leaves WHERE log_index = {first_index});"
        ),
    )
    .await;
    let (ok, out) = audit_cli(&url, &["verify".into()]).await;
    assert!(!ok && out.contains("content differs") && out.contains(&first), "{out}");
}

/// No row is shared by every writer: with another transaction holding an
/// uncommitted audit event (which once held the chain lock until its
/// commit), a mint still answers; the held event is logged once committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_does_not_wait_for_another_writers_uncommitted_audit_event() {
    let app = spawn_app(Backend::Postgres).await;
    let f = fixture(&app, "acme").await;
    let mut held = app.store.begin().await.unwrap();
    let mut event = AuditEvent::new(
        "test.held",
        mayfly::audit::Outcome::Success,
        mayfly::clock::Clock::now(&mayfly::clock::SystemClock),
    );
    event.tenant = Some("acme".into());
    held.conn().append_audit(&[event.clone()]).await.unwrap();
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let minted = tokio::time::timeout(std::time::Duration::from_secs(5), app.mint(&f.ci.0, &f.ci.1, &form)).await;
    assert!(minted.is_ok(), "a mint waited for another writer's audit event");
    held.commit().await.unwrap();
    let events = logged_events(&app, &f.admin, "acme").await;
    assert_eq!(events.iter().filter(|e| e["id"] == event.id.to_string()).count(), 1);
}

/// Two replicas over one database both run the integrator; one holds the
/// log at a time, so every event gets exactly one index and the indexes
/// run without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_integrate_each_event_once() {
    let a = spawn_app(Backend::Postgres).await;
    let f = fixture(&a, "acme").await;
    let b = TestApp::on_db(a.db.clone()).start().await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let mints = (0..40).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.mint(&f.ci.0, &f.ci.1, &form)
    });
    futures_util::future::join_all(mints).await;
    let events = logged_events(&a, &f.admin, "acme").await;
    let mut indexes: Vec<u64> = events.iter().map(|e| e["log_index"].as_u64().unwrap()).collect();
    indexes.sort_unstable();
    let n = indexes.len();
    indexes.dedup();
    // (The schema makes a second index for one event impossible; what can
    // fail here is an event left behind by the replica that did not integrate.)
    assert_eq!(indexes.len(), n, "an index given twice");
    crate::harness::eventually("no event left waiting", || async {
        let mut c = a.store.read().await.unwrap();
        c.conn().pending_hashes(1).await.unwrap().is_empty() && c.conn().events_outside_log().await.unwrap() == 0
    })
    .await;
    let (_, v) = a.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}

/// A log collector on a loopback port: the NDJSON bodies it accepted; it
/// answers 503 to the first `refuse` POSTs.
async fn collector(refuse: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |body: String| {
            let (kept, refused) = (kept.clone(), refused.clone());
            async move {
                if refused.fetch_add(1, Ordering::SeqCst) < refuse {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                kept.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies)
}

/// MAYFLY_AUDIT_EXPORT_URL: batches of NDJSON reach the collector in log
/// order, each checkpoint after the events it covers, and a refused POST
/// is sent again (at least once); every event up to the log's size arrives.
/// After a restart the export carries on from where it was acknowledged.
async fn the_log_is_posted_to_a_collector_at_least_once_and_in_order(b: Backend) {
    let (url, bodies) = collector(2).await;
    let export = url.clone();
    let app = TestApp::on(b)
        .config(move |c| mayfly::Config {
            audit_export_url: Some(export),
            ..c
        })
        .start()
        .await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    for _ in 0..3 {
        app.mint(&f.ci.0, &f.ci.1, &form).await;
    }
    let key = log_key(&app, &f.admin).await;
    let events = logged_events(&app, &f.admin, "acme").await;
    let last = events.iter().map(|e| e["log_index"].as_u64().unwrap()).max().unwrap();
    let (_, size, root) = checkpoint_of(&app, &f.admin, &key, last + 1).await;
    let lines = |bodies: &std::sync::Mutex<Vec<String>>| -> Vec<Value> {
        let bodies = bodies.lock().unwrap();
        bodies
            .iter()
            .flat_map(|b| {
                b.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<Value>>()
            })
            .collect()
    };
    until("the collector has the latest checkpoint", || async {
        lines(&bodies)
            .iter()
            .any(|l| l["type"] == "checkpoint" && l["tree_size"] == size)
            .then_some(())
    })
    .await;
    let got = lines(&bodies);
    let mut leaves: Vec<Hash> = Vec::new();
    for line in &got {
        if line["type"] == "event" {
            assert_eq!(line["log_index"], leaves.len() as u64, "in log order, once each here");
            let event: AuditEvent = serde_json::from_value(line["event"].clone()).unwrap();
            assert_eq!(line["hash"], mayfly::keys::seal::hex(&event.content_hash()));
            leaves.push(leaf_hash(&event.content_hash()));
        } else {
            let (_, n, signed) = parse_checkpoint(key.open(line["note"].as_str().unwrap()).unwrap()).unwrap();
            assert_eq!(
                n as usize,
                leaves.len(),
                "a checkpoint follows exactly the events it covers"
            );
            assert_eq!(mayfly::audit::merkle::Subtrees::root(&leaves[..], n).unwrap(), signed);
        }
    }
    assert!(leaves.len() as u64 >= size, "every event up to the checkpoint arrived");
    assert_eq!(mayfly::audit::merkle::Subtrees::root(&leaves[..], size).unwrap(), root);
    let sent = bodies.lock().unwrap().len();

    // A restart carries on from the acknowledged place, not from the start.
    let export = url.clone();
    let db = app.stop().await;
    let app = TestApp::on_db(db)
        .config(move |c| mayfly::Config {
            audit_export_url: Some(export),
            ..c
        })
        .start()
        .await;
    let admin = app.global_admin_token().await;
    let (_, later, _) = checkpoint_of(&app, &admin, &key, size + 1).await;
    until("the collector has the checkpoint after the restart", || async {
        lines(&bodies)
            .iter()
            .any(|l| l["type"] == "checkpoint" && l["tree_size"] == later)
            .then_some(())
    })
    .await;
    let after: Vec<Value> = bodies.lock().unwrap()[sent..]
        .iter()
        .flat_map(|b| {
            b.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        after
            .iter()
            .filter(|l| l["type"] == "event")
            .all(|l| l["log_index"].as_u64().unwrap() >= size),
        "nothing acknowledged is sent again"
    );
}

/// The writer order is fair: with a lease batch holding it shared, a
/// revocation waits for that batch, and a batch that comes after the
/// revocation waits behind it instead of slipping past (a stream of mints
/// never starves a revocation). The revocation then answers, and the later
/// batch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waiting_for_a_lease_batch_is_not_overtaken_by_later_batches() {
    let app = spawn_app(Backend::Postgres).await;
    let f = fixture(&app, "acme").await;
    let mut first = app.store.begin().await.unwrap();
    first.conn().share_writer_order().await.unwrap();
    let revoke = tokio::spawn({
        let (http, url, admin) = (
            app.http.clone(),
            app.url("/v1/tenants/acme/revocations"),
            f.admin.clone(),
        );
        async move {
            let body = serde_json::json!({"workflow": "release", "reason": "fairness"});
            http.post(url)
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !revoke.is_finished(),
        "the revocation waits for the batch holding the order"
    );
    let mut later = app.store.begin().await.unwrap();
    let overtook = tokio::time::timeout(std::time::Duration::from_millis(500), later.conn().share_writer_order()).await;
    assert!(overtook.is_err(), "a later batch slipped past the waiting revocation");
    drop(later);
    first.commit().await.unwrap();
    assert_eq!(revoke.await.unwrap(), StatusCode::CREATED);
    let mut after = app.store.begin().await.unwrap();
    after.conn().share_writer_order().await.unwrap();
    after.commit().await.unwrap();
}
