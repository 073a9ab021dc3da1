//! Regression tests for the outside security review: each fails on the code
//! before its fix.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, TestApp, claims, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_resource_uri_never_moves_to_another_tenant,
    disabling_narrowing_or_zero_grace_rotation_ends_the_clients_tokens_at_once,
    the_last_global_admin_guard_counts_only_admin_holders,
    a_resource_server_never_learns_of_admin_tokens_or_resources_it_does_not_serve,
    a_workload_pattern_stops_a_client_from_claiming_any_sub,
    a_rolled_back_audit_tail_is_caught_by_an_exported_checkpoint,
    a_tenant_over_its_limits_gets_429s_and_others_are_untouched,
);

async fn tenant(app: &TestApp, admin: &str, id: &str) {
    let (s, b) = app.post(admin, "/v1/tenants", json!({"id": id})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn a_resource_uri_never_moves_to_another_tenant(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    tenant(&app, &f.admin, "mallory").await;
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/resources").await;
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .admin(
            &f.admin,
            reqwest::Method::DELETE,
            &format!("/v1/tenants/acme/resources/{id}"),
            None,
        )
        .await;
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
    let (s, _) = app
        .post(
            &f.admin,
            "/v1/tenants/gone/resources",
            json!({"uri": gone, "scopes": ["a"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .admin(&f.admin, reqwest::Method::DELETE, "/v1/tenants/gone", None)
        .await;
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
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-admin", "kind": "service", "workflows": ["admin"],
                   "grants": [{"resource": app.issuer, "scopes": ["mayfly:tenant:acme:admin"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let secret = body["client_secret"].as_str().unwrap().to_string();
    let admin_form = [
        ("grant_type", "client_credentials"),
        ("resource", app.issuer.as_str()),
        ("scope", "mayfly:tenant:acme:admin"),
    ];
    let tenant_admin = app.mint("acme-admin", &secret, &admin_form).await;
    let (s, _) = app.get(&tenant_admin, "/v1/tenants/acme/clients").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .admin(
            &f.admin,
            reqwest::Method::PATCH,
            "/v1/tenants/acme/clients/acme-admin",
            Some(json!({"disabled": true})),
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

    // Removing a scope from a grant ends the tokens that carried it; others keep working.
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("workflow", "w"),
    ];
    let agent_token = app.mint(&f.agent.0, &f.agent.1, &form).await;
    let ci_token = app
        .mint(
            &f.ci.0,
            &f.ci.1,
            &[("grant_type", "client_credentials"), ("resource", &f.resource)],
        )
        .await;
    let (s, _) = app
        .admin(
            &f.admin,
            reqwest::Method::PATCH,
            &format!("/v1/tenants/acme/clients/{}", f.agent.0),
            Some(json!({"grants": [{"resource": f.resource, "scopes": ["issues:read"]}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &agent_token).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &ci_token).await["active"], true);
    // The agent mints again under its narrower grant.
    let again = app.mint(&f.agent.0, &f.agent.1, &form).await;
    assert_eq!(claims(&again)["scope"], "issues:read");

    // A secret rotated with no grace: what it minted ends too.
    let (s, _) = app
        .post(
            &f.admin,
            &format!("/v1/tenants/acme/clients/{}/secrets", f.ci.0),
            json!({"grace_period_seconds": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &ci_token).await["active"], false);
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &again).await["active"], true);
}

async fn the_last_global_admin_guard_counts_only_admin_holders(b: Backend) {
    let app = spawn_app(b).await;
    let admin = app.global_admin_token().await;
    // An enabled system client without the admin scope does not count.
    let (s, body) = app
        .post(
            &admin,
            "/v1/tenants/_system/clients",
            json!({"client_id": "ops-bot", "kind": "service", "workflows": ["ops"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = app
        .admin(
            &admin,
            reqwest::Method::PATCH,
            "/v1/tenants/_system/clients/mayfly-admin",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    // Nor can the last admin lose the scope by a grant change.
    let (s, _) = app
        .admin(
            &admin,
            reqwest::Method::PATCH,
            "/v1/tenants/_system/clients/mayfly-admin",
            Some(json!({"grants": []})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .admin(
            &admin,
            reqwest::Method::DELETE,
            "/v1/tenants/_system/clients/mayfly-admin",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

async fn a_resource_server_never_learns_of_admin_tokens_or_resources_it_does_not_serve(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let jira = "https://mcp.acme.test/jira";
    let (s, _) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/resources",
            json!({"uri": jira, "scopes": ["read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // A resource server needs no workflows, and may be confined to what it serves.
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-jira-rs", "kind": "resource_server", "serves": [jira]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
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

    let github_token = app
        .mint(
            &f.ci.0,
            &f.ci.1,
            &[("grant_type", "client_credentials"), ("resource", &f.resource)],
        )
        .await;
    assert_eq!(
        app.introspect((&jira_rs.0, &jira_rs.1), &github_token).await["active"],
        false
    );
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &github_token).await["active"], true);

    // A tenant admin token of the same tenant: never active to a resource server.
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-admin", "kind": "service", "workflows": ["admin"],
                   "grants": [{"resource": app.issuer, "scopes": ["mayfly:tenant:acme:admin"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let admin_token = app
        .mint(
            "acme-admin",
            body["client_secret"].as_str().unwrap(),
            &[("grant_type", "client_credentials"), ("resource", app.issuer.as_str())],
        )
        .await;
    let answer = app.introspect((&f.rs.0, &f.rs.1), &admin_token).await;
    assert_eq!(answer, json!({"active": false}));
}

async fn a_workload_pattern_stops_a_client_from_claiming_any_sub(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let (s, body) = app
        .admin(
            &f.admin,
            reqwest::Method::PATCH,
            &format!("/v1/tenants/acme/clients/{}", f.agent.0),
            Some(json!({"workload_pattern": "^triage-agent/pod-[0-9]+$"})),
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
            .admin(
                &f.admin,
                reqwest::Method::PATCH,
                &format!("/v1/tenants/acme/clients/{}", f.agent.0),
                Some(json!({"workload_pattern": bad})),
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
    let with_issuer = |c: mayfly::Config| mayfly::Config {
        issuer: "http://mayfly.test".into(),
        ..c
    };
    let a = TestApp::on_db(db.clone()).config(with_issuer).start().await;
    let b = TestApp::on_db(db.clone()).config(with_issuer).start().await;
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

/// Runs `mayfly audit …` against the app's database with its master key.
fn audit_cli(db_url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .arg("audit")
        .args(args)
        .env("MAYFLY_DATABASE_URL", db_url)
        .env("MAYFLY_MASTER_KEY", crate::harness::MASTER_KEY)
        .env_remove("MAYFLY_ISSUER")
        .output()
        .unwrap()
}

/// Someone with database access drops the tail of the chain, moves the head
/// and the count back and deletes the stored checkpoints: the chain verifies
/// on its own, but not against a checkpoint exported before. A tail dropped
/// without fixing the count is caught by the count alone.
async fn a_rolled_back_audit_tail_is_caught_by_an_exported_checkpoint(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let url = app.db.url.clone();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || audit_cli(&url, &["checkpoint"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = std::env::temp_dir().join(format!("checkpoint-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&exported, &out.stdout).unwrap();
    let checkpoint: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    for _ in 0..3 {
        app.mint(&f.ci.0, &f.ci.1, &form).await;
    }
    let (_, v) = app.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    let _db = app.stop().await; // kept: dropping it would remove the database

    // The tampering, straight in the database.
    let keep = checkpoint["count"].as_i64().unwrap() - 2;
    let raw = |sql: String| {
        let url = url.clone();
        async move {
            match b {
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
                }
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
                }
            }
        }
    };
    let drop_guard = match b {
        Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update;",
        Backend::Sqlite => "DROP TRIGGER audit_events_no_delete;",
    };
    raw(format!(
        "{drop_guard}
         DELETE FROM audit_events WHERE seq > (SELECT seq FROM audit_events ORDER BY seq LIMIT 1 OFFSET {});
         UPDATE audit_chain SET head = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) WHERE id = 1;",
        keep - 1
    ))
    .await;
    let verify = |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                audit_cli(&url, &args)
            })
            .await
            .unwrap()
        }
    };
    let out = verify(vec!["verify".into()]).await;
    assert!(!out.status.success(), "the count alone shows the missing tail");
    raw(format!(
        "UPDATE audit_chain SET count = {keep} WHERE id = 1; DELETE FROM audit_checkpoints;"
    ))
    .await;
    let out = verify(vec!["verify".into()]).await;
    assert!(out.status.success(), "without a checkpoint the cut chain looks whole");
    let out = verify(vec![
        "verify".into(),
        "--checkpoint".into(),
        exported.display().to_string(),
    ])
    .await;
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tail was removed"));
    // A forged checkpoint is refused as such.
    let mut forged = checkpoint.clone();
    forged["count"] = serde_json::json!(keep);
    std::fs::write(&exported, forged.to_string()).unwrap();
    let out = verify(vec![
        "verify".into(),
        "--checkpoint".into(),
        exported.display().to_string(),
    ])
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("not authentic"));
    let _ = std::fs::remove_file(exported);
}

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
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-admin", "kind": "service",
            "workflows": ["admin"], "grants": [{"resource": app.issuer, "scopes": ["mayfly:tenant:acme:admin"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let tenant_admin = app
        .mint(
            "acme-admin",
            body["client_secret"].as_str().unwrap(),
            &[("grant_type", "client_credentials"), ("resource", app.issuer.as_str())],
        )
        .await;
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
