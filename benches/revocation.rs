//! Revocation at scale, on Postgres. The server is the release binary in its
//! own process; the load generator is oha, another process. One tenant holds
//! 1,000,000 real leases, each minted over HTTP (lease and audit event
//! committed), and introspection asks about tokens drawn at random from all of
//! them, so the working set is the whole table, not a hot few pages. A second
//! tenant holds 10 leases, so "a revocation costs the same for ten leases or a
//! million" is measured side by side. Prints figures and the conditions;
//! asserts answers (active or not), never speed.
//!
//!   cargo bench --bench revocation
//!   MAYFLY_BENCH_DATABASE_URL=postgres://… MAYFLY_BENCH_LEASES=1000000 MAYFLY_BENCH_SSLMODE=disable \
//!     BENCH_RUNS=3 BENCH_DURATION=10s BENCH_CONNECTIONS=64 cargo bench --bench revocation

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN_SECRET: &str = "mfy_cs_bench-admin-secret-0123456789abcdef0123456789";
const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const BIG: &str = "https://mcp.bench.test/github";
const SMALL: &str = "https://mcp.small.test/github";
const OTHER: &str = "https://mcp.other.test/github";
const WORKFLOWS: u64 = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The server process; killed when the bench ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Bench {
    base: String,
    http: reqwest::Client,
    admin: String,
    pool: sqlx::PgPool,
    schema: String,
    work: PathBuf,
}

struct Client {
    id: String,
    secret: String,
}

impl Client {
    fn basic(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.id, self.secret);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
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

