//! The in-memory catalog (clients, secrets, resources) that minting reads
//! instead of the database: changes made through one replica bind every
//! other replica from the moment the admin call returns.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Backend, Database, TestApp, fixture};

async fn two_replicas() -> (TestApp, TestApp) {
    let db = Database::fresh(Backend::Postgres).await;
    let a = TestApp::on_db(db.clone())
        .config(crate::kit::shared_issuer)
        .wall_clock()
        .start()
        .await;
    let b = TestApp::on_db(db)
        .config(crate::kit::shared_issuer)
        .wall_clock()
        .start()
        .await;
    (a, b)
}

/// Each round changes the client through A and mints through B at once, with
/// no wait for B to hear of it: B's answer must already follow the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disabled_or_a_grant_removed_through_one_replica_stops_mints_on_the_other_at_once() {
    let (a, b) = two_replicas().await;
    let f = fixture(&a, "acme").await;
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("scope", "issues:read"),
    ];
    let client_path = format!("/v1/tenants/acme/clients/{}", f.ci.0);
    let patch = |body: serde_json::Value| {
        let (a, admin, path) = (&a, f.admin.clone(), client_path.clone());
        async move {
            let (s, b) = a.admin(&admin, Method::PATCH, &path, Some(body)).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
    };
    let mint_on_b = || async { b.token_basic(&f.ci.0, &f.ci.1, &form).await.status() };
    assert_eq!(mint_on_b().await, StatusCode::OK, "B mints (its catalog is warm)");

    for round in 0..10 {
        patch(json!({"disabled": true})).await;
        assert_eq!(mint_on_b().await, StatusCode::UNAUTHORIZED, "round {round}: disabled");
        patch(json!({"disabled": false})).await;
        assert_eq!(mint_on_b().await, StatusCode::OK, "round {round}: enabled again");

        patch(json!({"grants": [{"resource": f.resource, "scopes": ["issues:write"]}]})).await;
        let res = b.token_basic(&f.ci.0, &f.ci.1, &form).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "round {round}: grant narrowed");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_scope", "{body}");
        patch(json!({"grants": [{"resource": f.resource, "scopes": ["issues:read"]}]})).await;
        assert_eq!(mint_on_b().await, StatusCode::OK, "round {round}: grant back");
    }

    // A secret rotated through A with no grace: B refuses the old one and
    // takes the new one at once.
    let path = format!("/v1/tenants/acme/clients/{}/secrets", f.ci.0);
    let rotated = a.created(&f.admin, &path, json!({"grace_period_seconds": 0})).await;
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_eq!(mint_on_b().await, StatusCode::UNAUTHORIZED, "old secret");
    let res = b.token_basic(&f.ci.0, new_secret, &form).await;
    assert_eq!(res.status(), StatusCode::OK, "new secret");

    // A resource deleted through A is unknown to B at once; a client and a
    // resource created through A work on B at once.
    let (s, list) = a.get(&f.admin, "/v1/tenants/acme/resources").await;
    assert_eq!(s, StatusCode::OK);
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = a
        .admin(
            &f.admin,
            Method::DELETE,
            &format!("/v1/tenants/acme/resources/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let res = b.token_basic(&f.ci.0, new_secret, &form).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "resource gone");
    a.created(
        &f.admin,
        "/v1/tenants/acme/resources",
        json!({"uri": "https://mcp.acme.test/jira", "name": "Jira", "scopes": ["read"]}),
    )
    .await;
    let c = a
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-new", "kind": "ci", "workflows": ["release"],
                   "grants": [{"resource": "https://mcp.acme.test/jira", "scopes": ["read"]}]}),
        )
        .await;
    let jira = [
        ("grant_type", "client_credentials"),
        ("resource", "https://mcp.acme.test/jira"),
    ];
    let res = b
        .token_basic("acme-new", c["client_secret"].as_str().unwrap(), &jira)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "new client, new resource");
}
