//! Revocation: the model-based test (random mints and revocations across
//! tenants, workflows, workloads and clients; introspection must match the
//! model for every token), the feed, the background marking and pruning.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, claims, eventually, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    introspection_matches_a_model_of_random_mints_and_revocations,
    lease_rows_are_marked_and_counted_in_the_background,
    the_revocation_feed_serves_a_tenants_rules_with_a_cursor_and_etag,
    expired_leases_and_spent_rules_are_pruned,
    revoking_a_workflow_leaves_other_workflows_active,
);

/// xorshift64*: a deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

struct Minted {
    tenant: usize,
    client: usize,
    workflow: &'static str,
    workload: &'static str,
    token: String,
    jti: String,
    revoked: bool,
}

/// Which minted tokens a revocation in the model covers.
type Matcher = Box<dyn Fn(&Minted) -> bool>;

const WORKFLOWS: [&str; 3] = ["release", "triage", "nightly"];
const WORKLOADS: [&str; 3] = ["runner/a", "runner/b", "agent/c"];

async fn check_model(app: &TestApp, tenants: &[Fixture], minted: &[Minted], seed: u64, step: usize) {
    for m in minted {
        let f = &tenants[m.tenant];
        let active = app.introspect((&f.rs.0, &f.rs.1), &m.token).await["active"] == true;
        assert_eq!(
            active,
            !m.revoked,
            "seed {seed}, step {step}: token {} ({} {} {}) should be {}",
            m.jti,
            m.workflow,
            m.workload,
            m.client,
            if m.revoked { "revoked" } else { "active" }
        );
    }
}

async fn run_model(app: &TestApp, seed: u64, steps: usize) {
    let tenants = [fixture(app, "alpha").await, fixture(app, "beta").await];
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut minted: Vec<Minted> = Vec::new();
    // (tenant, rule id, leases it newly revoked in the model)
    let mut rules: Vec<(usize, String, i64)> = Vec::new();
    for step in 0..steps {
        let t = (rng.next() % 2) as usize;
        let f = &tenants[t];
        if !rng.next().is_multiple_of(3) || minted.is_empty() {
            let client = (rng.next() % 2) as usize;
            let (id, secret) = if client == 0 { &f.agent } else { &f.ci };
            let workflow = if client == 0 { *rng.pick(&WORKFLOWS) } else { "release" };
            let workload = *rng.pick(&WORKLOADS);
            let token = app
                .mint(
                    id,
                    secret,
                    &[
                        ("grant_type", "client_credentials"),
                        ("resource", &f.resource),
                        ("workflow", workflow),
                        ("workload", workload),
                    ],
                )
                .await;
            let jti = claims(&token)["jti"].as_str().unwrap().to_string();
            minted.push(Minted {
                tenant: t,
                client,
                workflow,
                workload,
                token,
                jti,
                revoked: false,
            });
        } else {
            let client_ids = [f.agent.0.as_str(), f.ci.0.as_str()];
            let (body, matches): (Value, Matcher) = match rng.next() % 5 {
                0 => (json!({"reason": "model"}), Box::new(|_| true)),
                1 => {
                    let w = *rng.pick(&WORKFLOWS);
                    (
                        json!({"workflow": w, "reason": "model"}),
                        Box::new(move |m| m.workflow == w),
                    )
                }
                2 => {
                    let w = *rng.pick(&WORKLOADS);
                    (
                        json!({"workload": w, "reason": "model"}),
                        Box::new(move |m| m.workload == w),
                    )
                }
                3 => {
                    let c = (rng.next() % 2) as usize;
                    (
                        json!({"client_id": client_ids[c], "reason": "model"}),
                        Box::new(move |m| m.client == c),
                    )
                }
                _ => {
                    let of_tenant: Vec<&Minted> = minted.iter().filter(|m| m.tenant == t).collect();
                    if of_tenant.is_empty() {
                        continue;
                    }
                    let jti = rng.pick(&of_tenant).jti.clone();
                    (
                        json!({"lease_id": jti.clone(), "reason": "model"}),
                        Box::new(move |m| m.jti == jti),
                    )
                }
            };
            let rule = app
                .created(
                    &f.admin,
                    &format!("/v1/tenants/{}/revocations", ["alpha", "beta"][t]),
                    body,
                )
                .await;
            let mut expected_newly = 0;
            for m in minted.iter_mut().filter(|m| m.tenant == t && matches(m)) {
                if !m.revoked {
                    expected_newly += 1;
                }
                m.revoked = true;
            }
            // Created, the rule has marked nothing yet: the rows are marked (and
            // counted) in the background, each by the first rule that reaches it.
            assert_eq!(rule["leases_revoked"], 0, "seed {seed}: {rule}");
            rules.push((t, rule["id"].as_str().unwrap().to_string(), expected_newly));
        }
        if step % 25 == 24 {
            check_model(app, &tenants, &minted, seed, step).await;
        }
    }
    check_model(app, &tenants, &minted, seed, steps).await;
    check_counts(app, &tenants, &rules, seed).await;
}

