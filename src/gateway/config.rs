//! The gateway's routes: one from flags, or several from a TOML file
//! (`[[route]]` tables; top-level `listen` and `issuer`, which flags
//! override). Decided once at start-up; a bad file stops the gateway with a
//! message naming the field, before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `mayfly gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Routes from a TOML file (several `[[route]]` tables).
    #[arg(long, env = "MAYFLY_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the gateway listens [default: 127.0.0.1:8430].
    #[arg(long, env = "MAYFLY_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// mayfly's URL (its issuer).
    #[arg(long, env = "MAYFLY_URL")]
    pub issuer: Option<String>,
    /// One route from flags: the public resource URI callers' tokens are for.
    #[arg(long)]
    pub resource: Option<String>,
    /// The MCP server's Streamable HTTP URL.
    #[arg(long)]
    pub upstream: Option<String>,
    /// The path the route is served at [default: the resource URI's path].
    #[arg(long)]
    pub path: Option<String>,
    /// The header the upstream credential goes in [default: Authorization, as `Bearer <credential>`].
    #[arg(long)]
    pub upstream_header: Option<String>,
    /// A file holding the upstream's static credential.
    #[arg(long)]
    pub upstream_credential_file: Option<PathBuf>,
    /// An environment variable holding the upstream's static credential.
    #[arg(long)]
    pub upstream_credential_env: Option<String>,
    /// Send the caller's identity to the upstream in `Mcp-Caller-*` headers.
    #[arg(long)]
    pub forward_identity: bool,
    /// How long the gateway keeps serving while mayfly cannot take its audit
    /// events, before it refuses requests (503).
    #[arg(long, env = "MAYFLY_GATEWAY_AUDIT_BUFFER", value_parser = humantime::parse_duration, default_value = "30s")]
    pub audit_buffer: Duration,
    /// The most audit events held while mayfly cannot take them.
    #[arg(long, env = "MAYFLY_GATEWAY_AUDIT_BUFFER_EVENTS", default_value_t = 10_000)]
    pub audit_buffer_events: usize,
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    issuer: Option<String>,
    #[serde(default)]
    route: Vec<FileRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    path: Option<String>,
    resource: String,
    upstream: Option<String>,
    command: Option<Vec<String>>,
    upstream_header: Option<String>,
    upstream_credential_file: Option<PathBuf>,
    upstream_credential_env: Option<String>,
    /// For `command` routes: the environment variable the server reads its credential from.
    upstream_env: Option<String>,
    #[serde(default)]
    forward_identity: bool,
}

/// Where a route's MCP server is.
#[derive(Debug, Clone)]
pub enum Upstream {
    Http(url::Url),
    /// A stdio server the gateway starts, one process per MCP session; the
    /// credential, if any, goes in the environment variable named here.
    Command {
        argv: Vec<String>,
        credential_env: Option<String>,
    },
}

