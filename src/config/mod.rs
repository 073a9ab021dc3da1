//! Configuration: environment variables with matching flags, parsed once at
//! start and validated against each other before anything listens. Secrets
//! have no flags: they come from the environment or a file, never argv, where
//! `ps` and shell history would show them.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

mod proxies;
mod secrets;
pub mod signer;

use secrets::{read_secret, weak_secret};
pub use signer::{SignerArgs, SignerConfig, Unseal};

/// Environment variables holding secrets, read by [`Config::from_args`].
pub const MASTER_KEY_ENV: &str = "MAYFLY_MASTER_KEY";
pub const MASTER_KEY_PREVIOUS_ENV: &str = "MAYFLY_MASTER_KEY_PREVIOUS";
pub const BOOTSTRAP_ADMIN_SECRET_ENV: &str = "MAYFLY_BOOTSTRAP_ADMIN_SECRET";

/// Flags and environment for `mayfly serve` (and `mayfly migrate`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MAYFLY_LISTEN", default_value = "127.0.0.1:8420")]
    pub listen: SocketAddr,

    /// `sqlite://path` (embedded, single node) or `postgres://…` (replicas).
    #[arg(
        long,
        env = "MAYFLY_DATABASE_URL",
        default_value = "sqlite://./mayfly-data/mayfly.db"
    )]
    pub database_url: String,

    /// Issuer URL (`iss`, and the admin API's resource URI). Default `http://{listen}`.
    #[arg(long, env = "MAYFLY_ISSUER")]
    pub issuer: Option<String>,

    /// File holding the master key (instead of MAYFLY_MASTER_KEY, read from
    /// the environment only): 32 bytes, base64 or hex.
    #[arg(long, env = "MAYFLY_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    #[arg(long, env = "MAYFLY_KEY_ROTATION_PERIOD", default_value = "24h", value_parser = parse_duration)]
    pub key_rotation_period: Duration,

    #[arg(long, env = "MAYFLY_KEY_PUBLISH_LEAD", default_value = "1h", value_parser = parse_duration)]
    pub key_publish_lead: Duration,

    #[arg(long, env = "MAYFLY_JWKS_MAX_AGE", default_value = "300s", value_parser = parse_duration)]
    pub jwks_max_age: Duration,

    /// TTL of a token when neither the request nor the resource says otherwise.
    #[arg(long, env = "MAYFLY_DEFAULT_TTL", default_value = "15m", value_parser = parse_duration)]
    pub default_ttl: Duration,

    /// Hard ceiling on any token's lifetime.
    #[arg(long, env = "MAYFLY_MAX_TTL", default_value = "1h", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// File holding the secret of the bootstrap admin client `mayfly-admin`
    /// (instead of MAYFLY_BOOTSTRAP_ADMIN_SECRET, read from the environment
    /// only); used only on an empty database.
    #[arg(long, env = "MAYFLY_BOOTSTRAP_ADMIN_SECRET_FILE")]
    pub bootstrap_admin_secret_file: Option<PathBuf>,

    /// Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed.
    #[arg(long, env = "MAYFLY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<Cidr>,

    /// How long expired leases stay queryable before they are pruned.
    #[arg(long, env = "MAYFLY_LEASE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub lease_retention: Duration,

    /// Algorithm of new signing keys: ES256 (default) or EdDSA.
    #[arg(long, env = "MAYFLY_SIGNING_ALG", default_value = "ES256", value_parser = parse_alg)]
    pub signing_alg: crate::keys::Alg,

    /// File holding the previous master key (instead of
    /// MAYFLY_MASTER_KEY_PREVIOUS, read from the environment only), still
    /// accepted for reading while `mayfly keys rewrap` runs.
    #[arg(long, env = "MAYFLY_MASTER_KEY_PREVIOUS_FILE")]
    pub master_key_previous_file: Option<PathBuf>,

    /// Failed client authentications allowed per source address per minute.
    #[arg(long, env = "MAYFLY_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    pub auth_failure_limit: u32,

    /// Live clients a tenant may have; creating one more answers 409.
    #[arg(long, env = "MAYFLY_MAX_CLIENTS_PER_TENANT", default_value_t = 10_000)]
    pub max_clients_per_tenant: u32,

    /// Seed a `demo` tenant, resource and client and print a command that mints a token.
    #[arg(long, env = "MAYFLY_DEV")]
    pub dev: bool,

    /// Move the database to this instance's issuer (MAYFLY_ISSUER). Without
    /// it, an issuer other than the one the database was set up with stops
    /// start-up: a replica started with the wrong URL would otherwise lock the
    /// admin out of every other replica.
    #[arg(long, env = "MAYFLY_CHANGE_ISSUER")]
    pub change_issuer: bool,

    /// A separate address for `/metrics` and the detailed `/readyz` (then the
    /// public listener answers `/metrics` 404 and `/readyz` with its status only).
    #[arg(long, env = "MAYFLY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// The issuers trust policies may name (issuer URLs or hosts,
    /// comma-separated); unset: any https issuer on a public address.
    #[arg(long, env = "MAYFLY_FEDERATION_ISSUERS", value_delimiter = ',',
          value_parser = crate::federation::reach::AllowedIssuer::parse)]
    pub federation_issuers: Vec<crate::federation::reach::AllowedIssuer>,

    /// Allow plain-http issuers on loopback (tests, local development);
    /// implied by --dev.
    #[arg(long, env = "MAYFLY_FEDERATION_ALLOW_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub federation_allow_loopback: bool,

    /// DPoP nonces (RFC 9449 §8): `required` makes every proof at the token
    /// endpoint carry a fresh server nonce (answered with `use_dpop_nonce`).
    #[arg(long, env = "MAYFLY_DPOP_NONCE", default_value = "off", value_enum)]
    pub dpop_nonce: DpopNonce,

    /// Append every integrated audit event and signed checkpoint to this
    /// file as NDJSON (a copy outside the database).
    #[arg(long, env = "MAYFLY_AUDIT_EXPORT_FILE")]
    pub audit_export_file: Option<PathBuf>,

    /// POST audit events and checkpoints in NDJSON batches to this log
    /// collector (at least once; dedupe on `log_index`).
    #[arg(long, env = "MAYFLY_AUDIT_EXPORT_URL", hide_env_values = true)]
    pub audit_export_url: Option<String>,

    #[command(flatten)]
    pub signer: SignerArgs,
}

