//! `--refresh-into`: keeps a file holding a fresh token for an agent runtime
//! that reads it on each use, refreshing at two thirds of the token's life and
//! riding out mayfly outages while the token in the file is still valid.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::{FetchError, Fetcher, access_token, files};

/// Never refresh more often than this, however short the tokens.
const MIN_PERIOD: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Runs until SIGTERM or SIGINT (then `Ok`), or until the token in `path`
/// expires without a successful refresh. The first fetch is not retried: with
/// no valid token to serve, failing fast lets the supervisor see it.
pub async fn refresh_into(fetcher: &Fetcher<'_>, path: &Path) -> Result<(), FetchError> {
    // Registered before the first fetch, so an early SIGTERM is not fatal.
    let stop = termination().map_err(FetchError::Signal)?;
    keep_fresh(
        || fetcher.fetch(),
        |token| files::write_private(path, token),
        path,
        stop,
        jitter,
    )
    .await
}

async fn keep_fresh<F, Fut, W, S>(
    mut fetch: F,
    mut write: W,
    path: &Path,
    stop: S,
    jitter: fn(Duration) -> Duration,
) -> Result<(), FetchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<serde_json::Value, FetchError>>,
    W: FnMut(&str) -> Result<(), FetchError>,
    S: Future<Output = ()>,
{
    tokio::pin!(stop);
    let mut valid_until: Option<Instant> = None;
    let mut retry = FIRST_RETRY;
    loop {
        // Lifetimes count from before the request: the server's clock started earlier.
        let started = Instant::now();
        let answer = tokio::select! {
            answer = fetch() => answer,
            () = &mut stop => return stopped(path),
        };
        let next = match answer.and_then(|a| Ok((lifetime(&a)?, a))) {
            Ok((lifetime, answer)) => {
                // A write that fails (a link planted at the path) is not retried.
                write(access_token(&answer)?)?;
                valid_until = Some(started + lifetime);
                retry = FIRST_RETRY;
                tracing::info!(path = %path.display(), expires_in = lifetime.as_secs(), "token written");
                started + (lifetime * 2 / 3).max(MIN_PERIOD)
            }
            Err(e) => {
                let now = Instant::now();
                let Some(until) = valid_until else {
                    return Err(e);
                };
                if now >= until {
                    // An expired token left in the file would fail at its
                    // reader with a confusing 401: take it away, loudly.
                    if let Err(gone) = std::fs::remove_file(path) {
                        tracing::error!(path = %path.display(), error = %gone, "cannot remove the expired token file");
                    }
                    return Err(FetchError::Expired {
                        path: path.display().to_string(),
                        last: Box::new(e),
                    });
                }
                if replayed(&e) {
                    tracing::warn!(
                        path = %path.display(),
                        "mayfly refused the OIDC token as replayed: its trust policy is single_use, so this \
                         token cannot be exchanged again; refreshing needs a fresh OIDC token each time \
                         (a projected token file that rotates, or --github-actions), or a policy without single_use"
                    );
                }
                // Retry no later than the expiry, for one last chance.
                let wait = jitter(retry).min(until - now);
                retry = (retry * 2).min(MAX_RETRY);
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    retry_in_ms = wait.as_millis(),
                    valid_for_s = (until - now).as_secs(),
                    "token refresh failed"
                );
                now + wait
            }
        };
        tokio::select! {
            () = sleep_until(next) => {}
            () = &mut stop => return stopped(path),
        }
    }
}

/// A single_use policy's refusal of an OIDC token already exchanged.
fn replayed(e: &FetchError) -> bool {
    matches!(e, FetchError::Refused { error, description } if error == "invalid_grant" && description.contains("replayed"))
}

fn stopped(path: &Path) -> Result<(), FetchError> {
    tracing::info!(path = %path.display(), "stopped refreshing");
    Ok(())
}

fn lifetime(answer: &serde_json::Value) -> Result<Duration, FetchError> {
    answer["expires_in"]
        .as_u64()
        .map(Duration::from_secs)
        .ok_or(FetchError::NoExpiry)
}

/// Half the delay plus a random part of the other half, so sidecars that
/// failed together do not retry in lockstep.
fn jitter(delay: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        return delay;
    }
    let r = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
    delay.mul_f64(0.5 + r / 2.0)
}

