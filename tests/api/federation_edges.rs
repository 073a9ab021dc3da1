//! Federation at its edges: an issuer that rotates its keys or hangs, a
//! token replayed at another replica, private_key_jwt with registered keys
//! or a policy-bound workload token, and a trust policy past its expiry.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::federation::{denied, denied_since, exchange, github_policy, policy};
use crate::harness::{Backend, claims, eventually, fixture, spawn_app};
use crate::kit::JWT_BEARER;
use crate::oidc::{self, FakeIssuer, now, sign_with};
use crate::on_both_backends;

on_both_backends!(
    a_key_rotation_at_the_issuer_is_picked_up,
    private_key_jwt_with_registered_keys_or_a_policy_bound_workload_token,
    a_single_use_policy_refuses_an_assertion_that_outlives_its_replay_record,
    a_trust_policy_stops_at_its_expires_at,
    a_delegation_only_policy_never_authenticates_a_client,
);

async fn a_key_rotation_at_the_issuer_is_picked_up(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let mut p = github_policy(&idp, &app, &f);
    p["single_use"] = json!(false);
    policy(&app, &f, p).await;
    let good = || oidc::github(&app.issuer, "acme/app", "refs/heads/main");
    let (s, _) = exchange(
        &app,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &idp.token("ec-1", good())),
            ("resource", &f.resource),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    idp.add_key("ec-2");
    // An unknown kid triggers a refetch, after a short cooldown against kid
    // spam (the server's own time): until then the new key is unknown.
    let rotated = idp.token("ec-2", good());
    let unknown = format!("no key of the issuer matches the token's kid (issuer {})", idp.url);
    eventually("the issuer's new key is picked up", || async {
        let (s, body) = app.jwt_bearer(&rotated, &f.resource).await;
        if s == StatusCode::OK {
            return true;
        }
        assert_eq!(
            (s, body["error"].as_str(), body["error_description"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant"), Some(unknown.as_str()))
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        false
    })
    .await;
}

async fn private_key_jwt_with_registered_keys_or_a_policy_bound_workload_token(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    // A client registered with its public key only: no secret exists.
    let signer = oidc::ec_signer();
    let jwk = {
        let mut k = FakeIssuer::jwk_of(&signer, "agent-key");
        k.as_object_mut().unwrap().remove("kid");
        k
    };
    let (s, client) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-keyed", "kind": "agent",
            "workflows": ["triage"], "grants": [{"resource": f.resource, "scopes": ["issues:read"]}],
            "jwks": {"keys": [jwk]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{client}");
    assert!(client.get("client_secret").is_none());
    let assertion = |aud: &str, jti: &str| {
        let t = now();
        sign_with(
            &signer,
            &json!({"alg": "ES256", "typ": "JWT"}),
            &json!({"iss": "acme-keyed", "sub": "acme-keyed", "aud": aud, "iat": t, "exp": t + 60, "jti": jti}),
        )
    };
    let cc = |a: String| {
        let resource = f.resource.clone();
        let app = &app;
        async move {
            // As the MCP SDK's PrivateKeyJWTOAuthProvider sends it: no client_id.
            exchange(
                app,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion", &a),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("resource", &resource),
                    ("scope", "issues:read"),
                ],
            )
            .await
        }
    };
    let first = assertion(&app.issuer, "j-1");
    let (s, body) = cc(first.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["client_id"],
        "acme-keyed"
    );
    let (s, body) = cc(first).await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_client")),
        "replayed"
    );
    let before = denied(&app, &f).await;
    let (s, body) = cc(assertion("https://elsewhere.test", "j-2")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "wrong audience"
    );
    assert_eq!(
        denied_since(&app, &f, &before).await,
        [(json!("invalid_grant: client assertion: audience"), json!("acme-keyed"))]
    );
    let (s, _) = cc(assertion(&format!("{}/oauth2/token", app.issuer), "j-3")).await;
    assert_eq!(s, StatusCode::OK, "the token endpoint is an accepted audience too");

    // A workload token that a trust policy binds to a client.
    policy(
        &app,
        &f,
        json!({
            "name": "agent-pods", "issuer": idp.url, "audience": app.issuer,
            "subject": "system:serviceaccount:agents:triage", "client_id": f.agent.0,
            "workflow_template": "triage", "workload_template": "k8s:{kubernetes.io.serviceaccount.name}",
            "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]
        }),
    )
    .await;
    let pod_token = idp.token("rsa-1", oidc::kubernetes(&app.issuer, "agents", "triage"));
    let (s, body) = cc(pod_token.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (c["client_id"].as_str(), c["sub"].as_str()),
        (Some(f.agent.0.as_str()), Some("k8s:triage"))
    );
    let other_pod = idp.token("rsa-1", oidc::kubernetes(&app.issuer, "agents", "intruder"));
    let before = denied(&app, &f).await;
    let (s, body) = cc(other_pod).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert_eq!(
        denied_since(&app, &f, &before).await,
        [(json!("invalid_grant: subject (policy agent-pods)"), Value::Null)]
    );
}

/// single_use is enforced across replicas: a token spent at one is refused at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_token_is_refused_by_another_replica() {
    let db = crate::harness::Database::fresh(Backend::Postgres).await;
    let (a, b) = crate::kit::replicas(&db).await;
    let f = fixture(&a, "acme").await;
    let idp = FakeIssuer::start().await;
    policy(&a, &f, github_policy(&idp, &a, &f)).await;
    let token = idp.token("ec-1", oidc::github(&a.issuer, "acme/app", "refs/heads/main"));
    let form = [
        ("grant_type", JWT_BEARER),
        ("assertion", token.as_str()),
        ("resource", f.resource.as_str()),
    ];
    assert_eq!(exchange(&a, &form).await.0, StatusCode::OK);
    let (s, body) = exchange(&b, &form).await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
}

/// An issuer that hangs delays only its own tokens: another tenant's mint
/// goes through while the first waits on the dead issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_issuer_does_not_stall_other_tenants_mints() {
    let app = spawn_app(Backend::Sqlite).await;
    let f = fixture(&app, "acme").await;
    let slow = fixture(&app, "slow").await;
    let (good_idp, dead_idp) = (FakeIssuer::start().await, FakeIssuer::start().await);
    policy(&app, &f, github_policy(&good_idp, &app, &f)).await;
    let mut p = github_policy(&dead_idp, &app, &slow);
    p["name"] = json!("slow-release");
    let (s, body) = app.post(&slow.admin, "/v1/tenants/slow/trust-policies", p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    dead_idp.hang();
    let stuck = {
        let token = dead_idp.token("ec-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main"));
        let (url, resource, http) = (app.url("/oauth2/token"), slow.resource.clone(), app.http.clone());
        tokio::spawn(async move {
            let form = [
                ("grant_type", JWT_BEARER),
                ("assertion", token.as_str()),
                ("resource", resource.as_str()),
            ];
            http.post(url).form(&form).send().await.unwrap().status()
        })
    };
    // The other tenant's mint starts once the dead issuer really holds the
    // first one (not after a guessed 200 ms, which a busy machine can miss).
    eventually("the dead issuer holds a request", || async { dead_idp.held() > 0 }).await;
    let started = std::time::Instant::now();
    let token = good_idp.token("ec-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main"));
    let (s, _) = app.jwt_bearer(&token, &f.resource).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    assert!(!stuck.is_finished(), "the dead issuer's request is still waiting");
    assert_eq!(
        stuck.await.unwrap(),
        StatusCode::BAD_REQUEST,
        "refused once the fetch times out"
    );
}

