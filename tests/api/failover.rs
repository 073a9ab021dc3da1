//! Postgres fails over under load and nothing is lost: a pg_auto_failover
//! monitor and two nodes with synchronous replication (Debian
//! `postgresql-15-auto-failover`, run as the `postgres` user), two mayfly
//! replicas on the multi-host URL, sixteen workers minting, and the
//! primary killed with SIGKILL. Run alone (scripts/test does): it starts
//! three Postgres servers of its own.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Database, Fixture, TestApp, claims, fixture};

/// The installed Postgres's binaries (the version `.ci/run` installs pg_auto_failover for).
fn bin() -> String {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).max())
        .unwrap_or_else(|| "15".into());
    format!("/usr/lib/postgresql/{version}/bin")
}

/// A pg_auto_failover formation on loopback ports.
struct Formation {
    dir: PathBuf,
    monitor: u16,
    nodes: [u16; 2],
    running: Vec<(String, Child)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pg_autoctl …` as the postgres user, its XDG state kept in `dir`.
fn autoctl(dir: &std::path::Path, args: &[&str]) -> Command {
    let xdg = |kind: &str| format!("XDG_{kind}={}", dir.join("xdg").join(kind.to_lowercase()).display());
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", "env", &format!("PATH={}:/usr/bin:/bin", bin())])
        .args([xdg("CONFIG_HOME"), xdg("DATA_HOME"), xdg("RUNTIME_DIR")])
        .arg("pg_autoctl")
        .args(args);
    c
}

fn psql(port: u16, db: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-Atc",
            sql,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn writable(port: u16) -> bool {
    psql(
        port,
        "postgres",
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
    )
    .as_deref()
        == Some("f")
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Formation {
    async fn start() -> Formation {
        let dir = std::env::temp_dir().join(format!("mayfly-ha-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success()
        );
        let mut f = Formation {
            monitor: free_port(),
            nodes: [free_port(), free_port()],
            dir,
            running: Vec::new(),
        };
        let monitor = f.dir.join("monitor");
        let created = autoctl(&f.dir, &["create", "monitor", "--pgdata", monitor.to_str().unwrap()])
            .args([
                "--pgport",
                &f.monitor.to_string(),
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
            ])
            .output()
            .unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        f.run("monitor", &["run", "--pgdata", monitor.to_str().unwrap()]);
        until("the monitor", Duration::from_secs(30), || {
            psql(f.monitor, "pg_auto_failover", "SELECT 1").is_some()
        })
        .await;
        // Fail over in seconds rather than the defaults' tens of seconds.
        for setting in [
            "pgautofailover.health_check_period = 1000",
            "pgautofailover.health_check_retry_delay = 500",
            "pgautofailover.health_check_max_retries = 1",
            "pgautofailover.node_considered_unhealthy_timeout = 3000",
            "pgautofailover.primary_demote_timeout = 3000",
        ] {
            psql(f.monitor, "pg_auto_failover", &format!("ALTER SYSTEM SET {setting}")).expect(setting);
        }
        psql(f.monitor, "pg_auto_failover", "SELECT pg_reload_conf()").unwrap();
        let monitor_url = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            f.monitor
        );
        for (i, port) in f.nodes.into_iter().enumerate() {
            let name = format!("node{}", i + 1);
            let pgdata = f.dir.join(&name);
            let port = port.to_string();
            f.run(
                &name,
                &[
                    "create",
                    "postgres",
                    "--pgdata",
                    pgdata.to_str().unwrap(),
                    "--pgport",
                    &port,
                    "--hostname",
                    "127.0.0.1",
                    "--name",
                    &name,
                    "--auth",
                    "trust",
                    "--no-ssl",
                    "--monitor",
                    &monitor_url,
                    "--run",
                ],
            );
            // Alone, the first node is `single`; with the second, `primary` and `secondary`.
            let want = if i == 0 {
                "node1 single"
            } else {
                "node1 primary,node2 secondary"
            };
            let sql =
                "SELECT string_agg(nodename || ' ' || reportedstate, ',' ORDER BY nodename) FROM pgautofailover.node";
            let monitor = f.monitor;
            until(want, Duration::from_secs(90), || {
                psql(monitor, "pg_auto_failover", sql).as_deref() == Some(want)
            })
            .await;
        }
        f
    }

    fn run(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        // Its own process group: pg_autoctl's workers rename themselves, so
        // only the group reaches them all.
        let child = autoctl(&self.dir, args)
            .process_group(0)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.running.push((name.to_string(), child));
    }

    /// The URL mayfly is given: both nodes, libpq style.
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?sslmode=disable&target_session_attrs=read-write",
            self.nodes[0], self.nodes[1]
        )
    }

    /// SIGKILL to a node's pg_autoctl and its Postgres: the host is gone.
    fn kill(&mut self, name: &str) {
        let pid = std::fs::read_to_string(self.dir.join(name).join("postmaster.pid")).unwrap();
        let postmaster = pid.lines().next().unwrap().trim().to_string();
        for (n, child) in &mut self.running {
            if n == name {
                let group = format!("-{}", child.id());
                let _ = Command::new("kill")
                    .args(["-9", "--", &group])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("kill")
            .args(["-9", &postmaster])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The monitor's own record of the formation's states, for the failure's report.
            let sql = "SELECT string_agg(to_char(eventtime, 'HH24:MI:SS.MS') || ' ' || nodename || ' ' || \
                       reportedstate || ' -> ' || goalstate || ' (' || coalesce(reportedrepstate, '') || ' ' || reportedlsn || '): ' || description, E'\\n' ORDER BY eventid) \
                       FROM (SELECT * FROM pgautofailover.event ORDER BY eventid DESC LIMIT 60) e";
            eprintln!(
                "--- the monitor's events:\n{}",
                psql(self.monitor, "pg_auto_failover", sql).unwrap_or_default()
            );
        }
        // pg_autoctl's own stop first: killed outright it leaves its semaphores behind.
        for node in ["node2", "node1", "monitor"] {
            let pgdata = self.dir.join(node);
            let _ = autoctl(
                &self.dir,
                &["stop", "--pgdata", &pgdata.display().to_string(), "--immediate"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        }
        for (_, child) in &mut self.running {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
        }
        for node in ["monitor", "node1", "node2"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(node).join("postmaster.pid")) {
                let _ = Command::new("kill")
                    .args(["-9", pid.lines().next().unwrap_or_default().trim()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("pkill")
            .args(["-9", "-f", &self.dir.display().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        if std::thread::panicking() {
            // What pg_auto_failover did, for the failure's report: each keeper's state transitions.
            for name in ["monitor", "node1", "node2"] {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
                let moves: Vec<&str> = log.lines().filter(|l| l.contains("ransition")).collect();
                eprintln!(
                    "--- {name}.log, state transitions:\n{}",
                    moves[moves.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One replica's answers: status, the token when 200, and when it was asked.
type Answers = Arc<Mutex<Vec<(u16, Option<String>, Instant)>>>;

/// Sixteen workers minting, half through each replica.
struct Load {
    stop: Arc<AtomicBool>,
    answers: [Answers; 2],
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(apps: &Arc<[TestApp; 2]>, f: &Arc<Fixture>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers: [Answers; 2] = [Arc::default(), Arc::default()];
        let mut workers = Vec::new();
        for w in 0..16 {
            let (apps, f, stop, answers) = (apps.clone(), f.clone(), stop.clone(), answers[w % 2].clone());
            workers.push(tokio::spawn(async move {
                let app = &apps[w % 2];
                while !stop.load(Ordering::Relaxed) {
                    let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
                    let asked = tokio::time::timeout(Duration::from_secs(35), app.token_basic(&f.ci.0, &f.ci.1, &form));
                    let (status, token) = match asked.await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: Value = r.json().await.unwrap_or_default();
                            (status, body["access_token"].as_str().map(str::to_string))
                        }
                        Err(_) => (0, None), // a hang past the request timeout
                    };
                    answers.lock().unwrap().push((status, token, Instant::now()));
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        Load { stop, answers, workers }
    }

    /// Waits until both replicas answered 200 to a mint asked after `since`.
    async fn resumed_after(&self, since: Instant, within: Duration) -> Duration {
        let resumed_on = |a: &Answers| a.lock().unwrap().iter().any(|(s, _, at)| *s == 200 && *at > since);
        until("both replicas minting again", within, || {
            resumed_on(&self.answers[0]) && resumed_on(&self.answers[1])
        })
        .await;
        since.elapsed()
    }

    /// Stops the workers; every answer is 200 or 503. Returns the tokens (with
    /// the replica that answered and when) and when each 503 was answered.
    async fn finish(self) -> (Vec<Minted>, Vec<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let mut minted = Vec::new();
        let mut unavailable = Vec::new();
        for (replica, answers) in self.answers.iter().enumerate() {
            for (status, token, at) in answers.lock().unwrap().iter().cloned() {
                assert!(
                    status == 200 || status == 503,
                    "only 200 or 503 (0 = no answer within 35 s): {status}"
                );
                match token {
                    Some(token) => minted.push(Minted { token, replica, at }),
                    None => unavailable.push(at),
                }
            }
        }
        (minted, unavailable)
    }
}

/// A token a replica returned, and when.
struct Minted {
    token: String,
    replica: usize,
    at: Instant,
}

/// Every token returned has its lease and its audit event on `port`'s server.
/// A miss names, for each token missing (up to five), the replica that returned
/// it and when, against `event` (the kill or the switchover) and the 503s.
async fn all_recorded_on(port: u16, minted: &[Minted], event: Instant, unavailable: &[Instant]) {
    let db = sqlx::PgPool::connect(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ))
    .await
    .unwrap();
    let leases: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM leases WHERE tenant_id = 'ha'")
        .fetch_all(&db)
        .await
        .unwrap();
    let events: Vec<Option<uuid::Uuid>> =
        sqlx::query_scalar("SELECT lease_id FROM audit_events WHERE tenant_id = 'ha' AND action = 'token.issued'")
            .fetch_all(&db)
            .await
            .unwrap();
    let since = |at: Instant| {
        at.checked_duration_since(event).map_or_else(
            || format!("-{:.3} s", event.duration_since(at).as_secs_f64()),
            |d| format!("+{:.3} s", d.as_secs_f64()),
        )
    };
    let missing: Vec<String> = minted
        .iter()
        .filter_map(|m| {
            let jti: uuid::Uuid = claims(&m.token)["jti"].as_str().unwrap().parse().unwrap();
            let (lease, event) = (leases.contains(&jti), events.contains(&Some(jti)));
            (!lease || !event).then(|| {
                format!(
                    "{jti} (lease {lease}, event {event}) from replica {} at {}",
                    m.replica,
                    since(m.at)
                )
            })
        })
        .collect();
    db.close().await;
    let window = match (unavailable.iter().min(), unavailable.iter().max()) {
        (Some(first), Some(last)) => format!("503s from {} to {}", since(*first), since(*last)),
        _ => "no 503s".into(),
    };
    assert!(
        missing.is_empty(),
        "{} of {} tokens returned are not recorded on the primary; {window}; first ones: {:?}",
        missing.len(),
        minted.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "starts its own pg_auto_failover formation; scripts/test runs it alone"]
async fn a_killed_primary_under_load_loses_no_lease_and_minting_resumes_on_both_replicas() {
    let mut formation = Formation::start().await;
    let db = Database::at(formation.url());
    let named = |c: mayfly::Config| mayfly::Config {
        issuer: "http://mayfly.failover.test".into(),
        ..c
    };
    let apps = Arc::new([
        TestApp::on_db(db.clone()).config(named).wall_clock().start().await,
        TestApp::on_db(db.clone()).config(named).wall_clock().start().await,
    ]);
    let [first, second] = formation.nodes;
    let ready: Value = apps[0].readyz().await.1;
    assert_eq!(ready["primary"], format!("127.0.0.1:{first}"), "{ready}");

    // A rule made before the failure.
    let f = Arc::new(fixture(&apps[0], "ha").await);
    let doomed = apps[0].mint_at(&f.agent, &f.resource, &[("workflow", "doomed")]).await;
    let (s, _) = apps[0]
        .post(
            &f.admin,
            "/v1/tenants/ha/revocations",
            json!({"workflow": "doomed", "reason": "before the failover"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // 1. The primary's host dies under load.
    let load = Load::start(&apps, &f);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    formation.kill("node1");
    until("node2 promoted and writable", Duration::from_secs(90), || {
        writable(second)
    })
    .await;
    let promotion = killed.elapsed();
    let resumed = load.resumed_after(Instant::now(), Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (minted, unavailable) = load.finish().await;
    eprintln!(
        "failover: node2 writable {:.1} s after the kill; both replicas minting {:.1} s after that; \
         {} mints answered 200, {} answered 503",
        promotion.as_secs_f64(),
        resumed.as_secs_f64(),
        minted.len(),
        unavailable.len(),
    );
    all_recorded_on(second, &minted, killed, &unavailable).await;
    for app in apps.iter() {
        let ready: Value = app.readyz().await.1;
        assert_eq!(ready["primary"], format!("127.0.0.1:{second}"), "{ready}");
        assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &doomed).await["active"], false);
    }

    // The key ring follows the new primary too: a rotation on one replica
    // reaches the other through the new primary's notifications.
    let global = apps[0].global_admin_token().await;
    let (s, rotated) = apps[0].post(&global, "/v1/keys/rotate", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let kid = rotated["active"].as_str().unwrap().to_string();
    crate::harness::eventually("the other replica signs with the key rotated in", || async {
        let form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
        let t = apps[1].mint(&f.ci.0, &f.ci.1, &form).await;
        crate::harness::header(&t)["kid"] == kid.as_str()
    })
    .await;

    // 2. The old primary comes back as the standby, then a planned switchover under load.
    let node1 = formation.dir.join("node1");
    formation.run("node1", &["run", "--pgdata", node1.to_str().unwrap()]);
    let monitor = formation.monitor;
    let sql = "SELECT string_agg(nodename || ' ' || reportedstate, ',' ORDER BY nodename) FROM pgautofailover.node";
    until("node1 back as the standby", Duration::from_secs(90), || {
        psql(monitor, "pg_auto_failover", sql).as_deref() == Some("node1 secondary,node2 primary")
    })
    .await;
    let load = Load::start(&apps, &f);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let monitor_dir = formation.dir.join("monitor");
    let switching = Instant::now();
    let switched = autoctl(
        &formation.dir,
        &["perform", "switchover", "--pgdata", monitor_dir.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(
        switched.status.success(),
        "{}",
        String::from_utf8_lossy(&switched.stderr)
    );
    until("node1 primary again", Duration::from_secs(60), || writable(first)).await;
    let resumed = load.resumed_after(Instant::now(), Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (minted, unavailable) = load.finish().await;
    eprintln!(
        "switchover: {} mints answered 200, {} answered 503; both replicas minting {:.1} s after it",
        minted.len(),
        unavailable.len(),
        resumed.as_secs_f64()
    );
    all_recorded_on(first, &minted, switching, &unavailable).await;
    for app in apps.iter() {
        let ready: Value = app.readyz().await.1;
        assert_eq!(ready["primary"], format!("127.0.0.1:{first}"), "{ready}");
        assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &doomed).await["active"], false);
    }
}
