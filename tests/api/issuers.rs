//! Where federation may reach (issue 18, finding 5): a trust policy must not
//! turn mayfly into a probe of the operator's network. Loopback issuers only
//! when allowed, the operator's allowlist, the JWKS on the issuer's origin,
//! and fetch failures that all read the same to the caller while the audit
//! trail keeps the detail.

use axum::Router;
use axum::routing::get;
use mayfly::Config;
use mayfly::federation::reach::AllowedIssuer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::federation::policy;
use crate::harness::{Backend, Fixture, TestApp, fixture, spawn_app};
use crate::oidc::{self, FakeIssuer};
use crate::on_both_backends;

on_both_backends!(
    a_loopback_issuer_is_refused_without_the_setting_and_never_contacted,
    an_operator_allowlist_refuses_other_issuers_and_never_contacts_them,
    issuer_fetch_failures_read_the_same_to_the_caller_and_are_detailed_in_the_audit,
    a_trailing_slash_on_the_issuer_still_matches_and_a_pattern_must_pin_the_owner,
);

/// What the caller learns of any failure to get an issuer's keys.
fn cannot_verify() -> Value {
    json!({"error": "invalid_grant", "error_description": "cannot verify the token's issuer"})
}

fn policy_body(issuer: &str, name: &str, app: &TestApp, f: &Fixture) -> Value {
    json!({
        "name": name, "issuer": issuer, "audience": app.issuer,
        "subject_pattern": "^repo:acme/app:ref:refs/heads/main$",
        "workflow_template": "release", "workload_template": "github:{repository}@{ref}",
        "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]
    })
}

/// A GitHub-shaped token claiming `iss`, signed by `signer`'s key `ec-1`.
fn token_from(iss: &str, signer: &FakeIssuer, app: &TestApp) -> String {
    let mut claims = oidc::github(&app.issuer, "acme/app", "refs/heads/main");
    claims["iss"] = json!(iss);
    signer.sign("ec-1", &claims)
}

async fn bearer(app: &TestApp, f: &Fixture, token: &str) -> (StatusCode, Value) {
    app.jwt_bearer(token, &f.resource).await
}

async fn never_contacted(listener: &TcpListener) {
    let accepted = tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "mayfly connected to {:?}", listener.local_addr());
}