/// Once the background sweep has marked every rule, each rule counts exactly
/// the leases it revoked first (rules are marked in the order they were made,
/// so a lease an earlier rule already marked is not counted again).
async fn check_counts(app: &TestApp, tenants: &[Fixture], rules: &[(usize, String, i64)], seed: u64) {
    let listed = |t: usize| async move {
        let path = format!("/v1/tenants/{}/revocations?limit=1000", ["alpha", "beta"][t]);
        let (s, list) = app.get(&tenants[t].admin, &path).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        list["items"].as_array().unwrap().clone()
    };
    eventually("every rule marked", || async {
        let mut all = listed(0).await;
        all.extend(listed(1).await);
        all.len() == rules.len() && all.iter().all(|r| r["marked_at"].is_string())
    })
    .await;
    let mut counted = 0;
    for t in 0..2 {
        for listed in listed(t).await {
            let (_, _, expected) = rules.iter().find(|(_, id, _)| listed["id"] == id.as_str()).unwrap();
            assert_eq!(
                listed["leases_revoked"].as_i64().unwrap(),
                *expected,
                "seed {seed}: rule {listed}"
            );
            counted += expected;
        }
    }
    assert!(counted > 0, "seed {seed}: the model revoked something");
}

async fn introspection_matches_a_model_of_random_mints_and_revocations(b: Backend) {
    let seeds: Vec<u64> = match std::env::var("MAYFLY_MODEL_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let app = spawn_app(b).await;
        run_model(&app, seed, 70).await;
    }
}

async fn lease_rows_are_marked_and_counted_in_the_background(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    for i in 0..12 {
        let workload = format!("runner/{i}");
        app.mint_at(
            &f.agent,
            &f.resource,
            &[("workflow", "release"), ("workload", &workload)],
        )
        .await;
    }
    let control = app.mint_at(&f.agent, &f.resource, &[("workflow", "nightly")]).await;
    // The rule comes a minute after the leases: a row stamped with anything
    // but the time it was marked (its issue time, say) shows below.
    app.advance(60);
    let (s, rule) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workflow": "release", "reason": "leak"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        (rule["leases_revoked"].clone(), rule["marked_at"].clone()),
        (json!(0), Value::Null),
        "the call returns before any row is marked: {rule}"
    );
    // Listing is exact at once, marked or not.
    let (_, active) = app.get(&f.admin, "/v1/tenants/acme/leases?active=true").await;
    assert_eq!(active["items"].as_array().unwrap().len(), 1, "only the control lease");
    let listed_rule = || async {
        let (_, rules) = app.get(&f.admin, "/v1/tenants/acme/revocations").await;
        rules["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == rule["id"])
            .unwrap()
            .clone()
    };
    eventually("the rule is marked done", || async {
        listed_rule().await["marked_at"].is_string()
    })
    .await;
    let done = listed_rule().await;
    assert_eq!(done["leases_revoked"], 12, "counts each row it marked: {done}");
    let at = |field: &Value| field.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let (created_at, marked_at) = (at(&done["created_at"]), at(&done["marked_at"]));
    let (_, leases) = app.get(&f.admin, "/v1/tenants/acme/leases?active=false").await;
    let items = leases["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    for l in items {
        assert_eq!(l["revocation_id"], rule["id"], "{l}");
        let revoked_at = at(&l["revoked_at"]);
        assert!(
            created_at <= revoked_at && revoked_at <= marked_at,
            "marked after the rule was made and by the time it says so: {l}"
        );
    }
    let (_, control) = app
        .get(
            &f.admin,
            &format!("/v1/tenants/acme/leases/{}", claims(&control)["jti"].as_str().unwrap()),
        )
        .await;
    assert!(
        control["revoked_at"].is_null(),
        "another workflow's row is left alone: {control}"
    );
}

