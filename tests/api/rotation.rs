//! Signing keys rotate by themselves with no window in which a valid token
//! fails to verify. Short durations (seconds), real time, minting through
//! every replica while fetching the JWKS at random moments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Database, TestApp, claims, eventually, header};

const PERIOD: f64 = 3.0;
const LEAD: f64 = 1.0;
/// Shorter than the lead, as a verifier's cache should be: the difference
/// absorbs a replica's reload of a key another replica created.
const MAX_AGE: f64 = 0.5;
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
    rotation_story(Backend::Sqlite, 1, Signer::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_rotate_once_per_period() {
    rotation_story(Backend::Postgres, 3, Signer::Local).await;
}

/// The same story, unchanged, with every key made and used inside OpenBao
/// transit; then every key that left the JWKS is gone from transit too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_keys_in_transit_rotate_once_per_period() {
    let bao = crate::openbao::OpenBao::start().await;
    let keys = rotation_story(Backend::Postgres, 2, Signer::Transit(&bao)).await;
    for k in &keys {
        let kid = k["kid"].as_str().unwrap();
        assert_eq!(k["custody"], "transit", "{k}");
        if k["published"] == true {
            assert!(bao.key(kid).await.is_some(), "published key {kid} is in transit");
        } else {
            assert!(k["destroyed_at"].is_string(), "{k}");
            assert!(bao.key(kid).await.is_none(), "{kid} destroyed in transit");
        }
    }
    assert!(keys.iter().any(|k| k["state"] == "removed") && keys.iter().any(|k| k["state"] == "revoked"));
}

/// The same story with every key generated and used inside a PKCS#11 token
/// (SoftHSM2); every key that left the JWKS is gone from the token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_keys_in_an_hsm_rotate_once_per_period() {
    let keys = rotation_story(Backend::Postgres, 2, Signer::Pkcs11).await;
    for k in &keys {
        let kid = k["kid"].as_str().unwrap();
        assert_eq!(k["custody"], "pkcs11", "{k}");
        let held = crate::softhsm::held(kid).private;
        assert_eq!(held, k["published"] == true, "{k}");
    }
    assert!(keys.iter().any(|k| k["state"] == "removed") && keys.iter().any(|k| k["state"] == "revoked"));
}

enum Signer<'a> {
    Local,
    Pkcs11,
    Transit(&'a crate::openbao::OpenBao),
}

