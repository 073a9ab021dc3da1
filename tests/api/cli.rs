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
    let env_file = std::env::temp_dir().join(format!("mayfly-env-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&env_file, "old").unwrap();
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
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _ = std::fs::remove_file(env_file);

    // Refusals are reported with the OAuth error, never with the secret.
    let out = tokio::task::spawn_blocking(move || mayfly_token(&base, &resource, &ci.0, "mfy_cs_wrong-secret", &[]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains("mfy_cs_wrong-secret"));
}
