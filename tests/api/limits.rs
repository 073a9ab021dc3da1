//! Noisy neighbours and the operations listener: per-tenant and per-client
//! limits, and metrics kept off the public listener.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, eventually, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_tenant_over_its_limits_gets_429s_and_others_are_untouched,
    a_tenants_mint_rate_covers_all_its_clients_and_no_other_tenant,
    a_live_lease_limit_holds_exactly_under_a_burst_on_one_replica,
    healthz_says_the_process_is_up_while_the_database_is_gone_and_readyz_says_why_not,
);

/// A mint's status and, when refused, its error_description.
async fn try_mint(app: &TestApp, client: &(String, String), form: &[(&str, &str)]) -> (StatusCode, String) {
    let res = app.token_basic(&client.0, &client.1, form).await;
    let status = res.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(res.headers().contains_key("retry-after"));
    }
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["error_description"].as_str().unwrap_or_default().to_string(),
    )
}

/// Mints until one answer is `until`; every other answer must be in
/// `meanwhile` (a limit is read at most once a second: the server's own time).
/// An app on SQLite that serves /metrics only on `ops`, a listener of its own.
async fn metrics_apart(ops: std::net::SocketAddr) -> TestApp {
    TestApp::on(Backend::Sqlite)
        .config(move |c| mayfly::Config {
            metrics_listen: Some(ops),
            ..c
        })
        .start()
        .await
}

/// Tenants `acme`, whose `limits` the global admin has just set, and `other`;
/// and acme as the PATCH answered.
async fn limited(b: Backend, limits: Value) -> (TestApp, Fixture, Fixture, Value) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let other = fixture(&app, "other").await;
    let (s, t) = app.patch(&f.admin, "/v1/tenants/acme", limits).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    (app, f, other, t)
}

/// Waits until `client` mints again, refused only for `limit` meanwhile.
async fn mints_again(app: &TestApp, client: &(String, String), form: &[(&str, &str)], limit: &str) {
    mint_until(
        app,
        client,
        form,
        (StatusCode::OK, ""),
        &[(StatusCode::TOO_MANY_REQUESTS, limit)],
    )
    .await;
}

async fn mint_until(
    app: &TestApp,
    client: &(String, String),
    form: &[(&str, &str)],
    until: (StatusCode, &str),
    meanwhile: &[(StatusCode, &str)],
) -> Vec<(StatusCode, String)> {
    let seen = std::sync::Mutex::new(Vec::new());
    let what = format!("{until:?}");
    eventually(&what, || async {
        let (s, why) = try_mint(app, client, form).await;
        let done = (s, why.as_str()) == until;
        assert!(
            done || meanwhile.contains(&(s, why.as_str())),
            "unexpected {s} {why} while waiting for {until:?}"
        );
        seen.lock().unwrap().push((s, why));
        done
    })
    .await;
    seen.into_inner().unwrap()
}

