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
    #[error("--from is not a URL: {0}")]
    BadUrl(String),
    #[error(
        "refusing to send the client secret over plain http to `{0}`: use an https URL for --from \
         (plain http is allowed only to localhost, 127.0.0.0/8 and [::1])"
    )]
    Insecure(String),
    #[error("{0}")]
    Output(String),
}

/// The client secret travels in the request: only over TLS, or to this machine.
fn check_url(url: &str) -> Result<(), FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::BadUrl(e.to_string()))?;
    // The URL parser normalises hosts: lowercase names, dotted IPv4, bracketed IPv6.
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(FetchError::Insecure(format!("{}://{}", parsed.scheme(), host))),
    }
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
    check_url(&args.url)?;
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

/// Writes `content` to a new owner-only file beside `path` and renames it
/// over `path`, so the token is never readable by others, even briefly, and
/// whatever a link at `path` points at is never written to.
fn write_private(path: &Path, content: &str) -> Result<(), FetchError> {
    let fail = |e: std::io::Error| FetchError::Output(format!("{}: {e}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(FetchError::Output(format!(
                "{}: is a symbolic link; refusing to write the token through it",
                path.display()
            )));
        }
        Ok(m) if !m.is_file() => {
            return Err(FetchError::Output(format!("{}: is not a regular file", path.display())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let name = path
        .file_name()
        .ok_or_else(|| FetchError::Output(format!("{}: not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let tmp = dir.join(tmp_name);

    let mut options = std::fs::OpenOptions::new();
    // create_new: never open something already there (nor follow a link planted at the name).
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let f = options.open(&tmp).map_err(fail)?;
    if let Err(e) = fill_and_rename(f, content, &tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    // Make the rename itself durable; failing here loses nothing written.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn fill_and_rename(mut f: std::fs::File, content: &str, tmp: &Path, path: &Path) -> std::io::Result<()> {
    // The umask may have narrowed the mode; fix it on the handle, not by name.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    drop(f);
    // rename replaces a link at `path` rather than following it.
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::{FetchError, check_url, form_encode, write_private};

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("mfy_cs_AZaz09-_"), "mfy_cs_AZaz09-_");
        assert_eq!(form_encode("a:b c+"), "a%3Ab%20c%2B");
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

    #[cfg(unix)]
    #[test]
    fn the_env_file_is_replaced_by_a_private_file_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mayfly-client-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = crate::testing::TempDir(dir.clone());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let target = dir.join("elsewhere");
        std::fs::write(&target, "precious\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("link.env");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_private(&link, "MAYFLY_TOKEN=t\n").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(mode(&target), 0o644);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());

        let existing = dir.join("existing.env");
        std::fs::write(&existing, "old\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&existing, "MAYFLY_TOKEN=t\n").unwrap();
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "MAYFLY_TOKEN=t\n");
        assert_eq!(mode(&existing), 0o600);

        let fresh = dir.join("fresh.env");
        write_private(&fresh, "MAYFLY_TOKEN=u\n").unwrap();
        assert_eq!(mode(&fresh), 0o600);

        assert!(
            write_private(&dir, "MAYFLY_TOKEN=t\n").is_err(),
            "a directory is not replaced"
        );
        // No temporary files are left behind.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["elsewhere", "existing.env", "fresh.env", "link.env"]);
    }
}