/// A trust policy with `expires_at` honours tokens until then and none
/// after, on the server's clock; one cannot be created already expired.
async fn a_trust_policy_stops_at_its_expires_at(b: Backend) {
    use mayfly::clock::Clock;
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let at = |seconds: i64| {
        (app.clock.now() + chrono::TimeDelta::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut p = github_policy(&idp, &app, &f);
    p["expires_at"] = json!(at(-1));
    let (s, body) = app.post(&f.admin, "/v1/tenants/acme/trust-policies", p.clone()).await;
    assert_eq!(
        (s, body["error"].as_str(), body["message"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("validation_failed"),
            Some("expires_at: must be in the future")
        )
    );
    p["expires_at"] = json!(at(120));
    policy(&app, &f, p).await;
    let trade = || {
        let token = idp.token("ec-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main"));
        let resource = f.resource.clone();
        let app = &app;
        async move { app.jwt_bearer(&token, &resource).await }
    };
    let (s, body) = trade().await;
    assert_eq!(s, StatusCode::OK, "before its expiry: {body}");
    app.advance(121);
    let (s, body) = trade().await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "after its expiry: {body}"
    );
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.denied").await;
    assert_eq!(
        events["items"][0]["reason"], "invalid_grant: policy expired (policy release-main)",
        "{events}"
    );
}

/// A `single_use` policy remembers a `jti` for at most a day, so it refuses an
/// assertion valid for longer (it could be replayed once forgotten); the
/// audit trail says why.
async fn a_single_use_policy_refuses_an_assertion_that_outlives_its_replay_record(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    policy(&app, &f, github_policy(&idp, &app, &f)).await;
    let lasting = |seconds: i64| {
        let mut c = oidc::github(&app.issuer, "acme/app", "refs/heads/main");
        c["exp"] = json!(now() + seconds);
        idp.token("ec-1", c)
    };
    let mint = |token: String| {
        let (app, resource) = (&app, f.resource.clone());
        async move { app.jwt_bearer(&token, &resource).await }
    };
    let (s, body) = mint(lasting(86_400 + 600)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (s, body) = mint(lasting(86_400 - 600)).await;
    assert_eq!(s, StatusCode::OK, "a day's validity is fine: {body}");
    let (_, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=token.denied&limit=100")
        .await;
    let reasons = events["items"].to_string();
    assert!(
        reasons.contains("too long for single_use (policy release-main)"),
        "{reasons}"
    );
}

/// A policy that names actors is for delegation only, even when it also
/// names a client: a person's token is no private_key_jwt for that client
/// (it would be a bare token of the person's, with no agent in `act`).
async fn a_delegation_only_policy_never_authenticates_a_client(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    policy(
        &app,
        &f,
        json!({"name": "people", "issuer": idp.url, "audience": app.issuer,
               "subject_pattern": "^[a-z]+@acme\\.test$", "actors": [f.agent.0], "client_id": f.ci.0,
               "workflow_template": "release", "workload_template": "{sub}",
               "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
    )
    .await;
    let t = now();
    let person = idp.token(
        "ec-1",
        json!({"sub": "alice@acme.test", "aud": app.issuer, "iat": t, "exp": t + 300}),
    );
    for client_id in [None, Some(f.ci.0.as_str())] {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", person.as_str()),
            ("resource", f.resource.as_str()),
        ];
        form.extend(client_id.map(|id| ("client_id", id)));
        let (s, body) = exchange(&app, &form).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{client_id:?}: {body}"
        );
    }
}
