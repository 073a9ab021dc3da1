//! `mayfly token` in one-shot mode (issue 26, finding 10): output options
//! checked before anything is minted, a `--from` naming the token endpoint
//! understood, and a mayfly that is briefly unavailable retried. A fake token
//! endpoint counts what reaches it.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::json;

/// A token endpoint that answers 503 `unavailable` times, then a token; returns its URL and hit count.
async fn flaky_endpoint(unavailable: usize) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/oauth2/token",
        post(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < unavailable {
                    let body = json!({"error": "temporarily_unavailable", "error_description": "try again"});
                    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
                } else {
                    axum::Json(json!({"access_token": "tok-from-fake", "token_type": "Bearer", "expires_in": 60}))
                        .into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

async fn token(from: String, extra: &[&str]) -> std::process::Output {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .args([
                "token",
                "--from",
                &from,
                "--resource",
                "https://mcp.test/x",
                "--client-id",
                "ci",
            ])
            .args(&extra)
            .env("MAYFLY_CLIENT_SECRET", "mfy_cs_not-a-real-secret")
            .env("RUST_BACKTRACE", "1")
            .env_remove("GITHUB_OUTPUT")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_briefly_unavailable_mayfly_is_retried_and_a_token_endpoint_url_is_understood() {
    let (url, hits) = flaky_endpoint(2).await;
    let out = token(format!("{url}/oauth2/token"), &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tok-from-fake");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s, then the token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("trying again"));

    let (url, hits) = flaky_endpoint(usize::MAX).await;
    let out = token(url, &[]).await;
    assert!(!out.status.success());
    assert_eq!(hits.load(Ordering::SeqCst), 4, "four attempts, then the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_options_that_cannot_deliver_are_refused_before_anything_is_minted() {
    let (url, hits) = flaky_endpoint(0).await;
    for (args, says) in [
        (&["--output", "github"][..], "GITHUB_OUTPUT"),
        (&["--output", "env-file"][..], "--env-file"),
        (&["--env-file", "/tmp/x"][..], "--output env-file"),
    ] {
        let out = token(url.clone(), args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was minted");
}