async fn the_revocation_feed_serves_a_tenants_rules_with_a_cursor_and_etag(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let g = fixture(&app, "globex").await;
    app.post(
        &f.admin,
        "/v1/tenants/acme/revocations",
        json!({"workflow": "release", "reason": "one"}),
    )
    .await;
    app.post(
        &f.admin,
        "/v1/tenants/globex/revocations",
        json!({"workload": "x", "reason": "other tenant"}),
    )
    .await;
    app.post(
        &f.admin,
        "/v1/tenants/acme/revocations",
        json!({"client_id": f.ci.0, "reason": "two"}),
    )
    .await;

    let feed = |since: Option<String>, etag: Option<String>| {
        let app = &app;
        let rs = f.rs.clone();
        async move {
            let mut req = app.http.get(app.url("/v1/revocations")).basic_auth(&rs.0, Some(&rs.1));
            if let Some(s) = since {
                req = req.query(&[("since", s)]);
            }
            if let Some(e) = etag {
                req = req.header("if-none-match", e);
            }
            req.send().await.unwrap()
        }
    };
    let res = feed(None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "only acme's rules: {body}");
    assert_eq!(items[0]["selector"], json!({"workflow": "release"}));
    assert_eq!(items[1]["selector"], json!({"client_id": f.ci.0}));
    assert!(
        items
            .iter()
            .all(|r| r["issued_before"].is_string() && r["tenant"] == "acme")
    );

    assert_eq!(feed(None, Some(etag)).await.status(), StatusCode::NOT_MODIFIED);
    let cursor = body["next_cursor"].as_str().unwrap().to_string();
    let empty: Value = feed(Some(cursor.clone()), None).await.json().await.unwrap();
    assert_eq!(empty["items"].as_array().unwrap().len(), 0);
    assert_eq!(
        empty["next_cursor"],
        cursor.as_str(),
        "polling from the end keeps the cursor"
    );
    app.post(
        &f.admin,
        "/v1/tenants/acme/revocations",
        json!({"reason": "everything"}),
    )
    .await;
    let next: Value = feed(Some(cursor), None).await.json().await.unwrap();
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert_eq!(next["items"][0]["selector"], json!({}));

    // Rules that cover every token, whenever issued, say so to offline verifiers too.
    let (s, _) = app
        .delete(&f.admin, &format!("/v1/tenants/acme/clients/{}", f.agent.0))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let last: Value = feed(Some(next["next_cursor"].as_str().unwrap().to_string()), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"][0]["selector"], json!({"client_id": f.agent.0}));
    assert_eq!(last["items"][0]["issued_before"], "9999-12-31T23:59:59Z");

    // A CI client may not read it; the global admin reads every tenant's.
    let res = app
        .http
        .get(app.url("/v1/revocations"))
        .basic_auth(&f.ci.0, Some(&f.ci.1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (s, all) = app.get(&g.admin, "/v1/revocations").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
}

async fn expired_leases_and_spent_rules_are_pruned(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("expires_in", "60"),
    ];
    let old = app.mint(&f.ci.0, &f.ci.1, &form).await;
    let old_path = format!("/v1/tenants/acme/leases/{}", claims(&old)["jti"].as_str().unwrap());
    let (s, rule) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workload": "nobody", "reason": "spent soon"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let sweeper = app.sweeper().await;
    sweeper.mark_revoked().await.unwrap();
    // Both exist before the prune: what disappears below was there.
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/revocations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], rule["id"]);
    assert!(
        list["items"][0]["marked_at"].is_string(),
        "only marked rules are pruned: {list}"
    );
    assert_eq!(app.get(&f.admin, &old_path).await.0, StatusCode::OK);
    // Past every token's lifetime and the 7-day retention.
    app.advance(8 * 24 * 3600);
    let fresh = app.mint(&f.ci.0, &f.ci.1, &form).await;
    // The background sweeper may get there first; either way the outcome is the same.
    sweeper.prune().await.unwrap();
    let admin = app.global_admin_token().await;
    let (s, _) = app.get(&admin, &old_path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .get(
            &admin,
            &format!("/v1/tenants/acme/leases/{}", claims(&fresh)["jti"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = app.get(&admin, "/v1/tenants/acme/revocations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

async fn revoking_a_workflow_leaves_other_workflows_active(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let g = fixture(&app, "globex").await;
    let rs = (f.rs.0.as_str(), f.rs.1.as_str());
    let mint = |workflow: &'static str| {
        let app = &app;
        let (id, secret, resource) = (f.agent.0.clone(), f.agent.1.clone(), f.resource.clone());
        async move {
            app.mint(
                &id,
                &secret,
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", &resource),
                    ("workflow", workflow),
                ],
            )
            .await
        }
    };
    let release = mint("release").await;
    let triage = mint("triage").await;
    let other_tenant_release = app.mint_at(&g.agent, &g.resource, &[("workflow", "release")]).await;

    let rule = app
        .created(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workflow": "release", "reason": "leaked in a log"}),
        )
        .await;
    assert_eq!(rule["selector"], json!({"workflow": "release"}));
    assert_eq!(rule["reason"], "leaked in a log");
    assert_eq!(
        rule["leases_revoked"], 0,
        "counted later, as the background marks the rows: {rule}"
    );
    assert!(rule["issued_before"].is_string());

    assert_eq!(
        app.introspect(rs, &release).await,
        json!({"active": false}),
        "revoked at once"
    );
    assert_eq!(
        app.introspect(rs, &triage).await["active"],
        true,
        "other workflow untouched"
    );
    assert_eq!(
        app.introspect((&g.rs.0, &g.rs.1), &other_tenant_release).await["active"],
        true,
        "other tenant untouched"
    );
    let after = mint("release").await;
    assert_eq!(
        app.introspect(rs, &after).await["active"],
        true,
        "minted after the rule: unaffected"
    );
}
