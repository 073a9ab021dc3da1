//! What gateways read and report: a resource's tool policy, MCP requests
//! recorded against their leases (once, whatever the redeliveries), and
//! the revocation feed followed by long poll.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_resource_carries_a_tool_policy_that_must_name_its_own_scopes,
    a_gateway_reads_the_policy_of_the_resources_it_serves_and_no_others,
    reported_mcp_requests_are_recorded_against_their_lease_once,
    a_report_cannot_attribute_a_request_to_another_resource_or_tenant,
    a_long_poll_of_the_feed_answers_when_a_rule_is_made_on_any_replica,
);

const TOOLS: &str = r#"{"create_issue": {"scopes": ["issues:write"], "calls_per_minute": 30},
                        "*": {"scopes": ["issues:read"]}}"#;

async fn resource_id(app: &TestApp, f: &Fixture, tenant: &str) -> String {
    let (_, list) = app.get(&f.admin, &format!("/v1/tenants/{tenant}/resources")).await;
    list["items"][0]["id"].as_str().unwrap().to_string()
}

async fn set_tools(app: &TestApp, f: &Fixture, tenant: &str, tools: Value) -> (StatusCode, Value) {
    let id = resource_id(app, f, tenant).await;
    app.patch(
        &f.admin,
        &format!("/v1/tenants/{tenant}/resources/{id}"),
        json!({ "tools": tools }),
    )
    .await
}

