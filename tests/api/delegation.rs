//! Delegation: a person's identity (a fake IdP's id_token) handed to an
//! agent and on to a sub-agent through RFC 8693 token exchange, with the
//! `act` chain visible in tokens, introspection, leases and the audit trail;
//! only narrowing; declared actors only; at most five deep; and revocation
//! that follows the chain.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, claims, fixture, spawn_app};
use crate::kit::{ACCESS_TOKEN, EXCHANGE, ID_TOKEN};
use crate::oidc::{FakeIssuer, now};
use crate::on_both_backends;

on_both_backends!(
    a_person_to_agent_to_sub_agent_chain_is_named_in_token_introspection_and_audit,
    widening_undeclared_actors_and_depth_six_are_refused_and_audited,
    revoking_an_agents_workload_ends_what_it_holds_for_anyone_and_nothing_else,
);

/// Registers agents (each delegating to the next), a control agent
/// `asst-agent-b`, and the people policy; returns the agents' credentials
/// and the control agent's.
async fn setup(
    app: &TestApp,
    f: &Fixture,
    idp: &FakeIssuer,
    agents: &[&str],
) -> (Vec<(String, String)>, (String, String)) {
    let body = app
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "asst-agent-b", "kind": "agent",
            "workflows": ["*"], "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
        )
        .await;
    let other = (
        "asst-agent-b".to_string(),
        body["client_secret"].as_str().unwrap().to_string(),
    );
    let mut creds = Vec::new();
    for (i, name) in agents.iter().enumerate().rev() {
        let delegates: Vec<&str> = agents.get(i + 1).into_iter().copied().collect();
        let body = app.created(&f.admin, "/v1/tenants/acme/clients", json!({"client_id": name, "kind": "agent", "workflows": ["*"],
                "grants": [{"resource": f.resource, "scopes": if i == 0 { json!(["issues:read", "issues:write"]) } else { json!(["issues:read"]) }}],
                "delegates": delegates})).await;
        creds.insert(
            0,
            (name.to_string(), body["client_secret"].as_str().unwrap().to_string()),
        );
    }
    app.created(
        &f.admin,
        "/v1/tenants/acme/trust-policies",
        json!({
            "name": "people", "issuer": idp.url, "audience": app.issuer,
            "subject_pattern": "^[a-z]+@acme\\.test$",
            "workflow_template": "assist", "workload_template": "{sub}",
            "grants": [{"resource": f.resource, "scopes": ["issues:read", "issues:write"]}],
            "max_ttl_seconds": 900, "actors": [agents[0], "asst-agent-b"]
        }),
    )
    .await;
    (creds, other)
}

fn id_token(idp: &FakeIssuer, app: &TestApp, person: &str) -> String {
    let t = now();
    idp.token(
        "ec-1",
        json!({"sub": person, "aud": app.issuer, "email": person, "iat": t, "exp": t + 600}),
    )
}

async fn exchange(app: &TestApp, actor: &(String, String), form: &[(&str, &str)]) -> (StatusCode, Value) {
    app.token_as(actor, form).await
}

/// An agent exchanges a person's id_token; returns its token.
async fn agent_for(app: &TestApp, f: &Fixture, idp: &FakeIssuer, agent: &(String, String), person: &str) -> String {
    let t = id_token(idp, app, person);
    let (s, body) = exchange(
        app,
        agent,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &t),
            ("subject_token_type", ID_TOKEN),
            ("resource", &f.resource),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    body["access_token"].as_str().unwrap().to_string()
}

async fn pass_on(app: &TestApp, to: &(String, String), subject: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    app.pass_on(to, subject, extra).await
}