    async fn mint(&self, client: &Client, form: &[(&str, &str)]) -> String {
        let mut form = form.to_vec();
        form.push(("grant_type", "client_credentials"));
        let res = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .header("authorization", client.basic())
            .form(&form)
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("mint failed: {body}"))
            .to_string()
    }

    async fn active(&self, rs: &Client, token: &str) -> bool {
        let res = self
            .http
            .post(format!("{}/oauth2/introspect", self.base))
            .header("authorization", rs.basic())
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["active"].as_bool().expect("an introspection answer")
    }

    /// A tenant with one resource, an agent client and a resource server.
    async fn tenant(&self, tenant: &str, resource: &str) -> (Client, Client) {
        let (status, body, _) = self.post("/v1/tenants", json!({"id": tenant})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body, _) = self
            .post(
                &format!("/v1/tenants/{tenant}/resources"),
                json!({"uri": resource, "scopes": ["issues:read"], "max_ttl_seconds": 3600, "default_ttl_seconds": 3600}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let mut pair = Vec::new();
        for kind in ["agent", "resource_server"] {
            let id = format!("{tenant}-{kind}");
            let (status, body, _) = self
                .post(
                    &format!("/v1/tenants/{tenant}/clients"),
                    json!({"client_id": id, "kind": kind, "workflows": ["*"], "max_ttl_seconds": 3600,
                           "grants": [{"resource": resource, "scopes": ["issues:read"]}]}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            let secret = body["client_secret"].as_str().unwrap().to_string();
            pair.push(Client { id, secret });
        }
        let rs = pair.pop().unwrap();
        (pair.pop().unwrap(), rs)
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let sql = sql.replace("{s}", &self.schema);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until the sweeper has marked every rule's rows; returns how long that took.
    async fn marked(&self) -> Duration {
        let t = Instant::now();
        while self
            .scalar("SELECT COUNT(*) FROM {s}.revocations WHERE marked_at IS NULL")
            .await
            > 0
        {
            assert!(t.elapsed() < Duration::from_secs(900), "marking stalled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        t.elapsed()
    }

    /// One revocation call, timed from this process; the sweeper is idle when it starts.
    async fn revoke(&self, tenant: &str, selector: Value) -> Duration {
        self.marked().await;
        let (status, rule, took) = self.post(&format!("/v1/tenants/{tenant}/revocations"), selector).await;
        assert_eq!(status, 201, "{rule}");
        took
    }

    /// oha POSTing a form as `client` to `path`: `body` is `["-d", BODY]`, or
    /// `["-Z", FILE]` for a line of FILE drawn at random per request.
    fn oha_form(&self, label: &str, client: &Client, body: [&str; 2], path: &str) {
        let auth = format!("Authorization: {}", client.basic());
        let url = format!("{}{path}", self.base);
        let form = "content-type: application/x-www-form-urlencoded";
        self.oha(label, &["-m", "POST", "-H", &auth, "-H", form, body[0], body[1], &url]);
    }

    /// oha over `connections` for `duration`, `runs` times: prints the median rate with its
    /// spread, the median p50 and p99, and every status code seen.
    fn oha(&self, label: &str, args: &[&str]) {
        let runs: usize = env_or("BENCH_RUNS", 3);
        let duration = std::env::var("BENCH_DURATION").unwrap_or_else(|_| "10s".into());
        let connections = std::env::var("BENCH_CONNECTIONS").unwrap_or_else(|_| "64".into());
        let (mut rates, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        let mut codes = std::collections::BTreeMap::<String, u64>::new();
        for _ in 0..runs {
            let out = Command::new("oha")
                .args(["--no-tui", "--output-format", "json", "-w", "-z", &duration])
                .args(["-c", &connections])
                .args(args)
                .output()
                .expect("oha (cargo install oha --locked)");
            assert!(out.status.success(), "oha: {}", String::from_utf8_lossy(&out.stderr));
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            rates.push(r["summary"]["requestsPerSec"].as_f64().unwrap());
            p50.push(r["latencyPercentiles"]["p50"].as_f64().unwrap_or(f64::NAN) * 1e3);
            p99.push(r["latencyPercentiles"]["p99"].as_f64().unwrap_or(f64::NAN) * 1e3);
            for (code, n) in r["statusCodeDistribution"].as_object().into_iter().flatten() {
                *codes.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        println!(
            "{label}: {:.0}/s ({}; {runs} runs, {connections} connections, {duration} each), p50 {:.1} ms, p99 {:.1} ms, status {}",
            median(&mut rates),
            spread(&rates),
            median(&mut p50),
            median(&mut p99),
            codes.join(" ")
        );
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn spread(sorted: &[f64]) -> String {
    format!("{:.0}–{:.0}", sorted[0], sorted[sorted.len() - 1])
}

fn ms_list(times: &[Duration]) -> String {
    let mut v: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let list: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    format!("median {:.1} ms (runs: {} ms)", median(&mut v), list.join(", "))
}

fn start_server(url: &str, base: &str, listen: &str, log: &Path) -> Server {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .env("MAYFLY_LISTEN", listen)
        .env("MAYFLY_DATABASE_URL", url)
        .env("MAYFLY_ISSUER", base)
        .env("MAYFLY_MASTER_KEY", MASTER_KEY)
        .env("MAYFLY_BOOTSTRAP_ADMIN_SECRET", ADMIN_SECRET)
        .env("MAYFLY_AUTH_FAILURE_LIMIT", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the mayfly binary");
    Server(child)
}

/// Mints `n` tokens over 64 connections from this process; token `i` is in workflow
/// `wf-{i % 100}` and workload `wl-{i % 10000}`. Returns them in order of `i`.
async fn mint_many(b: &Arc<Bench>, client: &Arc<Client>, n: u64) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (b, client, next) = (b.clone(), client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return got;
                }
                let (wf, wl) = (format!("wf-{}", i % WORKFLOWS), format!("wl-{}", i % 10_000));
                let form = [("resource", BIG), ("workflow", wf.as_str()), ("workload", wl.as_str())];
                got.push((i, b.mint(&client, &form).await));
                if i > 0 && i % 100_000 == 0 {
                    eprintln!("  minted {i}");
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(n as usize);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

#[tokio::main]
async fn main() {
    let pg: String = env_or(
        "MAYFLY_BENCH_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
    );
    let leases: u64 = env_or("MAYFLY_BENCH_LEASES", 1_000_000);
    let sslmode: String = env_or("MAYFLY_BENCH_SSLMODE", "disable".to_string());
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&pg).await.expect("Postgres for the benchmark");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{pg}?options[search_path]={schema}&sslmode={sslmode}");
    let work = std::env::temp_dir().join(&schema);
    std::fs::create_dir_all(&work).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let _server = start_server(&url, &base, &listen, &work.join("mayfly.log"));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let ready = Instant::now();
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "mayfly did not start: see {}",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = Bench {
        base: base.clone(),
        http,
        admin: String::new(),
        pool,
        schema: schema.clone(),
        work: work.clone(),
    };
    let admin = Client {
        id: "mayfly-admin".into(),
        secret: ADMIN_SECRET.into(),
    };
    b.admin = b
        .mint(&admin, &[("resource", base.as_str()), ("scope", "mayfly:admin")])
        .await;
    let (agent, rs) = b.tenant("bench", BIG).await;
    let (small_agent, _) = b.tenant("small", SMALL).await;
    let (other_agent, _) = b.tenant("other", OTHER).await;

    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM pg_settings
         WHERE name IN ('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', 'wal_level', 'max_connections')
         ORDER BY name",
    )
    .fetch_all(&b.pool)
    .await
    .unwrap();
    let settings: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("mayfly revocation benchmark: release binary as its own process, oha as the load generator");
    println!(
        "conditions: sslmode={sslmode}, RUST_LOG=warn, Postgres {}",
        settings.join(" ")
    );

    let b = Arc::new(b);
    let t = Instant::now();
    let tokens = mint_many(&b, &Arc::new(agent), leases).await;
    let took = t.elapsed().as_secs_f64();
    println!(
        "minted {leases} leases over HTTP (64 connections from the bench process): {took:.1} s, {:.0}/s",
        leases as f64 / took
    );
    let table = b.scalar("SELECT pg_total_relation_size('{s}.leases')").await;
    println!(
        "leases table with its indexes: {} MiB (shared_buffers holds less: every read below reaches across it)",
        table >> 20
    );
    let file = b.work.join("tokens");
    let lines: String = tokens.iter().map(|t| format!("token={t}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    let file = file.to_str().unwrap().to_string();
    let introspect = |b: &Bench, label: &str| b.oha_form(label, &rs, ["-Z", &file], "/oauth2/introspect");

    // Answers checked, not only counted: a sample from across the million is active.
    let sample: Vec<usize> = (0..200).map(|k| (k * 4_999) % tokens.len()).collect();
    for &i in &sample {
        assert!(b.active(&rs, &tokens[i]).await, "token {i} should be active");
    }
    introspect(
        &b,
        "introspection, a random one of the 1M tokens per request, all active",
    );

    let mint_body = format!("grant_type=client_credentials&resource={OTHER}&workflow=mint");
    let mint = |b: &Bench, label: &str| b.oha_form(label, &other_agent, ["-d", &mint_body], "/oauth2/token");
    mint(
        &b,
        &format!("mint in another tenant beside {leases} live leases (lease + audit event committed)"),
    );

    // The same call at 10 leases and at 10,000 (one of 100 workflows of the million),
    // alternated, each on an idle sweeper.
    let (mut few, mut many) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let wf = format!("tiny-{round}");
        for _ in 0..10 {
            b.mint(&small_agent, &[("resource", SMALL), ("workflow", &wf)]).await;
        }
        few.push(b.revoke("small", json!({"workflow": wf, "reason": "bench"})).await);
        many.push(
            b.revoke("bench", json!({"workflow": format!("wf-{round}"), "reason": "bench"}))
                .await,
        );
    }
    b.marked().await;
    let counts = |kind: &'static str, tenant: &'static str| {
        let b = b.clone();
        async move {
            let sql = format!(
                "SELECT COALESCE(MIN(leases_revoked), 0) || '–' || COALESCE(MAX(leases_revoked), 0)
                 FROM {{s}}.revocations WHERE kind = '{kind}' AND tenant_id = '{tenant}'"
            )
            .replace("{s}", &b.schema);
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                .fetch_one(&b.pool)
                .await
                .unwrap()
        }
    };
    println!(
        "revoke a workflow of 10 live leases (tenant small; {} rows marked per rule): {}",
        counts("workflow", "small").await,
        ms_list(&few)
    );
    println!(
        "revoke a workflow of 10,000 of the {leases} live leases (tenant bench; {} rows marked per rule): {}",
        counts("workflow", "bench").await,
        ms_list(&many)
    );
    for round in 0..5 {
        let i = sample[round * 7 % sample.len()];
        let wf_revoked = (i as u64 % WORKFLOWS) < 5;
        assert_eq!(b.active(&rs, &tokens[i]).await, !wf_revoked, "token {i}");
    }

    let mut few = Vec::new();
    for round in 0..3 {
        for _ in 0..10 {
            b.mint(
                &small_agent,
                &[("resource", SMALL), ("workflow", &format!("t-{round}"))],
            )
            .await;
        }
        few.push(b.revoke("small", json!({"reason": "bench: whole tenant"})).await);
    }
    let whole = b.revoke("bench", json!({"reason": "bench: whole tenant"})).await;
    println!(
        "revoke tenant small (10 live leases each time; {} rows marked per rule): {}",
        counts("tenant", "small").await,
        ms_list(&few)
    );
    let marking = b.marked().await;
    let marked = b
        .scalar("SELECT leases_revoked FROM {s}.revocations WHERE kind = 'tenant' AND tenant_id = 'bench'")
        .await;
    println!(
        "revoke tenant bench ({} live leases; one run, as a second would find them already marked): {:.1} ms",
        leases - leases / 20,
        whole.as_secs_f64() * 1e3
    );
    println!(
        "background marking of that rule: {marked} rows in {:.1} s ({:.0} rows/s) while the service answers",
        marking.as_secs_f64(),
        marked as f64 / marking.as_secs_f64()
    );
    for &i in sample.iter().take(50) {
        assert!(!b.active(&rs, &tokens[i]).await, "token {i} should be revoked");
    }
    introspect(
        &b,
        "introspection after the tenant revocation, every answer inactive (and each an audit event)",
    );
    mint(&b, "mint in another tenant after the revocations");

    drop(_server);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&b.pool)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