async fn denial_reasons(app: &TestApp, f: &Fixture) -> Vec<String> {
    let (_, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=token.denied&limit=100")
        .await;
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Refused when a policy names it (422 `issuer_not_allowed`); a policy
/// stored while it was allowed is never acted on: no connection is made.
async fn a_loopback_issuer_is_refused_without_the_setting_and_never_contacted(b: Backend) {
    let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", internal.local_addr().unwrap());
    let signer = FakeIssuer::start().await;
    // Allowed while the policy is created (as in tests, or with --dev)…
    let app = TestApp::on(b).config(crate::kit::shared_issuer).start().await;
    let f = fixture(&app, "acme").await;
    policy(&app, &f, policy_body(&url, "internal", &app, &f)).await;
    let db = app.stop().await;
    // …then the operator turns loopback issuers off.
    let app = TestApp::on_db(db)
        .config(|c| Config {
            federation_allow_loopback: false,
            ..crate::kit::shared_issuer(c)
        })
        .start()
        .await;
    for issuer in [url.as_str(), "http://localhost:18550", "https://127.0.0.1:18550"] {
        let (s, out) = app
            .post(
                &f.admin,
                "/v1/tenants/acme/trust-policies",
                policy_body(issuer, "again", &app, &f),
            )
            .await;
        assert_eq!(
            (s, out["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("issuer_not_allowed")),
            "{issuer}: {out}"
        );
        assert!(
            out["message"]
                .as_str()
                .unwrap()
                .contains("MAYFLY_FEDERATION_ALLOW_LOOPBACK"),
            "{out}"
        );
    }
    let (s, out) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/trust-policies",
            policy_body("https://169.254.169.254", "metadata", &app, &f),
        )
        .await;
    assert_eq!(
        (s, out["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("issuer_not_allowed")),
        "{out}"
    );
    let (s, out) = bearer(&app, &f, &token_from(&url, &signer, &app)).await;
    assert_eq!((s, out), (StatusCode::BAD_REQUEST, cannot_verify()));
    never_contacted(&internal).await;
    let reasons = denial_reasons(&app, &f).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&url) && r.contains("MAYFLY_FEDERATION_ALLOW_LOOPBACK")),
        "{reasons:?}"
    );
}

/// With MAYFLY_FEDERATION_ISSUERS set, a policy naming another issuer is
/// refused (created or patched), and one stored before is never contacted;
/// the listed issuer works as before.
async fn an_operator_allowlist_refuses_other_issuers_and_never_contacts_them(b: Backend) {
    let idp = FakeIssuer::start().await;
    let unlisted = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unlisted_url = format!("http://{}", unlisted.local_addr().unwrap());
    let app = TestApp::on(b).config(crate::kit::shared_issuer).start().await;
    let f = fixture(&app, "acme").await;
    policy(&app, &f, policy_body(&unlisted_url, "unlisted", &app, &f)).await;
    let db = app.stop().await;
    let listed = AllowedIssuer::parse(&idp.url).unwrap();
    let app = TestApp::on_db(db)
        .config(move |c| Config {
            federation_issuers: vec![listed],
            ..crate::kit::shared_issuer(c)
        })
        .start()
        .await;

    let created = policy(&app, &f, policy_body(&idp.url, "listed", &app, &f)).await;
    let (s, out) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/trust-policies",
            policy_body(&unlisted_url, "unlisted-2", &app, &f),
        )
        .await;
    assert_eq!(
        (s, out["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("issuer_not_allowed")),
        "{out}"
    );
    assert!(
        out["message"].as_str().unwrap().contains("MAYFLY_FEDERATION_ISSUERS"),
        "{out}"
    );
    let path = format!("/v1/tenants/acme/trust-policies/{}", created["id"].as_str().unwrap());
    let moved = policy_body("https://issuer.elsewhere.test", "listed", &app, &f);
    let (s, out) = app.patch(&f.admin, &path, moved).await;
    assert_eq!(
        (s, out["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("issuer_not_allowed")),
        "{out}"
    );

    let (s, out) = bearer(
        &app,
        &f,
        &idp.token("ec-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the listed issuer: {out}");
    let (s, out) = bearer(&app, &f, &token_from(&unlisted_url, &idp, &app)).await;
    assert_eq!((s, out), (StatusCode::BAD_REQUEST, cannot_verify()));
    never_contacted(&unlisted).await;
    let reasons = denial_reasons(&app, &f).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&unlisted_url) && r.contains("MAYFLY_FEDERATION_ISSUERS")),
        "{reasons:?}"
    );
}

/// Serves `router` on a loopback port; returns its URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// A closed port, a 404, a discovery document that is not JSON and a JWKS
/// on another origin: the caller gets the same body for each, naming no URL,
/// port or status (no port scanner); the audit trail tells them apart.
async fn issuer_fetch_failures_read_the_same_to_the_caller_and_are_detailed_in_the_audit(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let not_found = serve(Router::new()).await;
    let not_json = serve(Router::new().route(
        "/.well-known/openid-configuration",
        get(|| async { "<html>an intranet page</html>" }),
    ))
    .await;
    // Its discovery document names another server's JWKS, whose keys signed the token.
    let keys_elsewhere = FakeIssuer::start().await;
    let redirecting = FakeIssuer::start().await;
    redirecting.point_jwks_to(&format!("{}/jwks", keys_elsewhere.url));

    let cases = [
        (closed.as_str(), "refused"),
        (not_found.as_str(), "404"),
        (not_json.as_str(), "no usable JSON"),
        (redirecting.url.as_str(), "jwks_uri"),
    ];
    for (i, (issuer, _)) in cases.iter().enumerate() {
        policy(&app, &f, policy_body(issuer, &format!("p{i}"), &app, &f)).await;
    }
    for (issuer, _) in &cases {
        let (s, out) = bearer(&app, &f, &token_from(issuer, &keys_elsewhere, &app)).await;
        assert_eq!((s, &out), (StatusCode::BAD_REQUEST, &cannot_verify()), "{issuer}");
        let port = issuer.rsplit(':').next().unwrap();
        assert!(!out.to_string().contains(port), "{issuer}: {out}");
    }
    let reasons = denial_reasons(&app, &f).await;
    for (issuer, detail) in &cases {
        assert!(
            reasons
                .iter()
                .any(|r| r.contains(issuer) && r.to_lowercase().contains(&detail.to_lowercase())),
            "no audit event for {issuer} says `{detail}`: {reasons:?}"
        );
    }
}

/// Issue 26, finding 5: `^repo:.*$` with no owner condition would let every
/// GitHub repository in the world mint, and an issuer written with a trailing
/// slash could never match. The first is refused, saying why; the second is
/// stored without the slash and matches.
async fn a_trailing_slash_on_the_issuer_still_matches_and_a_pattern_must_pin_the_owner(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;

    let mut any_repo = policy_body(&idp.url, "any-repo", &app, &f);
    any_repo["subject_pattern"] = json!("^repo:.*$");
    let (s, out) = app
        .post(&f.admin, "/v1/tenants/acme/trust-policies", any_repo.clone())
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert!(out["message"].as_str().unwrap().contains("any owner"), "{out}");
    // An exact condition on the owner pins it instead.
    any_repo["claims"] = json!({"repository_owner": "acme"});
    let out = app.created(&f.admin, "/v1/tenants/acme/trust-policies", any_repo).await;
    let (s, _) = app
        .delete(
            &f.admin,
            &format!("/v1/tenants/acme/trust-policies/{}", out["id"].as_str().unwrap()),
        )
        .await;
    assert!(s.is_success());

    let slashed = format!("{}/", idp.url);
    let out = policy(&app, &f, policy_body(&slashed, "slashed", &app, &f)).await;
    assert_eq!(out["issuer"], json!(idp.url), "stored without the slash");
    let (s, out) = bearer(
        &app,
        &f,
        &idp.token("ec-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the issuer's token matches: {out}");
}
