//! `mayfly token`: the client CI jobs and agent start-up scripts run to get a
//! token. It reads the client secret from the environment (never a flag, so
//! it stays out of process listings and shell history) and hands the token
//! on as the caller needs: printed, as JSON, into `$GITHUB_OUTPUT` (masked),
//! or into an env file readable only by its owner.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// mayfly's URL (its issuer).
    #[arg(long = "from", env = "MAYFLY_URL")]
    pub url: String,
    /// The MCP server's resource URI.
    #[arg(long, env = "MAYFLY_RESOURCE")]
    pub resource: String,
    #[arg(long, env = "MAYFLY_SCOPE")]
    pub scope: Option<String>,
    #[arg(long, env = "MAYFLY_WORKFLOW")]
    pub workflow: Option<String>,
    #[arg(long, env = "MAYFLY_WORKLOAD")]
    pub workload: Option<String>,
    /// Requested lifetime in seconds (capped by the server).
    #[arg(long, env = "MAYFLY_EXPIRES_IN")]
    pub expires_in: Option<u64>,
    #[arg(long, env = "MAYFLY_CLIENT_ID")]
    pub client_id: String,
    /// Only from the environment: secrets do not belong in argv.
    #[arg(skip)]
    pub client_secret: Option<SecretString>,
    #[arg(long, value_enum, default_value = "token")]
    pub output: Output,
    /// With `--output env-file`: the file to write `MAYFLY_TOKEN=…` to.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
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
    #[error("set MAYFLY_CLIENT_SECRET in the environment")]
    NoSecret,
    #[error("cannot reach mayfly: {0}")]
    Http(#[from] reqwest::Error),
    #[error("mayfly refused: {error}: {description}")]
    Refused { error: String, description: String },
    #[error("{0}")]
    Output(String),
}

#[derive(Debug, Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Fetches a token with client credentials and returns the raw JSON answer.
pub async fn fetch(args: &TokenArgs) -> Result<serde_json::Value, FetchError> {
    // ring is the only crypto provider in this binary; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secret = args.client_secret.as_ref().ok_or(FetchError::NoSecret)?;
    let mut form: Vec<(&str, String)> = vec![
        ("grant_type", "client_credentials".into()),
        ("resource", args.resource.clone()),
    ];
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
    let url = format!("{}/oauth2/token", args.url.trim_end_matches('/'));
    let res = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(url)
        .basic_auth(form_encode(&args.client_id), Some(form_encode(secret.expose_secret())))
        .form(&form)
        .send()
        .await?;
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

/// RFC 6749 §2.3.1: client id and secret are form-encoded inside Basic.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Hands the token on as `args.output` says; returns what goes to stdout.
pub fn deliver(args: &TokenArgs, answer: &serde_json::Value) -> Result<String, FetchError> {
    let token = answer["access_token"]
        .as_str()
        .ok_or_else(|| FetchError::Output("no access_token in the answer".into()))?;
    match args.output {
        Output::Token => Ok(token.to_string()),
        Output::Json => Ok(answer.to_string()),
        Output::Github => {
            let path = std::env::var_os("GITHUB_OUTPUT")
                .ok_or_else(|| FetchError::Output("GITHUB_OUTPUT is not set (not in GitHub Actions?)".into()))?;
            append(Path::new(&path), &format!("token={token}\n"))?;
            Ok(format!("::add-mask::{token}"))
        }
        Output::EnvFile => {
            let path = args
                .env_file
                .as_ref()
                .ok_or_else(|| FetchError::Output("--env-file is required".into()))?;
            write_private(path, &format!("MAYFLY_TOKEN={token}\n"))?;
            Ok(String::new())
        }
    }
}

fn append(path: &Path, line: &str) -> Result<(), FetchError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| FetchError::Output(format!("{}: {e}", path.display())))?;
    f.write_all(line.as_bytes())
        .map_err(|e| FetchError::Output(format!("{}: {e}", path.display())))
}

fn write_private(path: &Path, content: &str) -> Result<(), FetchError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let fail = |e: std::io::Error| FetchError::Output(format!("{}: {e}", path.display()));
    let mut f = options.open(path).map_err(fail)?;
    // An existing file keeps its mode on open: narrow it before writing the token.
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(fail)?;
    f.write_all(content.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::form_encode;

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("mfy_cs_AZaz09-_"), "mfy_cs_AZaz09-_");
        assert_eq!(form_encode("a:b c+"), "a%3Ab%20c%2B");
    }
}