/// One tenant's runaway job cannot starve the others: past its live-lease or
/// rate limit a mint answers 429 with Retry-After (audited once a minute),
/// other tenants mint on, and only a global admin changes the limits.
async fn a_tenant_over_its_limits_gets_429s_and_others_are_untouched(b: Backend) {
    let (app, f, other, t) = limited(b, json!({"max_live_leases": 2})).await;
    assert_eq!(t["max_live_leases"], 2);
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("expires_in", "60"),
    ];
    // Nothing of acme has minted yet, so nothing of it is cached: the first
    // mint reads the limit as it is now.
    let live = "limit reached: max_live_leases";
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    app.mint(&f.ci.0, &f.ci.1, &form).await;
    for _ in 0..2 {
        assert_eq!(
            try_mint(&app, &f.ci, &form).await,
            (StatusCode::TOO_MANY_REQUESTS, live.to_string())
        );
    }
    // Another tenant mints on.
    for _ in 0..3 {
        app.mint_at(&other.ci, &other.resource, &[]).await;
    }
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.denied").await;
    let limited: Vec<_> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().unwrap_or("").starts_with("limited"))
        .collect();
    assert_eq!(limited.len(), 1, "audited once a minute, not per request");
    // Once the leases expire, minting resumes (when the count is read again).
    app.advance(120);
    mints_again(&app, &f.ci, &form, live).await;

    // A rate limit, per client.
    let (s, _) = app
        .patch(
            &f.admin,
            &format!("/v1/tenants/acme/clients/{}", f.agent.0),
            json!({"max_mints_per_second": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .patch(&f.admin, "/v1/tenants/acme", json!({"max_live_leases": null}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let agent_form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("workflow", "w"),
    ];
    let rate = "limit reached: client max_mints_per_second";
    let seen = mint_until(
        &app,
        &f.agent,
        &agent_form,
        (StatusCode::TOO_MANY_REQUESTS, rate),
        &[(StatusCode::OK, ""), (StatusCode::TOO_MANY_REQUESTS, live)],
    )
    .await;
    assert!(seen.iter().any(|(s, _)| *s == StatusCode::OK), "{seen:?}");
    // A rate, not a ban: within a second or so the client mints again.
    mints_again(&app, &f.agent, &agent_form, rate).await;

    // A tenant admin may rename its tenant but not lift its limits.
    let tenant_admin = crate::harness::tenant_admin(&app, &f.admin, "acme").await;
    let (s, _) = app
        .patch(&tenant_admin, "/v1/tenants/acme", json!({"max_mints_per_second": 1000}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, t) = app
        .patch(&tenant_admin, "/v1/tenants/acme", json!({"name": "Acme Corp"}))
        .await;
    assert_eq!((s, t["name"].clone()), (StatusCode::OK, json!("Acme Corp")));
}

/// `max_mints_per_second` on a tenant is shared by all its clients; another
/// tenant is not slowed by it.
async fn a_tenants_mint_rate_covers_all_its_clients_and_no_other_tenant(b: Backend) {
    let (app, f, other, t) = limited(b, json!({"max_mints_per_second": 1})).await;
    assert_eq!(t["max_mints_per_second"], 1, "{t}");
    let ci_form = [("grant_type", "client_credentials"), ("resource", f.resource.as_str())];
    let agent_form = [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("workflow", "triage"),
    ];
    // Nothing of acme is cached yet: the first mint reads the limit. The CI
    // client and the agent (no limit of its own) take turns: one bucket for
    // both lets through one mint a second of the time they took, however
    // long that was (two buckets would let the agent's first through too).
    let rate = "limit reached: tenant max_mints_per_second";
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    for turn in 0..10 {
        let (client, form) = if turn % 2 == 0 {
            (&f.ci, &ci_form[..])
        } else {
            (&f.agent, &agent_form[..])
        };
        answers.push((client.0.clone(), try_mint(&app, client, form).await));
    }
    let seconds = started.elapsed().as_secs_f64().floor() as usize;
    let ok = answers.iter().filter(|(_, (s, _))| *s == StatusCode::OK).count();
    assert!(ok <= 1 + seconds, "{ok} mints in {seconds} s: {answers:?}");
    let refused: std::collections::BTreeSet<&str> = answers
        .iter()
        .filter(|(_, (s, _))| *s != StatusCode::OK)
        .map(|(client, answer)| {
            assert_eq!(answer, &(StatusCode::TOO_MANY_REQUESTS, rate.to_string()));
            client.as_str()
        })
        .collect();
    assert!(refused.contains(f.agent.0.as_str()), "the agent too: {answers:?}");
    for _ in 0..3 {
        app.mint_at(&other.ci, &other.resource, &[]).await;
    }
    // Audited once per minute per client refused, not per request.
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?action=token.denied").await;
    let audited: std::collections::BTreeSet<(&str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["client_id"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    let reason = "limited: tenant max_mints_per_second (audited once per minute per client and limit)";
    assert_eq!(audited, refused.iter().map(|c| (*c, reason)).collect(), "{events}");
    assert_eq!(events["items"].as_array().unwrap().len(), refused.len(), "{events}");
    let (_, events) = app
        .get(&other.admin, "/v1/tenants/other/audit?action=token.denied")
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 0, "{events}");
    // A rate, not a ban.
    mints_again(&app, &f.agent, &agent_form, rate).await;
}

/// With MAYFLY_METRICS_LISTEN, metrics and readiness details are served on
/// their own listener; the public one says only whether it is ready. Both
/// answer /healthz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness_details_move_to_their_own_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let app = metrics_apart(ops).await;
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // /healthz (the process is up) answers on both listeners.
    for base in [app.base.clone(), format!("http://{ops}")] {
        let res = app.http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{base}");
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}), "{base}");
    }
    let ready: serde_json::Value = app.public("/readyz").await;
    assert_eq!(ready, json!({"status": "ready"}));
    let metrics = app.http.get(format!("http://{ops}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    // Latency as a histogram (buckets add up across replicas), not a summary's quantiles.
    assert!(
        text.contains("mayfly_http_request_duration_seconds_bucket{") && text.contains("le=\"0.005\""),
        "{text}"
    );
    assert!(
        !text.contains("mayfly_http_request_duration_seconds{quantile"),
        "{text}"
    );
    let detailed: serde_json::Value = app
        .http
        .get(format!("http://{ops}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["database"], true);
}

/// The harness itself: a server task that dies (here: its operations
/// listener's port is taken) fails the test instead of passing silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "AddrInUse")]
async fn a_server_task_that_dies_fails_its_test() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ops = taken.local_addr().unwrap();
    let app = metrics_apart(ops).await;
    app.stop().await;
}

/// A clock that panics once armed, for whoever reads it next.
struct Armed(std::sync::atomic::AtomicBool);

impl mayfly::clock::Clock for Armed {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        assert!(
            !self.0.load(std::sync::atomic::Ordering::SeqCst),
            "the test's clock is armed"
        );
        mayfly::clock::Clock::now(&mayfly::clock::SystemClock)
    }
}

/// The harness: a background task of the server that panics (here the
/// sweeper's, on reading an armed clock) takes the server down with it and
/// fails the test, instead of the server serving on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "the test's clock is armed")]
async fn a_background_task_that_panics_stops_the_server_and_fails_its_test() {
    let clock = std::sync::Arc::new(Armed(std::sync::atomic::AtomicBool::new(false)));
    let app = TestApp::on(Backend::Sqlite).clock(clock.clone()).start().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    clock.0.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("the server goes down", || async { app.has_stopped() }).await;
    app.stop().await;
}

/// Security review, finding 10: the live-lease limit is one step (check and
/// count), and mints in flight stay counted when the database count is read.
async fn a_live_lease_limit_holds_exactly_under_a_burst_on_one_replica(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let (s, t) = app
        .patch(&f.admin, "/v1/tenants/acme", json!({"max_live_leases": 5}))
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    // Nothing of acme has minted yet, so nothing of it is cached: the burst's
    // first mint reads the limit as it is now (no wait needed).
    let burst = (0..40).map(|_| async { app.ask_token(&f.ci, &f.resource, &[]).await.status() });
    let statuses = futures_util::future::join_all(burst).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((ok, limited), (5, 35), "{statuses:?}");
    // Steady pressure on an empty tenant across the once-a-second reads of
    // its count: mints in flight while it is read are still counted.
    let f = fixture(&app, "beta").await;
    let (s, t) = app
        .patch(&f.admin, "/v1/tenants/beta", json!({"max_live_leases": 5}))
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let until = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    let pressure = (0..12).map(|_| async {
        let mut minted = 0;
        for _ in 0..2_000 {
            if std::time::Instant::now() > until {
                break;
            }
            let res = app.ask_token(&f.ci, &f.resource, &[]).await;
            minted += usize::from(res.status() == StatusCode::OK);
        }
        minted
    });
    let more: usize = futures_util::future::join_all(pressure).await.into_iter().sum();
    let (_, live) = app.get(&f.admin, "/v1/tenants/beta/leases?active=true&limit=100").await;
    let live = live["items"].as_array().unwrap().len();
    assert!(
        more <= 5 && live == more,
        "{more} minted, {live} live: the limit held under pressure"
    );
}

/// /healthz is liveness only: it answers 200 while the database is gone,
/// when /readyz answers 503 and names the database.
async fn healthz_says_the_process_is_up_while_the_database_is_gone_and_readyz_says_why_not(b: Backend) {
    let app = spawn_app(b).await;
    let get = |path: &'static str| {
        let app = &app;
        async move {
            let res = app.http.get(app.url(path)).send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    // The pool the server reads through, closed under it.
    app.store.close().await;
    assert_eq!(get("/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
    let (s, ready) = get("/readyz").await;
    assert_eq!(
        (s, ready["status"].clone(), ready["database"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable"), json!(false)),
        "{ready}"
    );
    assert_eq!(ready["signing_key"], true, "only the database is down: {ready}");
}

/// `/metrics` on the public listener is for the machine itself: a caller
/// behind a trusted proxy is whoever the proxy names, and a remote one gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_public_listener_answer_loopback_callers_only() {
    let app = TestApp::on(Backend::Sqlite)
        .config(|c| mayfly::Config {
            trusted_proxies: vec![mayfly::config::parse_cidr("127.0.0.0/8").unwrap()],
            ..c
        })
        .start()
        .await;
    let metrics = |forwarded_for: Option<&'static str>| {
        let mut req = app.http.get(app.url("/metrics"));
        if let Some(address) = forwarded_for {
            req = req.header("x-forwarded-for", address);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(metrics(None).await, StatusCode::OK, "from this machine");
    assert_eq!(
        metrics(Some("203.0.113.9")).await,
        StatusCode::NOT_FOUND,
        "from afar, through the proxy"
    );
    assert_eq!(
        metrics(Some("127.0.0.1")).await,
        StatusCode::OK,
        "from this machine, through the proxy"
    );
}
