//! How people's sessions end beyond the person's revocation: a rule on the
//! session's first lease (which must reach the tokens minted by refreshes,
//! offline too), the client itself (RFC 7009 with its refresh token), and
//! a login provider moved to another issuer (which must not take the
//! stored secret along).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dpop::Holder;
use crate::harness::{Backend, TestApp, claims};
use crate::idp::IDP_CLIENT;
use crate::on_both_backends;
use crate::people::{People, has_reason, param, pkce, setup};

on_both_backends!(
    revoking_a_sessions_first_lease_ends_its_later_tokens_at_once_and_in_the_feed,
    a_public_client_ends_its_session_with_its_refresh_token,
    a_login_provider_moved_to_another_issuer_needs_its_secret_again,
    a_dpop_bound_session_refreshes_only_with_a_proof_of_its_key,
    a_storm_of_made_up_refresh_tokens_is_throttled_and_audited_in_bounded_events,
    an_interactive_client_registered_by_the_tenant_signs_people_in_until_it_is_disabled,
    keys_rewrap_carries_the_idp_secret_to_a_new_master_key,
);

async fn revoking_a_sessions_first_lease_ends_its_later_tokens_at_once_and_in_the_feed(b: Backend) {
    let p = setup(b).await;
    let first = p.tokens().await;
    let res = p.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let root = claims(first["access_token"].as_str().unwrap())["jti"].clone();
    let latest = claims(second["access_token"].as_str().unwrap())["jti"].clone();
    assert!(p.active(second["access_token"].as_str().unwrap()).await);
    let (s, body) = p
        .app
        .post(
            &p.f.admin,
            "/v1/tenants/acme/revocations",
            json!({"lease_id": root, "reason": "stolen laptop"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // At once, by introspection, and in the feed offline verifiers follow.
    assert!(!p.active(second["access_token"].as_str().unwrap()).await);
    let (_, feed) = p.app.get(&p.f.admin, "/v1/revocations").await;
    let rules: Vec<&Value> = feed["items"].as_array().unwrap().iter().collect();
    assert!(
        rules.iter().any(|r| r["selector"]["lease_id"] == latest),
        "the refreshed token's own rule: {feed}"
    );
    assert_eq!(
        p.refresh(second["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
    // A rule on a lease in the middle of a family ends the family too.
    let fresh = p.tokens().await;
    let mid: Value = p
        .refresh(fresh["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let newest: Value = p
        .refresh(mid["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let mid_lease = claims(mid["access_token"].as_str().unwrap())["jti"].clone();
    let (s, body) = p
        .app
        .post(
            &p.f.admin,
            "/v1/tenants/acme/revocations",
            json!({"lease_id": mid_lease, "reason": "that token leaked"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert!(
        !p.active(newest["access_token"].as_str().unwrap()).await,
        "the family's newest token ends too"
    );
    assert_eq!(
        p.refresh(newest["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
}

async fn a_public_client_ends_its_session_with_its_refresh_token(b: Backend) {
    let p = setup(b).await;
    let t = p.tokens().await;
    let refresh = t["refresh_token"].as_str().unwrap();
    let revoke = |client: &str| {
        let (http, url) = (p.app.http.clone(), p.app.url("/oauth2/revoke"));
        let form = [("token", refresh.to_string()), ("client_id", client.to_string())];
        async move { http.post(url).form(&form).send().await.unwrap().status() }
    };
    // Another client's attempt changes nothing (and is answered the same).
    assert_eq!(revoke("https://evil.test/client").await, StatusCode::OK);
    assert!(p.active(t["access_token"].as_str().unwrap()).await);
    assert_eq!(revoke(&p.client).await, StatusCode::OK);
    assert!(!p.active(t["access_token"].as_str().unwrap()).await);
    assert_eq!(p.refresh(refresh).await.status(), StatusCode::BAD_REQUEST);
    let revoked = p.events("session.revoked").await;
    assert!(has_reason(&revoked, "revoked by its client"), "{revoked:?}");
}

async fn a_login_provider_moved_to_another_issuer_needs_its_secret_again(b: Backend) {
    let p = setup(b).await;
    let before = p.tokens().await;
    let (_, list) = p.app.get(&p.f.admin, "/v1/tenants/acme/login-providers").await;
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/tenants/acme/login-providers/{id}");
    let body = |issuer: &str, secret: Option<&str>| {
        let mut b = json!({"name": "okta", "issuer": issuer, "client_id": IDP_CLIENT,
                           "grants": [{"resource": p.f.resource, "scopes": ["issues:read"]}]});
        if let Some(s) = secret {
            b["client_secret"] = json!(s);
        }
        b
    };
    // A person's name cannot pass for a machine's.
    let mut machine = body(&p.idp.url, None);
    machine["workload_template"] = json!("github:{preferred_username}");
    let (s, answer) = p.app.patch(&p.f.admin, &path, machine).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let elsewhere = "https://login.elsewhere.example";
    let (s, answer) = p.app.patch(&p.f.admin, &path, body(elsewhere, None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("client secret again"),
        "{answer}"
    );
    let (s, answer) = p
        .app
        .patch(&p.f.admin, &path, body(elsewhere, Some("a-new-secret")))
        .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["has_client_secret"], true);
    assert!(!answer.to_string().contains("a-new-secret"));
    // Sessions started under the old IdP end: people sign in again at the new one.
    let refresh = p.refresh(before["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), StatusCode::BAD_REQUEST);
}

async fn a_dpop_bound_session_refreshes_only_with_a_proof_of_its_key(b: Backend) {
    let p = setup(b).await;
    let key = Holder::ec();
    let (verifier, challenge) = pkce();
    let code = param(&p.sign_in(&challenge).await, "code").unwrap();
    let post = |form: Vec<(&'static str, String)>, proof: Option<String>| {
        let mut req = p.app.http.post(p.app.url("/oauth2/token")).form(&form);
        if let Some(proof) = proof {
            req = req.header("DPoP", proof);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (s, t) = post(
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("client_id", p.client.clone()),
            ("redirect_uri", "http://127.0.0.1:53682/callback".into()),
            ("code_verifier", verifier),
        ],
        Some(key.proof(&p.app, json!({}))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(claims(t["access_token"].as_str().unwrap())["cnf"]["jkt"], key.jkt());
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let form = || {
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", p.client.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect::<Vec<_>>()
    };
    // Stolen without the key: refused, and the token is not burned.
    let (s, body) = post(form(), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = post(form(), Some(Holder::ec().proof(&p.app, json!({})))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "another key: {body}");
    let (s, body) = post(form(), Some(key.proof(&p.app, json!({})))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["cnf"]["jkt"], key.jkt());
}

async fn a_storm_of_made_up_refresh_tokens_is_throttled_and_audited_in_bounded_events(b: Backend) {
    let p = setup(b).await;
    let t = p.tokens().await;
    let refresh = t["refresh_token"].as_str().unwrap();
    let mut statuses = Vec::new();
    for i in 0..230 {
        // A stolen refresh token tried under other client ids (refused before spending).
        let res = p
            .app
            .token_post(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &format!("https://x{i}.test/c")),
            ])
            .await;
        statuses.push(res.status());
    }
    assert!(
        statuses[..200].iter().all(|s| *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    assert_eq!(
        *statuses.last().unwrap(),
        StatusCode::TOO_MANY_REQUESTS,
        "braked past 10x the limit (20)"
    );
    // One event per reason and minute, not one per request.
    let denied: Vec<Value> = p
        .events("token.denied")
        .await
        .into_iter()
        .filter(|e| e["reason"].as_str().unwrap().contains("another client"))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    // The braked address waits out the minute, then finds the token unburned.
    assert_eq!(
        p.refresh(refresh).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "braked before any work"
    );
    p.app.advance(61);
    assert_eq!(p.refresh(refresh).await.status(), StatusCode::OK, "not burned");
}

/// Replicas share Postgres: a person revoked through one is refused by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_person_through_one_replica_ends_their_session_on_the_other() {
    let p = setup(Backend::Postgres).await;
    let other = TestApp::on_db(p.app.db.clone()).start().await;
    let first = p.tokens().await;
    let refresh_on_other = |token: String| {
        let (http, url, client) = (other.http.clone(), other.url("/oauth2/token"), p.client.clone());
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", client.as_str()),
            ];
            let res = http.post(url).form(&form).send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (s, second) = refresh_on_other(first["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a session started on one replica refreshes on the other: {second}"
    );
    let rs = (p.f.rs.0.as_str(), p.f.rs.1.as_str());
    assert_eq!(
        other.introspect(rs, second["access_token"].as_str().unwrap()).await["active"],
        true
    );
    let (s, body) = p
        .app
        .post(
            &p.f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workload": "person:alice@acme.test", "reason": "offboarded"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(
        other.introspect(rs, second["access_token"].as_str().unwrap()).await["active"],
        false
    );
    let (s, body) = refresh_on_other(second["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

async fn an_interactive_client_registered_by_the_tenant_signs_people_in_until_it_is_disabled(b: Backend) {
    let mut p = setup(b).await;
    let clients = "/v1/tenants/acme/clients";
    for (body, why) in [
        (
            json!({"client_id": "ide", "kind": "interactive"}),
            "redirect URIs required",
        ),
        (
            json!({"client_id": "ide", "kind": "interactive", "redirect_uris": ["http://evil.test/cb"]}),
            "plain http",
        ),
        (
            json!({"client_id": "ci2", "kind": "ci", "workflows": ["x"], "redirect_uris": ["http://127.0.0.1/cb"]}),
            "not interactive",
        ),
        (
            json!({"client_id": "mfy_dcr_lookalike", "kind": "interactive", "redirect_uris": ["http://127.0.0.1/cb"]}),
            "mayfly's own prefix",
        ),
        (
            json!({"client_id": "ide2", "kind": "interactive", "workflows": ["x"], "redirect_uris": ["http://127.0.0.1/cb"]}),
            "no workflows of its own",
        ),
    ] {
        let (s, answer) = p.app.post(&p.f.admin, clients, body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {answer}");
    }
    let (s, ide) = p
        .app
        .post(
            &p.f.admin,
            clients,
            json!({"client_id": "acme-ide", "name": "Acme IDE", "kind": "interactive",
                                          "redirect_uris": ["http://127.0.0.1/callback"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ide}");
    assert!(
        ide.get("client_secret").is_none_or(Value::is_null),
        "a public client: {ide}"
    );
    let (s, body) = p
        .app
        .post(&p.f.admin, "/v1/tenants/acme/clients/acme-ide/secrets", json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a public client has no secret to rotate: {body}"
    );
    p.client = "acme-ide".into();
    let t = p.tokens().await;
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(
        (c["client_id"].as_str(), c["sub"].as_str()),
        (Some("acme-ide"), Some("person:alice@acme.test"))
    );
    // It cannot mint for itself: it has no secret, and client_credentials needs one.
    let res = p
        .app
        .token_post(&[
            ("grant_type", "client_credentials"),
            ("client_id", "acme-ide"),
            ("resource", p.f.resource.as_str()),
        ])
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Disabled: its sessions end, its tokens too.
    let (s, body) = p
        .app
        .patch(
            &p.f.admin,
            "/v1/tenants/acme/clients/acme-ide",
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(!p.active(t["access_token"].as_str().unwrap()).await);
    assert_eq!(
        p.refresh(t["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
}

/// Rotating the master key: `mayfly keys rewrap` re-seals the IdP client
/// secret too, so people still sign in under the new key alone.
async fn keys_rewrap_carries_the_idp_secret_to_a_new_master_key(b: Backend) {
    let People { app, f, idp, client } = setup(b).await;
    let db = app.stop().await;
    let new_key = "33".repeat(32);
    let out = crate::durability::rewrap(&db, &new_key, Some(crate::harness::MASTER_KEY));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("re-sealed 1 login provider secret(s)"), "{stdout}");
    let key = new_key.clone();
    let app = TestApp::on_db(db)
        .config(move |mut c| {
            c.master_key = Some(secrecy::SecretString::from(key));
            c
        })
        .start()
        .await;
    let p = People { app, f, idp, client };
    // The IdP checks the secret at its token endpoint: a sign-in proves it opened.
    let t = p.tokens().await;
    assert_eq!(
        claims(t["access_token"].as_str().unwrap())["sub"],
        "person:alice@acme.test"
    );
}
