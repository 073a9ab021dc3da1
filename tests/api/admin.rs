//! The admin API: tenant isolation, validation, secrets, leases, revocations
//! and the audit chain.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Backend, claims, fixture, spawn_app, tenant_admin};
use crate::on_both_backends;

on_both_backends!(
    a_tenant_admin_manages_its_own_tenant_and_is_refused_everywhere_else,
    bad_admin_input_gets_a_stable_error_and_changes_nothing,
    admin_routes_need_an_active_admin_token,
    a_client_secret_is_shown_once_and_rotation_keeps_the_old_one_for_the_grace_period,
    a_holder_revokes_its_own_token_and_no_one_elses,
    deleting_a_tenant_revokes_its_tokens_and_leaves_other_tenants_alone,
    every_admin_change_is_attributed_and_the_chain_verifies,
    introspection_is_for_resource_servers_of_the_same_tenant,
    global_admins_are_clients_of_the_system_tenant_managed_like_any_other,
);

async fn global_admins_are_clients_of_the_system_tenant_managed_like_any_other(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let admin_form = [
        ("grant_type", "client_credentials"),
        ("resource", app.issuer.as_str()),
        ("scope", "mayfly:admin"),
    ];
    // A second global admin, so people need not share the bootstrap secret.
    let ops = app
        .created(
            &f.admin,
            "/v1/tenants/_system/clients",
            json!({"client_id": "ops-admin", "kind": "service", "workflows": ["admin"],
                   "grants": [{"resource": app.issuer, "scopes": ["mayfly:admin"]}]}),
        )
        .await;
    let ops_token = app
        .mint("ops-admin", ops["client_secret"].as_str().unwrap(), &admin_form)
        .await;
    app.created(&ops_token, "/v1/tenants", json!({"id": "made-by-ops"}))
        .await;
    // The bootstrap secret can be rotated away.
    let rotated = app
        .created(
            &ops_token,
            "/v1/tenants/_system/clients/mayfly-admin/secrets",
            json!({"grace_period_seconds": 0}),
        )
        .await;
    let res = app
        .token_basic("mayfly-admin", crate::harness::ADMIN_SECRET, &admin_form)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.mint("mayfly-admin", rotated["client_secret"].as_str().unwrap(), &admin_form)
        .await;
    // Tenant admins cannot reach the system tenant, and it cannot be deleted.
    let tenant_admin = tenant_admin(&app, &ops_token, "acme").await;
    let (s, _) = app.get(&tenant_admin, "/v1/tenants/_system/clients").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.admin(&ops_token, Method::DELETE, "/v1/tenants/_system", None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The last enabled global admin can be neither disabled nor deleted.
    let (s, _) = app
        .admin(
            &ops_token,
            Method::DELETE,
            "/v1/tenants/_system/clients/mayfly-admin",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "another global admin remains");
    let (s, _) = app
        .admin(
            &ops_token,
            Method::PATCH,
            "/v1/tenants/_system/clients/ops-admin",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .admin(
            &ops_token,
            Method::DELETE,
            "/v1/tenants/_system/clients/ops-admin",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, list) = app.get(&ops_token, "/v1/tenants").await;
    assert!(!list.to_string().contains("_system"));
}

async fn a_tenant_admin_manages_its_own_tenant_and_is_refused_everywhere_else(b: Backend) {
    let app = spawn_app(b).await;
    let acme = fixture(&app, "acme").await;
    let globex = fixture(&app, "globex").await;
    let admin = tenant_admin(&app, &acme.admin, "acme").await;
    assert_eq!(claims(&admin)["scope"], "mayfly:tenant:acme:admin");

    let (s, _) = app.get(&admin, "/v1/tenants/acme/clients").await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = app.get(&admin, "/v1/tenants").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        1,
        "a tenant admin sees only its tenant"
    );

    for path in [
        "/v1/tenants/globex",
        "/v1/tenants/globex/clients",
        "/v1/tenants/globex/resources",
        "/v1/tenants/globex/leases",
        "/v1/tenants/globex/audit",
        "/v1/tenants/globex/revocations",
        &format!("/v1/tenants/globex/clients/{}", globex.ci.0),
    ] {
        let (s, body) = app.get(&admin, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"], "forbidden");
    }
    // Another tenant's object through one's own tenant path: it does not exist here.
    let (s, _) = app
        .get(&admin, &format!("/v1/tenants/acme/clients/{}", globex.ci.0))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .post(&admin, "/v1/tenants/globex/revocations", json!({"reason": "x"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Global-only routes.
    for (m, path) in [
        (Method::POST, "/v1/tenants"),
        (Method::GET, "/v1/keys"),
        (Method::GET, "/v1/audit/verify"),
    ] {
        let (s, _) = app.admin(&admin, m, path, Some(json!({"id": "evil"}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    let (s, _) = app.admin(&admin, Method::DELETE, "/v1/tenants/globex", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A tenant client may not grant itself another tenant's admin scope.
    let (s, body) = app
        .post(
            &admin,
            "/v1/tenants/acme/clients",
            json!({"kind": "service", "workflows": ["x"], "grants": [{"resource": app.issuer, "scopes": ["mayfly:admin"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Nor register another tenant's MCP server to mint tokens for it.
    let (s, body) = app
        .post(
            &admin,
            "/v1/tenants/acme/resources",
            json!({"uri": "HTTPS://mcp.globex.test/github/", "scopes": ["issues:read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    // The globex clients still mint.
    app.mint_at(&globex.ci, &globex.resource, &[]).await;
}

async fn bad_admin_input_gets_a_stable_error_and_changes_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let raw = |method: Method, path: &'static str, body: String, content_type: &'static str| {
        let app = &app;
        let admin = f.admin.clone();
        async move {
            let res = app
                .http
                .request(method, app.url(path))
                .bearer_auth(admin)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let json_ct = "application/json";
    let cases = [
        (raw(Method::POST, "/v1/tenants", "{\"id\": ".into(), json_ct).await, 400, "malformed_json"),
        (raw(Method::POST, "/v1/tenants", "{\"id\": \"x\", \"color\": 1}".into(), json_ct).await, 400, "invalid_body"),
        (raw(Method::POST, "/v1/tenants", "{\"id\": \"x\"}".into(), "text/plain").await, 415, "unsupported_media_type"),
        (raw(Method::POST, "/v1/tenants", "{\"id\": \"Not A Slug\"}".into(), json_ct).await, 422, "validation_failed"),
        (raw(Method::POST, "/v1/tenants", format!("{{\"id\": \"{}\"}}", "a".repeat(70 * 1024)), json_ct).await, 413, "payload_too_large"),
        (raw(Method::POST, "/v1/tenants", "{\"id\": \"acme\"}".into(), json_ct).await, 409, "conflict"),
        (
            raw(Method::POST, "/v1/tenants/acme/resources", "{\"uri\": \"ftp://x\", \"scopes\": [\"a\"]}".into(), json_ct).await,
            422,
            "validation_failed",
        ),
        (
            raw(Method::POST, "/v1/tenants/acme/resources", "{\"uri\": \"https://x.test\", \"scopes\": [\"mayfly:admin\"]}".into(), json_ct)
                .await,
            422,
            "validation_failed",
        ),
        (
            raw(Method::POST, "/v1/tenants/acme/resources", "{\"uri\": \"https://x.test\", \"scopes\": [\"a\"], \"max_ttl_seconds\": 999999}".into(), json_ct)
                .await,
            422,
            "validation_failed",
        ),
        (
            raw(Method::POST, "/v1/tenants/acme/clients", "{\"kind\": \"robot\", \"workflows\": [\"x\"]}".into(), json_ct).await,
            400,
            "invalid_body",
        ),
        (
            raw(
                Method::POST,
                "/v1/tenants/acme/clients",
                "{\"kind\": \"ci\", \"workflows\": [\"x\"], \"grants\": [{\"resource\": \"https://mcp.acme.test/github\", \"scopes\": [\"admin:all\"]}]}".into(),
                json_ct,
            )
            .await,
            422,
            "validation_failed",
        ),
        (raw(Method::POST, "/v1/tenants/acme/revocations", "{\"workflow\": \"a\", \"workload\": \"b\", \"reason\": \"x\"}".into(), json_ct).await, 422, "validation_failed"),
        (raw(Method::POST, "/v1/tenants/acme/revocations", "{}".into(), json_ct).await, 422, "validation_failed"),
        (raw(Method::GET, "/v1/tenants/acme/leases?limit=0", String::new(), json_ct).await, 400, "invalid_query"),
        (raw(Method::GET, "/v1/tenants/acme/leases?cursor=garbage", String::new(), json_ct).await, 400, "invalid_query"),
        (raw(Method::GET, "/v1/tenants?cursor=YzphAA", String::new(), json_ct).await, 400, "invalid_query"),
        (raw(Method::GET, "/v1/tenants/acme/leases?color=red", String::new(), json_ct).await, 400, "invalid_query"),
        (raw(Method::GET, "/v1/tenants/acme/leases/not-a-uuid", String::new(), json_ct).await, 404, "not_found"),
        (raw(Method::GET, "/v1/tenants/nobody", String::new(), json_ct).await, 404, "not_found"),
        (raw(Method::GET, "/v1/nothing-here", String::new(), json_ct).await, 404, "no_route"),
        (raw(Method::POST, "/v1/tenants", "{\"id\": \"a\\u0000\"}".into(), json_ct).await, 400, "invalid_body"),
        (raw(Method::GET, "/v1/tenants/acme/leases?workflow=a%00", String::new(), json_ct).await, 400, "invalid_request"),
        (raw(Method::GET, "/v1/tenants/acme/clients/a%00b", String::new(), json_ct).await, 400, "invalid_request"),
    ];
    for ((status, body), want_status, want_code) in cases {
        assert_eq!(status.as_u16(), want_status, "{body}");
        assert_eq!(body["error"], want_code, "{body}");
        assert!(body["message"].is_string(), "{body}");
    }
    let (_, tenants) = app.get(&f.admin, "/v1/tenants").await;
    assert_eq!(
        tenants["items"].as_array().unwrap().len(),
        1,
        "nothing was created: {tenants}"
    );
    let (_, resources) = app.get(&f.admin, "/v1/tenants/acme/resources").await;
    assert_eq!(resources["items"].as_array().unwrap().len(), 1);
    let (_, rules) = app.get(&f.admin, "/v1/tenants/acme/revocations").await;
    assert_eq!(rules["items"].as_array().unwrap().len(), 0);

    // A known route with a method it does not serve: 405 with Allow.
    let res = app
        .http
        .request(Method::TRACE, app.url("/v1/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

async fn admin_routes_need_an_active_admin_token(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let res = app.http.get(app.url("/v1/tenants")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // A valid token for an MCP server is not an admin token.
    let mcp = app.mint_at(&f.ci, &f.resource, &[]).await;
    let (s, _) = app.get(&mcp, "/v1/tenants").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A tampered admin token is refused.
    let mut tampered = f.admin.clone();
    tampered.pop();
    tampered.push(if f.admin.ends_with('A') { 'B' } else { 'A' });
    let (s, _) = app.get(&tampered, "/v1/tenants").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An expired admin token is refused.
    app.advance(3601);
    let (s, body) = app.get(&f.admin, "/v1/tenants").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
}

async fn a_client_secret_is_shown_once_and_rotation_keeps_the_old_one_for_the_grace_period(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let (s, body) = app.get(&f.admin, &format!("/v1/tenants/acme/clients/{}", f.ci.0)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.get("client_secret").is_none());
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/clients").await;
    assert!(!list.to_string().contains("mfy_cs_"));

    let path = format!("/v1/tenants/acme/clients/{}/secrets", f.ci.0);
    let rotated = app.created(&f.admin, &path, json!({"grace_period_seconds": 120})).await;
    let new_secret = rotated["client_secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("mfy_cs_"));
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    assert_eq!(
        app.token_basic(&f.ci.0, &f.ci.1, &form).await.status(),
        StatusCode::OK,
        "old secret in grace"
    );
    assert_eq!(
        app.token_basic(&f.ci.0, &new_secret, &form).await.status(),
        StatusCode::OK
    );
    app.advance(121);
    assert_eq!(
        app.token_basic(&f.ci.0, &f.ci.1, &form).await.status(),
        StatusCode::UNAUTHORIZED,
        "grace over"
    );
    assert_eq!(
        app.token_basic(&f.ci.0, &new_secret, &form).await.status(),
        StatusCode::OK
    );

    // Rotating twice leaves at most two live secrets: the first one is gone at once.
    let admin = app.global_admin_token().await;
    let (_, second) = app.post(&admin, &path, json!({})).await;
    let (_, third) = app.post(&admin, &path, json!({})).await;
    assert_eq!(
        app.token_basic(&f.ci.0, &new_secret, &form).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.token_basic(&f.ci.0, second["client_secret"].as_str().unwrap(), &form)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.token_basic(&f.ci.0, third["client_secret"].as_str().unwrap(), &form)
            .await
            .status(),
        StatusCode::OK
    );
}

async fn a_holder_revokes_its_own_token_and_no_one_elses(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let rs = (f.rs.0.as_str(), f.rs.1.as_str());
    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let mine = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let theirs = app.mint_at(&f.agent, &f.resource, &[("workflow", "x")]).await;
    for token in [&theirs, &mine] {
        let res = app
            .http
            .post(app.url("/oauth2/revoke"))
            .basic_auth(&f.ci.0, Some(&f.ci.1))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .http
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&f.ci.0, Some(&f.ci.1))
        .form(&[("token", "garbage")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "RFC 7009: unknown tokens are not an error"
    );
    assert_eq!(app.introspect(rs, &mine).await["active"], false);
    assert_eq!(app.introspect(rs, &theirs).await["active"], true);
    let (_, audit) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.revoked").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    assert_eq!(audit["items"][0]["lease_id"], claims(&mine)["jti"]);
}

async fn deleting_a_tenant_revokes_its_tokens_and_leaves_other_tenants_alone(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let g = fixture(&app, "globex").await;
    let acme_token = app.mint_at(&f.ci, &f.resource, &[]).await;
    let globex_token = app.mint_at(&g.ci, &g.resource, &[]).await;
    let (s, _) = app.admin(&f.admin, Method::DELETE, "/v1/tenants/acme", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let admin = app.global_admin_token().await;
    let res = app
        .http
        .post(app.url("/oauth2/introspect"))
        .bearer_auth(&admin)
        .form(&[("token", acme_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["active"], false);
    assert_eq!(app.introspect((&g.rs.0, &g.rs.1), &globex_token).await["active"], true);
    let res = app.ask_token(&f.ci, &f.resource, &[]).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "a deleted tenant's clients cannot mint"
    );
    let (s, _) = app.get(&admin, "/v1/tenants/acme").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn every_admin_change_is_attributed_and_the_chain_verifies(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let admin_jti = claims(&f.admin)["jti"].as_str().unwrap().to_string();
    let (_, audit) = app.get(&f.admin, "/v1/tenants/acme/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"tenant.created") && actions.contains(&"resource.created"),
        "{actions:?}"
    );
    assert_eq!(actions.iter().filter(|a| **a == "client.created").count(), 3);
    for e in audit["items"].as_array().unwrap() {
        assert_eq!(e["admin"]["client_id"], "mayfly-admin", "{e}");
        assert_eq!(e["admin"]["jti"], admin_jti.as_str());
        assert_eq!(e["outcome"], "success");
        assert!(e["request_id"].is_string() && e["source"] == "127.0.0.1");
    }
    assert!(
        !audit.to_string().contains(&f.ci.1),
        "secrets never reach the audit log"
    );
    let logged = crate::transparency::logged_events(&app, &f.admin, "acme").await;
    let (s, v) = app.get(&f.admin, "/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["checked"].as_u64().unwrap() >= logged.len() as u64, "{v}");
    assert_eq!(v["first_broken"], Value::Null);
}

async fn introspection_is_for_resource_servers_of_the_same_tenant(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let g = fixture(&app, "globex").await;
    let token = app.mint_at(&f.ci, &f.resource, &[]).await;
    // A CI client may not introspect.
    let res = app
        .http
        .post(app.url("/oauth2/introspect"))
        .basic_auth(&f.ci.0, Some(&f.ci.1))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Another tenant's resource server learns nothing.
    assert_eq!(
        app.introspect((&g.rs.0, &g.rs.1), &token).await,
        json!({"active": false})
    );
    // Garbage is simply inactive.
    assert_eq!(
        app.introspect((&f.rs.0, &f.rs.1), "not.a.token").await,
        json!({"active": false})
    );
    let body = app.introspect((&f.rs.0, &f.rs.1), &token).await;
    for field in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "jti",
        "tenant",
        "workflow",
    ] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    app.advance(601);
    assert_eq!(
        app.introspect((&f.rs.0, &f.rs.1), &token).await["active"],
        false,
        "expired"
    );
}
