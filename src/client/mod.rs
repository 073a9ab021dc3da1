//! `mayfly token`: the client CI jobs, agent start-up scripts and sidecars run
//! to get a token. This module owns its flags, the credential it presents to
//! mayfly's token endpoint, and handing the answer on as the caller needs.
//!
//! The credential is never a flag (it would show in process listings and shell
//! history): either a client secret from MAYFLY_CLIENT_SECRET, or, with no
//! stored secret, the workload's own OIDC token (`subject`), which mayfly's
//! trust policy maps to a tenant, workflow and workload.

mod files;
mod refresh;
mod subject;
mod usage;

use usage::{check_output, check_url, issuer_base};

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use refresh::refresh_into;
use subject::Subject;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const JWT_BEARER_CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// mayfly's URL (its issuer).
    #[arg(long = "from", env = "MAYFLY_URL")]
    pub url: String,
    /// The MCP server's resource URI.
    #[arg(long, env = "MAYFLY_RESOURCE")]
    pub resource: String,
    /// The scopes to ask for, space-separated [default: every scope the client
    /// holds on the resource; ask for fewer to get a narrower token].
    #[arg(long, env = "MAYFLY_SCOPE")]
    pub scope: Option<String>,
    /// With a client secret only: with an OIDC token the trust policy decides.
    #[arg(long, env = "MAYFLY_WORKFLOW")]
    pub workflow: Option<String>,
    /// With a client secret only: with an OIDC token the trust policy decides.
    #[arg(long, env = "MAYFLY_WORKLOAD")]
    pub workload: Option<String>,
    /// Requested lifetime in seconds (capped by the server).
    #[arg(long, env = "MAYFLY_EXPIRES_IN")]
    pub expires_in: Option<u64>,
    /// Required with a client secret. With an OIDC token, authenticates as this
    /// client (private_key_jwt) instead of using the jwt-bearer grant.
    #[arg(long, env = "MAYFLY_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Only from the environment: secrets do not belong in argv.
    #[arg(skip)]
    pub client_secret: Option<SecretString>,
    /// Exchange this GitHub Actions job's OIDC token (the job needs
    /// `permissions: id-token: write`).
    #[arg(long, help_heading = "Without a stored secret")]
    pub github_actions: bool,
    /// With --github-actions: the audience to request [default: the --from URL].
    #[arg(long, help_heading = "Without a stored secret")]
    pub audience: Option<String>,
    /// Exchange the GitLab CI OIDC token in the variable named by --id-token-env.
    #[arg(long, help_heading = "Without a stored secret")]
    pub gitlab: bool,
    /// With --gitlab: the variable the job's `id_tokens:` block fills
    /// [default: MAYFLY_ID_TOKEN].
    #[arg(long, value_name = "NAME", help_heading = "Without a stored secret")]
    pub id_token_env: Option<String>,
    /// Exchange the OIDC token in this file (such as a Kubernetes projected
    /// service-account token); re-read for every refresh.
    #[arg(long, value_name = "PATH", help_heading = "Without a stored secret")]
    pub subject_token_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "token")]
    pub output: Output,
    /// With `--output env-file`: the file to write `MAYFLY_TOKEN=…` to.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Keep FILE holding a fresh bare token (mode 0600) for an agent runtime:
    /// refresh at two thirds of its lifetime until SIGTERM or SIGINT.
    #[arg(long, value_name = "FILE")]
    pub refresh_into: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The bare access token on stdout.
    Token,
    /// The token endpoint's JSON answer on stdout.
    Json,
    /// `token=…` appended to $GITHUB_OUTPUT, and `::add-mask::` on stdout.
    Github,
    /// `MAYFLY_TOKEN=…` written to --env-file (mode 0600).
    EnvFile,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "set MAYFLY_CLIENT_SECRET in the environment, or exchange an OIDC token with \
         --github-actions, --gitlab or --subject-token-file"
    )]
    NoSecret,
    #[error("--client-id (or MAYFLY_CLIENT_ID) is required with a client secret")]
    NoClientId,
    #[error("choose one of --github-actions, --gitlab and --subject-token-file")]
    TwoModes,
    #[error(
        "{0} cannot be used with --github-actions, --gitlab or --subject-token-file: \
         mayfly's trust policy decides it from the OIDC token"
    )]
    DecidedByPolicy(&'static str),
    #[error("{0}")]
    Usage(&'static str),
    #[error(
        "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: \
         not in GitHub Actions, or the job lacks `permissions: id-token: write`"
    )]
    NotInActions,
    #[error("cannot get the job's OIDC token from GitHub: {0}")]
    Actions(reqwest::Error),
    #[error("GitHub's OIDC token service answered {0}")]
    ActionsRefused(reqwest::StatusCode),
    #[error("{0} is not set or empty: name it in the job's `id_tokens:` block (or pass --id-token-env)")]
    NoIdToken(String),
    #[error("cannot read the OIDC token from {path}: {reason}")]
    SubjectFile { path: String, reason: String },
    #[error("cannot reach mayfly: {0}")]
    Http(#[from] reqwest::Error),
    #[error("mayfly refused: {error}: {description}")]
    Refused { error: String, description: String },
    #[error("--from is not a URL: {0}")]
    BadUrl(String),
    #[error(
        "refusing to send credentials over plain http to `{0}`: use an https URL for --from \
         (plain http is allowed only to localhost, 127.0.0.0/8 and [::1])"
    )]
    Insecure(String),
    #[error("{0}")]
    Output(String),
    #[error("mayfly's answer has no expires_in: cannot schedule the refresh")]
    NoExpiry,
    #[error("the token in {path} has expired and no new one could be fetched: {last}")]
    Expired { path: String, last: Box<FetchError> },
    #[error("cannot watch for SIGTERM: {0}")]
    Signal(std::io::Error),
}