/// Resolves on SIGTERM (how container runtimes stop a sidecar) or SIGINT.
fn termination() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;
    use tokio::time::Instant;

    use super::{FetchError, jitter, keep_fresh};

    fn ok(n: u32, expires_in: u64) -> Result<serde_json::Value, FetchError> {
        Ok(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": expires_in}))
    }

    fn down() -> Result<serde_json::Value, FetchError> {
        Err(FetchError::Refused {
            error: "temporarily_unavailable".into(),
            description: String::new(),
        })
    }

    /// Runs the loop over scripted answers with time paused; returns the
    /// seconds at which each fetch happened, the tokens written and the outcome.
    async fn run(
        script: Vec<Result<serde_json::Value, FetchError>>,
        stop_after: u64,
    ) -> (Vec<u64>, Vec<String>, Result<(), FetchError>) {
        let start = Instant::now();
        let script = RefCell::new(VecDeque::from(script));
        let (calls, written) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
        let outcome = keep_fresh(
            || {
                calls.borrow_mut().push(start.elapsed().as_secs());
                let next = script.borrow_mut().pop_front().unwrap_or_else(down);
                async move { next }
            },
            |token| {
                written.borrow_mut().push(token.to_string());
                Ok(())
            },
            Path::new("/run/mayfly/token"),
            tokio::time::sleep(Duration::from_secs(stop_after)),
            |d| d,
        )
        .await;
        (calls.into_inner(), written.into_inner(), outcome)
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_refreshed_at_two_thirds_of_their_life_but_not_more_often_than_every_5s() {
        let (calls, written, outcome) = run((1..=4).map(|n| ok(n, 30)).collect(), 70).await;
        assert!(outcome.is_ok(), "stopping is a clean exit");
        assert_eq!(calls, [0, 20, 40, 60]);
        assert_eq!(written, ["tok-1", "tok-2", "tok-3", "tok-4"]);

        let (calls, _, outcome) = run((1..=4).map(|n| ok(n, 6)).collect(), 18).await;
        assert!(outcome.is_ok());
        assert_eq!(calls, [0, 5, 10, 15]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_to_a_minute_and_success_resets_the_backoff() {
        let mut script = vec![ok(1, 3600)];
        script.extend((0..9).map(|_| down()));
        script.push(ok(2, 3600));
        script.push(down());
        script.push(ok(3, 3600));
        let (calls, written, outcome) = run(script, 6000).await;
        assert!(outcome.is_ok());
        let gaps: Vec<u64> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, [2400, 1, 2, 4, 8, 16, 32, 60, 60, 60, 2400, 1]);
        assert_eq!(written, ["tok-1", "tok-2", "tok-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_gives_up_once_the_token_in_the_file_has_expired() {
        let (calls, written, outcome) = run(vec![ok(1, 30)], 1000).await;
        // Refresh at 20 s, retries at 21, 23 and 27, a last one at expiry.
        assert_eq!(calls, [0, 20, 21, 23, 27, 30]);
        assert_eq!(written, ["tok-1"]);
        let e = outcome.unwrap_err();
        assert!(matches!(e, FetchError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("/run/mayfly/token") && e.to_string().contains("temporarily_unavailable"));
    }

    /// Given up, the expired token does not stay in the file for its reader.
    #[tokio::test(start_paused = true)]
    async fn the_expired_token_file_is_removed_when_the_loop_gives_up() {
        let dir = std::env::temp_dir().join(format!("mayfly-refresh-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let script = RefCell::new(VecDeque::from(vec![ok(1, 30)]));
        let outcome = keep_fresh(
            || {
                let next = script.borrow_mut().pop_front().unwrap_or_else(down);
                async move { next }
            },
            |token| {
                std::fs::write(&path, token).map_err(|e| {
                    FetchError::Usage(if e.kind() == std::io::ErrorKind::NotFound {
                        "nf"
                    } else {
                        "io"
                    })
                })
            },
            &path,
            tokio::time::sleep(Duration::from_secs(1000)),
            |d| d,
        )
        .await;
        assert!(matches!(outcome, Err(FetchError::Expired { .. })));
        assert!(!path.exists(), "the expired token was left in {}", path.display());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_failure_or_an_answer_without_a_lifetime_is_not_retried() {
        let (calls, written, outcome) = run(vec![down()], 1000).await;
        assert_eq!((calls.len(), written.len()), (1, 0));
        assert!(matches!(outcome, Err(FetchError::Refused { .. })));

        let (_, written, outcome) = run(vec![Ok(json!({"access_token": "t"}))], 1000).await;
        assert!(written.is_empty());
        assert!(matches!(outcome, Err(FetchError::NoExpiry)));
    }

    #[test]
    fn jitter_keeps_at_least_half_the_delay() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(8));
            assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8), "{d:?}");
        }
    }
}
