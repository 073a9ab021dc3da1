//! MAYFLY_SIGNER=transit against a real OpenBao: keys are generated inside
//! transit and never leave it, tokens verify against the JWKS, emergency
//! revocation destroys the key there, a wedged transit gives 503s that commit
//! nothing, and mayfly recovers without a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, fixture, header};
use crate::openbao::OpenBao;

fn on_transit(bao: &OpenBao) -> impl FnOnce(mayfly::Config) -> mayfly::Config + Send + 'static {
    let transit = bao.config();
    move |c| mayfly::Config {
        signer: mayfly::config::SignerConfig::Transit(transit),
        ..c
    }
}

/// Verifies a token's signature with the key the JWKS publishes for its kid.
pub(crate) async fn verifies_against_jwks(app: &TestApp, token: &str) -> bool {
    let kid = header(token)["kid"].as_str().unwrap().to_string();
    let jwks = app.jwks().await;
    let Some(jwk) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
    else {
        return false;
    };
    let key = mayfly::jose::VerifyingKey::from_jwk(&kid, mayfly::jose::Alg::Es256, jwk).unwrap();
    let (signed, sig) = token.rsplit_once('.').unwrap();
    use base64::Engine;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
    key.verify(signed.as_bytes(), &sig)
}

/// PyJWT and node's jose, verifiers we did not write, accept `token` against
/// the app's JWKS for `audience`.
pub(crate) fn verified_by_pyjwt_and_jose(app: &TestApp, audience: &str, token: &str) {
    let jwks_url = app.url("/.well-known/jwks.json");
    let (ok, out) = crate::interop::pyjwt(&jwks_url, &app.issuer, audience, token);
    assert!(ok, "PyJWT: {out}");
    let jose = std::process::Command::new("node")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node/verify.mjs"))
        .args([jwks_url.as_str(), app.issuer.as_str(), audience, token])
        .output()
        .expect("node runs");
    assert!(jose.status.success(), "jose: {}", String::from_utf8_lossy(&jose.stdout));
}

pub(crate) async fn keys(app: &TestApp) -> Vec<Value> {
    let (s, b) = app.get(&app.global_admin_token().await, "/v1/keys").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().clone()
}

