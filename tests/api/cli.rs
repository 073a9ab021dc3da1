//! `mayfly token`, the client CI jobs and agents run, against a real server.

use std::process::Command;

use crate::harness::{Backend, claims, fixture, spawn_app};

/// `mayfly token --from base --resource resource --client-id id` with the secret in its environment.
fn token_command(base: &str, resource: &str, id: &str, secret: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mayfly"));
    c.args(["token", "--from", base, "--resource", resource, "--client-id", id])
        .env("MAYFLY_CLIENT_SECRET", secret)
        .env_remove("MAYFLY_ISSUER");
    c
}

async fn mayfly_token(base: &str, resource: &str, id: &str, secret: &str, extra: &[&str]) -> std::process::Output {
    let mut c = token_command(base, resource, id, secret);
    c.args(extra).output().await.expect("the mayfly binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mayfly_token_prints_a_token_or_writes_it_for_github_actions() {
    let app = spawn_app(Backend::Sqlite).await;
    let f = fixture(&app, "acme").await;
    let (base, resource, ci) = (app.base.clone(), f.resource.clone(), f.ci.clone());
    let out = mayfly_token(&base, &resource, &ci.0, &ci.1, &["--expires-in", "120"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(claims(&token)["workflow"], "release");
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);

    let github_output = std::env::temp_dir().join(format!("gh-output-{}", uuid::Uuid::new_v4().simple()));
    let out = token_command(&base, &resource, &ci.0, &ci.1)
        .args(["--output", "github"])
        .env("GITHUB_OUTPUT", &github_output)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&github_output).unwrap();
    let token = written.trim().strip_prefix("token=").unwrap().to_string();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("::add-mask::{token}")
    );
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);
    let _ = std::fs::remove_file(github_output);

    // An env file is written for its owner's eyes only, even if it existed before.
    use std::os::unix::fs::PermissionsExt;
    let env_file = std::env::temp_dir().join(format!("mayfly-env-{}", uuid::Uuid::new_v4().simple()));
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // A world-readable file with `content`, then `mayfly token` told to write its token there.
    let write_over = |content: &'static str, at: std::path::PathBuf| {
        std::fs::write(&env_file, content).unwrap();
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (base, resource, ci) = (base.clone(), resource.clone(), ci.clone());
        async move {
            let path = at.to_str().unwrap();
            mayfly_token(
                &base,
                &resource,
                &ci.0,
                &ci.1,
                &["--output", "env-file", "--env-file", path],
            )
            .await
        }
    };
    let out = write_over("old", env_file.clone()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let content = std::fs::read_to_string(&env_file).unwrap();
    assert!(content.starts_with("MAYFLY_TOKEN=ey") && content.ends_with('\n'));
    assert_eq!(mode(&env_file), 0o600);

    // A link at the env file's path is refused: what it points at is neither
    // overwritten nor re-permissioned.
    let link = std::env::temp_dir().join(format!("mayfly-env-link-{}", uuid::Uuid::new_v4().simple()));
    std::os::unix::fs::symlink(&env_file, &link).unwrap();
    let out = write_over("precious", link.clone()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), "precious");
    assert_eq!(mode(&env_file), 0o644);
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_file(env_file);

    // Plain http is for this machine only: elsewhere the secret would cross the network in clear.
    let out = mayfly_token("http://mayfly.example", &resource, &ci.0, &ci.1, &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use an https URL for --from"), "{stderr}");
    assert!(!stderr.contains(&ci.1));

    // Refusals are reported with the OAuth error, never with the secret.
    let out = mayfly_token(&base, &resource, &ci.0, "mfy_cs_wrong-secret", &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains("mfy_cs_wrong-secret"));
}

/// `mayfly` with only `vars` in its environment.
fn mayfly(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("the mayfly binary runs")
}