/// Returns the keys as `GET /v1/keys` lists them at the end.
async fn rotation_story(backend: Backend, replicas: usize, signer: Signer<'_>) -> Vec<Value> {
    let db = Database::fresh(backend).await;
    let signer = match signer {
        Signer::Transit(bao) => mayfly::config::SignerConfig::Transit(bao.config()),
        Signer::Pkcs11 => mayfly::config::SignerConfig::Pkcs11(crate::softhsm::config()),
        Signer::Local => mayfly::config::SignerConfig::Local,
    };
    let fast = move |c: mayfly::Config| mayfly::Config {
        signer: signer.clone(),
        issuer: "http://mayfly.rotation.test".into(),
        key_rotation_period: Duration::from_secs_f64(PERIOD),
        key_publish_lead: Duration::from_secs_f64(LEAD),
        jwks_max_age: Duration::from_secs_f64(MAX_AGE),
        default_ttl: Duration::from_secs(MAX_TTL as u64),
        max_ttl: Duration::from_secs(MAX_TTL as u64),
        ..c
    };
    let mut apps: Vec<TestApp> = Vec::new();
    for _ in 0..replicas {
        apps.push(
            TestApp::on_db(db.clone())
                .config(fast.clone())
                .wall_clock()
                .start()
                .await,
        );
    }
    let a = &apps[0];
    let admin = a.global_admin_token().await;
    a.post(&admin, "/v1/tenants", json!({"id": "rot"})).await;
    let resource = "https://mcp.rot.test/x";
    a.created(
        &admin,
        "/v1/tenants/rot/resources",
        json!({"uri": resource, "scopes": ["s"]}),
    )
    .await;
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

    // Mint continuously through every replica and sample each replica's JWKS,
    // across four periods.
    struct Minted {
        token: String,
        kid: String,
        /// Wall time the request left and the answer arrived.
        sent: f64,
        received: f64,
    }
    struct Served {
        replica: usize,
        sent: f64,
        received: f64,
        kids: BTreeSet<String>,
    }
    let mut tokens: Vec<Minted> = Vec::new();
    let mut snapshots: Vec<Served> = Vec::new();
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs_f64(PERIOD * 4.0 + 0.5) {
        let app = &apps[i % replicas];
        let sent = now();
        let token = app.mint_at(&agent, resource, &[]).await;
        let kid = header(&token)["kid"].as_str().unwrap().to_string();
        tokens.push(Minted {
            token,
            kid,
            sent,
            received: now(),
        });
        let replica = (i + 1) % replicas;
        let sent = now();
        let set: Value = apps[replica].jwks().await;
        let kids = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        snapshots.push(Served {
            replica,
            sent,
            received: now(),
            kids,
        });
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

    // 1. Around each mint: every JWKS any replica served from MAX_AGE before
    //    the token until it expired lists its kid, so a verifier whose cached
    //    JWKS is no older than the max-age never meets an unknown kid.
    for t in &tokens {
        let exp = claims(&t.token)["exp"].as_f64().unwrap();
        for s in snapshots
            .iter()
            .filter(|s| s.sent >= t.received - MAX_AGE && s.received <= exp)
        {
            assert!(
                s.kids.contains(&t.kid),
                "token signed by {} at {:.3} not in replica {}'s JWKS fetched at {:.3}: {:?}",
                t.kid,
                t.sent,
                s.replica,
                s.sent,
                s.kids
            );
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

    // 3. Each key that took over signing had been served before its first
    //    token, as the replicas' JWKS showed it (not as the database dates it):
    //    seen at least MAX_AGE before, and by every replica in the meantime.
    let first_kid = &tokens[0].kid;
    let mut took_over = 0;
    for kid in tokens.iter().map(|t| &t.kid).collect::<BTreeSet<_>>() {
        if kid == first_kid {
            continue; // the first key, made at the first start, had nothing to precede
        }
        took_over += 1;
        let first_signed = tokens
            .iter()
            .filter(|t| &t.kid == kid)
            .map(|t| t.sent)
            .fold(f64::INFINITY, f64::min);
        let first_seen = snapshots
            .iter()
            .filter(|s| s.kids.contains(kid))
            .map(|s| s.received)
            .fold(f64::INFINITY, f64::min);
        assert!(
            first_seen <= first_signed - MAX_AGE,
            "{kid} first served at {first_seen:.3}, first signed at {first_signed:.3}"
        );
        for r in 0..replicas {
            let seen_by_r = snapshots
                .iter()
                .filter(|s| s.replica == r && s.sent >= first_seen + 0.3 && s.received <= first_signed);
            for s in seen_by_r {
                assert!(s.kids.contains(kid), "replica {r} did not serve {kid} at {:.3}", s.sent);
            }
        }
    }
    assert!(took_over >= 3, "three keys took over signing: {keys:?}");

    // 4. Retired keys leave the JWKS, and only after every token they signed expired.
    let removed: Vec<(&String, f64)> = keys
        .iter()
        .map(|(kid, k)| (kid, secs(&k["removed_at"])))
        .filter(|(_, at)| !at.is_nan())
        .collect();
    assert!(
        !removed.is_empty(),
        "a retired key was removed within four periods: {keys:?}"
    );
    let mut seen_leave = 0;
    for (kid, at) in &removed {
        assert_eq!(keys[*kid]["state"], "removed");
        let last_exp = tokens
            .iter()
            .filter(|t| &t.kid == *kid)
            .map(|t| claims(&t.token)["exp"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(
            *at >= last_exp,
            "{kid} removed at {at} before its last token expired at {last_exp}"
        );
        let after: Vec<&Served> = snapshots.iter().filter(|s| s.sent >= at + 0.3).collect();
        assert!(
            after.iter().all(|s| !s.kids.contains(*kid)),
            "{kid} still served after its removal at {at}"
        );
        if !after.is_empty() && snapshots.iter().any(|s| s.kids.contains(*kid)) {
            seen_leave += 1;
        }
    }
    assert!(
        seen_leave >= 1,
        "a key was seen served, removed, then gone from the JWKS: {removed:?}"
    );

    // 5. Emergency: revoking the active key makes its tokens inactive at once, on every replica.
    let before = a.mint_at(&agent, resource, &[]).await;
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
        // Every replica drops it from its JWKS (the revoking one at once, the
        // others on the Postgres notification): a condition, not a one-second
        // window a busy machine can miss.
        eventually("a revoked key leaves every replica's JWKS", || async {
            !app.jwks().await.to_string().contains(&kid)
        })
        .await;
    }
    let after = a.mint_at(&agent, resource, &[]).await;
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
    let (_, keys) = a.get(&a.global_admin_token().await, "/v1/keys").await;
    keys["items"].as_array().unwrap().clone()
}

/// The JWKS is cacheable for MAYFLY_JWKS_MAX_AGE and carries an ETag that
/// answers 304 while the key set is unchanged and changes with it. The
/// schedule runs on the test's clock (SQLite orders by the app's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_cacheable_for_its_max_age_and_its_etag_follows_the_key_set() {
    let app = TestApp::on(Backend::Sqlite)
        .config(|c| mayfly::Config {
            key_rotation_period: Duration::from_secs(3600),
            key_publish_lead: Duration::from_secs(2),
            jwks_max_age: Duration::from_secs(2),
            ..c
        })
        .start()
        .await;
    let fetch = |etag: Option<String>| {
        let app = &app;
        async move {
            let mut req = app.http.get(app.url("/.well-known/jwks.json"));
            if let Some(e) = etag {
                req = req.header("if-none-match", e);
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_string());
            let (cache, etag) = (header("cache-control"), header("etag"));
            let text = res.text().await.unwrap();
            (status, cache, etag.unwrap_or_default(), text)
        }
    };
    let kids = |text: &str| -> usize {
        serde_json::from_str::<Value>(text).unwrap()["keys"]
            .as_array()
            .unwrap()
            .len()
    };
    // The first look at the schedule publishes the next key beside the active one.
    eventually("the next key is published", || async {
        kids(&fetch(None).await.3) == 2
    })
    .await;
    let (s, cache, etag, _) = fetch(None).await;
    assert_eq!((s, cache.as_deref()), (StatusCode::OK, Some("public, max-age=2")));
    assert!(etag.starts_with('"') && etag.len() > 2, "a strong ETag: {etag}");
    let (s, cache, same, body) = fetch(Some(etag.clone())).await;
    assert_eq!(
        (s, cache.as_deref(), same.as_str(), body.as_str()),
        (StatusCode::NOT_MODIFIED, Some("public, max-age=2"), etag.as_str(), "")
    );

    // A period later the next key signs, the old one is retired and a new next
    // published: the set changed, and so does its ETag.
    app.advance(3600);
    eventually("the rotation is served", || async { kids(&fetch(None).await.3) == 3 }).await;
    let (s, _, rotated, _) = fetch(Some(etag.clone())).await;
    assert_eq!(s, StatusCode::OK, "the old ETag no longer matches");
    assert_ne!(rotated, etag);
    assert_eq!(fetch(Some(rotated)).await.0, StatusCode::NOT_MODIFIED);
}

/// A verifier caching the JWKS longer than a key is published before it
/// signs could meet an unknown kid: start-up refuses that configuration
/// before it touches the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_jwks_max_age_longer_than_the_publish_lead() {
    let db = Database::fresh(Backend::Sqlite).await;
    let file = db.url.trim_start_matches("sqlite://").to_string();
    let mut config = crate::harness::config(&db, "http://mayfly.test");
    config.key_publish_lead = Duration::from_secs(300);
    config.jwks_max_age = Duration::from_secs(301);
    let refused = mayfly::prepare(mayfly::Options::new(config.clone())).await;
    let Err(e) = refused else {
        panic!("started with a JWKS max-age past the publish lead")
    };
    assert!(e.to_string().contains("MAYFLY_JWKS_MAX_AGE"), "{e}");
    assert!(
        !std::path::Path::new(&file).exists(),
        "refused before opening the database"
    );
    // At the lead exactly, it starts.
    config.jwks_max_age = Duration::from_secs(300);
    assert!(mayfly::prepare(mayfly::Options::new(config)).await.is_ok());
}
