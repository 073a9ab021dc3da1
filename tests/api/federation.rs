//! Federation against a fake OIDC issuer on loopback: GitHub-, GitLab- and
//! Kubernetes-shaped tokens become scoped mayfly tokens through trust
//! policies; every bad token is refused with invalid_grant and audited with
//! the condition it failed; private_key_jwt with registered keys or a
//! policy-bound workload token.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, claims, fixture, spawn_app};
use crate::kit::{EXCHANGE, JWT_BEARER};
use crate::oidc::{self, FakeIssuer, now, sign_with};
use crate::on_both_backends;

on_both_backends!(
    ci_and_workload_tokens_become_their_policys_workflow_workload_scopes_and_ttl,
    each_bad_token_is_refused_with_invalid_grant_and_the_failed_condition_audited,
    trust_policies_are_validated_audited_and_tenant_scoped,
);

pub(crate) async fn policy(app: &TestApp, f: &Fixture, body: Value) -> Value {
    app.created(&f.admin, "/v1/tenants/acme/trust-policies", body).await
}

pub(crate) fn github_policy(issuer: &FakeIssuer, app: &TestApp, f: &Fixture) -> Value {
    json!({
        "name": "release-main", "issuer": issuer.url, "audience": app.issuer,
        "subject_pattern": "^repo:acme/app:ref:refs/heads/main$",
        "claims": {"repository_owner_id": "1342004", "environment": ["prod", "staging"],
                   "job_workflow_ref": {"pattern": "^acme/app/\\.github/workflows/release\\.yml@.+$"}},
        "max_token_age_seconds": 600, "single_use": true,
        "workflow_template": "release", "workload_template": "github:{repository}@{ref}",
        "grants": [{"resource": f.resource, "scopes": ["issues:read"]}], "max_ttl_seconds": 300,
        "owner": "platform-team"
    })
}

pub(crate) async fn exchange(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    app.token_form(form).await
}

async fn ci_and_workload_tokens_become_their_policys_workflow_workload_scopes_and_ttl(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let gh = policy(&app, &f, github_policy(&idp, &app, &f)).await;
    policy(
        &app,
        &f,
        json!({
            "name": "gitlab-deploy", "issuer": idp.url, "audience": app.issuer,
            "subject_pattern": "^project_path:acme/infra:ref_type:branch:ref:main$",
            "claims": {"ref_protected": "true"},
            "workflow_template": "deploy", "workload_template": "{project_path}:{pipeline_id}",
            "grants": [{"resource": f.resource, "scopes": ["issues:read", "issues:write"]}]
        }),
    )
    .await;
    policy(&app, &f, json!({
        "name": "triage-pods", "issuer": idp.url, "audience": "mayfly",
        "subject": "system:serviceaccount:agents:triage",
        "workflow_template": "triage", "workload_template": "k8s:{kubernetes.io.namespace}/{kubernetes.io.serviceaccount.name}",
        "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]
    })).await;

    // GitHub Actions, RSA-signed, through the jwt-bearer grant.
    let token = idp.token("rsa-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main"));
    let (s, body) = exchange(
        &app,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &token),
            ("resource", &f.resource),
            ("scope", "issues:read issues:write"),
            ("expires_in", "3600"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "issues:read", "the policy grants read only");
    assert_eq!(body["expires_in"], 300, "capped by the policy");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["workflow"].as_str()),
        (Some("github:acme/app@refs/heads/main"), Some("release"))
    );
    assert_eq!(c["client_id"], "policy.release-main");
    assert_eq!(c["tenant"], "acme");
    let (_, lease) = app
        .get(
            &f.admin,
            &format!("/v1/tenants/acme/leases/{}", c["jti"].as_str().unwrap()),
        )
        .await;
    assert_eq!(lease["federated"]["issuer"], idp.url.as_str());
    assert_eq!(lease["federated"]["subject"], "repo:acme/app:ref:refs/heads/main");
    assert_eq!(lease["policy_id"], gh["id"]);
    let (_, by_policy) = app
        .get(
            &f.admin,
            &format!("/v1/tenants/acme/leases?policy_id={}", gh["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(by_policy["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.introspect((&f.rs.0, &f.rs.1), body["access_token"].as_str().unwrap())
            .await["active"],
        true
    );

    // GitLab CI, EC-signed, through token exchange.
    let token = idp.token("ec-1", oidc::gitlab(&app.issuer, "acme/infra"));
    let (s, body) = exchange(
        &app,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            ("audience", &f.resource),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["workflow"].as_str()),
        (Some("acme/infra:1094"), Some("deploy"))
    );

    // A Kubernetes projected service-account token (aud is a list).
    let token = idp.token("ec-1", oidc::kubernetes("mayfly", "agents", "triage"));
    let (s, body) = app.jwt_bearer(&token, &f.resource).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["sub"],
        "k8s:agents/triage"
    );

    // The metadata offers the grants and private_key_jwt.
    let meta: Value = app.public("/.well-known/oauth-authorization-server").await;
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER))
    );
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
}