#[test]
fn secrets_come_from_the_environment_or_files_and_weak_ones_stop_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mayfly-cli-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/data/mayfly.db", dir.display());
    let secret_file = dir.join("admin.secret");
    let (secret_file_str, strong) = (secret_file.to_str().unwrap(), crate::harness::ADMIN_SECRET);

    for flag in ["--master-key", "--master-key-previous", "--bootstrap-admin-secret"] {
        let out = mayfly(&[flag, strong, "migrate"], &[("MAYFLY_DATABASE_URL", &url)]);
        assert!(!out.status.success(), "{flag} is accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unexpected argument"), "{flag}: {stderr}");
    }

    let weak = "hunter2-hunter2";
    let out = mayfly(
        &["migrate"],
        &[("MAYFLY_DATABASE_URL", &url), ("MAYFLY_BOOTSTRAP_ADMIN_SECRET", weak)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MAYFLY_BOOTSTRAP_ADMIN_SECRET") && stderr.contains("too weak"),
        "{stderr}"
    );
    assert!(!stderr.contains(weak), "the secret is shown: {stderr}");

    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&secret_file, format!("{strong}\n")).unwrap();
    let out = mayfly(
        &["migrate"],
        &[
            ("MAYFLY_DATABASE_URL", &url),
            ("MAYFLY_BOOTSTRAP_ADMIN_SECRET", strong),
            ("MAYFLY_BOOTSTRAP_ADMIN_SECRET_FILE", secret_file_str),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not both"), "{stderr}");

    let out = mayfly(
        &["migrate"],
        &[
            ("MAYFLY_DATABASE_URL", &url),
            ("MAYFLY_BOOTSTRAP_ADMIN_SECRET_FILE", secret_file_str),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("data")), 0o700);
    assert_eq!(mode(&dir.join("data").join("mayfly.db")), 0o600);
    let _ = std::fs::remove_dir_all(dir);
}

/// What the stand-in below was asked.
#[derive(Default)]
struct Seen {
    audiences: Vec<String>,
    /// The token requests' forms, and whether each came with a Basic header.
    token_requests: Vec<(std::collections::HashMap<String, String>, bool)>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Seen>>;

const ACTIONS_BEARER: &str = "actions-request-token";
const OIDC: &str = "fake.oidc.jwt";
const ROTATED_OIDC: &str = "rotated.oidc.jwt";

/// A loopback stand-in for both the Actions OIDC token service and mayfly's
/// token endpoint (its jwt-bearer side): returns its base URL.
async fn stand_in() -> (String, Shared) {
    use axum::extract::{Form, Query, State};
    use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
    use axum::response::{IntoResponse, Response};
    use std::collections::HashMap;

    fn refuse(status: StatusCode, description: &str) -> Response {
        let body = serde_json::json!({"error": "invalid_grant", "error_description": description});
        (status, axum::Json(body)).into_response()
    }

    async fn actions_token(
        State(seen): State<Shared>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let bearer = format!("Bearer {ACTIONS_BEARER}");
        if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
            return refuse(StatusCode::UNAUTHORIZED, "wrong bearer");
        }
        // The runner's own query string is kept.
        if q.get("api-version").map(String::as_str) != Some("2.0") {
            return refuse(StatusCode::BAD_REQUEST, "api-version lost");
        }
        let Some(audience) = q.get("audience") else {
            return refuse(StatusCode::BAD_REQUEST, "no audience");
        };
        seen.lock().unwrap().audiences.push(audience.clone());
        axum::Json(serde_json::json!({"value": OIDC})).into_response()
    }

    async fn token(
        State(seen): State<Shared>,
        headers: HeaderMap,
        Form(form): Form<HashMap<String, String>>,
    ) -> Response {
        let basic = headers.contains_key(AUTHORIZATION);
        let field = |name: &str| form.get(name).map(String::as_str);
        let assertion = match field("grant_type") {
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => field("assertion"),
            Some("client_credentials")
                if field("client_assertion_type") == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") =>
            {
                field("client_assertion")
            }
            _ => None,
        };
        let mut seen = seen.lock().unwrap();
        seen.token_requests.push((form.clone(), basic));
        if !matches!(assertion, Some(OIDC | ROTATED_OIDC)) {
            return refuse(StatusCode::BAD_REQUEST, "unknown assertion");
        }
        let n = seen.token_requests.len();
        axum::Json(serde_json::json!({
            "access_token": format!("tok-{n}"),
            "token_type": "Bearer",
            "expires_in": 6,
            "scope": "x",
        }))
        .into_response()
    }

    let seen = Shared::default();
    let app = axum::Router::new()
        .route("/actions-token", axum::routing::get(actions_token))
        .route("/oauth2/token", axum::routing::post(token))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

/// `mayfly token` with `args`, only `vars` in its environment, off the runtime's threads.
async fn mayfly_off_thread(args: Vec<String>, vars: Vec<(&'static str, String)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        mayfly(&args, &vars)
    })
    .await
    .unwrap()
}

fn token_args(base: &str, extra: &[&str]) -> Vec<String> {
    ["token", "--from", base, "--resource", "https://mcp.test/x"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

fn assert_quiet_about_credentials(stderr: &str) {
    for secret in [OIDC, ROTATED_OIDC, ACTIONS_BEARER, "tok-"] {
        assert!(!stderr.contains(secret), "{secret} in stderr: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_actions_jobs_exchange_their_oidc_token_without_a_stored_secret() {
    let (base, seen) = stand_in().await;
    let vars = vec![
        (
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            format!("{base}/actions-token?api-version=2.0"),
        ),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", ACTIONS_BEARER.to_string()),
    ];
    let out = mayfly_off_thread(token_args(&base, &["--github-actions"]), vars.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "tok-1");
    assert_quiet_about_credentials(&stderr);
    {
        let seen = seen.lock().unwrap();
        // The audience defaults to the issuer the token is for.
        assert_eq!(seen.audiences, [base.as_str()]);
        let (form, basic) = &seen.token_requests[0];
        assert!(!basic, "no client authentication with the jwt-bearer grant");
        assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
        assert_eq!(form["assertion"], OIDC);
        assert_eq!(form["resource"], "https://mcp.test/x");
        assert!(!form.contains_key("workflow") && !form.contains_key("client_id"));
    }

    let out = mayfly_off_thread(
        token_args(&base, &["--github-actions", "--audience", "mayfly prod&eu"]),
        vars,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(seen.lock().unwrap().audiences[1], "mayfly prod&eu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_jobs_exchange_their_id_token_by_grant_or_as_a_client_assertion() {
    let (base, seen) = stand_in().await;
    let vars = || vec![("GL_MAYFLY_TOKEN", format!("{OIDC}\n"))];
    let out = mayfly_off_thread(
        token_args(
            &base,
            &["--gitlab", "--id-token-env", "GL_MAYFLY_TOKEN", "--scope", "x"],
        ),
        vars(),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "tok-1");
    {
        let seen = seen.lock().unwrap();
        let (form, _) = &seen.token_requests[0];
        assert_eq!(form["assertion"], OIDC);
        assert_eq!(form["scope"], "x");
    }

    // With a client id the OIDC token authenticates that client (private_key_jwt).
    let out = mayfly_off_thread(
        token_args(
            &base,
            &[
                "--gitlab",
                "--id-token-env",
                "GL_MAYFLY_TOKEN",
                "--client-id",
                "ci-client",
                "--expires-in",
                "60",
            ],
        ),
        vars(),
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "tok-2");
    {
        let seen = seen.lock().unwrap();
        let (form, basic) = &seen.token_requests[1];
        assert!(!basic);
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], "ci-client");
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert_eq!(form["client_assertion"], OIDC);
        assert_eq!(form["expires_in"], "60");
        assert!(!form.contains_key("assertion"));
    }

    // The default variable is MAYFLY_ID_TOKEN; the endpoint's refusal is reported, not the token.
    let out = mayfly_off_thread(
        token_args(&base, &["--gitlab"]),
        vec![("MAYFLY_ID_TOKEN", "forged.oidc.jwt".into())],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid_grant") && stderr.contains("unknown assertion"),
        "{stderr}"
    );
    assert!(!stderr.contains("forged.oidc.jwt"), "{stderr}");
    assert_eq!(seen.lock().unwrap().token_requests[2].0["assertion"], "forged.oidc.jwt");
}

/// Kills the child if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_into_keeps_a_private_token_file_fresh_until_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let (base, seen) = stand_in().await;
    let dir = std::env::temp_dir().join(format!("mayfly-refresh-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let subject = dir.join("sa-token");
    std::fs::write(&subject, format!("{OIDC}\n")).unwrap();
    let token_file = dir.join("token");

    let child = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(token_args(
            &base,
            &[
                "--subject-token-file",
                subject.to_str().unwrap(),
                "--refresh-into",
                token_file.to_str().unwrap(),
            ],
        ))
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let read = || std::fs::read_to_string(&token_file).unwrap_or_default();

    wait_for("tok-1 written", std::time::Duration::from_secs(10), || {
        read() == "tok-1"
    })
    .await;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The platform rotates the projected token: replaced atomically, as the kubelet does.
    let staged = dir.join(".sa-token.new");
    std::fs::write(&staged, ROTATED_OIDC).unwrap();
    std::fs::rename(&staged, &subject).unwrap();

    // expires_in is 6 s: two thirds is 4, below the 5 s floor, so the refresh comes after 5.
    wait_for("a refreshed token", std::time::Duration::from_secs(8), || {
        let t = read();
        t.starts_with("tok-") && t != "tok-1"
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        let assertions: Vec<&str> = seen
            .token_requests
            .iter()
            .map(|(f, _)| f["assertion"].as_str())
            .collect();
        assert_eq!(assertions[..2], [OIDC, ROTATED_OIDC]);
    }

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut status = None;
    wait_for("exit on SIGTERM", std::time::Duration::from_secs(10), || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.unwrap().success(), "{status:?}: {stderr}");
    assert!(stdout.is_empty(), "the token goes to the file only: {stdout}");
    assert_quiet_about_credentials(&stderr);
    let token = read();
    assert!(token.starts_with("tok-") && token != "tok-1", "{token}");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn federated_modes_refuse_what_the_trust_policy_decides_and_name_what_is_missing() {
    let refused = |extra: &[&str], vars: &[(&str, &str)]| {
        let out = mayfly(
            &token_args("https://mayfly.test", extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vars,
        );
        assert!(!out.status.success(), "{extra:?} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let stderr = refused(&["--github-actions"], &[]);
    assert!(
        stderr.contains("not in GitHub Actions") && stderr.contains("permissions: id-token: write"),
        "{stderr}"
    );

    for two in [
        &["--github-actions", "--gitlab"][..],
        &["--gitlab", "--subject-token-file", "/run/token"],
    ] {
        let stderr = refused(two, &[("MAYFLY_ID_TOKEN", OIDC)]);
        assert!(stderr.contains("choose one of"), "{two:?}: {stderr}");
    }

    let stderr = refused(&["--gitlab", "--workflow", "release"], &[("MAYFLY_ID_TOKEN", OIDC)]);
    assert!(
        stderr.contains("--workflow") && stderr.contains("trust policy"),
        "{stderr}"
    );
    let stderr = refused(&["--subject-token-file", "/run/token"], &[("MAYFLY_WORKLOAD", "agent")]);
    assert!(
        stderr.contains("MAYFLY_WORKLOAD") && stderr.contains("trust policy"),
        "{stderr}"
    );

    let stderr = refused(&["--gitlab"], &[]);
    assert!(
        stderr.contains("MAYFLY_ID_TOKEN") && stderr.contains("id_tokens:"),
        "{stderr}"
    );

    let stderr = refused(&["--gitlab", "--refresh-into", "/tmp/never", "--output", "json"], &[]);
    assert!(stderr.contains("--refresh-into"), "{stderr}");

    // Without a mode, the secret mode needs both halves.
    let stderr = refused(&[], &[("MAYFLY_CLIENT_SECRET", "mfy_cs_s")]);
    assert!(stderr.contains("--client-id"), "{stderr}");
    assert!(!stderr.contains("mfy_cs_s"), "{stderr}");
}
