//! Security round 3 (issue 18): every mint path minting under a client
//! honours that client's state, stamp and limits; delegation only narrows
//! and never loops; rules reach along chains; a correct secret passes any
//! storm; unauthenticated refusals cost a bounded number of audit events;
//! a tenant's live-lease limit holds under a burst; people are not workloads
//! a secret client may name.

use std::sync::atomic::Ordering::SeqCst;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, claims, eventually, fixture, spawn_app};
use crate::kit::{ACCESS_TOKEN, CLIENT_ASSERTION, JWT_BEARER};
use crate::oidc::{self, FakeIssuer, now, sign_with};
use crate::on_both_backends;

on_both_backends!(
    a_client_bound_to_a_trust_policy_mints_nothing_once_disabled_and_keeps_its_rate_limit,
    private_key_jwt_mints_racing_a_disable_leave_no_token_active,
    a_delegated_token_never_exceeds_its_subject_tokens_own_resource_and_scopes,
    revoking_or_deleting_a_client_ends_the_tokens_derived_along_its_chain,
    the_subject_cannot_come_back_into_its_own_chain_as_an_actor,
    revoking_an_actor_tokens_lease_ends_what_was_exchanged_with_it,
    a_secret_client_names_a_person_as_its_workload_only_where_its_pattern_allows,
);

async fn send(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    app.token_form(form).await
}

async fn basic(app: &TestApp, who: &(String, String), form: &[(&str, &str)]) -> (StatusCode, Value) {
    app.token_as(who, form).await
}

async fn active(app: &TestApp, f: &Fixture, token: &str) -> bool {
    app.introspect((&f.rs.0, &f.rs.1), token).await["active"] == json!(true)
}

