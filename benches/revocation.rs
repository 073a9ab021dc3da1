//! Revocation at scale, on Postgres: loads 1,000,000 live leases, then
//! measures introspection throughput, the latency of revoking one workflow
//! and one whole tenant, introspection after, the background marking, and
//! (for context) the mint rate. Prints figures; asserts nothing about speed.
//!
//!   cargo bench --bench revocation
//!   MAYFLY_BENCH_DATABASE_URL=postgres://… MAYFLY_BENCH_LEASES=1000000 cargo bench --bench revocation

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mayfly::{Config, Options};
use secrecy::SecretString;
use serde_json::{Value, json};

const ADMIN_SECRET: &str = "mfy_cs_bench-admin-secret-0123456789abcdef0123456789";

struct Bench {
    base: String,
    http: reqwest::Client,
    admin: String,
}

impl Bench {
    async fn post(&self, path: &str, body: Value) -> (u16, Value, Duration) {
        let started = Instant::now();
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    }

    async fn token(&self, id: &str, secret: &str, form: &[(&str, &str)]) -> String {
        let res = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("mint failed: {body}"))
            .to_string()
    }
}

/// Runs `workers` loops of `op` for `secs` seconds; returns (ops/s, p50, p99).
async fn load<F, Fut>(workers: usize, secs: u64, op: F) -> (f64, Duration, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, counter) = (op.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w as u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
                counter.fetch_add(1, Ordering::Relaxed);
                i += workers as u64;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (
        counter.load(Ordering::Relaxed) as f64 / secs as f64,
        pct(0.5),
        pct(0.99),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let base_url = std::env::var("MAYFLY_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let leases: i64 = std::env::var("MAYFLY_BENCH_LEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base_url)
        .await
        .expect("Postgres for the benchmark");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{base_url}?options[search_path]={schema}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = Config::new(url.clone(), base.clone());
    config.master_key = Some(SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
    config.bootstrap_admin_secret = Some(SecretString::from(ADMIN_SECRET));
    config.auth_failure_limit = u32::MAX;
    let prepared = mayfly::prepare(Options::new(config)).await.unwrap();
    tokio::spawn(mayfly::serve(prepared, listener, std::future::pending()));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut b = Bench {
        base: base.clone(),
        http,
        admin: String::new(),
    };
    b.admin = b
        .token(
            "mayfly-admin",
            ADMIN_SECRET,
            &[
                ("grant_type", "client_credentials"),
                ("resource", &base),
                ("scope", "mayfly:admin"),
            ],
        )
        .await;
    let resource = "https://mcp.bench.test/github";
    // Resource URIs belong to one tenant each.
    let other_resource = "https://mcp.other.test/github";
    let mut secrets = Vec::new();
    for (tenant, resource) in [("bench", resource), ("other", other_resource)] {
        b.post("/v1/tenants", json!({"id": tenant})).await;
        b.post(
            &format!("/v1/tenants/{tenant}/resources"),
            json!({"uri": resource, "scopes": ["issues:read"]}),
        )
        .await;
        let mut pair = Vec::new();
        for (id, kind) in [
            (format!("{tenant}-agent"), "agent"),
            (format!("{tenant}-rs"), "resource_server"),
        ] {
            let (_, c, _) = b
                .post(
                    &format!("/v1/tenants/{tenant}/clients"),
                    json!({"client_id": id, "kind": kind, "workflows": ["*"], "grants": [{"resource": resource, "scopes": ["issues:read"]}]}),
                )
                .await;
            pair.push((id, c["client_secret"].as_str().unwrap().to_string()));
        }
        secrets.push(pair);
    }
    let kid: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT kid FROM {schema}.signing_keys LIMIT 1"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();

    println!("mayfly revocation benchmark (Postgres, schema {schema})");
    let t = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.leases (id, tenant_id, workflow, workload, client_id, resource, scopes, kid, issued_at, expires_at)
         SELECT gen_random_uuid(), 'bench', 'wf-' || (g % 100), 'wl-' || (g % 10000), 'bench-agent', '{resource}',
                '[\"issues:read\"]'::jsonb, '{kid}', now(), now() + interval '1 hour'
         FROM generate_series(1, {leases}) g"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {schema}.leases")))
        .execute(&pool)
        .await
        .unwrap();
    println!("loaded {leases} live leases in {:.1} s", t.elapsed().as_secs_f64());

    // Real tokens to introspect: two workflows in tenant bench, one in other.
    let (agent, rs) = (secrets[0][0].clone(), secrets[0][1].clone());
    let mut tokens = Vec::new();
    for i in 0..300 {
        let wf = if i % 2 == 0 { "wf-7" } else { "keep" };
        tokens.push(
            b.token(
                &agent.0,
                &agent.1,
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", resource),
                    ("workflow", wf),
                ],
            )
            .await,
        );
    }
    let tokens = Arc::new(tokens);
    let introspect = {
        let (http, base, rs, tokens) = (b.http.clone(), base.clone(), rs.clone(), tokens.clone());
        move |i: u64| {
            let (http, base, rs, tokens) = (http.clone(), base.clone(), rs.clone(), tokens.clone());
            async move {
                let token = &tokens[(i as usize) % tokens.len()];
                let res = http
                    .post(format!("{base}/oauth2/introspect"))
                    .basic_auth(&rs.0, Some(&rs.1))
                    .form(&[("token", token)])
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success());
            }
        }
    };
    let (rate, p50, p99) = load(32, 5, introspect.clone()).await;
    println!(
        "introspection before revocation: {rate:.0}/s (32 concurrent; p50 {}, p99 {})",
        ms(p50),
        ms(p99)
    );

    let mut wf_times = Vec::new();
    for wf in ["wf-7", "wf-8", "wf-9"] {
        let (status, rule, took) = b
            .post(
                "/v1/tenants/bench/revocations",
                json!({"workflow": wf, "reason": "bench"}),
            )
            .await;
        assert_eq!(status, 201, "{rule}");
        println!(
            "revoke workflow {wf}: {} (rows marked when the call returned: {})",
            ms(took),
            rule["leases_revoked"]
        );
        wf_times.push(took);
    }
    // Only wf-7 tokens (half the pool) are revoked now; the others stay active.
    let (rate, p50, p99) = load(32, 5, introspect.clone()).await;
    println!(
        "introspection after revoking a workflow (half the sampled tokens now inactive, each audited): {rate:.0}/s (p50 {}, p99 {})",
        ms(p50),
        ms(p99)
    );

    let t = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {schema}.revocations WHERE marked_at IS NULL"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        if left == 0 || t.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "background marking of the 3 workflow rules finished {:.1} s after the last call",
        t.elapsed().as_secs_f64()
    );

    let (status, rule, took) = b
        .post(
            "/v1/tenants/bench/revocations",
            json!({"reason": "bench: whole tenant"}),
        )
        .await;
    assert_eq!(status, 201);
    println!(
        "revoke tenant bench (~{leases} live leases): {} (rows marked when the call returned: {})",
        ms(took),
        rule["leases_revoked"]
    );
    let t = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {schema}.revocations WHERE marked_at IS NULL"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        if left == 0 || t.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let marked: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT leases_revoked FROM {schema}.revocations WHERE kind = 'tenant'"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    println!(
        "background marking of the tenant rule: {marked} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Mint rate, for context (each mint commits a lease and an audit event).
    let other = secrets[1][0].clone();
    let mint = {
        let (http, base) = (b.http.clone(), base.clone());
        move |_| {
            let (http, base, other) = (http.clone(), base.clone(), other.clone());
            async move {
                let res = http
                    .post(format!("{base}/oauth2/token"))
                    .basic_auth(&other.0, Some(&other.1))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("resource", other_resource),
                        ("workflow", "mint"),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success());
            }
        }
    };
    let (rate, p50, p99) = load(32, 5, mint).await;
    println!(
        "mint (client_credentials, lease + audit committed per token): {rate:.0}/s (32 concurrent; p50 {}, p99 {})",
        ms(p50),
        ms(p99)
    );

    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await
        .unwrap();
}
