//! Tokens verified by an implementation we did not write: PyJWT, against the
//! JWKS mayfly serves.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::{Backend, TestApp, claims, fixture, header, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    pyjwt_verifies_minted_tokens_against_the_served_jwks,
    with_eddsa_configured_tokens_are_signed_published_and_verified_as_eddsa,
);

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

pub(crate) fn pyjwt(jwks: &str, issuer: &str, audience: &str, token: &str) -> (bool, String) {
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
    let token = app.mint_at(&f.ci, &f.resource, &[]).await;
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

/// MAYFLY_SIGNING_ALG=EdDSA end to end: the key it makes, the JWKS entry,
/// the token header, PyJWT's verification, and introspection.
async fn with_eddsa_configured_tokens_are_signed_published_and_verified_as_eddsa(b: Backend) {
    let app = TestApp::on(b)
        .config(|c| mayfly::Config {
            signing_alg: mayfly::keys::Alg::EdDsa,
            ..c
        })
        .start()
        .await;
    let f = fixture(&app, "acme").await;
    let token = app.mint_at(&f.ci, &f.resource, &[]).await;
    let h = header(&token);
    assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("EdDSA"), Some("at+jwt")));
    let kid = h["kid"].as_str().unwrap().to_string();
    let jwks = app.jwks().await;
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("{kid} not published: {jwks}"))
        .clone();
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig")),
        "{key}"
    );
    let (_, keys) = app.get(&f.admin, "/v1/keys").await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    assert_eq!(
        (listed["alg"].as_str(), listed["state"].as_str()),
        (Some("EdDSA"), Some("active"))
    );

    let jwks_url = app.url("/.well-known/jwks.json");
    let (issuer, resource, t) = (app.issuer.clone(), f.resource.clone(), token.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || pyjwt(&jwks_url, &issuer, &resource, &t))
        .await
        .unwrap();
    assert!(ok, "PyJWT rejected an EdDSA mayfly token: {out}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap(), claims(&token));
    let mut tampered = token.clone();
    let sig_start = tampered.rfind('.').unwrap() + 1;
    tampered.replace_range(sig_start..sig_start + 4, "AAAA");
    let jwks_url = app.url("/.well-known/jwks.json");
    let (issuer, resource) = (app.issuer.clone(), f.resource.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || pyjwt(&jwks_url, &issuer, &resource, &tampered))
        .await
        .unwrap();
    assert!(!ok, "PyJWT accepted a tampered EdDSA signature: {out}");

    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);
}
