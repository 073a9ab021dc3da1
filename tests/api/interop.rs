//! Tokens verified by an implementation we did not write: PyJWT, against the
//! JWKS mayfly serves.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::{Backend, claims, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(pyjwt_verifies_minted_tokens_against_the_served_jwks);

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MAYFLY_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the interop tests need the Python venv: run scripts/test (it creates .venv with PyJWT)"
    );
    venv
}

fn pyjwt(jwks: &str, issuer: &str, audience: &str, token: &str) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_pyjwt.py");
    let out = Command::new(python())
        .arg(script)
        .args([jwks, issuer, audience, token])
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(if out.status.success() { &out.stdout } else { &out.stderr }).to_string();
    (out.status.success(), text)
}

async fn pyjwt_verifies_minted_tokens_against_the_served_jwks(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let token = app
        .mint(
            &f.ci.0,
            &f.ci.1,
            &[("grant_type", "client_credentials"), ("resource", &f.resource)],
        )
        .await;
    let jwks = app.url("/.well-known/jwks.json");
    let issuer = app.issuer.clone();
    let resource = f.resource.clone();
    let t = token.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || pyjwt(&jwks, &issuer, &resource, &t))
        .await
        .unwrap();
    assert!(ok, "PyJWT rejected a mayfly token: {out}");
    let verified: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(verified, claims(&token));

    // The same checker refuses what it must: so the pass above means something.
    let jwks = app.url("/.well-known/jwks.json");
    let issuer = app.issuer.clone();
    let mut tampered = token.clone();
    let sig_start = tampered.rfind('.').unwrap() + 1;
    tampered.replace_range(sig_start..sig_start + 4, "AAAA");
    let cases = vec![
        (
            issuer.clone(),
            "https://mcp.acme.test/other".to_string(),
            token.clone(),
            "wrong audience",
        ),
        (
            "https://evil.test".to_string(),
            f.resource.clone(),
            token.clone(),
            "wrong issuer",
        ),
        (issuer.clone(), f.resource.clone(), tampered, "bad signature"),
    ];
    for (iss, aud, tok, what) in cases {
        let jwks = jwks.clone();
        let (ok, out) = tokio::task::spawn_blocking(move || pyjwt(&jwks, &iss, &aud, &tok))
            .await
            .unwrap();
        assert!(!ok, "PyJWT accepted a token with {what}: {out}");
    }
}