async fn patch_client(app: &TestApp, f: &Fixture, id: &str, body: Value) {
    let path = format!("/v1/tenants/acme/clients/{id}");
    let (s, b) = app.patch(&f.admin, &path, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// Registers an agent-kind client; returns its credentials.
async fn agent(app: &TestApp, f: &Fixture, id: &str, grants: Value, delegates: &[&str]) -> (String, String) {
    let (s, b) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": id, "kind": "agent", "workflows": ["*"], "grants": grants, "delegates": delegates}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (id.to_string(), b["client_secret"].as_str().unwrap().to_string())
}

/// The tenant's `token.denied` events.
async fn denied(app: &TestApp, f: &Fixture) -> Vec<Value> {
    app.events(&f.admin, "acme", "token.denied").await
}

/// The one `token.denied` event written since `before`: (reason, client_id).
async fn one_denial(app: &TestApp, f: &Fixture, before: &[Value]) -> (Value, Value) {
    let new: Vec<Value> = denied(app, f)
        .await
        .into_iter()
        .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
        .collect();
    assert_eq!(new.len(), 1, "exactly one event: {new:?}");
    assert_eq!(
        (&new[0]["outcome"], &new[0]["tenant"]),
        (&json!("denied"), &json!("acme"))
    );
    (new[0]["reason"].clone(), new[0]["client_id"].clone())
}

fn token(body: &Value) -> String {
    body["access_token"].as_str().unwrap_or_default().to_string()
}

async fn a_client_bound_to_a_trust_policy_mints_nothing_once_disabled_and_keeps_its_rate_limit(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    app.created(
        &f.admin,
        "/v1/tenants/acme/trust-policies",
        json!({"name": "agent-pods", "issuer": idp.url, "audience": app.issuer,
                   "subject": "system:serviceaccount:agents:triage", "client_id": f.agent.0,
                   "workflow_template": "triage", "workload_template": "k8s:{kubernetes.io.serviceaccount.name}",
                   "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
    )
    .await;
    let pod = idp.token("rsa-1", oidc::kubernetes(&app.issuer, "agents", "triage"));
    let form = [
        ("grant_type", JWT_BEARER),
        ("assertion", pod.as_str()),
        ("resource", f.resource.as_str()),
    ];
    let (s, body) = send(&app, &form).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let first = token(&body);
    assert_eq!(claims(&first)["client_id"], json!(f.agent.0));

    // The bound client's rate limit holds on this path as on its own.
    // It holds at once: the catalog a mint reads is checked against the
    // stored version before its lease commits.
    patch_client(&app, &f, &f.agent.0, json!({"max_mints_per_second": 1})).await;
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(&app, &form).await.0);
    }
    // One a second of the time the ten took, however long that was.
    let seconds = started.elapsed().as_secs_f64().floor() as usize;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(
        ok <= 1 + seconds && ok + limited == 10 && limited > 0,
        "in {seconds} s: {statuses:?}"
    );

    // Disabled: the policy mints nothing more as that client.
    patch_client(
        &app,
        &f,
        &f.agent.0,
        json!({"disabled": true, "max_mints_per_second": 0}),
    )
    .await;
    let path = format!("/v1/tenants/acme/leases?client_id={}&limit=200", f.agent.0);
    let (_, before) = app.get(&f.admin, &path).await;
    let denied_before = denied(&app, &f).await;
    let (s, body) = send(&app, &form).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (_, after) = app.get(&f.admin, &path).await;
    let ids = |v: &Value| -> Vec<Value> { v["items"].as_array().unwrap().iter().map(|l| l["id"].clone()).collect() };
    assert_eq!(ids(&before), ids(&after), "no lease under the disabled client");
    assert_eq!(
        one_denial(&app, &f, &denied_before).await,
        (
            json!("invalid_grant: the client bound to policy agent-pods is disabled or deleted"),
            json!(f.agent.0)
        )
    );
    assert!(!active(&app, &f, &first).await, "disabling revoked what it held");
}

async fn private_key_jwt_mints_racing_a_disable_leave_no_token_active(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let signer = oidc::ec_signer();
    app.created(
        &f.admin,
        "/v1/tenants/acme/clients",
        json!({"client_id": "acme-keyed", "kind": "agent", "workflows": ["triage"],
                   "grants": [{"resource": f.resource, "scopes": ["issues:read"]}],
                   "jwks": {"keys": [FakeIssuer::jwk_of(&signer, "k1")]}}),
    )
    .await;
    let signer = std::sync::Arc::new(signer);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (answers, of them 200s): the race is judged by what the minters did,
    // not by how much they managed in a wall-clock window.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let minted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let minters: Vec<_> = (0..3)
        .map(|worker| {
            let (http, url, issuer, resource) = (
                app.http.clone(),
                app.url("/oauth2/token"),
                app.issuer.clone(),
                f.resource.clone(),
            );
            let (signer, stop, answered, minted) = (signer.clone(), stop.clone(), answered.clone(), minted.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..400 {
                    if stop.load(SeqCst) {
                        break;
                    }
                    let t = now();
                    let a = sign_with(
                        &signer,
                        &json!({"alg": "ES256", "kid": "k1"}),
                        &json!({"iss": "acme-keyed", "sub": "acme-keyed", "aud": issuer, "iat": t,
                                "exp": t + 60, "jti": format!("w{worker}-{i}")}),
                    );
                    let form = [
                        ("grant_type", "client_credentials"),
                        ("client_assertion_type", CLIENT_ASSERTION),
                        ("client_assertion", a.as_str()),
                        ("resource", resource.as_str()),
                    ];
                    let res = http.post(&url).form(&form).send().await.unwrap();
                    if res.status() == StatusCode::OK {
                        let body: Value = res.json().await.unwrap();
                        got.push(token(&body));
                        minted.fetch_add(1, SeqCst);
                    }
                    answered.fetch_add(1, SeqCst);
                }
                got
            })
        })
        .collect();
    eventually("a few mints succeed before the disable", || async {
        minted.load(SeqCst) >= 3
    })
    .await;
    patch_client(&app, &f, "acme-keyed", json!({"disabled": true})).await;
    // Each minter has tried twice more since the disable answered.
    let at_disable = answered.load(SeqCst);
    eventually("more mints are tried after the disable", || async {
        answered.load(SeqCst) >= at_disable + 6
    })
    .await;
    stop.store(true, SeqCst);
    let mut tokens = Vec::new();
    for m in minters {
        tokens.extend(m.await.unwrap());
    }
    assert!(!tokens.is_empty(), "some mints ran before the disable");
    // No lease of the client may commit after the disable did (its rule
    // covers leases up to then only). The audit chain orders both.
    let (_, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?client_id=acme-keyed&limit=200")
        .await;
    let newest_first: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let disabled_at = newest_first
        .iter()
        .position(|a| *a == "client.updated")
        .expect("the disable is audited");
    assert_eq!(
        newest_first[..disabled_at]
            .iter()
            .filter(|a| **a == "token.issued")
            .count(),
        0,
        "leases committed after the disable: {newest_first:?}"
    );
    assert!(newest_first[disabled_at..].contains(&"token.issued"));
    // Disabling revokes what was minted before it; nothing minted after survives.
    let mut still = 0;
    for t in &tokens {
        still += usize::from(active(&app, &f, t).await);
    }
    assert_eq!(still, 0, "{still} of {} tokens active after the disable", tokens.len());
}

/// The agent holds a token for itself on `aud` (spelled as given); returns it.
async fn own_token(app: &TestApp, who: &(String, String), aud: &str, scope: &str) -> String {
    let (s, body) = basic(
        app,
        who,
        &[
            ("grant_type", "client_credentials"),
            ("resource", aud),
            ("scope", scope),
            ("workflow", "triage"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    token(&body)
}

async fn exchange(
    app: &TestApp,
    actor: &(String, String),
    subject: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    app.pass_on(actor, subject, extra).await
}

async fn a_delegated_token_never_exceeds_its_subject_tokens_own_resource_and_scopes(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let jira = "https://mcp.acme.test/jira";
    let (s, r) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/resources",
            json!({"uri": jira, "name": "Jira", "scopes": ["read"], "default_ttl_seconds": 600, "max_ttl_seconds": 3600}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let both = json!([{"resource": f.resource, "scopes": ["issues:read", "issues:write"]},
                      {"resource": jira, "scopes": ["read"]}]);
    let helper = agent(&app, &f, "acme-helper", both.clone(), &[]).await;
    let lead = agent(&app, &f, "acme-lead", both, &["acme-helper"]).await;

    // The subject token's aud is spelled differently from the lead's grant.
    let read_only = own_token(&app, &lead, "https://MCP.acme.test/github/", "issues:read").await;
    let (s, body) = exchange(
        &app,
        &helper,
        &read_only,
        &[("resource", &f.resource), ("scope", "issues:read issues:write")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "issues:read", "never wider than the subject token");
    let (s, body) = exchange(
        &app,
        &helper,
        &read_only,
        &[("resource", &f.resource), ("scope", "issues:write")],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");

    // A jira read token does not become a github token through its client's other grants.
    let jira_read = own_token(&app, &lead, jira, "read").await;
    let (s, body) = exchange(&app, &helper, &jira_read, &[("resource", &f.resource)]).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (s, body) = exchange(&app, &helper, &jira_read, &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        (claims(&token(&body))["aud"].as_str(), body["scope"].as_str()),
        (Some(jira), Some("read"))
    );
}

/// person-like client P (delegating to agent Ag, which delegates to Sub);
/// returns their credentials.
async fn chain_clients(app: &TestApp, f: &Fixture) -> [(String, String); 3] {
    let grants = json!([{"resource": f.resource, "scopes": ["issues:read"]}]);
    let sub = agent(app, f, "acme-sub", grants.clone(), &[]).await;
    let ag = agent(app, f, "acme-ag", grants.clone(), &["acme-sub"]).await;
    let p = agent(app, f, "acme-p", grants, &["acme-ag"]).await;
    // Ag also declares P (for the loop test): declared or not, P never acts on its own chain.
    patch_client(app, f, "acme-ag", json!({"delegates": ["acme-sub", "acme-p"]})).await;
    [p, ag, sub]
}

/// P's own token, exchanged by Ag, then by Sub: (t0, t1, t2).
async fn chain(app: &TestApp, f: &Fixture, c: &[(String, String); 3]) -> (String, String, String) {
    let t0 = own_token(app, &c[0], &f.resource, "issues:read").await;
    let (s, b1) = exchange(app, &c[1], &t0, &[]).await;
    assert_eq!(s, StatusCode::OK, "{b1}");
    let (s, b2) = exchange(app, &c[2], &token(&b1), &[]).await;
    assert_eq!(s, StatusCode::OK, "{b2}");
    (t0, token(&b1), token(&b2))
}

async fn revoke(app: &TestApp, f: &Fixture, body: Value) {
    app.created(&f.admin, "/v1/tenants/acme/revocations", body).await;
}

async fn revoking_or_deleting_a_client_ends_the_tokens_derived_along_its_chain(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let c = chain_clients(&app, &f).await;
    let (t0, t1, t2) = chain(&app, &f, &c).await;
    revoke(&app, &f, json!({"client_id": "acme-ag", "reason": "agent compromised"})).await;
    assert!(!active(&app, &f, &t1).await, "Ag's own token");
    assert!(!active(&app, &f, &t2).await, "Sub's token came through Ag");
    assert!(active(&app, &f, &t0).await, "the subject's own token is not Ag's");

    // A new chain, then P is deleted: everything derived from P's token ends.
    let (t0, t1, t2) = chain(&app, &f, &c).await;
    let (s, _) = app.delete(&f.admin, "/v1/tenants/acme/clients/acme-p").await;
    assert!(s.is_success(), "{s}");
    for (name, t) in [("P", &t0), ("Ag", &t1), ("Sub", &t2)] {
        assert!(!active(&app, &f, t).await, "{name}'s token outlived P");
    }
    // The sweeper marks the derived rows too.
    app.sweeper().await.mark_revoked().await.unwrap();
    let lease = app.lease_of(&f.admin, "acme", &t2).await;
    assert!(lease["revoked_at"].is_string(), "{lease}");
}

async fn the_subject_cannot_come_back_into_its_own_chain_as_an_actor(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let c = chain_clients(&app, &f).await;
    let t0 = own_token(&app, &c[0], &f.resource, "issues:read").await;
    let (s, b1) = exchange(&app, &c[1], &t0, &[]).await;
    assert_eq!(s, StatusCode::OK, "{b1}");
    // Ag declares P as a delegate, yet P acting on a token that is already P's is a loop.
    let before = denied(&app, &f).await;
    let (s, body) = exchange(&app, &c[0], &token(&b1), &[]).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(
        one_denial(&app, &f, &before).await,
        (
            json!("invalid_grant: delegation: the actor is already in the chain (a loop)"),
            json!(c[0].0)
        )
    );
}

async fn revoking_an_actor_tokens_lease_ends_what_was_exchanged_with_it(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let c = chain_clients(&app, &f).await;
    let t0 = own_token(&app, &c[0], &f.resource, "issues:read").await;
    let actor_token = own_token(&app, &c[1], &f.resource, "issues:read").await;
    let (s, body) = exchange(
        &app,
        &c[1],
        &t0,
        &[("actor_token", &actor_token), ("actor_token_type", ACCESS_TOKEN)],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let exchanged = token(&body);
    assert!(active(&app, &f, &exchanged).await);
    revoke(
        &app,
        &f,
        json!({"lease_id": claims(&actor_token)["jti"], "reason": "actor token leaked"}),
    )
    .await;
    assert!(!active(&app, &f, &exchanged).await, "it descends from the actor token");
    assert!(active(&app, &f, &t0).await);
}

async fn a_secret_client_names_a_person_as_its_workload_only_where_its_pattern_allows(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let ask = |workload: &'static str| {
        let (app, f) = (&app, &f);
        async move {
            basic(
                app,
                &f.agent,
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", f.resource.as_str()),
                    ("workflow", "triage"),
                    ("workload", workload),
                ],
            )
            .await
        }
    };
    for person in ["person:alice", "alice@acme.test"] {
        let (s, body) = ask(person).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unauthorized_client")),
            "{person}: {body}"
        );
    }
    let (s, body) = ask("triage-pod-7").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A pattern that names addresses explicitly allows them.
    patch_client(
        &app,
        &f,
        &f.agent.0,
        json!({"workload_pattern": "^[a-z]+@bots\\.acme\\.test$"}),
    )
    .await;
    let (s, body) = ask("triage@bots.acme.test").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(claims(&token(&body))["sub"], "triage@bots.acme.test");
}

/// In memory per replica: one backend suffices. Callers who authenticate as
/// nobody cannot make mayfly write an event per request, nor learn from an
/// endless stream of verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_forged_external_tokens_writes_one_audit_event_and_is_then_braked() {
    let app = crate::kit::braked_after(3).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let (s, p) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/trust-policies",
            json!({"name": "pods", "issuer": idp.url, "audience": app.issuer,
                   "subject": "system:serviceaccount:agents:triage",
                   "workflow_template": "triage", "workload_template": "k8s:triage",
                   "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let good = idp.token("rsa-1", oidc::kubernetes(&app.issuer, "agents", "triage"));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let forged = format!("{head}.{flipped}{}", &sig[1..]);
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let form = [
            ("grant_type", JWT_BEARER),
            ("assertion", forged.as_str()),
            ("resource", f.resource.as_str()),
        ];
        statuses.push(send(&app, &form).await.0);
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::BAD_REQUEST || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "past the source's budget"
    );
    let (_, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=token.denied&limit=1000")
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    // A genuine token from the same address still gets through.
    let form = [
        ("grant_type", JWT_BEARER),
        ("assertion", good.as_str()),
        ("resource", f.resource.as_str()),
    ];
    let (s, body) = send(&app, &form).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}
