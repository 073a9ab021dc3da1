//! Minting over the token endpoint, and what it records.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, claims, fixture, header, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    an_sdk_style_request_with_only_resource_and_scope_gets_a_scoped_rfc9068_token,
    client_secret_post_and_the_audience_synonym_work_too,
    requested_scopes_the_client_lacks_are_dropped_and_typos_are_refused,
    unknown_resources_and_ungranted_workflows_are_refused_and_audited,
    ttl_is_capped_by_client_resource_and_ceiling,
    bad_credentials_get_invalid_client_with_a_basic_challenge,
    a_disabled_client_cannot_mint,
    the_lease_and_audit_event_exist_when_the_token_is_returned,
    malformed_token_requests_get_oauth_errors_and_change_nothing,
);

async fn an_sdk_style_request_with_only_resource_and_scope_gets_a_scoped_rfc9068_token(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    // Exactly what the MCP SDKs' client-credentials providers send; resource in another case.
    let requested = "HTTPS://MCP.ACME.TEST/github/";
    let res = app.ask_token(&f.ci, requested, &[("scope", "issues:read")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "issues:read");
    assert_eq!(body["expires_in"], 600);
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let h = header(token);
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "ES256");
    assert!(h["kid"].is_string());
    let c = claims(token);
    assert_eq!(c["iss"], app.issuer);
    assert_eq!(c["aud"], requested, "aud is exactly the requested string");
    assert_eq!(c["sub"], f.ci.0, "workload defaults to the client id");
    assert_eq!(c["workflow"], "release", "the client's only workflow is implied");
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["client_id"], f.ci.0);
    assert_eq!(c["scope"], "issues:read");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    assert_eq!(c["nbf"], c["iat"]);
    assert!(c.get("act").is_none());
    let active = app.introspect((&f.rs.0, &f.rs.1), token).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["jti"], c["jti"]);
}

async fn client_secret_post_and_the_audience_synonym_work_too(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let res = app
        .http
        .post(app.url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", f.agent.0.as_str()),
            ("client_secret", f.agent.1.as_str()),
            ("audience", f.resource.as_str()),
            ("workflow", "triage-agent"),
            ("workload", "triage-agent/pod-7"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["scope"], "issues:read issues:write",
        "no scope: the client's default scopes"
    );
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "triage-agent/pod-7");
    assert_eq!(c["workflow"], "triage-agent");

    // Both methods at once is ambiguous.
    let res = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth(&f.agent.0, Some(&f.agent.1))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", f.agent.1.as_str()),
            ("resource", f.resource.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
}

async fn requested_scopes_the_client_lacks_are_dropped_and_typos_are_refused(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let ask = |scope: &'static str| {
        let form = [
            ("grant_type", "client_credentials"),
            ("resource", f.resource.as_str()),
            ("scope", scope),
        ];
        let app = &app;
        let ci = f.ci.clone();
        async move {
            let res = app.token_basic(&ci.0, &ci.1, &form).await;
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    // MCP SDKs ask for every scope the server advertises: the extra one is dropped.
    let (s, body) = ask("issues:read issues:write").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["scope"], "issues:read");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["scope"], "issues:read");
    // Only scopes the client may not have: nothing remains.
    let (s, body) = ask("issues:write").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // A typo is loud.
    let (s, body) = ask("issues:raed").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    assert!(body["error_description"].as_str().unwrap().contains("issues:raed"));
}

async fn unknown_resources_and_ungranted_workflows_are_refused_and_audited(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    assert_eq!(
        app.refused_at(&f.ci, "https://mcp.acme.test/jira", &[]).await,
        (StatusCode::BAD_REQUEST, "invalid_target".into())
    );

    assert_eq!(
        app.refused_at(&f.ci, &f.resource, &[("workflow", "deploy")]).await,
        (StatusCode::BAD_REQUEST, "unauthorized_client".into())
    );

    let (s, audit) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.denied").await;
    assert_eq!(s, StatusCode::OK);
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    assert!(
        items
            .iter()
            .all(|e| e["outcome"] == "denied" && e["client_id"] == f.ci.0.as_str())
    );
    assert_eq!(items[0]["workflow"], "deploy");
    assert!(items[1]["reason"].as_str().unwrap().starts_with("invalid_target"));
}