async fn each_bad_token_is_refused_with_invalid_grant_and_the_failed_condition_audited(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let stranger = FakeIssuer::start().await;
    policy(&app, &f, github_policy(&idp, &app, &f)).await;
    let good = || oidc::github(&app.issuer, "acme/app", "refs/heads/main");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = good();
        edit(&mut c);
        c
    };
    let t = now();
    let replayed = idp.token("ec-1", good());
    let hs_key = idp.public_jwk("ec-1").to_string();
    let mut cases: Vec<(&str, String)> = vec![
        ("no trust policy", stranger.token("ec-1", good())),
        (
            "audience",
            idp.token("ec-1", with(&|c| c["aud"] = json!("https://someone-else.test"))),
        ),
        (
            "subject",
            idp.token("ec-1", with(&|c| c["sub"] = json!("repo:acme/app:ref:refs/heads/dev"))),
        ),
        (
            "claim repository_owner_id",
            idp.token("ec-1", with(&|c| c["repository_owner_id"] = json!("666"))),
        ),
        (
            "claim environment",
            idp.token("ec-1", with(&|c| c["environment"] = json!("dev"))),
        ),
        (
            "expired",
            idp.token(
                "ec-1",
                with(&|c| {
                    c["iat"] = json!(t - 1000);
                    c["exp"] = json!(t - 700);
                }),
            ),
        ),
        (
            "too old",
            idp.token(
                "ec-1",
                with(&|c| {
                    c["iat"] = json!(t - 900);
                    c["exp"] = json!(t + 300);
                }),
            ),
        ),
        (
            "no key",
            idp.token("ec-1", good()).replacen(
                &base64_url(&json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}).to_string()),
                &base64_url(&json!({"alg": "ES256", "kid": "ec-9", "typ": "JWT"}).to_string()),
                1,
            ),
        ),
    ];
    // alg none, and HS256 "signed" with the issuer's public key as the secret.
    let mut unsigned = good();
    unsigned["iss"] = json!(idp.url);
    cases.push((
        "algorithm",
        format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","kid":"ec-1"}"#),
            base64_url(&unsigned.to_string())
        ),
    ));
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hs_key.as_bytes());
    let signed = format!(
        "{}.{}",
        base64_url(r#"{"alg":"HS256","kid":"ec-1"}"#),
        base64_url(&unsigned.to_string())
    );
    let tag = ring::hmac::sign(&hmac_key, signed.as_bytes());
    cases.push(("algorithm", format!("{signed}.{}", base64_url_bytes(tag.as_ref()))));
    // A token signed by a key the issuer never published, under a published kid.
    let forged = sign_with(&oidc::ec_signer(), &json!({"alg": "ES256", "kid": "ec-1"}), &unsigned);
    cases.push(("signature", forged));

    let (s, _) = app.jwt_bearer(&replayed, &f.resource).await;
    assert_eq!(s, StatusCode::OK);
    cases.push(("replayed", replayed));
    let reason = |why: &str| match why {
        "no trust policy" => format!("invalid_grant: no trust policy for issuer {}", stranger.url),
        "no key" => format!(
            "invalid_grant: no key of the issuer matches the token's kid (issuer {})",
            idp.url
        ),
        "algorithm" => format!("invalid_grant: algorithm not accepted (issuer {})", idp.url),
        "signature" => format!("invalid_grant: invalid signature (issuer {})", idp.url),
        condition => format!("invalid_grant: {condition} (policy release-main)"),
    };
    let mut written = std::collections::HashSet::new();
    for (why, token) in &cases {
        // These callers are unauthenticated: their refusals are written once
        // per (source, tenant, reason, minute). A case repeating a reason
        // (the two algorithm attacks) gets a minute of its own.
        if !written.insert(reason(why)) {
            app.advance(60);
        }
        let before = denied(&app, &f).await;
        let (s, body) = app.jwt_bearer(token, &f.resource).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{why}: {body}");
        assert!(!body.to_string().contains(token.as_str()), "the token is never echoed");
        let after = denied(&app, &f).await;
        let new: Vec<&Value> = after
            .iter()
            .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
            .collect();
        assert_eq!(new.len(), 1, "{why}: exactly one event: {new:?}");
        assert_eq!(new[0]["reason"], reason(why), "{why}");
        assert_eq!(
            (
                new[0]["outcome"].clone(),
                new[0]["tenant"].clone(),
                new[0]["client_id"].clone()
            ),
            (json!("denied"), json!("acme"), Value::Null),
            "{why}: {}",
            new[0]
        );
        assert!(
            !new[0].to_string().contains(token.as_str()),
            "the token never reaches the audit trail"
        );
    }
    // Workflow and workload come from the policy, never the request: asking
    // is malformed, refused before the token is judged (so not audited).
    let token = idp.token("ec-1", good());
    let before = denied(&app, &f).await;
    let (s, body) = exchange(
        &app,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &token),
            ("resource", &f.resource),
            ("workload", "mayfly-admin"),
        ],
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str(), body["error_description"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
            Some("`workflow` and `workload` come from the subject, not the request")
        )
    );
    assert_eq!(denied_since(&app, &f, &before).await, []);
}

