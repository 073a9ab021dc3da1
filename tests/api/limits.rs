//! Noisy neighbours and the operations listener: per-tenant and per-client
//! limits, and metrics kept off the public listener.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, TestApp, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(a_tenant_over_its_limits_gets_429s_and_others_are_untouched);

/// One tenant's runaway job cannot starve the others: past its live-lease or
/// rate limit a mint answers 429 with Retry-After (audited once a minute),
/// other tenants mint on, and only a global admin changes the limits.
async fn a_tenant_over_its_limits_gets_429s_and_others_are_untouched(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let other = fixture(&app, "other").await;
    let (s, t) = app
        .admin(
            &f.admin,
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            Some(json!({"max_live_leases": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["max_live_leases"], 2);
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("expires_in", "60"),
    ];
    // The limit is read at most once a second: let the cache see it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    for _ in 0..2 {
        let res = app.token_basic(&f.ci.0, &f.ci.1, &form).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key("retry-after"));
    }
    // Another tenant mints on.
    let other_form = [
        ("grant_type", "client_credentials"),
        ("resource", other.resource.as_str()),
    ];
    for _ in 0..3 {
        app.mint(&other.ci.0, &other.ci.1, &other_form).await;
    }
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.denied").await;
    let limited: Vec<_> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().unwrap_or("").starts_with("limited"))
        .collect();
    assert_eq!(limited.len(), 1, "audited once a minute, not per request");
    // Once the leases expire, minting resumes.
    app.advance(120);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.mint(&f.ci.0, &f.ci.1, &form).await;

    // A rate limit, per client.
    let (s, _) = app
        .admin(
            &f.admin,
            reqwest::Method::PATCH,
            &format!("/v1/tenants/acme/clients/{}", f.agent.0),
            Some(json!({"max_mints_per_second": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .admin(
            &f.admin,
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            Some(json!({"max_live_leases": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let agent_form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("workflow", "w"),
    ];
    let statuses: Vec<StatusCode> = futures_statuses(&app, &f.agent, &agent_form, 3).await;
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // A tenant admin may rename its tenant but not lift its limits.
    let tenant_admin = crate::harness::tenant_admin(&app, &f.admin, "acme").await;
    let (s, _) = app
        .admin(
            &tenant_admin,
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            Some(json!({"max_mints_per_second": 1000})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, t) = app
        .admin(
            &tenant_admin,
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            Some(json!({"name": "Acme Corp"})),
        )
        .await;
    assert_eq!((s, t["name"].clone()), (StatusCode::OK, json!("Acme Corp")));
}

async fn futures_statuses(
    app: &TestApp,
    client: &(String, String),
    form: &[(&str, &str)],
    n: usize,
) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(app.token_basic(&client.0, &client.1, form).await.status());
    }
    out
}

/// With MAYFLY_METRICS_LISTEN, metrics and readiness details are served on
/// their own listener; the public one says only whether it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness_details_move_to_their_own_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let app = TestApp::on(Backend::Sqlite)
        .config(move |c| mayfly::Config {
            metrics_listen: Some(ops),
            ..c
        })
        .start()
        .await;
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let ready: serde_json::Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({"status": "ready"}));
    let metrics = app.http.get(format!("http://{ops}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("mayfly_"));
    let detailed: serde_json::Value = app
        .http
        .get(format!("http://{ops}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["database"], true);
}