impl FetchError {
    /// Worth another try: mayfly was unreachable or said so itself (503).
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Http(e) => e.is_connect() || e.is_timeout(),
            FetchError::Refused { error, .. } => {
                error == "temporarily_unavailable" || ["502", "503", "504"].iter().any(|c| error.starts_with(c))
            }
            _ => false,
        }
    }
}

/// Looks up an environment variable; injected so tests need not mutate the process's.
pub type Env<'a> = dyn Fn(&str) -> Option<String> + Send + Sync + 'a;

/// What proves the caller's identity to mayfly.
#[derive(Debug)]
enum Credential<'a> {
    Secret {
        client_id: &'a str,
        secret: &'a SecretString,
    },
    /// The workload's OIDC token: the grant itself, or with a client id the
    /// client's assertion (a trust policy binds that workload to the client).
    Federated {
        subject: Subject,
        client_id: Option<&'a str>,
    },
}

/// A checked `mayfly token` invocation, ready to fetch as often as needed.
pub struct Fetcher<'a> {
    args: &'a TokenArgs,
    credential: Credential<'a>,
    env: Box<Env<'a>>,
    http: reqwest::Client,
    token_url: String,
}

impl<'a> Fetcher<'a> {
    /// Checks the flags against each other and `--from`, before any request.
    pub fn new(
        args: &'a TokenArgs,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'a,
    ) -> Result<Self, FetchError> {
        let credential = credential(args)?;
        if args.refresh_into.is_some() && args.output != Output::Token {
            return Err(FetchError::Usage(
                "--refresh-into writes the bare token to its file: drop --output",
            ));
        }
        check_url(&args.url)?;
        check_output(args, &env)?;
        // ring is the only crypto provider in this binary; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Fetcher {
            args,
            credential,
            env: Box::new(env),
            http,
            token_url: format!("{}/oauth2/token", issuer_base(&args.url)),
        })
    }

    /// One shot (a CI step, an agent's start-up): mayfly briefly unable to
    /// answer (a 503, a connection error, a timeout) is retried with backoff,
    /// four attempts over about seven seconds; a refusal is final at once.
    pub async fn fetch_retrying(&self) -> Result<serde_json::Value, FetchError> {
        let mut wait = std::time::Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.fetch().await {
                Err(e) if attempt < 4 && e.is_transient() => {
                    eprintln!("mayfly token: {e}; trying again in {} ms", wait.as_millis());
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Fetches a token and returns the token endpoint's raw JSON answer.
    pub async fn fetch(&self) -> Result<serde_json::Value, FetchError> {
        let mut req = self.http.post(&self.token_url);
        let assertion = match &self.credential {
            Credential::Secret { client_id, secret } => {
                req = req.basic_auth(form_encode(client_id), Some(form_encode(secret.expose_secret())));
                None
            }
            Credential::Federated { subject, .. } => Some(subject.read(&self.http, &*self.env).await?),
        };
        let res = req.form(&self.form(assertion.as_ref())).send().await?;
        if !res.status().is_success() {
            let status = res.status();
            let body: Option<OAuthErrorBody> = res.json().await.ok();
            return Err(match body {
                Some(b) => FetchError::Refused {
                    error: b.error,
                    description: b.error_description,
                },
                None => FetchError::Refused {
                    error: status.to_string(),
                    description: String::new(),
                },
            });
        }
        Ok(res.json().await?)
    }

    /// The token request's form; `assertion` is the OIDC token in the federated modes.
    fn form(&self, assertion: Option<&SecretString>) -> Vec<(&'static str, String)> {
        let args = self.args;
        let assertion = || assertion.map(|a| a.expose_secret().to_string()).unwrap_or_default();
        let mut form: Vec<(&'static str, String)> = match &self.credential {
            Credential::Secret { .. } => vec![("grant_type", "client_credentials".into())],
            Credential::Federated { client_id: None, .. } => {
                vec![("grant_type", JWT_BEARER_GRANT.into()), ("assertion", assertion())]
            }
            Credential::Federated {
                client_id: Some(id), ..
            } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", (*id).into()),
                ("client_assertion_type", JWT_BEARER_CLIENT_ASSERTION.into()),
                ("client_assertion", assertion()),
            ],
        };
        form.push(("resource", args.resource.clone()));
        // `credential` has refused workflow and workload in the federated modes.
        for (name, value) in [
            ("scope", &args.scope),
            ("workflow", &args.workflow),
            ("workload", &args.workload),
        ] {
            if let Some(v) = value {
                form.push((name, v.clone()));
            }
        }
        if let Some(n) = args.expires_in {
            form.push(("expires_in", n.to_string()));
        }
        form
    }
}

/// Picks the credential the flags ask for, refusing ambiguous combinations.
fn credential(args: &TokenArgs) -> Result<Credential<'_>, FetchError> {
    let mut modes = Vec::new();
    if args.github_actions {
        let audience = args
            .audience
            .clone()
            .unwrap_or_else(|| issuer_base(&args.url).to_string());
        modes.push(Subject::GithubActions { audience });
    }
    if args.gitlab {
        let name = args.id_token_env.clone().unwrap_or_else(|| "MAYFLY_ID_TOKEN".into());
        modes.push(Subject::Env(name));
    }
    if let Some(path) = &args.subject_token_file {
        modes.push(Subject::File(path.clone()));
    }
    if args.audience.is_some() && !args.github_actions {
        return Err(FetchError::Usage(
            "--audience applies to --github-actions only: elsewhere the platform sets the OIDC token's audience",
        ));
    }
    if args.id_token_env.is_some() && !args.gitlab {
        return Err(FetchError::Usage("--id-token-env applies to --gitlab only"));
    }
    let subject = match modes.len() {
        0 => {
            return match (&args.client_id, &args.client_secret) {
                (_, None) => Err(FetchError::NoSecret),
                (None, Some(_)) => Err(FetchError::NoClientId),
                (Some(client_id), Some(secret)) => Ok(Credential::Secret { client_id, secret }),
            };
        }
        1 => modes.remove(0),
        _ => return Err(FetchError::TwoModes),
    };
    if args.workflow.is_some() {
        return Err(FetchError::DecidedByPolicy("--workflow (or MAYFLY_WORKFLOW)"));
    }
    if args.workload.is_some() {
        return Err(FetchError::DecidedByPolicy("--workload (or MAYFLY_WORKLOAD)"));
    }
    Ok(Credential::Federated {
        subject,
        client_id: args.client_id.as_deref(),
    })
}

