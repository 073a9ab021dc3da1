//! `mayfly token`, the client CI jobs and agents run, against a real server.

use std::process::Command;

use crate::harness::{Backend, claims, fixture, spawn_app};

fn mayfly_token(base: &str, resource: &str, id: &str, secret: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["token", "--from", base, "--resource", resource, "--client-id", id])
        .args(extra)
        .env("MAYFLY_CLIENT_SECRET", secret)
        .env_remove("MAYFLY_ISSUER")
        .output()
        .expect("the mayfly binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mayfly_token_prints_a_token_or_writes_it_for_github_actions() {
    let app = spawn_app(Backend::Sqlite).await;
    let f = fixture(&app, "acme").await;
    let (base, resource, ci) = (app.base.clone(), f.resource.clone(), f.ci.clone());
    let out = tokio::task::spawn_blocking({
        let (base, resource, ci) = (base.clone(), resource.clone(), ci.clone());
        move || mayfly_token(&base, &resource, &ci.0, &ci.1, &["--expires-in", "120"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(claims(&token)["workflow"], "release");
    assert_eq!(app.introspect((&f.rs.0, &f.rs.1), &token).await["active"], true);

    let github_output = std::env::temp_dir().join(format!("gh-output-{}", uuid::Uuid::new_v4().simple()));
    let gh = github_output.clone();
    let out = tokio::task::spawn_blocking({
        let (base, resource, ci) = (base.clone(), resource.clone(), ci.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_mayfly"))
                .args([
                    "token",
                    "--from",
                    &base,
                    "--resource",
                    &resource,
                    "--client-id",
                    &ci.0,
                    "--output",
                    "github",
                ])
                .env("MAYFLY_CLIENT_SECRET", &ci.1)
                .env("GITHUB_OUTPUT", &gh)
                .output()
                .unwrap()
        }
    })
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
    std::fs::write(&env_file, "old").unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = env_file.clone();
    let out = tokio::task::spawn_blocking({
        let (base, resource, ci) = (base.clone(), resource.clone(), ci.clone());
        move || {
            let path = path.to_str().unwrap().to_string();
            mayfly_token(
                &base,
                &resource,
                &ci.0,
                &ci.1,
                &["--output", "env-file", "--env-file", &path],
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let content = std::fs::read_to_string(&env_file).unwrap();
    assert!(content.starts_with("MAYFLY_TOKEN=ey") && content.ends_with('\n'));
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A link at the env file's path is refused: what it points at is neither
    // overwritten nor re-permissioned.
    let link = std::env::temp_dir().join(format!("mayfly-env-link-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&env_file, "precious").unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&env_file, &link).unwrap();
    let path = link.clone();
    let out = tokio::task::spawn_blocking({
        let (base, resource, ci) = (base.clone(), resource.clone(), ci.clone());
        move || {
            let path = path.to_str().unwrap().to_string();
            mayfly_token(
                &base,
                &resource,
                &ci.0,
                &ci.1,
                &["--output", "env-file", "--env-file", &path],
            )
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), "precious");
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_file(env_file);

    // Plain http is for this machine only: elsewhere the secret would cross the network in clear.
    let out = tokio::task::spawn_blocking({
        let (resource, ci) = (resource.clone(), ci.clone());
        move || mayfly_token("http://mayfly.example", &resource, &ci.0, &ci.1, &[])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use an https URL for --from"), "{stderr}");
    assert!(!stderr.contains(&ci.1));

    // Refusals are reported with the OAuth error, never with the secret.
    let out = tokio::task::spawn_blocking(move || mayfly_token(&base, &resource, &ci.0, "mfy_cs_wrong-secret", &[]))
        .await
        .unwrap();
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
