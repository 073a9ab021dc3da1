//! Where a workload's OIDC token comes from when no client secret is stored:
//! the GitHub Actions token service, a variable a GitLab `id_tokens:` block
//! fills, or a file the platform keeps fresh (a Kubernetes projected token).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::{Env, FetchError, form_encode};

/// The source of the token exchanged at mayfly; read anew for every fetch,
/// since each of these tokens is short-lived and renewed by the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subject {
    GithubActions { audience: String },
    Env(String),
    File(PathBuf),
}

impl Subject {
    pub(super) async fn read(&self, http: &reqwest::Client, env: &Env<'_>) -> Result<SecretString, FetchError> {
        match self {
            Subject::GithubActions { audience } => actions_token(http, env, audience).await,
            Subject::Env(name) => env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(SecretString::from)
                .ok_or_else(|| FetchError::NoIdToken(name.clone())),
            Subject::File(path) => {
                let fail = |reason: String| FetchError::SubjectFile {
                    path: path.display().to_string(),
                    reason,
                };
                let content = tokio::fs::read_to_string(path).await.map_err(|e| fail(e.to_string()))?;
                let token = content.trim();
                if token.is_empty() {
                    return Err(fail("the file is empty".into()));
                }
                Ok(SecretString::from(token))
            }
        }
    }
}

#[derive(Deserialize)]
struct ActionsToken {
    value: String,
}

/// The runner's token service, as `@actions/core`'s `getIDToken` calls it.
/// Its URL comes from the runner, so `--from`'s https rule does not apply.
async fn actions_token(http: &reqwest::Client, env: &Env<'_>, audience: &str) -> Result<SecretString, FetchError> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let (Some(url), Some(bearer)) = (
        set("ACTIONS_ID_TOKEN_REQUEST_URL"),
        set("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Err(FetchError::NotInActions);
    };
    // Errors drop the URL: it names the run, and is noise in a job log.
    let res = http
        .get(with_audience(&url, audience))
        .bearer_auth(bearer)
        .send()
        .await
        .map_err(|e| FetchError::Actions(e.without_url()))?;
    if !res.status().is_success() {
        return Err(FetchError::ActionsRefused(res.status()));
    }
    let body: ActionsToken = res.json().await.map_err(|e| FetchError::Actions(e.without_url()))?;
    if body.value.is_empty() {
        return Err(FetchError::ActionsRefused(reqwest::StatusCode::NO_CONTENT));
    }
    Ok(SecretString::from(body.value))
}

/// The runner's URL already carries `api-version`; the audience is appended.
fn with_audience(url: &str, audience: &str) -> String {
    let sep = if url.ends_with('?') || url.ends_with('&') {
        ""
    } else if url.contains('?') {
        "&"
    } else {
        "?"
    };
    format!("{url}{sep}audience={}", form_encode(audience))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::{FetchError, Subject, with_audience};

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    #[test]
    fn the_audience_is_appended_to_the_runner_url_encoded() {
        assert_eq!(
            with_audience("https://runner.test/idtoken?api-version=2.0", "https://mayfly.test"),
            "https://runner.test/idtoken?api-version=2.0&audience=https%3A%2F%2Fmayfly.test"
        );
        assert_eq!(
            with_audience("http://127.0.0.1:1/actions-token", "a b&c"),
            "http://127.0.0.1:1/actions-token?audience=a%20b%26c"
        );
        assert_eq!(with_audience("https://r.test/t?", "x"), "https://r.test/t?audience=x");
    }

    #[tokio::test]
    async fn gitlab_and_file_tokens_are_trimmed_and_must_not_be_empty() {
        let http = http();
        let env = |name: &str| match name {
            "MAYFLY_ID_TOKEN" => Some(" gl.oidc.jwt\n".to_string()),
            "EMPTY" => Some(" ".to_string()),
            _ => None,
        };
        let read = |s: Subject| {
            let http = http.clone();
            async move { s.read(&http, &env).await }
        };
        let t = read(Subject::Env("MAYFLY_ID_TOKEN".into())).await.unwrap();
        assert_eq!(t.expose_secret(), "gl.oidc.jwt");
        for name in ["EMPTY", "UNSET"] {
            let e = read(Subject::Env(name.into())).await.unwrap_err();
            assert!(matches!(&e, FetchError::NoIdToken(n) if n == name), "{e}");
            assert!(e.to_string().contains("id_tokens:"), "{e}");
        }

        let dir = std::env::temp_dir().join(format!("mayfly-subject-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = crate::testing::TempDir(dir.clone());
        let file = dir.join("token");
        std::fs::write(&file, "k8s.oidc.jwt\n").unwrap();
        let t = read(Subject::File(file.clone())).await.unwrap();
        assert_eq!(t.expose_secret(), "k8s.oidc.jwt");
        std::fs::write(&file, "\n").unwrap();
        let e = read(Subject::File(file.clone())).await.unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = read(Subject::File(dir.join("missing"))).await.unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[tokio::test]
    async fn outside_github_actions_the_missing_permission_is_named() {
        let http = http();
        let only_url = |name: &str| (name == "ACTIONS_ID_TOKEN_REQUEST_URL").then(|| "https://r.test/t".to_string());
        for env in [&(|_: &str| None) as &super::Env<'_>, &only_url] {
            let e = Subject::GithubActions { audience: "a".into() }
                .read(&http, env)
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::NotInActions));
            assert!(e.to_string().contains("id-token: write"), "{e}");
        }
    }
}
