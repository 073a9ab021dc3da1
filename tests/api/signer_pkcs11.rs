//! MAYFLY_SIGNER=pkcs11 against a real PKCS#11 token (SoftHSM2): keys are
//! generated inside the token, sensitive and never extractable, tokens
//! verify against the JWKS with verifiers we did not write, revocation
//! destroys the key in the token, a key the token lost gives 503s that commit
//! nothing, and a wrong PIN stops start-up with a clear error.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, fixture, header};
use crate::signer_transit::{keys, lease_count, verified_by_pyjwt_and_jose, verifies_against_jwks};
use crate::softhsm;

fn on_hsm(c: mayfly::Config) -> mayfly::Config {
    mayfly::Config {
        signer: mayfly::config::SignerConfig::Pkcs11(softhsm::config()),
        ..c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_generated_in_the_token_sign_verifiable_tokens_and_never_leave_it() {
    let app = TestApp::on(Backend::Postgres).config(on_hsm).start().await;
    let f = fixture(&app, "hsm").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];

    let token = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let kid = header(&token)["kid"].as_str().unwrap().to_string();
    assert!(verifies_against_jwks(&app, &token).await);
    verified_by_pyjwt_and_jose(&app, &f.resource, &token);

    // The private key is in the token: sensitive, not extractable, its value unreadable.
    let held = softhsm::held(&kid);
    assert!(held.private, "the token holds the key labelled {kid}");
    assert_eq!(held.extractable, Some(false));
    assert_eq!(held.sensitive, Some(true));
    assert!(!held.value_readable, "CKA_VALUE cannot be read out");
    let listed = keys(&app).await;
    let row = listed.iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    assert_eq!(row["custody"], "pkcs11", "{row}");
    let ready: Value = app.readyz().await.1;
    assert_eq!(
        (ready["signer"].as_str(), ready["signer_ready"].as_bool()),
        (Some("pkcs11"), Some(true))
    );

    // Rotation makes keys in the token; emergency revocation destroys them there.
    let admin = app.global_admin_token().await;
    let (s, rotated) = app.post(&admin, "/v1/keys/rotate", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let second = rotated["active"].as_str().unwrap().to_string();
    assert!(softhsm::held(&second).private);
    let token2 = app.mint(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(header(&token2)["kid"], second.as_str());
    app.created(
        &admin,
        &format!("/v1/keys/{second}/revoke"),
        json!({"reason": "test: HSM audit"}),
    )
    .await;
    assert!(!softhsm::held(&second).private, "destroyed in the token");
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token2).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);
    let token3 = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let third = header(&token3)["kid"].as_str().unwrap().to_string();
    assert!(third != second && softhsm::held(&third).private);
    assert!(verifies_against_jwks(&app, &token3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_token_lost_gives_503_commits_nothing_and_an_emergency_revocation_recovers() {
    let app = TestApp::on(Backend::Sqlite).config(on_hsm).start().await;
    let f = fixture(&app, "hsm").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let token = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let kid = header(&token)["kid"].as_str().unwrap().to_string();
    let admin = app.global_admin_token().await;
    let before = lease_count(&app, &admin).await;

    softhsm::destroy(&kid);
    let r = app.token_basic(&f.ci.0, &f.ci.1, &form).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "temporarily_unavailable");
    assert_eq!(lease_count(&app, &admin).await, before, "no lease without a signature");
    let (status, ready) = app.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["signer_ready"], false, "{ready}");
    assert!(ready["signer_error"].as_str().unwrap().contains(&kid), "{ready}");

    // The operator revokes the lost key: a fresh one is made in the token and signs.
    let (s, rule) = app
        .post(
            &admin,
            &format!("/v1/keys/{kid}/revoke"),
            json!({"reason": "lost in the HSM"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let fresh = app.mint(&f.ci.0, &f.ci.1, &form).await;
    assert_ne!(header(&fresh)["kid"].as_str().unwrap(), kid);
    // The admin's own token was signed by the revoked key too: a fresh one.
    let admin = app.global_admin_token().await;
    assert_eq!(lease_count(&app, &admin).await, before + 1);
    crate::harness::eventually("readiness follows the signer", || async {
        app.readyz().await.0 == StatusCode::OK
    })
    .await;
}

#[test]
fn a_wrong_pin_or_token_label_stops_start_up_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("mayfly-hsm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("pin");
    std::fs::write(&wrong, "999999\n").unwrap();
    let c = softhsm::config();
    let start = |token: &str, pin: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .env("MAYFLY_DATABASE_URL", format!("sqlite://{}/mayfly.db", dir.display()))
            .env("MAYFLY_LISTEN", "127.0.0.1:0")
            .env("MAYFLY_ISSUER", "http://mayfly.hsm.test")
            .env("MAYFLY_MASTER_KEY", crate::harness::MASTER_KEY)
            .env("MAYFLY_BOOTSTRAP_ADMIN_SECRET", crate::harness::ADMIN_SECRET)
            .env("MAYFLY_SIGNER", "pkcs11")
            .env("MAYFLY_PKCS11_MODULE", &c.module)
            .env("MAYFLY_PKCS11_TOKEN", token)
            .env("MAYFLY_PKCS11_PIN_FILE", pin)
            .output()
            .unwrap()
    };
    let out = start(softhsm::TOKEN, &wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refused the PIN"), "{stderr}");
    assert!(!stderr.contains("999999"), "the PIN is never printed: {stderr}");
    let out = start("no-such-token", &c.pin_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no PKCS#11 token labelled `no-such-token`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