async fn a_person_to_agent_to_sub_agent_chain_is_named_in_token_introspection_and_audit(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let (agents, _) = setup(&app, &f, &idp, &["asst-agent", "asst-subagent"]).await;
    let t1 = agent_for(&app, &f, &idp, &agents[0], "alice@acme.test").await;
    let c1 = claims(&t1);
    assert_eq!(
        (c1["sub"].as_str(), c1["client_id"].as_str()),
        (Some("alice@acme.test"), Some("asst-agent"))
    );
    assert_eq!(c1["act"], json!({"sub": "asst-agent", "client_id": "asst-agent"}));
    assert_eq!(c1["workflow"], "assist");

    // 100 s later, the resource's default lifetime (600 s) would outlive t1.
    app.advance(100);
    let (s, body) = pass_on(&app, &agents[1], &t1, &[("scope", "issues:read issues:write")]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "issues:read", "the sub-agent holds read only");
    let t2 = body["access_token"].as_str().unwrap().to_string();
    let c2 = claims(&t2);
    assert_eq!(c2["iat"].as_i64().unwrap(), c1["iat"].as_i64().unwrap() + 100);
    assert_eq!(
        c2["exp"], c1["exp"],
        "never outlives its subject: cut to what t1 has left"
    );
    assert_eq!(body["expires_in"], 500);
    let chain = json!({"sub": "asst-subagent", "client_id": "asst-subagent",
                       "act": {"sub": "asst-agent", "client_id": "asst-agent"}});
    assert_eq!(c2["act"], chain);

    let seen = app.introspect((&f.rs.0, &f.rs.1), &t2).await;
    assert_eq!(
        (seen["active"].clone(), seen["sub"].clone(), seen["act"].clone()),
        (json!(true), json!("alice@acme.test"), chain.clone())
    );

    let (_, lease) = app
        .get(
            &f.admin,
            &format!("/v1/tenants/acme/leases/{}", c2["jti"].as_str().unwrap()),
        )
        .await;
    assert_eq!(lease["parent_id"], c1["jti"]);
    assert_eq!(lease["actor"], chain);
    let (_, by_actor) = app.get(&f.admin, "/v1/tenants/acme/leases?actor=asst-agent").await;
    assert_eq!(
        by_actor["items"].as_array().unwrap().len(),
        2,
        "both tokens the agent is in"
    );

    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.exchanged").await;
    let e = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["lease_id"] == c2["jti"])
        .unwrap()
        .clone();
    assert_eq!(
        (e["workload"].clone(), e["actor"].clone()),
        (json!("alice@acme.test"), chain)
    );
    assert!(
        e["reason"].as_str().unwrap().contains(c1["jti"].as_str().unwrap()),
        "names the parent lease"
    );
}