#[derive(Clone)]
pub struct Route {
    /// Served at this path (no trailing slash; `/` only for a lone route at the root).
    pub path: String,
    /// The resource URI tokens must carry as `aud`.
    pub resource: String,
    pub upstream: Upstream,
    pub header: axum::http::HeaderName,
    /// The header's value, `Bearer <credential>` for Authorization.
    pub credential: Option<SecretString>,
    pub forward_identity: bool,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("path", &self.path)
            .field("resource", &self.resource)
            .field("upstream", &self.upstream)
            .field("header", &self.header)
            .field("credential", &self.credential.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub routes: Vec<Route>,
    pub audit_buffer: Duration,
    pub audit_buffer_events: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl GatewayConfig {
    /// Builds the configuration from flags, the file they name and the
    /// environment (`env`, read for the client secret and credentials).
    pub fn from_args(args: GatewayArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                Some(toml::from_str::<FileConfig>(&text).map_err(|e| err(format!("{}: {e}", path.display())))?)
            }
            None => None,
        };
        let flag_route = args.resource.is_some() || args.upstream.is_some();
        let (listen, issuer, file_routes) = match file {
            Some(f) => {
                if flag_route {
                    return Err(err("give routes by --config or by --resource/--upstream, not both"));
                }
                (f.listen, f.issuer, f.route)
            }
            None => (None, None, Vec::new()),
        };
        let issuer = args
            .issuer
            .clone()
            .or(issuer)
            .ok_or_else(|| err("name mayfly: --issuer (or MAYFLY_URL, or `issuer` in the file)"))?;
        let issuer = issuer.trim_end_matches('/').to_string();
        url::Url::parse(&issuer).map_err(|_| err(format!("issuer {issuer:?} is not a URL")))?;
        let routes = if flag_route {
            vec![FileRoute {
                path: args.path.clone(),
                resource: args
                    .resource
                    .clone()
                    .ok_or_else(|| err("--upstream needs --resource"))?,
                upstream: Some(
                    args.upstream
                        .clone()
                        .ok_or_else(|| err("--resource needs --upstream"))?,
                ),
                command: None,
                upstream_header: args.upstream_header.clone(),
                upstream_credential_file: args.upstream_credential_file.clone(),
                upstream_credential_env: args.upstream_credential_env.clone(),
                upstream_env: None,
                forward_identity: args.forward_identity,
            }]
        } else {
            file_routes
        };
        if routes.is_empty() {
            return Err(err(
                "no route: give --resource and --upstream, or --config with [[route]] tables",
            ));
        }
        let routes = routes
            .into_iter()
            .map(|r| route(r, &env))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in routes.iter().enumerate() {
            if routes[..i].iter().any(|b| b.path == a.path) {
                return Err(err(format!("two routes at path {}", a.path)));
            }
        }
        let client_id =
            env("MAYFLY_CLIENT_ID").ok_or_else(|| err("set MAYFLY_CLIENT_ID: the gateway's resource_server client"))?;
        let client_secret = match (env("MAYFLY_CLIENT_SECRET"), env("MAYFLY_CLIENT_SECRET_FILE")) {
            (Some(s), None) => s,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| err(format!("cannot read MAYFLY_CLIENT_SECRET_FILE {path}: {e}")))?
                .trim()
                .to_string(),
            (Some(_), Some(_)) => return Err(err("set MAYFLY_CLIENT_SECRET or MAYFLY_CLIENT_SECRET_FILE, not both")),
            (None, None) => return Err(err("set MAYFLY_CLIENT_SECRET or MAYFLY_CLIENT_SECRET_FILE")),
        };
        if args.audit_buffer_events == 0 {
            return Err(err("--audit-buffer-events must be at least 1"));
        }
        Ok(GatewayConfig {
            listen: args
                .listen
                .or(listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8430))),
            issuer,
            client_id,
            client_secret: SecretString::from(client_secret),
            routes,
            audit_buffer: args.audit_buffer,
            audit_buffer_events: args.audit_buffer_events,
        })
    }
}

