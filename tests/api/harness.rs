//! spawn_app(): a real mayfly on a loopback port, on a fresh SQLite file or a
//! fresh Postgres schema, with a clock the test can move.

use std::sync::Arc;

use chrono::TimeDelta;
use mayfly::clock::{Clock, ManualClock, SystemClock};
use mayfly::{Config, Options};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_SECRET: &str = "mfy_cs_test-bootstrap-admin-secret-0123456789abcdef";
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where one test's data lives; reused across restarts of the same app. The
/// last clone to go removes it (the SQLite directory, the Postgres schema).
#[derive(Debug, Clone)]
pub struct Database {
    pub url: String,
    _cleanup: Arc<Cleanup>,
}

#[derive(Debug)]
enum Cleanup {
    Dir(std::path::PathBuf),
    Schema {
        base: String,
        schema: String,
    },
    /// A database the test set up itself (a failover formation) and removes itself.
    Nothing,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Nothing => {}
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { base, schema } => {
                // Drop runs inside the test's runtime: drop the schema from a
                // thread of our own, and give up rather than wait on a lock.
                let (base, schema) = (base.clone(), schema.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        return;
                    };
                    rt.block_on(async {
                        if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                            let _ = sqlx::query("SET lock_timeout = '5s'").execute(&pool).await;
                            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                            pool.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

impl Database {
    /// A database at `url` that the test owns.
    pub fn at(url: String) -> Database {
        Database {
            url,
            _cleanup: Arc::new(Cleanup::Nothing),
        }
    }

    pub async fn fresh(backend: Backend) -> Database {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("mayfly-test-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).unwrap();
                Database {
                    url: format!("sqlite://{}/mayfly.db", dir.display()),
                    _cleanup: Arc::new(Cleanup::Dir(dir)),
                }
            }
            Backend::Postgres => {
                let base = std::env::var("MAYFLY_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
                    panic!("Postgres tests need MAYFLY_TEST_DATABASE_URL (tried {base}): {e}. Run scripts/test.")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                Database {
                    url: format!("{base}{sep}options[search_path]={schema}"),
                    _cleanup: Arc::new(Cleanup::Schema { base, schema }),
                }
            }
        }
    }
}

pub struct TestApp {
    /// The configured issuer (and admin API resource URI).
    pub issuer: String,
    /// Where this instance listens.
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub db: Database,
    /// The app's own store (its list gate included), for tests that hold a
    /// slot of the gate.
    pub store: mayfly::storage::Store,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A plain HTTP client for talking to the app (ring is the TLS provider in this build).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn config(db: &Database, issuer: &str) -> Config {
    let mut config = Config::new(db.url.clone(), issuer);
    config.master_key = Some(SecretString::from(MASTER_KEY));
    config.bootstrap_admin_secret = Some(SecretString::from(ADMIN_SECRET));
    // The fake OIDC issuers listen on loopback (tests that check the refusal turn this off).
    config.federation_allow_loopback = true;
    // Restarts and replicas here listen on new ports, hence new issuers;
    // tests/api/issuer_drift.rs checks the refusal without this.
    config.change_issuer = true;
    config
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    TestApp::on(backend).start().await
}

type Adjust = Box<dyn FnOnce(Config) -> Config + Send>;

/// How to start a test app: `TestApp::on(backend).config(…).wall_clock().start()`.
pub struct Spawn {
    db: Result<Database, Backend>,
    adjust: Adjust,
    wall_clock: bool,
    clock: Option<Arc<dyn Clock>>,
}

impl Spawn {
    /// Adjusts the configuration (issuer, TTLs, schedule…).
    pub fn config(mut self, f: impl FnOnce(Config) -> Config + Send + 'static) -> Self {
        let before = self.adjust;
        self.adjust = Box::new(move |c| f(before(c)));
        self
    }

    /// Runs on real time instead of the test's manual clock (for schedules
    /// that must actually elapse).
    pub fn wall_clock(mut self) -> Self {
        self.wall_clock = true;
        self
    }

    /// Runs on `clock` instead of the test's manual clock (one that misbehaves).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub async fn start(self) -> TestApp {
        crate::logscan::init_test_log();
        let db = match self.db {
            Ok(db) => db,
            Err(backend) => Database::fresh(backend).await,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let config = (self.adjust)(config(&db, &base));
        let issuer = config.issuer.clone();
        let app_clock: Arc<dyn Clock> = match self.clock {
            Some(own) => own,
            None if self.wall_clock => Arc::new(SystemClock),
            None => clock.clone(),
        };
        let options = Options {
            config,
            clock: app_clock,
        };
        let prepared = mayfly::prepare(options).await.expect("mayfly starts");
        let store = prepared.state.web.store.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            mayfly::serve(prepared, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestApp {
            issuer,
            base,
            http: http_client(),
            clock,
            db,
            store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

impl TestApp {
    /// A fresh database of `backend`.
    pub fn on(backend: Backend) -> Spawn {
        Spawn {
            db: Err(backend),
            adjust: Box::new(|c| c),
            wall_clock: false,
            clock: None,
        }
    }

    /// An existing database (a restart, or another replica).
    pub fn on_db(db: Database) -> Spawn {
        Spawn {
            db: Ok(db),
            adjust: Box::new(|c| c),
            wall_clock: false,
            clock: None,
        }
    }

    /// The sweeper service over this app's database and clock, as the app
    /// builds it, for driving background work from a test.
    pub async fn sweeper(&self) -> mayfly::leases::Sweeper {
        let store = mayfly::storage::Store::connect(&self.db.url).await.unwrap();
        mayfly::leases::Sweeper::new(
            store,
            self.clock.clone(),
            std::time::Duration::from_secs(7 * 24 * 3600),
            Arc::new(tokio::sync::Notify::new()),
        )
    }

    /// Whether the server task has ended (stopped, or gone down with a panic).
    pub fn has_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(TimeDelta::seconds(seconds));
    }

    /// Stops the server and waits until it has let go of the database. A
    /// panic of the server task fails the test here.
    pub async fn stop(mut self) -> Database {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            surface(task.await);
        }
        self.db.clone()
    }

    /// POSTs a form to the token endpoint with client_secret_basic.
    pub async fn token_basic(&self, client_id: &str, secret: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url("/oauth2/token"))
            .basic_auth(client_id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn mint(&self, client_id: &str, secret: &str, form: &[(&str, &str)]) -> String {
        let res = self.token_basic(client_id, secret, form).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "mint failed: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// The JWKS this instance serves right now.
    /// `GET /readyz`: its status and its detail.
    pub async fn readyz(&self) -> (StatusCode, Value) {
        let r = self.http.get(self.url("/readyz")).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or_default())
    }

    pub async fn jwks(&self) -> Value {
        self.public("/.well-known/jwks.json").await
    }

    pub async fn global_admin_token(&self) -> String {
        self.mint(
            "mayfly-admin",
            ADMIN_SECRET,
            &[
                ("grant_type", "client_credentials"),
                ("resource", &self.issuer),
                ("scope", "mayfly:admin"),
            ],
        )
        .await
    }

    pub async fn admin(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(token, reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.admin(token, reqwest::Method::GET, path, None).await
    }

    pub async fn introspect(&self, caller: (&str, &str), token: &str) -> Value {
        let res = self
            .http
            .post(self.url("/oauth2/introspect"))
            .basic_auth(caller.0, Some(caller.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

/// Re-raises a server task's panic on the test's thread, so the test fails.
fn surface(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

impl Drop for TestApp {
    /// A test that never calls `stop()` still fails if the server task
    /// panicked while it ran (unless the test is failing already), and every
    /// test fails once a server logged a secret.
    fn drop(&mut self) {
        crate::logscan::assert_no_leaks();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && task.is_finished()
            && !std::thread::panicking()
        {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(result) = std::pin::Pin::new(&mut task).poll(&mut cx) {
                surface(result);
            }
        }
    }
}

/// A tenant with one MCP server resource, a CI client, an agent client and a
/// resource-server client, as most tests need.
pub struct Fixture {
    pub admin: String,
    pub resource: String,
    pub ci: (String, String),
    pub agent: (String, String),
    pub rs: (String, String),
}

pub async fn fixture(app: &TestApp, tenant: &str) -> Fixture {
    let admin = app.global_admin_token().await;
    app.created(&admin, "/v1/tenants", json!({"id": tenant, "name": tenant}))
        .await;
    let resource = format!("https://mcp.{tenant}.test/github");
    app.created(
        &admin,
        &format!("/v1/tenants/{tenant}/resources"),
        json!({"uri": resource, "name": "GitHub MCP", "scopes": ["issues:read", "issues:write"],
                   "default_ttl_seconds": 600, "max_ttl_seconds": 3600}),
    )
    .await;
    let client = |id: &str, kind: &str, workflows: Value, scopes: Value| {
        let body = json!({"client_id": format!("{tenant}-{id}"), "name": id, "kind": kind, "workflows": workflows,
                          "grants": [{"resource": resource, "scopes": scopes}], "max_ttl_seconds": 900});
        let path = format!("/v1/tenants/{tenant}/clients");
        let admin = admin.clone();
        async move {
            let b = app.created(&admin, &path, body).await;
            (
                b["client_id"].as_str().unwrap().to_string(),
                b["client_secret"].as_str().unwrap().to_string(),
            )
        }
    };
    let ci = client("ci", "ci", json!(["release"]), json!(["issues:read"])).await;
    let agent = client("agent", "agent", json!(["*"]), json!(["issues:read", "issues:write"])).await;
    let rs = client("rs", "resource_server", json!(["*"]), json!(["issues:read"])).await;
    Fixture {
        admin,
        resource,
        ci,
        agent,
        rs,
    }
}

/// Decodes the claims of a JWS without verifying it (tests only).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub fn header(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Polls until `check` holds, for at most ten seconds: for what the server
/// does on its own time (background work, caches read once a second).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Runs a test body once on SQLite and once on Postgres.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A tenant admin client `{tenant}-admin` of `tenant`, registered with the
/// global admin token; returns its admin token.
pub async fn tenant_admin(app: &TestApp, global: &str, tenant: &str) -> String {
    let body = app
        .created(
            global,
            &format!("/v1/tenants/{tenant}/clients"),
            json!({"client_id": format!("{tenant}-admin"), "kind": "service", "workflows": ["admin"],
                   "grants": [{"resource": app.issuer, "scopes": [format!("mayfly:tenant:{tenant}:admin")]}]}),
        )
        .await;
    let secret = body["client_secret"].as_str().unwrap();
    app.mint(
        &format!("{tenant}-admin"),
        secret,
        &[
            ("grant_type", "client_credentials"),
            ("resource", &app.issuer),
            ("scope", &format!("mayfly:tenant:{tenant}:admin")),
        ],
    )
    .await
}