/// Leases of tenant `hsm` (an admin token minted beforehand: while transit
/// is wedged no token can be minted, the admin's included).
pub(crate) async fn lease_count(app: &TestApp, admin: &str) -> i64 {
    let (_, b) = app.get(admin, "/v1/tenants/hsm/leases?limit=500").await;
    b["items"].as_array().map(|a| a.len() as i64).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_inside_transit_sign_tokens_that_verify_and_emergency_revocation_destroys_them() {
    let bao = OpenBao::start().await;
    bao.write_token(&bao.scoped_token("1h").await);
    let app = TestApp::on(Backend::Postgres).config(on_transit(&bao)).start().await;
    let f = fixture(&app, "hsm").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];

    let token = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let kid = header(&token)["kid"].as_str().unwrap().to_string();
    assert!(
        verifies_against_jwks(&app, &token).await,
        "signed by transit, verified with the JWKS"
    );
    // And by verifiers we did not write.
    verified_by_pyjwt_and_jose(&app, &f.resource, &token);
    let listed = keys(&app).await;
    let row = listed.iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    assert_eq!(row["custody"], "transit", "{row}");

    // The private half lives in transit, non-exportable, and cannot be read out.
    let held = bao.key(&kid).await.expect("transit holds the signing key");
    assert_eq!(held["exportable"], false);
    assert_eq!(held["type"], "ecdsa-p256");
    let (s, b) = bao
        .call(
            reqwest::Method::GET,
            &format!("transit/export/signing-key/mayfly-{kid}"),
            None,
        )
        .await;
    assert_eq!(s, 400, "export refused: {b}");
    // And nothing private is stored in the database.
    let sealed: Option<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        "SELECT sealed_private FROM signing_keys WHERE kid = $1".to_string(),
    ))
    .bind(&kid)
    .fetch_one(&mayfly_pool(&app).await)
    .await
    .unwrap();
    assert!(sealed.is_none());

    // Readiness names the signer.
    let ready: Value = app.readyz().await.1;
    assert_eq!(ready["signer"], "transit", "{ready}");
    assert_eq!(ready["signer_ready"], true, "{ready}");

    // Rotation makes the next key in transit too.
    let admin = app.global_admin_token().await;
    let (s, rotated) = app.post(&admin, "/v1/keys/rotate", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let second = rotated["active"].as_str().unwrap().to_string();
    assert_ne!(second, kid);
    assert!(bao.key(&second).await.is_some());
    let next = keys(&app).await;
    let prepared = next.iter().find(|k| k["state"] == "next").unwrap();
    assert!(
        bao.key(prepared["kid"].as_str().unwrap()).await.is_some(),
        "the prepared key is in transit"
    );
    let token2 = app.mint(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(header(&token2)["kid"], second.as_str());
    assert!(verifies_against_jwks(&app, &token2).await);

    // Emergency revocation: the key is destroyed in transit, its tokens end,
    // and a fresh transit key signs.
    let (s, rule) = app
        .post(
            &admin,
            &format!("/v1/keys/{second}/revoke"),
            json!({"reason": "test: HSM audit"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    assert!(bao.key(&second).await.is_none(), "destroyed in transit");
    let after = keys(&app).await;
    let revoked = after.iter().find(|k| k["kid"] == second.as_str()).unwrap();
    assert_eq!(revoked["state"], "revoked");
    assert!(revoked["destroyed_at"].is_string(), "{revoked}");
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token2).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);
    let token3 = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let third = header(&token3)["kid"].as_str().unwrap().to_string();
    assert_ne!(third, second);
    assert!(bao.key(&third).await.is_some());
    assert!(verifies_against_jwks(&app, &token3).await);
    let destroyed: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        "SELECT reason FROM audit_events WHERE action = 'key.destroyed'".to_string(),
    ))
    .fetch_all(&mayfly_pool(&app).await)
    .await
    .unwrap();
    assert!(destroyed.iter().any(|r| r.starts_with(&second)), "{destroyed:?}");
    let (_, v) = app.get(&admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}

/// A pool on the app's own database, for looking at what it stored.
pub(crate) async fn mayfly_pool(app: &TestApp) -> sqlx::PgPool {
    sqlx::PgPool::connect(&app.db.url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_transit_gives_503_with_retry_after_commits_nothing_and_recovers_without_a_restart() {
    let bao = OpenBao::start().await;
    let app = TestApp::on(Backend::Sqlite).config(on_transit(&bao)).start().await;
    let f = fixture(&app, "hsm").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    let admin = app.global_admin_token().await;
    let before = lease_count(&app, &admin).await;
    assert_eq!(before, 1);

    bao.pause();
    let r = app.token_basic(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let (status, ready) = app.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["signer_ready"], false, "{ready}");
    assert!(ready["signer_error"].as_str().unwrap().contains("no answer"), "{ready}");
    assert_eq!(lease_count(&app, &admin).await, before, "no lease without a signature");

    bao.resume();
    crate::harness::eventually("minting resumes once transit answers", || async {
        app.token_basic(&f.ci.0, &f.ci.1, &form).await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(app.readyz().await.0, StatusCode::OK);
    assert_eq!(lease_count(&app, &admin).await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_stops_with_a_clear_error_when_transit_refuses_the_token_or_lost_the_key() {
    let bao = OpenBao::start().await;
    bao.write_token("not-a-token");
    let db = crate::harness::Database::fresh(Backend::Sqlite).await;
    let mut config = crate::harness::config(&db, "http://mayfly.transit.test");
    config.signer = mayfly::config::SignerConfig::Transit(bao.config());
    let refused = mayfly::prepare(mayfly::Options::new(config.clone())).await;
    let e = refused.err().expect("a refused token stops start-up").to_string();
    assert!(e.contains("transit refused") && e.contains("403"), "{e}");
    assert!(!e.contains("not-a-token"), "the token is never in an error: {e}");

    // With a good token it starts and makes its key in transit...
    bao.write_token(&bao.scoped_token("1h").await);
    let prepared = mayfly::prepare(mayfly::Options::new(config.clone())).await.unwrap();
    let kid = prepared
        .state
        .keys
        .keyring()
        .current()
        .active
        .as_ref()
        .unwrap()
        .kid()
        .to_string();
    drop(prepared);
    // ...and when transit no longer holds that key, start-up says which.
    let (s, _) = bao
        .call(
            reqwest::Method::POST,
            &format!("transit/keys/mayfly-{kid}/config"),
            Some(json!({"deletion_allowed": true})),
        )
        .await;
    assert_eq!(s, 200);
    bao.call(reqwest::Method::DELETE, &format!("transit/keys/mayfly-{kid}"), None)
        .await;
    let e = mayfly::prepare(mayfly::Options::new(config))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&format!("has no key mayfly-{kid}")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_replaced_in_its_file_is_picked_up_and_a_renewable_one_is_renewed() {
    let bao = OpenBao::start().await;
    let first = bao.scoped_token("12s").await;
    bao.write_token(&first);
    let app = TestApp::on(Backend::Sqlite)
        .config(on_transit(&bao))
        .wall_clock()
        .start()
        .await;
    let f = fixture(&app, "hsm").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];

    // Past the token's first TTL: only renewal keeps it alive.
    tokio::time::sleep(std::time::Duration::from_secs(14)).await;
    let r = app.token_basic(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(r.status(), StatusCode::OK, "renewed: {}", r.text().await.unwrap());

    // An agent writes a new token and the old one is revoked: mayfly reads the file again.
    let second = bao.scoped_token("1h").await;
    bao.write_token(&second);
    let (s, _) = bao
        .call(
            reqwest::Method::POST,
            "auth/token/revoke",
            Some(json!({"token": first})),
        )
        .await;
    assert_eq!(s, 204);
    crate::harness::eventually("mints succeed with the token from the file", || async {
        app.token_basic(&f.ci.0, &f.ci.1, &form).await.status() == StatusCode::OK
    })
    .await;
}

/// Auto-unseal: the master key is a data key wrapped by a transit key. It
/// opens the sealed signing keys after a restart, follows the wrapping key's
/// rotation (rewrapped at start, so old versions can be retired), and a
/// different wrapping key is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_wrapped_by_transit_survives_restarts_and_the_wrapping_keys_rotation() {
    let bao = OpenBao::start().await;
    let (s, b) = bao
        .call(
            reqwest::Method::POST,
            "transit/keys/mayfly-master",
            Some(json!({"type": "aes256-gcm96"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let unseal = |key: &str| {
        let unseal = mayfly::config::Unseal {
            transit: bao.config(),
            key: key.to_string(),
        };
        move |c: mayfly::Config| mayfly::Config {
            master_key: None,
            unseal: Some(unseal),
            ..c
        }
    };
    let app = TestApp::on(Backend::Postgres)
        .config(unseal("mayfly-master"))
        .start()
        .await;
    let f = fixture(&app, "hsm").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let first = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let kid = header(&first)["kid"].as_str().unwrap().to_string();
    let pool = mayfly_pool(&app).await;
    let wrapped = || async {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(
            "SELECT ciphertext FROM master_key_wraps".to_string(),
        ))
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert!(
        wrapped().await.starts_with("vault:v1:"),
        "only the wrapped key is stored"
    );
    let db = app.stop().await;

    // The wrapping key rotates in transit: the next start rewraps under v2...
    let (s, _) = bao
        .call(reqwest::Method::POST, "transit/keys/mayfly-master/rotate", None)
        .await;
    assert_eq!(s, 200);
    let app = TestApp::on_db(db.clone()).config(unseal("mayfly-master")).start().await;
    assert!(wrapped().await.starts_with("vault:v2:"));
    let again = app.mint(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(header(&again)["kid"], kid.as_str(), "the sealed signing key opened");
    let db = app.stop().await;
    // ...so version 1 can be retired, and the next start still opens everything.
    let (s, b) = bao
        .call(
            reqwest::Method::POST,
            "transit/keys/mayfly-master/config",
            Some(json!({"min_decryption_version": 2})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let app = TestApp::on_db(db.clone()).config(unseal("mayfly-master")).start().await;
    assert!(verifies_against_jwks(&app, &app.mint(&f.ci.0, &f.ci.1, &form).await).await);
    let db = app.stop().await;

    // Another wrapping key does not silently make a new master key.
    let mut config = crate::harness::config(&db, "http://mayfly.unseal.test");
    config = unseal("someone-else")(config);
    let e = mayfly::prepare(mayfly::Options::new(config))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("wrapped by transit key `mayfly-master`, not `someone-else`"),
        "{e}"
    );
}

/// Under load: eight workers mint on Postgres while transit is wedged for a
/// few seconds. Every answer is 200 or 503, minting resumes without a
/// restart, and every token returned (and no other) has its lease and its
/// audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_wedged_under_load_answers_200_or_503_and_every_token_has_its_lease() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let bao = OpenBao::start().await;
    let app = Arc::new(TestApp::on(Backend::Postgres).config(on_transit(&bao)).start().await);
    let f = Arc::new(fixture(&app, "hsm").await);
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(u16, bool)>>> = Arc::default(); // (status, after resume)
    let resumed = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (app, f, stop, answers, resumed) = (app.clone(), f.clone(), stop.clone(), answers.clone(), resumed.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
                let status = app.token_basic(&f.ci.0, &f.ci.1, &form).await.status().as_u16();
                answers.lock().unwrap().push((status, resumed.load(Ordering::Relaxed)));
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    bao.pause();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    bao.resume();
    resumed.store(true, Ordering::Relaxed);
    crate::harness::eventually("mints succeed again after transit resumes", || async {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, after)| *after && *s == 200)
            .count()
            >= 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count() as i64;
    let unavailable = answers.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(
        answers.len() as i64,
        ok + unavailable as i64,
        "only 200 or 503: {:?}",
        answers
            .iter()
            .filter(|(s, _)| *s != 200 && *s != 503)
            .collect::<Vec<_>>()
    );
    assert!(unavailable > 0, "the wedge was seen");
    let pool = mayfly_pool(&app).await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM leases WHERE tenant_id = 'hsm'").await, ok);
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events WHERE tenant_id = 'hsm' AND action = 'token.issued'").await,
        ok
    );
}

/// The released binary, not only the library: `mayfly` with
/// MAYFLY_SIGNER=transit starts, is ready, and names its signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_keys_in_transit() {
    let bao = OpenBao::start().await;
    let dir = std::env::temp_dir().join(format!("mayfly-bin-{}", uuid::Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .env("MAYFLY_DATABASE_URL", format!("sqlite://{}/mayfly.db", dir.display()))
        .env("MAYFLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAYFLY_MASTER_KEY", crate::harness::MASTER_KEY)
        .env("MAYFLY_BOOTSTRAP_ADMIN_SECRET", crate::harness::ADMIN_SECRET)
        .env("MAYFLY_SIGNER", "transit")
        .env("MAYFLY_TRANSIT_ADDR", &bao.addr)
        .env("MAYFLY_TRANSIT_TOKEN_FILE", bao.token_file())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = crate::harness::http_client();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut ready = Value::Null;
    for _ in 0..200 {
        if let Ok(r) = http.get(&url).send().await {
            ready = r.json().await.unwrap_or_default();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        ready["signer"],
        "transit",
        "{ready} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ready["status"], "ready", "{ready}");
}