/// The `token.denied` events written since `before`: (reason, client_id).
pub(crate) async fn denied_since(app: &TestApp, f: &Fixture, before: &[Value]) -> Vec<(Value, Value)> {
    let after = denied(app, f).await;
    after
        .iter()
        .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
        .map(|e| (e["reason"].clone(), e["client_id"].clone()))
        .collect()
}

/// The tenant's `token.denied` events, newest first.
pub(crate) async fn denied(app: &TestApp, f: &Fixture) -> Vec<Value> {
    let (s, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=token.denied&limit=1000")
        .await;
    assert_eq!(s, StatusCode::OK, "{events}");
    events["items"].as_array().unwrap().clone()
}

fn base64_url(s: &str) -> String {
    base64_url_bytes(s.as_bytes())
}

fn base64_url_bytes(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Trust policies are the tenant's own: validated, audited, and invisible to
/// other tenants' admins.
async fn trust_policies_are_validated_audited_and_tenant_scoped(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let good = github_policy(&idp, &app, &f);
    for (field, bad) in [
        ("subject", json!(null)),
        ("subject_pattern", json!("^.*$")),
        ("issuer", json!("http://issuer.example")),
        ("workload_template", json!("github:{repository")),
    ] {
        let mut body = good.clone();
        if field == "subject" {
            body.as_object_mut().unwrap().remove("subject_pattern");
        } else {
            body[field] = bad;
        }
        let (s, out) = app.post(&f.admin, "/v1/tenants/acme/trust-policies", body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {out}");
    }
    let created = policy(&app, &f, good.clone()).await;
    let path = format!("/v1/tenants/acme/trust-policies/{}", created["id"].as_str().unwrap());
    let mut changed = good.clone();
    changed["max_ttl_seconds"] = json!(120);
    let (s, out) = app.patch(&f.admin, &path, changed).await;
    assert_eq!((s, out["max_ttl_seconds"].clone()), (StatusCode::OK, json!(120)));
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/trust-policies").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Another tenant's admin sees nothing of it.
    let other = fixture(&app, "other").await;
    let other_admin = crate::harness::tenant_admin(&app, &other.admin, "other").await;
    let (s, _) = app.get(&other_admin, &path).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.get(&other_admin, &path.replace("/acme/", "/other/")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.delete(&f.admin, &path).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?limit=100").await;
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["trust_policy.created", "trust_policy.updated", "trust_policy.deleted"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    // Deleted: its tokens are refused from now on.
    let token = idp.token("ec-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main"));
    let before = denied(&app, &f).await;
    let (s, body) = app.jwt_bearer(&token, &f.resource).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        denied_since(&app, &f, &before).await,
        [(
            json!(format!("invalid_grant: no trust policy for issuer {}", idp.url)),
            Value::Null
        )]
    );
}

/// The whole chain, with no stored secret: `mayfly token --github-actions`
/// asks a stand-in of the runner's token service for the job's OIDC token
/// (signed by the fake issuer) and trades it at the real mayfly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mayfly_token_github_actions_gets_a_token_from_the_real_server() {
    let app = spawn_app(Backend::Sqlite).await;
    let f = fixture(&app, "acme").await;
    let idp = std::sync::Arc::new(FakeIssuer::start().await);
    policy(&app, &f, github_policy(&idp, &app, &f)).await;
    let runner = {
        let idp = idp.clone();
        let route = axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let idp = idp.clone();
                async move {
                    let aud = q.get("audience").cloned().unwrap_or_default();
                    axum::Json(json!({"value": idp.token("rsa-1", oidc::github(&aud, "acme/app", "refs/heads/main"))}))
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token?api-version=2.0", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().route("/token", route))
                .await
                .unwrap()
        });
        url
    };
    let (base, resource) = (app.base.clone(), f.resource.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args([
                "token",
                "--github-actions",
                "--from",
                &base,
                "--resource",
                &resource,
                "--scope",
                "issues:read",
            ])
            .env_clear()
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", runner)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-bearer")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let c = claims(&token);
    assert_eq!(
        (c["sub"].as_str(), c["workflow"].as_str()),
        (Some("github:acme/app@refs/heads/main"), Some("release"))
    );
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);
}