async fn a_resource_carries_a_tool_policy_that_must_name_its_own_scopes(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let (s, r) = set_tools(&app, &f, "acme", tools.clone()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["tools"], tools);

    let (s, e) = set_tools(&app, &f, "acme", json!({"x": {"scopes": ["repo:admin"]}})).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
        "{e}"
    );
    let (s, _) = set_tools(&app, &f, "acme", json!({"x": {"scope": []}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields in a rule are refused");
    let id = resource_id(&app, &f, "acme").await;
    let (s, e) = app
        .patch(
            &f.admin,
            &format!("/v1/tenants/acme/resources/{id}"),
            json!({"scopes": ["issues:read"]}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a scope a tool needs cannot go: {e}"
    );
    let (_, kept) = app.get(&f.admin, &format!("/v1/tenants/acme/resources/{id}")).await;
    assert_eq!(kept["tools"], tools, "a refused change changes nothing");
    assert_eq!(kept["scopes"], json!(["issues:read", "issues:write"]));

    let (s, r) = set_tools(&app, &f, "acme", Value::Null).await;
    assert_eq!((s, &r["tools"]), (StatusCode::OK, &Value::Null), "null removes the map");
}

async fn policy(app: &TestApp, caller: &(String, String), resource: &str, etag: Option<&str>) -> reqwest::Response {
    let mut req = app
        .http
        .get(app.url("/v1/resource-policy"))
        .query(&[("resource", resource)])
        .basic_auth(&caller.0, Some(&caller.1));
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    req.send().await.unwrap()
}

async fn a_gateway_reads_the_policy_of_the_resources_it_serves_and_no_others(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let other = fixture(&app, "globex").await;
    set_tools(&app, &f, "acme", serde_json::from_str(TOOLS).unwrap()).await;

    let res = policy(&app, &f.rs, &f.resource, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["tools"]["create_issue"]["calls_per_minute"], 30);
    assert_eq!(body["scopes"], json!(["issues:read", "issues:write"]));
    let res = policy(&app, &f.rs, &f.resource, Some(&etag)).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    set_tools(&app, &f, "acme", Value::Null).await;
    let res = policy(&app, &f.rs, &f.resource, Some(&etag)).await;
    assert_eq!(res.status(), StatusCode::OK, "a changed policy is served again");
    assert_eq!(res.json::<Value>().await.unwrap()["tools"], Value::Null);

    // Another tenant's resource is unknown to this gateway; a CI client is no gateway.
    assert_eq!(
        policy(&app, &f.rs, &other.resource, None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        policy(&app, &f.ci, &f.resource, None).await.status(),
        StatusCode::FORBIDDEN
    );
    let wrong = (f.rs.0.clone(), "mfy_cs_wrong".to_string());
    assert_eq!(
        policy(&app, &wrong, &f.resource, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A gateway that serves only another resource of its tenant.
    app.created(
        &f.admin,
        "/v1/tenants/acme/resources",
        json!({"uri": "https://mcp.acme.test/jira", "scopes": ["read"]}),
    )
    .await;
    let jira = app
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "jira-gw", "kind": "resource_server", "serves": ["https://mcp.acme.test/jira"]}),
        )
        .await;
    let jira = (
        "jira-gw".to_string(),
        jira["client_secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        policy(&app, &jira, &f.resource, None).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        policy(&app, &jira, "https://mcp.acme.test/jira", None).await.status(),
        StatusCode::OK
    );
}

fn event(id: &str, resource: &str, lease: Option<&str>, name: &str) -> Value {
    json!({"id": id, "at": "2026-01-01T00:00:00Z", "resource": resource, "lease_id": lease,
           "method": "tools/call", "name": name, "arguments_sha256": "ab".repeat(32),
           "outcome": "success", "http_status": 200, "latency_ms": 1.5, "session": "s-1",
           "request_id": "gw-req-1", "source": "127.0.0.1"})
}

async fn deliver(app: &TestApp, caller: &(String, String), events: Vec<Value>) -> (StatusCode, Value) {
    let res = app
        .http
        .post(app.url("/v1/mcp-events"))
        .basic_auth(&caller.0, Some(&caller.1))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn mint_agent(app: &TestApp, f: &Fixture) -> String {
    let token = app
        .mint_at(
            &f.agent,
            &f.resource,
            &[("workflow", "triage"), ("workload", "agent/7")],
        )
        .await;
    crate::harness::claims(&token)["jti"].as_str().unwrap().to_string()
}

async fn reported_mcp_requests_are_recorded_against_their_lease_once(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let lease = mint_agent(&app, &f).await;
    let (a, c) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let batch = vec![
        event(&a, &f.resource, Some(&lease), "create_issue"),
        event(&c, &f.resource, None, "list_issues"),
    ];
    let (s, r) = deliver(&app, &f.rs, batch.clone()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    let (s, r) = deliver(&app, &f.rs, batch).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(2)),
        "a redelivery records nothing: {r}"
    );

    let (_, mine) = app
        .get(
            &f.admin,
            &format!("/v1/tenants/acme/audit?lease_id={lease}&method=tools/call"),
        )
        .await;
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{mine}");
    let e = &items[0];
    // Who acted is the lease's word, not the gateway's.
    assert_eq!(
        (&e["action"], &e["workflow"], &e["workload"], &e["client_id"]),
        (
            &json!("mcp.request"),
            &json!("triage"),
            &json!("agent/7"),
            &json!(f.agent.0)
        )
    );
    assert_eq!(e["mcp"]["name"], "create_issue");
    assert_eq!(e["mcp"]["gateway"], json!(f.rs.0));
    assert_eq!(e["mcp"]["arguments_sha256"], "ab".repeat(32));
    let (_, all) = app.get(&f.admin, "/v1/tenants/acme/audit?action=mcp.request").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");

    let (_, detail) = app.get(&f.admin, &format!("/v1/tenants/acme/leases/{lease}")).await;
    assert_eq!(detail["mcp_requests"], 1, "{detail}");
    assert_eq!(detail["last_mcp_request"]["name"], "create_issue");
    assert_eq!(detail["last_mcp_request"]["outcome"], "success");

    // A report may not name who acted: only the lease does.
    let mut forged = event(&uuid::Uuid::now_v7().to_string(), &f.resource, Some(&lease), "x");
    forged["workload"] = json!("alice");
    let (s, _) = deliver(&app, &f.rs, vec![forged]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = deliver(
        &app,
        &f.ci,
        vec![event(&uuid::Uuid::now_v7().to_string(), &f.resource, None, "x")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only resource servers report");
    let (_, verify) = app.get(&app.global_admin_token().await, "/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
}

async fn a_report_cannot_attribute_a_request_to_another_resource_or_tenant(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let other = fixture(&app, "globex").await;
    let theirs = mint_agent(&app, &other).await;
    let ours = mint_agent(&app, &f).await;
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let (s, r) = deliver(
        &app,
        &f.rs,
        vec![
            // Another tenant's lease, reported for our resource.
            event(&ids[0], &f.resource, Some(&theirs), "x"),
            // Another tenant's resource.
            event(&ids[1], &other.resource, Some(&ours), "x"),
            // A lease that does not exist.
            event(&ids[2], &f.resource, Some(&uuid::Uuid::now_v7().to_string()), "x"),
            event(&ids[3], &f.resource, Some(&ours), "fine"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["accepted"], 1, "{r}");
    let rejected: Vec<&str> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, ids[..3].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        r["rejected"][0]["error"], "unknown lease",
        "another tenant's lease is not acknowledged"
    );
    let (_, theirs_audit) = app
        .get(&other.admin, "/v1/tenants/globex/audit?action=mcp.request")
        .await;
    assert_eq!(theirs_audit["items"], json!([]), "nothing landed in the other tenant");
}

async fn a_long_poll_of_the_feed_answers_when_a_rule_is_made_on_any_replica(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let feed = |after: Option<String>, wait: &'static str| {
        let mut req = app
            .http
            .get(app.url("/v1/revocations"))
            .basic_auth(&f.rs.0, Some(&f.rs.1))
            .query(&[("wait", wait)]);
        if let Some(after) = after {
            req = req.query(&[("after", after)]);
        }
        req.send()
    };
    let first: Value = feed(None, "0").await.unwrap().json().await.unwrap();
    assert_eq!(first["items"], json!([]));
    let cursor = first["next_cursor"].as_str().unwrap().to_string();

    let started = std::time::Instant::now();
    let waiting = tokio::spawn(feed(Some(cursor.clone()), "20"));
    // The poll is held: nothing is new yet.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a long poll with nothing new waits");
    // Made on another replica (Postgres; SQLite is one node, a second
    // server on it is refused): the poll held by this one finds it.
    let issuer = app.issuer.clone();
    let replica = match b {
        Backend::Postgres => Some(
            TestApp::on_db(app.db.clone())
                .config(move |mut c| {
                    c.issuer = issuer;
                    c
                })
                .start()
                .await,
        ),
        Backend::Sqlite => None,
    };
    let (s, rule) = replica
        .as_ref()
        .unwrap_or(&app)
        .post(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workflow": "triage", "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let answer: Value = waiting.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(answer["items"][0]["id"], rule["id"], "{answer}");
    assert_eq!(answer["items"][0]["selector"], json!({"workflow": "triage"}));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "answered by the rule, not by the end of the wait"
    );
    let (s, e) = {
        let res = app
            .http
            .get(app.url("/v1/revocations?wait=26"))
            .basic_auth(&f.rs.0, Some(&f.rs.1))
            .send()
            .await
            .unwrap();
        (res.status(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
}