#[derive(Debug, Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded inside Basic.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn access_token(answer: &serde_json::Value) -> Result<&str, FetchError> {
    answer["access_token"]
        .as_str()
        .ok_or_else(|| FetchError::Output("no access_token in the answer".into()))
}

/// Hands the token on as `args.output` says; returns what goes to stdout.
pub fn deliver(args: &TokenArgs, answer: &serde_json::Value) -> Result<String, FetchError> {
    let token = access_token(answer)?;
    match args.output {
        Output::Token => Ok(token.to_string()),
        Output::Json => Ok(answer.to_string()),
        Output::Github => {
            let path = std::env::var_os("GITHUB_OUTPUT")
                .ok_or_else(|| FetchError::Output("GITHUB_OUTPUT is not set (not in GitHub Actions?)".into()))?;
            files::append(std::path::Path::new(&path), &format!("token={token}\n"))?;
            Ok(format!("::add-mask::{token}"))
        }
        Output::EnvFile => {
            let path = args
                .env_file
                .as_ref()
                .ok_or_else(|| FetchError::Output("--env-file is required".into()))?;
            files::write_private(path, &format!("MAYFLY_TOKEN={token}\n"))?;
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use secrecy::SecretString;

    use super::{FetchError, Fetcher, Subject, TokenArgs, check_url, credential, form_encode};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TokenArgs,
    }

    fn args(extra: &[&str]) -> TokenArgs {
        let base = [
            "mayfly",
            "--from",
            "https://mayfly.test/",
            "--resource",
            "https://mcp.test/x",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).unwrap().args
    }

    fn with_secret(mut a: TokenArgs) -> TokenArgs {
        a.client_secret = Some(SecretString::from("mfy_cs_s"));
        a
    }

    fn form(a: &TokenArgs) -> Vec<(&'static str, String)> {
        let f = Fetcher::new(a, |_| None).unwrap();
        f.form(Some(&SecretString::from("oidc.jwt")))
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("mfy_cs_AZaz09-_"), "mfy_cs_AZaz09-_");
        assert_eq!(form_encode("a:b c+"), "a%3Ab%20c%2B");
    }

    #[test]
    fn each_mode_sends_its_own_grant() {
        let secret = with_secret(args(&["--client-id", "ci", "--workflow", "release", "--scope", "s"]));
        let f = Fetcher::new(&secret, |_| None).unwrap();
        assert_eq!(
            f.form(None),
            [
                ("grant_type", "client_credentials".to_string()),
                ("resource", "https://mcp.test/x".into()),
                ("scope", "s".into()),
                ("workflow", "release".into()),
            ]
        );

        let bearer = args(&["--subject-token-file", "/t", "--expires-in", "60"]);
        assert_eq!(
            form(&bearer),
            [
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()),
                ("assertion", "oidc.jwt".into()),
                ("resource", "https://mcp.test/x".into()),
                ("expires_in", "60".into()),
            ]
        );

        // A secret in the environment is not sent when an OIDC token is asked for.
        let assertion = with_secret(args(&["--gitlab", "--client-id", "ci"]));
        assert_eq!(
            form(&assertion),
            [
                ("grant_type", "client_credentials".to_string()),
                ("client_id", "ci".into()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()
                ),
                ("client_assertion", "oidc.jwt".into()),
                ("resource", "https://mcp.test/x".into()),
            ]
        );
    }

    #[test]
    fn the_subject_source_follows_the_flags() {
        let subject = |extra: &[&str]| match credential(&args(extra)).unwrap() {
            super::Credential::Federated { subject, .. } => subject,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            subject(&["--github-actions"]),
            Subject::GithubActions {
                audience: "https://mayfly.test".into()
            }
        );
        assert_eq!(
            subject(&["--github-actions", "--audience", "mayfly"]),
            Subject::GithubActions {
                audience: "mayfly".into()
            }
        );
        assert_eq!(subject(&["--gitlab"]), Subject::Env("MAYFLY_ID_TOKEN".into()));
        assert_eq!(
            subject(&["--gitlab", "--id-token-env", "MY_TOKEN"]),
            Subject::Env("MY_TOKEN".into())
        );
    }

    #[test]
    fn ambiguous_or_incomplete_flags_are_refused_before_any_request() {
        let refused = |a: TokenArgs| Fetcher::new(&a, |_| None).err().unwrap();
        assert!(matches!(refused(args(&[])), FetchError::NoSecret));
        assert!(matches!(refused(args(&["--client-id", "ci"])), FetchError::NoSecret));
        assert!(matches!(refused(with_secret(args(&[]))), FetchError::NoClientId));
        for two in [
            &["--github-actions", "--gitlab"][..],
            &["--gitlab", "--subject-token-file", "/t"],
            &["--github-actions", "--subject-token-file", "/t"],
        ] {
            assert!(matches!(refused(args(two)), FetchError::TwoModes), "{two:?}");
        }
        let e = refused(args(&["--gitlab", "--workflow", "release"]));
        assert!(
            e.to_string().contains("--workflow") && e.to_string().contains("trust policy"),
            "{e}"
        );
        let e = refused(args(&["--subject-token-file", "/t", "--workload", "w"]));
        assert!(e.to_string().contains("--workload"), "{e}");
        let e = refused(args(&["--gitlab", "--audience", "a"]));
        assert!(e.to_string().contains("--audience"), "{e}");
        let e = refused(args(&["--github-actions", "--id-token-env", "X"]));
        assert!(e.to_string().contains("--id-token-env"), "{e}");
        let e = refused(args(&["--gitlab", "--refresh-into", "/f", "--output", "json"]));
        assert!(e.to_string().contains("--refresh-into"), "{e}");
        assert!(
            Fetcher::new(
                &args(&["--gitlab", "--refresh-into", "/f", "--output", "token"]),
                |_| None
            )
            .is_ok()
        );

        let mut insecure = args(&["--gitlab"]);
        insecure.url = "http://mayfly.test".into();
        assert!(matches!(refused(insecure), FetchError::Insecure(_)));
    }

    #[test]
    fn the_secret_goes_over_https_or_to_this_machine_only() {
        for ok in [
            "https://mayfly.example",
            "https://10.0.0.1:8420/",
            "http://localhost:8420",
            "http://LOCALHOST",
            "http://127.0.0.1:8420",
            "http://127.8.9.10",
            "http://2130706433", // 127.0.0.1, as the URL parser reads it
            "http://[::1]:8420",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://mayfly.example",
            "http://10.0.0.1:8420",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "http://127.0.0.1@evil.example",
            "http://[::ffff:10.0.0.1]",
            "ftp://localhost",
        ] {
            let e = check_url(refused).unwrap_err();
            assert!(matches!(e, FetchError::Insecure(_)), "{refused}: {e}");
            assert!(e.to_string().contains("use an https URL for --from"), "{e}");
        }
        assert!(matches!(check_url("mayfly.example"), Err(FetchError::BadUrl(_))));
    }
}