async fn ttl_is_capped_by_client_resource_and_ceiling(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    // client max 900; resource default 600, max 3600; ceiling 3600.
    let ttl = |app: &TestApp, expires_in: Option<&'static str>| {
        let (id, secret, resource) = (f.ci.0.clone(), f.ci.1.clone(), f.resource.clone());
        let http = app.http.clone();
        let url = app.url("/oauth2/token");
        async move {
            let mut form = vec![("grant_type", "client_credentials"), ("resource", resource.as_str())];
            form.extend(expires_in.map(|e| ("expires_in", e)));
            let res = http
                .post(url)
                .basic_auth(&id, Some(&secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
            let c = claims(body["access_token"].as_str().unwrap());
            assert_eq!(
                body["expires_in"].as_i64().unwrap(),
                c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
                "the answer and the token agree"
            );
            body["expires_in"].as_i64().unwrap()
        }
    };
    assert_eq!(ttl(&app, Some("60")).await, 60, "below every cap: as asked");
    assert_eq!(ttl(&app, None).await, 600, "nothing asked: the resource's default");
    assert_eq!(ttl(&app, Some("86400")).await, 900, "the client's max_ttl_seconds");

    // The resource's max, below the client's.
    let (_, resources) = app.get(&f.admin, "/v1/tenants/acme/resources").await;
    let id = resources["items"][0]["id"].as_str().unwrap().to_string();
    let (s, body) = app
        .patch(
            &f.admin,
            &format!("/v1/tenants/acme/resources/{id}"),
            json!({"default_ttl_seconds": 300, "max_ttl_seconds": 400}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(ttl(&app, Some("86400")).await, 400, "the resource's max_ttl_seconds");
    assert_eq!(ttl(&app, None).await, 300, "its new default");

    // The ceiling, below both: the operator lowered MAYFLY_MAX_TTL and restarted.
    let db = app.stop().await;
    let app = TestApp::on_db(db)
        .config(|c| mayfly::Config {
            default_ttl: Duration::from_secs(200),
            max_ttl: Duration::from_secs(200),
            ..c
        })
        .start()
        .await;
    assert_eq!(ttl(&app, Some("86400")).await, 200, "the global ceiling");
    assert_eq!(ttl(&app, None).await, 200, "the resource's default, capped too");

    assert_eq!(
        app.refused_at(&f.ci, &f.resource, &[("expires_in", "-1")]).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
}

async fn bad_credentials_get_invalid_client_with_a_basic_challenge(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    for (id, secret) in [(f.ci.0.as_str(), "mfy_cs_wrong"), ("no-such-client", f.ci.1.as_str())] {
        let res = app
            .token_basic(
                id,
                secret,
                &[("grant_type", "client_credentials"), ("resource", &f.resource)],
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        assert!(!body.to_string().contains(secret), "the secret is not echoed");
    }
    let res = app
        .http
        .post(app.url("/oauth2/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, audit) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=client.auth_failed")
        .await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "the failure against a known client is in its tenant's log"
    );
    assert_eq!(items[0]["reason"], "bad_secret");
    assert!(!audit.to_string().contains("mfy_cs_wrong"));
}

async fn a_disabled_client_cannot_mint(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let path = format!("/v1/tenants/acme/clients/{}", f.ci.0);
    let (s, body) = app.patch(&f.admin, &path, serde_json::json!({"disabled": true})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["disabled"], true);
    let res = app.ask_token(&f.ci, &f.resource, &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.patch(&f.admin, &path, serde_json::json!({"disabled": false})).await;
    let res = app.ask_token(&f.ci, &f.resource, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn the_lease_and_audit_event_exist_when_the_token_is_returned(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let token = app.mint_at(&f.ci, &f.resource, &[]).await;
    let jti = claims(&token)["jti"].as_str().unwrap().to_string();
    let (s, lease) = app.get(&f.admin, &format!("/v1/tenants/acme/leases/{jti}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(lease["workflow"], "release");
    assert_eq!(lease["workload"], f.ci.0);
    assert_eq!(lease["client_id"], f.ci.0);
    assert_eq!(lease["resource"], f.resource);
    assert_eq!(lease["scopes"], serde_json::json!(["issues:read"]));
    assert_eq!(lease["kid"], header(&token)["kid"]);
    assert_eq!(lease["active"], true);
    assert_eq!(lease["source"], "127.0.0.1");
    let (_, audit) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.issued").await;
    let event = &audit["items"][0];
    assert_eq!(event["lease_id"], jti.as_str());
    assert_eq!(event["request_id"], lease["request_id"]);
    assert!(!audit.to_string().contains(&token), "tokens never reach the audit log");
}

async fn malformed_token_requests_get_oauth_errors_and_change_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let send = |body: &'static str, content_type: &'static str| {
        let app = &app;
        let ci = f.ci.clone();
        async move {
            let res = app
                .http
                .post(app.url("/oauth2/token"))
                .basic_auth(&ci.0, Some(&ci.1))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let form = "application/x-www-form-urlencoded";
    let cases = [
        (
            send("grant_type=client_credentials&grant_type=client_credentials", form).await,
            "invalid_request",
        ),
        (send("grant_type=password", form).await, "unsupported_grant_type"),
        (send("scope=x", form).await, "invalid_request"),
        (
            send("{\"grant_type\":\"client_credentials\"}", "application/json").await,
            "invalid_request",
        ),
        (
            send("grant_type=client_credentials&resource=%zz", form).await,
            "invalid_request",
        ),
        (
            send("grant_type=client_credentials&resource=not-a-uri", form).await,
            "invalid_target",
        ),
        (
            send("grant_type=client_credentials&workflow=a%00b", form).await,
            "invalid_request",
        ),
    ];
    for ((status, body), code) in cases {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], code, "{body}");
        assert!(body["error_description"].is_string());
    }
    let big = "a".repeat(100 * 1024);
    let res = app
        .http
        .post(app.url("/oauth2/token"))
        .header("content-type", form)
        .body(format!("grant_type=client_credentials&scope={big}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, leases) = app.get(&f.admin, "/v1/tenants/acme/leases").await;
    assert_eq!(leases["items"].as_array().unwrap().len(), 0, "no lease from bad input");
}

/// In memory and backend-independent: one backend suffices. Wrong secrets
/// are braked per source address (behind a trusted proxy, the forwarded
/// one); the right one always passes (a guess at a 256-bit secret is
/// hopeless, while a lockout is a denial of service aimed at a known id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_authentication_is_braked_per_source_address_but_the_correct_secret_still_passes() {
    let app = TestApp::on(Backend::Sqlite)
        .config(|c| mayfly::Config {
            auth_failure_limit: 3,
            trusted_proxies: vec![mayfly::config::parse_cidr("127.0.0.0/8").unwrap()],
            ..c
        })
        .start()
        .await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let from = |address: &'static str, secret: &str| {
        app.http
            .post(app.url("/oauth2/token"))
            .basic_auth(&f.ci.0, Some(secret))
            .header("x-forwarded-for", address)
            .form(&form)
            .send()
    };
    let (guesser, colleague) = ("198.51.100.7", "203.0.113.20");
    for _ in 0..3 {
        assert_eq!(
            from(guesser, "mfy_cs_guess").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = from(guesser, "mfy_cs_guess").await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "the next guess waits");
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<i64>().unwrap() > 0);
    // Another address is judged on its own failures: a typo there is a plain 401.
    assert_eq!(
        from(colleague, "mfy_cs_typo").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the brake is per source address"
    );
    assert_eq!(
        from(guesser, &f.ci.1).await.unwrap().status(),
        StatusCode::OK,
        "the correct secret passes during the storm, even from the guessing address"
    );
    app.advance(60);
    assert_eq!(
        from(guesser, "mfy_cs_guess").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a new minute, a fresh budget"
    );
}

/// A burst of failed logins from one address (guessing one client, then
/// rotating made-up ids past the address's budget) never stops a correct
/// mint by another client from that same address, and the storm leaves a
/// handful of aggregated audit events, not one per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_storm_from_one_address_does_not_lock_out_other_clients() {
    let app = crate::kit::braked_after(3).await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let mut statuses = Vec::new();
    for i in 0..60 {
        let id = if i < 20 { f.ci.0.clone() } else { format!("made-up-{i}") };
        statuses.push(app.token_basic(&id, "mfy_cs_guess", &form).await.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the guessing is braked"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    // The guessed client's own correct secret passes, and so does a colleague's.
    assert_eq!(app.token_basic(&f.ci.0, &f.ci.1, &form).await.status(), StatusCode::OK);
    let res = app.ask_token(&f.agent, &f.resource, &[("workflow", "triage")]).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "another client from the same address is not locked out"
    );
    // Aggregated: at most one event per (address, tenant) so far in this minute.
    let (_, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=client.auth_failed&limit=1000")
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
}

/// Behind a trusted proxy the caller's address comes from X-Forwarded-For;
/// from anyone else the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_address_is_taken_from_trusted_proxies_only() {
    for (trusted, expected) in [(true, "198.51.100.7"), (false, "127.0.0.1")] {
        let db = crate::harness::Database::fresh(Backend::Sqlite).await;
        let proxies = if trusted {
            vec![mayfly::config::parse_cidr("127.0.0.0/8").unwrap()]
        } else {
            vec![]
        };
        let app = crate::harness::TestApp::on_db(db)
            .config(move |c| mayfly::Config {
                trusted_proxies: proxies,
                ..c
            })
            .start()
            .await;
        let f = fixture(&app, "acme").await;
        let res = app
            .http
            .post(app.url("/oauth2/token"))
            .basic_auth(&f.ci.0, Some(&f.ci.1))
            .header("x-forwarded-for", "10.9.9.9, 198.51.100.7")
            .form(&[("grant_type", "client_credentials"), ("resource", f.resource.as_str())])
            .send()
            .await
            .unwrap();
        let token = res.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, lease) = app
            .get(
                &f.admin,
                &format!("/v1/tenants/acme/leases/{}", claims(&token)["jti"].as_str().unwrap()),
            )
            .await;
        assert_eq!(lease["source"], expected, "trusted proxy: {trusted}");
    }
}
