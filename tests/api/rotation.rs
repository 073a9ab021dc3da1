//! Signing keys rotate by themselves with no window in which a valid token
//! fails to verify. Short durations (seconds), real time, minting through
//! every replica while fetching the JWKS at random moments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Database, TestApp, claims, header};

const PERIOD: f64 = 3.0;
const LEAD: f64 = 1.0;
const MAX_TTL: i64 = 2;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn secs(t: &Value) -> f64 {
    t.as_str()
        .map(|s| s.parse::<DateTime<Utc>>().unwrap().timestamp_micros() as f64 / 1e6)
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_schedule_on_sqlite() {
    rotation_story(Backend::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_rotate_once_per_period() {
    rotation_story(Backend::Postgres, 3).await;
}

async fn rotation_story(backend: Backend, replicas: usize) {
    let db = Database::fresh(backend).await;
    let fast = |c: mayfly::Config| mayfly::Config {
        issuer: "http://mayfly.rotation.test".into(),
        key_rotation_period: Duration::from_secs_f64(PERIOD),
        key_publish_lead: Duration::from_secs_f64(LEAD),
        jwks_max_age: Duration::from_secs(1),
        default_ttl: Duration::from_secs(MAX_TTL as u64),
        max_ttl: Duration::from_secs(MAX_TTL as u64),
        ..c
    };
    let mut apps: Vec<TestApp> = Vec::new();
    for _ in 0..replicas {
        apps.push(TestApp::on_db(db.clone()).config(fast).wall_clock().start().await);
    }
    let a = &apps[0];
    let admin = a.global_admin_token().await;
    a.post(&admin, "/v1/tenants", json!({"id": "rot"})).await;
    let resource = "https://mcp.rot.test/x";
    let (s, b) = a
        .post(
            &admin,
            "/v1/tenants/rot/resources",
            json!({"uri": resource, "scopes": ["s"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let client = |id: &'static str, kind: &'static str| {
        let (admin, a) = (admin.clone(), &apps[0]);
        async move {
            let (s, b) = a
                .post(
                    &admin,
                    "/v1/tenants/rot/clients",
                    json!({"client_id": id, "kind": kind, "workflows": ["w"],
                    "grants": [{"resource": resource, "scopes": ["s"]}], "max_ttl_seconds": MAX_TTL}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            (id.to_string(), b["client_secret"].as_str().unwrap().to_string())
        }
    };
    let agent = client("rot-agent", "agent").await;
    let rs = client("rot-rs", "resource_server").await;

    // Mint continuously through every replica and sample the JWKS, across four periods.
    let mut tokens: Vec<(String, f64)> = Vec::new(); // (token, wall time the response arrived)
    let mut snapshots: Vec<(f64, f64, BTreeSet<String>)> = Vec::new(); // (sent, received, kids)
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs_f64(PERIOD * 4.0 + 0.5) {
        let app = &apps[i % replicas];
        let token = app
            .mint(
                &agent.0,
                &agent.1,
                &[("grant_type", "client_credentials"), ("resource", resource)],
            )
            .await;
        tokens.push((token, now()));
        if i.is_multiple_of(3) {
            let app = &apps[(i / 3) % replicas];
            let sent = now();
            let set: Value = app.jwks().await;
            let kids = set["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_string())
                .collect();
            snapshots.push((sent, now(), kids));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    let (_, keys) = a.get(&a.global_admin_token().await, "/v1/keys").await;
    let keys: BTreeMap<String, Value> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap().to_string(), k.clone()))
        .collect();

    // 1. Every token verifies (its kid is published) in every JWKS fetched during its lifetime.
    for (token, _) in &tokens {
        let (c, kid) = (claims(token), header(token)["kid"].as_str().unwrap().to_string());
        let (iat, exp) = (c["iat"].as_f64().unwrap(), c["exp"].as_f64().unwrap());
        for (sent, received, kids) in &snapshots {
            if *sent >= iat + 1.0 && *received <= exp {
                assert!(
                    kids.contains(&kid),
                    "token signed by {kid} (iat {iat}) not in a JWKS fetched at {sent}: {kids:?}"
                );
            }
        }
    }

    // 2. One new key per period: activations are a period apart.
    let mut activations: Vec<f64> = keys
        .values()
        .map(|k| secs(&k["activated_at"]))
        .filter(|t| !t.is_nan())
        .collect();
    activations.sort_by(f64::total_cmp);
    assert!(
        activations.len() >= 4,
        "at least three rotations in four periods: {keys:?}"
    );
    for w in activations.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            (PERIOD - 0.05..PERIOD + 1.5).contains(&gap),
            "rotations {gap:.2}s apart: {activations:?}"
        );
    }
    let active = keys.values().filter(|k| k["state"] == "active").count();
    assert_eq!(active, 1, "exactly one active key: {keys:?}");

    // 3. No token is signed by a key published for less than the lead
    //    (the very first key, created at the first start, had nothing to precede).
    let first_key = keys
        .values()
        .map(|k| secs(&k["created_at"]))
        .fold(f64::INFINITY, f64::min);
    let admin = a.global_admin_token().await;
    let mut issued_at = BTreeMap::new();
    let mut path = "/v1/tenants/rot/leases?limit=1000".to_string();
    loop {
        let (_, page) = a.get(&admin, &path).await;
        for l in page["items"].as_array().unwrap() {
            issued_at.insert(l["id"].as_str().unwrap().to_string(), secs(&l["issued_at"]));
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tenants/rot/leases?limit=1000&cursor={c}"),
            None => break,
        }
    }
    for (token, _) in &tokens {
        let kid = header(token)["kid"].as_str().unwrap().to_string();
        let key = &keys[&kid];
        let published = secs(&key["created_at"]);
        if published == first_key {
            continue;
        }
        let signed = issued_at[claims(token)["jti"].as_str().unwrap()];
        assert!(
            published + LEAD <= signed + 0.01,
            "{kid} published at {published} signed at {signed}"
        );
    }

    // 4. Retired keys leave the JWKS only after every token they signed expired.
    for (kid, key) in &keys {
        let removed = secs(&key["removed_at"]);
        if removed.is_nan() {
            continue;
        }
        let last_exp = tokens
            .iter()
            .filter(|(t, _)| header(t)["kid"] == kid.as_str())
            .map(|(t, _)| claims(t)["exp"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(
            removed >= last_exp,
            "{kid} removed at {removed} before its last token expired at {last_exp}"
        );
    }

    // 5. Emergency: revoking the active key makes its tokens inactive at once, on every replica.
    let before = a
        .mint(
            &agent.0,
            &agent.1,
            &[("grant_type", "client_credentials"), ("resource", resource)],
        )
        .await;
    let kid = header(&before)["kid"].as_str().unwrap().to_string();
    let admin = a.global_admin_token().await;
    let (s, rule) = a
        .post(
            &admin,
            &format!("/v1/keys/{kid}/revoke"),
            json!({"reason": "test: key leaked"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    assert_eq!(rule["selector"], json!({"kid": kid}));
    for app in &apps {
        assert_eq!(app.introspect((&rs.0, &rs.1), &before).await["active"], false);
        // Every replica drops it from its JWKS within a moment (the revoking one at once,
        // the others on the Postgres notification).
        let mut gone = false;
        for _ in 0..20 {
            let jwks: Value = app.jwks().await;
            if !jwks.to_string().contains(&kid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "a revoked key leaves every replica's JWKS within a second");
    }
    let after = a
        .mint(
            &agent.0,
            &agent.1,
            &[("grant_type", "client_credentials"), ("resource", resource)],
        )
        .await;
    assert_ne!(
        header(&after)["kid"].as_str().unwrap(),
        kid,
        "a fresh key signs after an emergency revocation"
    );
    assert_eq!(
        apps[replicas - 1].introspect((&rs.0, &rs.1), &after).await["active"],
        true
    );
    let (_, v) = a.get(&a.global_admin_token().await, "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}
