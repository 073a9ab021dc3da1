//! Regression tests for the outside security review: each fails on the code
//! before its fix.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, TestApp, claims, fixture, spawn_app, tenant_admin};
use crate::on_both_backends;

on_both_backends!(
    a_resource_uri_never_moves_to_another_tenant,
    disabling_narrowing_or_zero_grace_rotation_ends_the_clients_tokens_at_once,
    the_last_global_admin_guard_counts_only_admin_holders,
    a_resource_server_never_learns_of_admin_tokens_or_resources_it_does_not_serve,
    a_workload_pattern_stops_a_client_from_claiming_any_sub,
    conflicts_and_the_feed_do_not_leak_other_tenants_or_the_global_admin,
);

async fn tenant(app: &TestApp, admin: &str, id: &str) {
    app.created(admin, "/v1/tenants", json!({"id": id})).await;
}

async fn a_resource_uri_never_moves_to_another_tenant(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    tenant(&app, &f.admin, "mallory").await;
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/resources").await;
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = app.delete(&f.admin, &format!("/v1/tenants/acme/resources/{id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Another tenant cannot take the freed URI, however it spells it ...
    for spelling in [
        f.resource.clone(),
        f.resource.to_uppercase().replace("/GITHUB", "/github") + "/",
    ] {
        let (s, body) = app
            .post(
                &f.admin,
                "/v1/tenants/mallory/resources",
                json!({"uri": spelling, "scopes": ["issues:read"]}),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        assert!(!body.to_string().contains("acme") && !body["message"].as_str().unwrap().contains("mcp."));
    }
    // ... while its owner can register it again.
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/resources",
            json!({"uri": f.resource, "scopes": ["issues:read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // A deleted tenant's URIs stay dead for everyone else.
    tenant(&app, &f.admin, "gone").await;
    let gone = "https://mcp.gone.test/x";
    app.created(
        &f.admin,
        "/v1/tenants/gone/resources",
        json!({"uri": gone, "scopes": ["a"]}),
    )
    .await;
    let (s, _) = app.delete(&f.admin, "/v1/tenants/gone").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .post(
            &f.admin,
            "/v1/tenants/mallory/resources",
            json!({"uri": gone, "scopes": ["a"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

async fn disabling_narrowing_or_zero_grace_rotation_ends_the_clients_tokens_at_once(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    // A tenant admin whose client is then disabled: its admin token stops working at once.
    let tenant_admin = tenant_admin(&app, &f.admin, "acme").await;
    let (s, _) = app.get(&tenant_admin, "/v1/tenants/acme/clients").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .patch(
            &f.admin,
            "/v1/tenants/acme/clients/acme-admin",
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(
            &tenant_admin,
            "/v1/tenants/acme/clients",
            json!({"kind": "ci", "workflows": ["x"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a disabled admin's token is dead");

    // A disabled client's resource tokens are inactive for the resource server
    // at once, and enabling it again does not revive them.
    let body = app
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-temp", "kind": "ci", "workflows": ["w"],
                   "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
        )
        .await;
    let temp = ("acme-temp", body["client_secret"].as_str().unwrap().to_string());
    let temp_form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let held = app.mint(temp.0, &temp.1, &temp_form).await;
    let control = app.mint(&f.ci.0, &f.ci.1, &temp_form).await;
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &held).await["active"], true);
    let toggle = |disabled: bool| {
        let (app, admin) = (&app, f.admin.clone());
        async move {
            let (s, body) = app
                .patch(
                    &admin,
                    "/v1/tenants/acme/clients/acme-temp",
                    json!({"disabled": disabled}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{body}");
        }
    };
    toggle(true).await;
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &held).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &control).await["active"], true);
    toggle(false).await;
    assert_eq!(
        app.introspect((&f.rs.0, &f.rs.1), &held).await["active"],
        false,
        "enabling again revives nothing"
    );
    let fresh = app.mint(temp.0, &temp.1, &temp_form).await;
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &fresh).await["active"], true);

    // Removing a scope from a grant ends the tokens that carried it; others keep working.
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("workflow", "w"),
    ];
    let agent_token = app.mint(&f.agent.0, &f.agent.1, &form).await;
    let ci_token = app.mint_at(&f.ci, &f.resource, &[]).await;
    let (s, _) = app
        .patch(
            &f.admin,
            &format!("/v1/tenants/acme/clients/{}", f.agent.0),
            json!({"grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &agent_token).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &ci_token).await["active"], true);
    // The agent mints again under its narrower grant.
    let again = app.mint(&f.agent.0, &f.agent.1, &form).await;
    assert_eq!(claims(&again)["scope"], "issues:read");

    // A secret rotated with no grace: what it minted ends too.
    app.created(
        &f.admin,
        &format!("/v1/tenants/acme/clients/{}/secrets", f.ci.0),
        json!({"grace_period_seconds": 0}),
    )
    .await;
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &ci_token).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &again).await["active"], true);
}

async fn the_last_global_admin_guard_counts_only_admin_holders(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.global_admin_token().await;
    // An enabled system client without the admin scope does not count.
    app.created(
        &admin,
        "/v1/tenants/_system/clients",
        json!({"client_id": "ops-bot", "kind": "service", "workflows": ["ops"]}),
    )
    .await;
    let (s, body) = app
        .patch(
            &admin,
            "/v1/tenants/_system/clients/mayfly-admin",
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    // Nor can the last admin lose the scope by a grant change.
    let (s, _) = app
        .patch(
            &admin,
            "/v1/tenants/_system/clients/mayfly-admin",
            json!({"grants": []}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app.delete(&admin, "/v1/tenants/_system/clients/mayfly-admin").await;
    assert_eq!(s, StatusCode::CONFLICT);
}

async fn a_resource_server_never_learns_of_admin_tokens_or_resources_it_does_not_serve(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let jira = "https://mcp.acme.test/jira";
    app.created(
        &f.admin,
        "/v1/tenants/acme/resources",
        json!({"uri": jira, "scopes": ["read"]}),
    )
    .await;
    // A resource server needs no workflows, and may be confined to what it serves.
    let body = app
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-jira-rs", "kind": "resource_server", "serves": [jira]}),
        )
        .await;
    assert_eq!(body["serves"], json!([jira]));
    let jira_rs = (
        "acme-jira-rs".to_string(),
        body["client_secret"].as_str().unwrap().to_string(),
    );
    let (s, _) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"kind": "ci", "serves": [jira], "workflows": ["x"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "only resource servers serve");

    let github_token = app.mint_at(&f.ci, &f.resource, &[]).await;
    assert_eq!(
        app.introspect((&jira_rs.0, &jira_rs.1), &github_token).await["active"],
        false
    );
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &github_token).await["active"], true);

    // A tenant admin token of the same tenant: never active to a resource server.
    let admin_token = tenant_admin(&app, &f.admin, "acme").await;
    let answer = app.introspect((&f.rs.0, &f.rs.1), &admin_token).await;
    assert_eq!(answer, json!({"active": false}));
}

async fn a_workload_pattern_stops_a_client_from_claiming_any_sub(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let (s, body) = app
        .patch(
            &f.admin,
            &format!("/v1/tenants/acme/clients/{}", f.agent.0),
            json!({"workload_pattern": "^triage-agent/pod-[0-9]+$"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let mint = |workload: &'static str| {
        let resource = f.resource.clone();
        let agent = f.agent.clone();
        let app = &app;
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("resource", resource.as_str()),
                ("workflow", "triage"),
                ("workload", workload),
            ];
            app.token_basic(&agent.0, &agent.1, &form).await
        }
    };
    assert_eq!(mint("triage-agent/pod-7").await.status(), StatusCode::OK);
    let res = mint("mayfly-admin").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    for bad in ["triage.*", "^(a|b)", "^["] {
        let (s, _) = app
            .patch(
                &f.admin,
                &format!("/v1/tenants/acme/clients/{}", f.agent.0),
                json!({"workload_pattern": bad}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

/// Offline verifiers decide with the feed: the token's `lease_seq` against
/// the rule's `cutoff_seq`, both numbered by the database. A replica whose
/// clock runs five minutes ahead mints a token before the rule; `iat` alone
/// would let it through, the sequence does not, and a token minted after the
/// rule on a replica whose clock is behind stays valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_revocation_is_exact_across_replicas_whose_clocks_differ() {
    let db = crate::harness::Database::fresh(Backend::Postgres).await;
    let (a, b) = crate::kit::replicas(&db).await;
    b.advance(300);
    let f = fixture(&a, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let before_on_fast_b = b.mint(&f.ci.0, &f.ci.1, &form).await;
    let (s, rule) = a
        .post(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workflow": "release", "reason": "leak"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let after_on_a = a.mint(&f.ci.0, &f.ci.1, &form).await;

    let issued_before = chrono::DateTime::parse_from_rfc3339(rule["issued_before"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let early = claims(&before_on_fast_b);
    assert!(
        early["iat"].as_i64().unwrap() > issued_before,
        "by clocks alone it would be missed"
    );

    let cutoff = rule["cutoff_seq"].as_i64().unwrap();
    let revoked_offline = |token: &str| {
        let c = claims(token);
        c["workflow"] == "release" && c["lease_seq"].as_i64().unwrap() <= cutoff
    };
    assert!(revoked_offline(&before_on_fast_b));
    assert!(!revoked_offline(&after_on_a));
    // The feed says the same as the creation answer, and introspection agrees.
    let (_, feed) = a.get(&f.admin, "/v1/revocations").await;
    let item = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == rule["id"])
        .unwrap()
        .clone();
    assert_eq!(item["cutoff_seq"], rule["cutoff_seq"]);
    assert_eq!(
        a.introspect((&f.rs.0, &f.rs.1), &before_on_fast_b).await["active"],
        false
    );
    assert_eq!(b.introspect((&f.rs.0, &f.rs.1), &after_on_a).await["active"], true);
}

/// Small leaks: a taken client id is not named in the 409, and a tenant's
/// view of the revocation feed does not show who made the key rules.
async fn conflicts_and_the_feed_do_not_leak_other_tenants_or_the_global_admin(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    tenant(&app, &f.admin, "other").await;
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/other/clients",
            json!({"client_id": f.ci.0, "kind": "ci", "workflows": ["x"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(!body.to_string().contains(&f.ci.0), "{body}");

    let kid = crate::harness::header(&f.admin)["kid"].as_str().unwrap().to_string();
    app.created(&f.admin, &format!("/v1/keys/{kid}/revoke"), json!({"reason": "drill"}))
        .await;
    let admin = app.global_admin_token().await;
    let (_, all) = app.get(&admin, "/v1/revocations").await;
    let key_rule = |feed: &serde_json::Value| {
        feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["selector"]["kid"] == kid.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(key_rule(&all)["created_by"]["client_id"], "mayfly-admin");
    let res = app
        .http
        .get(app.url("/v1/revocations"))
        .basic_auth(&f.rs.0, Some(&f.rs.1))
        .send()
        .await
        .unwrap();
    let theirs: serde_json::Value = res.json().await.unwrap();
    assert!(key_rule(&theirs)["created_by"].is_null(), "{theirs}");
}
