//! Configuration: environment variables with matching flags, parsed once at
//! start and validated against each other before anything listens.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

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

    /// Master key sealing the signing keys: 32 bytes, base64 or hex.
    #[arg(long, env = "MAYFLY_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<SecretString>,

    /// File holding the master key (instead of MAYFLY_MASTER_KEY).
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

    /// Secret of the bootstrap admin client `mayfly-admin` (only used on an empty database).
    #[arg(long, env = "MAYFLY_BOOTSTRAP_ADMIN_SECRET", hide_env_values = true)]
    pub bootstrap_admin_secret: Option<SecretString>,

    /// Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed.
    #[arg(long, env = "MAYFLY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<Cidr>,

    /// How long expired leases stay queryable before they are pruned.
    #[arg(long, env = "MAYFLY_LEASE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub lease_retention: Duration,

    /// Algorithm of new signing keys: ES256 (default) or EdDSA.
    #[arg(long, env = "MAYFLY_SIGNING_ALG", default_value = "ES256", value_parser = parse_alg)]
    pub signing_alg: crate::keys::Alg,

    /// The previous master key, still accepted for reading while `mayfly keys rewrap` runs.
    #[arg(long, env = "MAYFLY_MASTER_KEY_PREVIOUS", hide_env_values = true)]
    pub master_key_previous: Option<SecretString>,

    /// Failed client authentications allowed per source address per minute.
    #[arg(long, env = "MAYFLY_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    pub auth_failure_limit: u32,

    /// Seed a `demo` tenant, resource and client and print a command that mints a token.
    #[arg(long, env = "MAYFLY_DEV")]
    pub dev: bool,
}

/// An address block, such as `10.0.0.0/8`, `fd00::/8` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    bits: u32,
}

/// Addresses as 128-bit numbers, IPv4 as IPv4-mapped IPv6.
fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = if self.bits == 0 {
            0
        } else {
            u128::MAX << (128 - self.bits)
        };
        as_u128(ip) & mask == self.net & mask
    }
}

pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, bits) = match s.trim().split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits: u32 = match bits {
        None => max,
        Some(b) => b
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
    };
    // IPv4 prefixes count within the mapped address's last 32 bits.
    let bits = if ip.is_ipv4() { bits + 96 } else { bits };
    Ok(Cidr { net: as_u128(ip), bits })
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// rightmost X-Forwarded-For entry that is not itself a trusted proxy.
pub fn client_address<'a>(peer: IpAddr, forwarded: impl Iterator<Item = &'a str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|h| h.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        // Walk back through our proxies; stop at the first hop they did not add
        // themselves, and at anything unreadable (it is not evidence).
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

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
    pub lease_retention: Duration,
    pub signing_alg: crate::keys::Alg,
    pub master_key_previous: Option<SecretString>,
    pub trusted_proxies: Vec<Cidr>,
    pub dev: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let issuer = match args.issuer {
            Some(issuer) => issuer,
            None => format!("http://{}", args.listen),
        };
        let config = Self {
            database_url: args.database_url,
            issuer,
            master_key: args.master_key,
            master_key_file: args.master_key_file,
            key_rotation_period: args.key_rotation_period,
            key_publish_lead: args.key_publish_lead,
            jwks_max_age: args.jwks_max_age,
            default_ttl: args.default_ttl,
            max_ttl: args.max_ttl,
            bootstrap_admin_secret: args.bootstrap_admin_secret,
            auth_failure_limit: args.auth_failure_limit,
            lease_retention: args.lease_retention,
            signing_alg: args.signing_alg,
            master_key_previous: args.master_key_previous,
            trusted_proxies: args.trusted_proxies,
            dev: args.dev,
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
            lease_retention: Duration::from_secs(7 * 24 * 3600),
            signing_alg: crate::keys::Alg::Es256,
            master_key_previous: None,
            trusted_proxies: Vec::new(),
            dev: false,
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
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return err("give MAYFLY_MASTER_KEY or MAYFLY_MASTER_KEY_FILE, not both".into());
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
}