/// Whether DPoP proofs must carry a server-issued nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DpopNonce {
    #[default]
    Off,
    Required,
}

pub use proxies::{Cidr, client_address, parse_cidr};

pub fn parse_alg(s: &str) -> Result<crate::keys::Alg, String> {
    crate::keys::Alg::parse(s).ok_or_else(|| {
        format!("`{s}` is not a signing algorithm mayfly generates keys for (ES256, EdDSA; RS256 keys cannot be generated with ring)")
    })
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 90s, 15m or 24h: {e}"))
}

/// Validated configuration handed to `launch`.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub issuer: String,
    pub master_key: Option<SecretString>,
    pub master_key_file: Option<PathBuf>,
    pub key_rotation_period: Duration,
    pub key_publish_lead: Duration,
    pub jwks_max_age: Duration,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub bootstrap_admin_secret: Option<SecretString>,
    pub auth_failure_limit: u32,
    pub max_clients_per_tenant: u32,
    pub lease_retention: Duration,
    pub signing_alg: crate::keys::Alg,
    pub master_key_previous: Option<SecretString>,
    pub trusted_proxies: Vec<Cidr>,
    pub dev: bool,
    /// Move the database to this issuer instead of refusing to start.
    pub change_issuer: bool,
    pub metrics_listen: Option<SocketAddr>,
    /// Empty: no allowlist (see `federation::reach::Reach::of`).
    pub federation_issuers: Vec<crate::federation::reach::AllowedIssuer>,
    pub federation_allow_loopback: bool,
    pub dpop_nonce: DpopNonce,
    pub audit_export_file: Option<PathBuf>,
    pub audit_export_url: Option<String>,
    pub signer: SignerConfig,
    /// Auto-unseal: the master key wrapped by transit.
    pub unseal: Option<Unseal>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Builds the configuration from the flags and, for secrets, `env` (the
    /// process environment in `main`; a map in tests).
    pub fn from_args(args: ServeArgs, env: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let issuer = match args.issuer {
            Some(issuer) => issuer,
            None => format!("http://{}", args.listen),
        };
        // The master key file is read later, by `load_master_key`; here only the conflict is checked.
        let master_key = read_secret(&env, MASTER_KEY_ENV, None)?;
        if master_key.is_some() && args.master_key_file.is_some() {
            return Err(ConfigError(format!(
                "give {MASTER_KEY_ENV} or {MASTER_KEY_ENV}_FILE, not both"
            )));
        }
        let master_key_previous = read_secret(&env, MASTER_KEY_PREVIOUS_ENV, args.master_key_previous_file.as_deref())?;
        let bootstrap_admin_secret = read_secret(
            &env,
            BOOTSTRAP_ADMIN_SECRET_ENV,
            args.bootstrap_admin_secret_file.as_deref(),
        )?;
        let (signer, unseal) = args.signer.resolve()?;
        let config = Self {
            database_url: args.database_url,
            issuer,
            master_key,
            master_key_file: args.master_key_file,
            key_rotation_period: args.key_rotation_period,
            key_publish_lead: args.key_publish_lead,
            jwks_max_age: args.jwks_max_age,
            default_ttl: args.default_ttl,
            max_ttl: args.max_ttl,
            bootstrap_admin_secret,
            auth_failure_limit: args.auth_failure_limit,
            max_clients_per_tenant: args.max_clients_per_tenant,
            lease_retention: args.lease_retention,
            signing_alg: args.signing_alg,
            master_key_previous,
            trusted_proxies: args.trusted_proxies,
            dev: args.dev,
            change_issuer: args.change_issuer,
            metrics_listen: args.metrics_listen,
            federation_issuers: args.federation_issuers,
            federation_allow_loopback: args.federation_allow_loopback,
            dpop_nonce: args.dpop_nonce,
            audit_export_file: args.audit_export_file,
            audit_export_url: args.audit_export_url,
            signer,
            unseal,
        };
        config.validate()?;
        Ok(config)
    }

    /// Defaults for everything but the database and issuer; used by tests and
    /// embedders.
    pub fn new(database_url: impl Into<String>, issuer: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            issuer: issuer.into(),
            master_key: None,
            master_key_file: None,
            key_rotation_period: Duration::from_secs(24 * 3600),
            key_publish_lead: Duration::from_secs(3600),
            jwks_max_age: Duration::from_secs(300),
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(3600),
            bootstrap_admin_secret: None,
            auth_failure_limit: 20,
            max_clients_per_tenant: 10_000,
            lease_retention: Duration::from_secs(7 * 24 * 3600),
            signing_alg: crate::keys::Alg::Es256,
            master_key_previous: None,
            trusted_proxies: Vec::new(),
            dev: false,
            change_issuer: false,
            metrics_listen: None,
            federation_issuers: Vec::new(),
            federation_allow_loopback: false,
            dpop_nonce: DpopNonce::Off,
            audit_export_file: None,
            audit_export_url: None,
            signer: SignerConfig::Local,
            unseal: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if crate::tenants::uri::canonicalize(&self.issuer).is_err() {
            return err(format!(
                "MAYFLY_ISSUER `{}` must be an absolute http(s) URL without query or fragment",
                self.issuer
            ));
        }
        if self.issuer.contains('?') || self.issuer.ends_with('/') {
            return err("MAYFLY_ISSUER must not end with `/` or carry a query".into());
        }
        if let Some(url) = &self.audit_export_url {
            let parsed = reqwest::Url::parse(url).ok();
            match parsed {
                Some(u) if u.scheme() == "https" => {}
                Some(u) if u.scheme() == "http" && u.password().is_none() && u.username().is_empty() => {}
                Some(u) if u.scheme() == "http" => {
                    return err("MAYFLY_AUDIT_EXPORT_URL: credentials only over https".into());
                }
                _ => return err("MAYFLY_AUDIT_EXPORT_URL must be an http(s) URL".into()),
            }
        }
        if self.max_ttl.is_zero() || self.default_ttl.is_zero() {
            return err("MAYFLY_DEFAULT_TTL and MAYFLY_MAX_TTL must be positive".into());
        }
        if self.default_ttl > self.max_ttl {
            return err(format!(
                "MAYFLY_DEFAULT_TTL ({}) exceeds MAYFLY_MAX_TTL ({})",
                humantime::format_duration(self.default_ttl),
                humantime::format_duration(self.max_ttl)
            ));
        }
        if self.max_ttl > Duration::from_secs(24 * 3600) {
            return err("MAYFLY_MAX_TTL may not exceed 24h: mayfly issues ephemeral tokens".into());
        }
        if self.jwks_max_age > self.key_publish_lead {
            return err(format!(
                "MAYFLY_JWKS_MAX_AGE ({}) exceeds MAYFLY_KEY_PUBLISH_LEAD ({}): a verifier could meet an unknown kid",
                humantime::format_duration(self.jwks_max_age),
                humantime::format_duration(self.key_publish_lead)
            ));
        }
        if self.key_publish_lead >= self.key_rotation_period {
            return err("MAYFLY_KEY_PUBLISH_LEAD must be shorter than MAYFLY_KEY_ROTATION_PERIOD".into());
        }
        let year = Duration::from_secs(366 * 24 * 3600);
        if self.key_rotation_period > year || self.lease_retention > year * 10 {
            return err("MAYFLY_KEY_ROTATION_PERIOD may not exceed a year, MAYFLY_LEASE_RETENTION ten years".into());
        }
        if self.key_rotation_period < Duration::from_secs(1) || self.key_publish_lead < Duration::from_millis(100) {
            return err(
                "MAYFLY_KEY_ROTATION_PERIOD must be at least 1s and MAYFLY_KEY_PUBLISH_LEAD at least 100ms".into(),
            );
        }
        if self.unseal.is_some() && (self.master_key.is_some() || self.master_key_file.is_some()) {
            return err("give MAYFLY_MASTER_KEY(_FILE) or MAYFLY_MASTER_KEY_TRANSIT_KEY, not both".into());
        }
        if matches!(self.signer, SignerConfig::Pkcs11(_)) && self.signing_alg != crate::keys::Alg::Es256 {
            return err("MAYFLY_SIGNER=pkcs11 makes ES256 keys only: set MAYFLY_SIGNING_ALG=ES256".into());
        }
        if self.max_clients_per_tenant == 0 {
            return err("MAYFLY_MAX_CLIENTS_PER_TENANT must be at least 1".into());
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return err("give MAYFLY_MASTER_KEY or MAYFLY_MASTER_KEY_FILE, not both".into());
        }
        // Named, never shown: the message may end up in logs.
        if let Some(why) = self
            .bootstrap_admin_secret
            .as_ref()
            .and_then(|s| weak_secret(s.expose_secret()))
        {
            return err(format!(
                "{BOOTSTRAP_ADMIN_SECRET_ENV} (or its _FILE) is too weak: {why}; use at least 32 random characters \
                 (e.g. `openssl rand -hex 32`), or leave it unset and mayfly generates one"
            ));
        }
        Ok(())
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    pub fn default_ttl_seconds(&self) -> i64 {
        self.default_ttl.as_secs() as i64
    }

    pub fn max_ttl_seconds(&self) -> i64 {
        self.max_ttl.as_secs() as i64
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted = vec![parse_cidr("10.0.0.0/8").unwrap(), parse_cidr("fd00::/8").unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        // The client's own claim (left) is ignored in favour of what our proxy saw.
        let hops = ["198.51.100.7, 203.0.113.9"];
        assert_eq!(client_address(proxy, hops.into_iter(), &trusted), outsider);
        assert_eq!(
            client_address(outsider, hops.into_iter(), &trusted),
            outsider,
            "untrusted peer: its header is ignored"
        );
        assert_eq!(client_address(proxy, std::iter::empty(), &trusted), proxy);
        assert!(parse_cidr("fd00::1").unwrap().contains("fd00::1".parse().unwrap()));
        assert!(!parse_cidr("10.0.0.0/8").unwrap().contains("11.0.0.1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err() && parse_cidr("nope").is_err());
        // Garbage to the right of the real client stops the walk at the proxy.
        assert_eq!(
            client_address(proxy, ["198.51.100.7, junk"].into_iter(), &trusted),
            proxy
        );
    }

    /// Flags only for what `argv` may show: the parsed command line of `serve`.
    fn serve_args(extra: &[&str]) -> ServeArgs {
        use clap::FromArgMatches;
        let command = ServeArgs::augment_args(clap::Command::new("t"));
        let base = ["t", "--listen", "127.0.0.1:8420", "--database-url", "sqlite::memory:"];
        let matches = command.try_get_matches_from(base.iter().chain(extra)).unwrap();
        ServeArgs::from_arg_matches(&matches).unwrap()
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: std::collections::HashMap<String, OsString> =
            vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        move |name| vars.get(name).cloned()
    }

    const STRONG: &str = "mfy_cs_test-bootstrap-admin-secret-0123456789abcdef";

    #[test]
    fn secrets_have_no_flags() {
        let command = ServeArgs::augment_args(clap::Command::new("t"));
        for arg in command.get_arguments() {
            let names = [
                Some(arg.get_id().as_str().to_string()),
                arg.get_long().map(str::to_string),
            ];
            for name in names.into_iter().flatten() {
                let name = name.replace('-', "_");
                // The transit key's name says where the master key is wrapped; it is no secret.
                let secret = name.contains("master_key") && !name.ends_with("transit_key");
                if secret || name.contains("bootstrap_admin_secret") {
                    assert!(name.ends_with("_file"), "`{name}` would put a secret in argv");
                }
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(
                ![MASTER_KEY_ENV, MASTER_KEY_PREVIOUS_ENV, BOOTSTRAP_ADMIN_SECRET_ENV].contains(&env),
                "{env} is bound to a flag"
            );
        }
        for flag in ["--master-key", "--master-key-previous", "--bootstrap-admin-secret"] {
            let command = ServeArgs::augment_args(clap::Command::new("t"));
            assert!(
                command.try_get_matches_from(["t", flag, STRONG]).is_err(),
                "{flag} is accepted"
            );
        }
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file_but_not_both() {
        let dir = std::env::temp_dir().join(format!("mayfly-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = crate::testing::TempDir(dir.clone());
        let previous_file = dir.join("previous.key");
        let admin_file = dir.join("admin.secret");
        let previous = "00".repeat(32);
        std::fs::write(&previous_file, format!("{previous}\n")).unwrap();
        std::fs::write(&admin_file, format!("{STRONG}\r\n\n")).unwrap();
        let previous_flag = ["--master-key-previous-file", previous_file.to_str().unwrap()];
        let admin_flag = ["--bootstrap-admin-secret-file", admin_file.to_str().unwrap()];

        let config = Config::from_args(
            serve_args(&[]),
            env_of(&[
                ("MAYFLY_MASTER_KEY", "11"),
                ("MAYFLY_MASTER_KEY_PREVIOUS", "22"),
                ("MAYFLY_BOOTSTRAP_ADMIN_SECRET", STRONG),
            ]),
        )
        .unwrap();
        assert_eq!(config.master_key.unwrap().expose_secret(), "11");
        assert_eq!(config.master_key_previous.unwrap().expose_secret(), "22");
        assert_eq!(config.bootstrap_admin_secret.unwrap().expose_secret(), STRONG);

        // From files, trailing newlines dropped.
        let config = Config::from_args(serve_args(&[previous_flag, admin_flag].concat()), env_of(&[])).unwrap();
        assert_eq!(config.master_key_previous.unwrap().expose_secret(), previous);
        assert_eq!(config.bootstrap_admin_secret.unwrap().expose_secret(), STRONG);
        assert!(config.master_key.is_none());

        let config = Config::from_args(serve_args(&[]), env_of(&[])).unwrap();
        assert!(config.master_key.is_none() && config.master_key_previous.is_none());
        assert!(config.bootstrap_admin_secret.is_none());

        // Both a value and its file: refused, naming both, showing neither.
        for (var, flags) in [
            ("MAYFLY_MASTER_KEY_PREVIOUS", &previous_flag[..]),
            ("MAYFLY_BOOTSTRAP_ADMIN_SECRET", &admin_flag[..]),
            (
                "MAYFLY_MASTER_KEY",
                &["--master-key-file", previous_file.to_str().unwrap()][..],
            ),
        ] {
            let e = Config::from_args(serve_args(flags), env_of(&[(var, STRONG)])).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid configuration: give {var} or {var}_FILE, not both")
            );
        }

        let missing = dir.join("missing");
        let e = Config::from_args(
            serve_args(&["--bootstrap-admin-secret-file", missing.to_str().unwrap()]),
            env_of(&[]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("cannot read MAYFLY_BOOTSTRAP_ADMIN_SECRET_FILE"),
            "{e}"
        );
    }

    #[test]
    fn weak_bootstrap_admin_secrets_stop_start_up_without_being_shown() {
        let with_secret = |s: &str| {
            let mut config = Config::new("sqlite::memory:", "http://127.0.0.1:8420");
            config.bootstrap_admin_secret = Some(SecretString::from(s));
            config.validate()
        };
        for weak in [
            "",
            "hunter2",
            "mfy_cs_0123456789abcdefghijklmn", // 31 characters
            "a".repeat(64).as_str(),
            "ab12".repeat(16).as_str(),           // 4 distinct
            "abcdefghijklmnopqrstuvwxyzabcdefgh", // lowercase only
            "01234567890123456789012345678901",   // digits only, 10 distinct
            "Abcdefghijk1".repeat(3).as_str(),    // 12 distinct, periodic
            format!("{}Ab", "Abcdefghij12".repeat(3)).as_str(),
        ] {
            let e = with_secret(weak).unwrap_err().to_string();
            assert!(
                e.contains("MAYFLY_BOOTSTRAP_ADMIN_SECRET") && e.contains("too weak"),
                "{weak}: {e}"
            );
            assert!(weak.is_empty() || !e.contains(weak), "the secret is shown: {e}");
        }
        with_secret(STRONG).unwrap();
        with_secret("mfy_cs_interop-admin-secret-0123456789abcdef0123").unwrap();
        with_secret(
            "022f892e48489b08f5d8098a5408ae562b13324a259b8248a6561034dc1ada32", /* openssl rand -hex 32 */
        )
        .unwrap();
        for _ in 0..200 {
            with_secret(crate::tenants::secret::generate().expose_secret()).unwrap();
        }
        let mut unset = Config::new("sqlite::memory:", "http://127.0.0.1:8420");
        unset.bootstrap_admin_secret = None;
        unset.validate().unwrap();
    }
}