async fn widening_undeclared_actors_and_depth_six_are_refused_and_audited(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let names = ["a1", "a2", "a3", "a4", "a5", "a6"];
    let (agents, _) = setup(&app, &f, &idp, &names).await;
    let jira = "https://mcp.acme.test/jira";
    let (s, _) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/resources",
            json!({"uri": jira, "scopes": ["issues:read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let t1 = agent_for(&app, &f, &idp, &agents[0], "alice@acme.test").await;
    let a2_own = app
        .mint(
            &agents[1].0,
            &agents[1].1,
            &[
                ("grant_type", "client_credentials"),
                ("resource", &f.resource),
                ("workflow", "assist"),
            ],
        )
        .await;
    let with_actor = [
        ("grant_type", EXCHANGE),
        ("subject_token", t1.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
        ("actor_token", a2_own.as_str()),
        ("actor_token_type", ACCESS_TOKEN),
    ];
    let t = id_token(&idp, &app, "alice@acme.test");
    let by_id_token = [
        ("grant_type", EXCHANGE),
        ("subject_token", t.as_str()),
        ("subject_token_type", ID_TOKEN),
        ("resource", f.resource.as_str()),
    ];
    let none = (String::new(), String::new());
    let not_allowed =
        "invalid_grant: delegation: the actor is not allowed to act for this subject (delegates / actors)";
    let no_policy = format!(
        "invalid_grant: no trust policy for issuer {} names `{}` among its actors",
        idp.url, agents[1].0
    );
    // (what, who asks, form, the OAuth error, the one audit event's reason and
    // client; None where nothing is audited: a request that authenticates no
    // client names no tenant to audit in)
    type Case<'a> = (
        &'a str,
        &'a (String, String),
        Vec<(&'a str, &'a str)>,
        &'a str,
        Option<(&'a str, Option<&'a str>)>,
    );
    let cases: Vec<Case> = vec![
        // Widening: a scope beyond what a2 may hold, a resource beyond both, a life beyond the subject's.
        (
            "a wider scope",
            &agents[1],
            passed(&t1, &[("scope", "issues:write")]),
            "invalid_scope",
            Some((
                "invalid_scope: none of the requested scopes is granted to this client",
                Some("a2"),
            )),
        ),
        (
            "another resource",
            &agents[1],
            passed(&t1, &[("resource", jira)]),
            "invalid_grant",
            Some((
                "invalid_grant: delegation: the subject's token does not reach this resource",
                Some("a2"),
            )),
        ),
        (
            "a longer life",
            &agents[1],
            passed(&t1, &[("expires_in", "7200")]),
            "invalid_grant",
            Some((
                "invalid_grant: delegation: expires_in goes beyond the subject token's exp",
                Some("a2"),
            )),
        ),
        // Undeclared: a3 is not among a1's delegates; a2 is not among the policy's actors.
        (
            "not a delegate",
            &agents[2],
            passed(&t1, &[]),
            "invalid_grant",
            Some((not_allowed, Some("a3"))),
        ),
        (
            "not a policy actor",
            &agents[1],
            by_id_token.to_vec(),
            "invalid_grant",
            // No policy lets a2 act: the refusal names the agent and the rule.
            Some((no_policy.as_str(), Some(agents[1].0.as_str()))),
        ),
        // An actor token is no credential on its own: presented without its
        // client's authentication, or under another client's, it is refused.
        (
            "an actor token alone",
            &none,
            with_actor.to_vec(),
            "invalid_client",
            None,
        ),
        (
            "another client's actor token",
            &agents[2],
            with_actor.to_vec(),
            "invalid_grant",
            Some((
                "invalid_grant: delegation: actor_token: not minted for the authenticated client",
                Some("a3"),
            )),
        ),
    ];
    for (what, who, form, error, reason) in &cases {
        let before = denied(&app, &f).await;
        let (s, body) = if who.0.is_empty() {
            app.token_form(form).await
        } else {
            exchange(&app, who, form).await
        };
        let status = if *error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!((s, body["error"].as_str()), (status, Some(*error)), "{what}: {body}");
        let Some((reason, client)) = reason else { continue };
        let new = added(&before, denied(&app, &f).await);
        assert_eq!(new.len(), 1, "{what}: exactly one event: {new:?}");
        assert_eq!(
            (
                new[0]["reason"].as_str(),
                new[0]["outcome"].as_str(),
                new[0]["tenant"].as_str()
            ),
            (Some(*reason), Some("denied"), Some("acme")),
            "{what}: {}",
            new[0]
        );
        assert_eq!(new[0]["client_id"].as_str(), *client, "{what}: {}", new[0]);
    }
    let (s, body) = exchange(&app, &agents[1], &with_actor).await;
    assert_eq!(s, StatusCode::OK, "the actor token with its own client: {body}");

    // Down the line: five actors deep is the limit.
    let mut token = t1;
    for (i, agent) in agents.iter().enumerate().skip(1) {
        let before = denied(&app, &f).await;
        let (s, body) = pass_on(&app, agent, &token, &[]).await;
        if i < 5 {
            assert_eq!(s, StatusCode::OK, "depth {}: {body}", i + 1);
            token = body["access_token"].as_str().unwrap().to_string();
        } else {
            assert_eq!(
                (s, body["error"].clone()),
                (StatusCode::BAD_REQUEST, json!("invalid_grant")),
                "depth 6"
            );
            let new = added(&before, denied(&app, &f).await);
            assert_eq!(new.len(), 1, "depth 6: exactly one event: {new:?}");
            assert_eq!(
                (new[0]["reason"].as_str(), new[0]["client_id"].as_str()),
                (
                    Some("invalid_grant: delegation: the actor chain would be deeper than 5"),
                    Some("a6")
                )
            );
        }
    }
}

/// A token-exchange form passing `subject` on, plus `extra`.
fn passed<'a>(subject: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    form.extend_from_slice(extra);
    form
}

/// The tenant's `token.denied` events.
async fn denied(app: &TestApp, f: &Fixture) -> Vec<Value> {
    app.events(&f.admin, "acme", "token.denied").await
}

/// The events in `after` that were not in `before`.
fn added(before: &[Value], after: Vec<Value>) -> Vec<Value> {
    // By id: an event gains its log index while the test runs.
    after
        .into_iter()
        .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
        .collect()
}

async fn revoking_an_agents_workload_ends_what_it_holds_for_anyone_and_nothing_else(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let (agents, other) = setup(&app, &f, &idp, &["asst-agent", "asst-subagent"]).await;
    let t1 = agent_for(&app, &f, &idp, &agents[0], "alice@acme.test").await;
    let (_, body) = pass_on(&app, &agents[1], &t1, &[]).await;
    let t2 = body["access_token"].as_str().unwrap().to_string();
    let control = agent_for(&app, &f, &idp, &other, "bob@acme.test").await;
    let (s, _) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workload": "asst-agent", "reason": "compromised agent"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let active = |t: String| {
        let (app, rs) = (&app, f.rs.clone());
        async move { app.introspect((&rs.0, &rs.1), &t).await["active"].clone() }
    };
    assert_eq!(active(t1).await, json!(false));
    assert_eq!(
        active(t2.clone()).await,
        json!(false),
        "the sub-agent's token had asst-agent in its chain"
    );
    assert_eq!(active(control).await, json!(true));
    // The sweeper marks the rows it reached, sub-agent's included.
    let sweeper = app.sweeper().await;
    sweeper.mark_revoked().await.unwrap();
    let lease = app.lease_of(&f.admin, "acme", &t2).await;
    assert!(lease["revoked_at"].is_string(), "{lease}");
}

/// Revoking the first lease of a chain (an agent acting for a person) ends
/// every token exchanged from it, transitively, on another replica as soon
/// as the call returns; a control chain stays active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_original_lease_ends_the_whole_chain_on_another_replica() {
    let db = crate::harness::Database::fresh(Backend::Postgres).await;
    let (a, b) = crate::kit::replicas(&db).await;
    let f = fixture(&a, "acme").await;
    let idp = FakeIssuer::start().await;
    let (agents, _) = setup(&a, &f, &idp, &["asst-agent", "asst-subagent", "asst-subsubagent"]).await;
    // A policy that names actors is for delegation only: the person's id_token
    // alone, with no agent, gets no bare token of its own.
    let res = a
        .http
        .post(a.url("/oauth2/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", id_token(&idp, &a, "alice@acme.test").as_str()),
            ("resource", f.resource.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // person → agent → sub-agent → sub-sub-agent.
    let chain = |who: &'static str| {
        let (a, f, idp, agents) = (&a, &f, &idp, agents.clone());
        async move {
            let t0 = agent_for(a, f, idp, &agents[0], who).await;
            let (s, b1) = pass_on(a, &agents[1], &t0, &[]).await;
            assert_eq!(s, StatusCode::OK, "{b1}");
            let t1 = b1["access_token"].as_str().unwrap().to_string();
            let (s, b2) = pass_on(a, &agents[2], &t1, &[]).await;
            assert_eq!(s, StatusCode::OK, "{b2}");
            (t0, t1, b2["access_token"].as_str().unwrap().to_string())
        }
    };
    let (alice, t1, t2) = chain("alice@acme.test").await;
    let (_, _, bob_t2) = chain("bob@acme.test").await;
    a.created(
        &f.admin,
        "/v1/tenants/acme/revocations",
        json!({"lease_id": claims(&alice)["jti"], "reason": "alice's session ended"}),
    )
    .await;
    for t in [alice, t1, t2] {
        assert_eq!(b.introspect((&f.rs.0, &f.rs.1), &t).await["active"], false);
    }
    assert_eq!(b.introspect((&f.rs.0, &f.rs.1), &bob_t2).await["active"], true);
}