fn route(r: FileRoute, env: &impl Fn(&str) -> Option<String>) -> Result<Route, ConfigError> {
    let resource = url::Url::parse(&r.resource).map_err(|_| err(format!("resource {:?} is not a URL", r.resource)))?;
    let path = r.path.unwrap_or_else(|| resource.path().to_string());
    let path = match path.trim_end_matches('/') {
        "" => "/".to_string(),
        p if p.starts_with('/')
            && !p.starts_with("/.well-known")
            && !matches!(p, "/healthz" | "/readyz" | "/metrics") =>
        {
            p.to_string()
        }
        p => {
            return Err(err(format!(
                "route path {p:?} must start with / and not shadow the gateway's own paths"
            )));
        }
    };
    let command_route = r.command.is_some();
    if command_route && r.upstream_header.is_some() {
        return Err(err(format!(
            "route {path}: a `command` server takes its credential in `upstream_env`, not a header"
        )));
    }
    if !command_route && r.upstream_env.is_some() {
        return Err(err(format!("route {path}: `upstream_env` is for `command` routes")));
    }
    let upstream = match (r.upstream, r.command) {
        (Some(u), None) => {
            let url = url::Url::parse(&u).map_err(|_| err(format!("upstream {u:?} is not a URL")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(err(format!("upstream {u:?}: http or https only")));
            }
            Upstream::Http(url)
        }
        (None, Some(argv)) if !argv.is_empty() => Upstream::Command {
            argv,
            credential_env: r.upstream_env.clone(),
        },
        (None, Some(_)) => return Err(err(format!("route {path}: `command` is empty"))),
        _ => {
            return Err(err(format!(
                "route {path}: give `upstream` (a URL) or `command`, exactly one"
            )));
        }
    };
    let header_name = r.upstream_header.unwrap_or_else(|| "authorization".into());
    let header = axum::http::HeaderName::from_bytes(header_name.as_bytes())
        .map_err(|_| err(format!("route {path}: {header_name:?} is not a header name")))?;
    let raw = match (r.upstream_credential_file, r.upstream_credential_env) {
        (Some(f), None) => Some(
            std::fs::read_to_string(&f)
                .map_err(|e| err(format!("route {path}: cannot read {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        (None, Some(name)) => Some(env(&name).ok_or_else(|| err(format!("route {path}: {name} is not set")))?),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(err(format!("route {path}: a credential file or env, not both"))),
    };
    let credential = match raw {
        Some(c) if c.is_empty() => return Err(err(format!("route {path}: the upstream credential is empty"))),
        Some(_) if command_route && r.upstream_env.is_none() => {
            return Err(err(format!(
                "route {path}: name the variable the server reads its credential from: `upstream_env`"
            )));
        }
        Some(c) if !command_route && header == axum::http::header::AUTHORIZATION => Some(format!("Bearer {c}")),
        other => other,
    };
    if let Some(c) = &credential {
        axum::http::HeaderValue::from_str(c)
            .map_err(|_| err(format!("route {path}: the credential is not a valid header value")))?;
    }
    Ok(Route {
        path,
        resource: r.resource,
        upstream,
        header,
        credential: credential.map(SecretString::from),
        forward_identity: r.forward_identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        g: GatewayArgs,
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "MAYFLY_CLIENT_ID" => Some("gw".into()),
            "MAYFLY_CLIENT_SECRET" => Some("s".into()),
            "PAT" => Some("ghp_x".into()),
            _ => None,
        }
    }

    #[test]
    fn one_route_from_flags_puts_the_credential_in_a_bearer_authorization() {
        let cli = Cli::parse_from([
            "gw",
            "--issuer",
            "http://127.0.0.1:8420/",
            "--resource",
            "https://mcp.example/github",
            "--upstream",
            "http://127.0.0.1:9000/mcp",
            "--upstream-credential-env",
            "PAT",
        ]);
        let c = GatewayConfig::from_args(cli.g, env).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:8420");
        assert_eq!(c.routes[0].path, "/github");
        use secrecy::ExposeSecret;
        assert_eq!(c.routes[0].credential.as_ref().unwrap().expose_secret(), "Bearer ghp_x");
        assert!(!format!("{:?}", c.routes[0]).contains("ghp_x"));
    }

    #[test]
    fn a_route_needs_exactly_one_upstream_and_a_path_of_its_own() {
        let dir = std::env::temp_dir().join(format!("mayfly-gw-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("g.toml");
        let parse = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let cli = Cli::parse_from(["gw", "--config", file.to_str().unwrap()]);
            GatewayConfig::from_args(cli.g, env)
                .map(|c| c.routes.len())
                .map_err(|e| e.0)
        };
        let both =
            "issuer = \"http://i\"\n[[route]]\nresource = \"http://r/a\"\nupstream = \"http://u\"\ncommand = [\"x\"]\n";
        assert!(parse(both).unwrap_err().contains("exactly one"));
        let dup = "issuer = \"http://i\"\n[[route]]\nresource = \"http://r/a\"\nupstream = \"http://u\"\n[[route]]\nresource = \"http://r/a\"\ncommand = [\"x\"]\n";
        assert!(parse(dup).unwrap_err().contains("two routes"));
        let shadow = "issuer = \"http://i\"\n[[route]]\npath = \"/healthz\"\nresource = \"http://r/a\"\nupstream = \"http://u\"\n";
        assert!(parse(shadow).unwrap_err().contains("shadow"));
        let typo = "issuer = \"http://i\"\n[[route]]\nresource = \"http://r/a\"\nupstrem = \"http://u\"\n";
        assert!(parse(typo).unwrap_err().contains("unknown field"));
        let ok = "issuer = \"http://i\"\n[[route]]\nresource = \"http://r/a\"\nupstream = \"http://u\"\n[[route]]\nresource = \"http://r/b\"\ncommand = [\"x\"]\n";
        assert_eq!(parse(ok).unwrap(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
