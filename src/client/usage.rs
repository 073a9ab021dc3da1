//! What `mayfly token` checks before it sends anything: where the token
//! will go, and that credentials travel only over TLS or to this machine.

use super::{FetchError, Output, TokenArgs};

/// `--from` is mayfly's URL; one that names the token endpoint itself is understood.
pub(super) fn issuer_base(url: &str) -> &str {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/oauth2/token").unwrap_or(url)
}

/// Where the token will go, checked before anything is minted: a token that
/// cannot be delivered would leave a lease behind for nothing.
pub(super) fn check_output(args: &TokenArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<(), FetchError> {
    match args.output {
        Output::Github if env("GITHUB_OUTPUT").is_none_or(|v| v.is_empty()) => Err(FetchError::Usage(
            "--output github writes to $GITHUB_OUTPUT, which is not set (not in GitHub Actions?)",
        )),
        Output::EnvFile if args.env_file.is_none() => Err(FetchError::Usage("--output env-file needs --env-file")),
        Output::Token | Output::Json | Output::Github if args.env_file.is_some() => {
            Err(FetchError::Usage("--env-file goes with --output env-file"))
        }
        _ => Ok(()),
    }
}

/// Credentials travel in the request: only over TLS, or to this machine.
pub(super) fn check_url(url: &str) -> Result<(), FetchError> {
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
