//! Where federation may connect: the operator's issuer allowlist
//! (`MAYFLY_FEDERATION_ISSUERS`), plain-http loopback issuers only when
//! allowed (`MAYFLY_FEDERATION_ALLOW_LOOPBACK`, `--dev`), and never an
//! address on a private, link-local or otherwise internal network, checked on
//! IP literals and again after DNS resolution. A tenant admin names issuers;
//! this must never let one make mayfly probe the operator's network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// One entry of `MAYFLY_FEDERATION_ISSUERS`: an issuer URL, matched exactly
/// (a trailing `/` aside), or a host (`host` or `host:port`), matching every
/// issuer on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedIssuer {
    Url(Url),
    Host { host: String, port: Option<u16> },
}

impl AllowedIssuer {
    /// Parses one entry (the value parser of the setting).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let bad = || format!("`{entry}` is neither an http(s) issuer URL nor a host name");
        if entry.contains("://") {
            let url = Url::parse(entry).map_err(|_| bad())?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(bad());
            }
            return Ok(Self::Url(url));
        }
        let url = Url::parse(&format!("https://{entry}")).map_err(|_| bad())?;
        match url.host_str() {
            Some(host) if url.path() == "/" && url.query().is_none() && url.username().is_empty() => Ok(Self::Host {
                host: host.to_string(),
                port: url.port(),
            }),
            _ => Err(bad()),
        }
    }

    fn matches(&self, issuer: &Url) -> bool {
        match self {
            Self::Url(allowed) => {
                allowed.scheme() == issuer.scheme()
                    && allowed.host() == issuer.host()
                    && allowed.port_or_known_default() == issuer.port_or_known_default()
                    && allowed.path().trim_end_matches('/') == issuer.path().trim_end_matches('/')
                    && allowed.query() == issuer.query()
            }
            Self::Host { host, port } => {
                issuer.host_str() == Some(host.as_str())
                    && port.is_none_or(|p| issuer.port_or_known_default() == Some(p))
            }
        }
    }
}

/// Why an issuer URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an issuer URL at all (the admin's input is wrong).
    #[error("{0}")]
    Invalid(String),
    /// A well-formed issuer the operator's settings do not let mayfly contact.
    #[error("{0}")]
    NotAllowed(String),
}

/// What federation may contact; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    allow_loopback: bool,
    /// Empty: any issuer on a public address.
    allowlist: Arc<[AllowedIssuer]>,
}

impl Reach {
    pub fn new(allow_loopback: bool, allowlist: Vec<AllowedIssuer>) -> Self {
        Self {
            allow_loopback,
            allowlist: allowlist.into(),
        }
    }

    /// The operator's settings; `--dev` allows loopback issuers.
    pub fn of(config: &crate::config::Config) -> Self {
        Self::new(
            config.federation_allow_loopback || config.dev,
            config.federation_issuers.clone(),
        )
    }

    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// Whether a trust policy may name `issuer`, and mayfly fetch its keys.
    pub fn issuer(&self, issuer: &str) -> Result<Url, Refused> {
        let url = Url::parse(issuer).map_err(|_| invalid())?;
        self.target(&url)?;
        if !self.allowlist.is_empty() && !self.allowlist.iter().any(|a| a.matches(&url)) {
            return Err(Refused::NotAllowed(
                "not an issuer the operator allows (MAYFLY_FEDERATION_ISSUERS)".into(),
            ));
        }
        Ok(url)
    }

    /// Whether mayfly may connect to `url` as far as the URL tells: https
    /// (plain http only to loopback, when allowed), no credentials, and no
    /// IP literal of an internal network. Names are checked when resolved.
    pub fn target(&self, url: &Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(invalid()),
        };
        let loopback = match (ip, url.host_str()) {
            (Some(ip), _) => classify(ip) == Some(LOOPBACK),
            (None, Some(d)) => {
                let d = d.trim_end_matches('.');
                d == "localhost" || d.ends_with(".localhost")
            }
            (None, None) => false,
        };
        match (url.scheme(), loopback) {
            ("https", _) | ("http", true) => {}
            _ => return Err(invalid()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Invalid("an issuer URL carries no credentials".into()));
        }
        if loopback && !self.allow_loopback {
            return Err(Refused::NotAllowed(
                "loopback issuers are allowed only with MAYFLY_FEDERATION_ALLOW_LOOPBACK (or --dev)".into(),
            ));
        }
        match ip.and_then(|ip| refused_address(ip, self.allow_loopback)) {
            Some(class) => Err(Refused::NotAllowed(format!(
                "{} is a {class} address",
                url.host_str().unwrap_or_default()
            ))),
            None => Ok(()),
        }
    }

    /// A DNS resolver that drops every address federation must not reach.
    pub fn resolver(&self) -> PublicOnly {
        PublicOnly {
            allow_loopback: self.allow_loopback,
        }
    }
}

fn invalid() -> Refused {
    Refused::Invalid("must be an https URL (http only for a loopback issuer)".into())
}

const LOOPBACK: &str = "loopback";

/// The kind of internal address `ip` is, if it is one federation never
/// connects to; loopback is allowed when `allow_loopback`.
pub fn refused_address(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    classify(ip).filter(|class| !(allow_loopback && *class == LOOPBACK))
}

fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        (0, _) => "unspecified",
        (127, _) => LOOPBACK,
        (10, _) | (172, 16..=31) | (192, 168) => "private",
        (100, 64..=127) => "shared (carrier-grade NAT)",
        (169, 254) => "link-local",
        (192, 0) if c == 0 => "reserved",
        (192, 0) if c == 2 => "documentation",
        (198, 51) if c == 100 => "documentation",
        (203, 0) if c == 113 => "documentation",
        (198, 18..=19) => "benchmarking",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match s[0] {
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address inside.
        0x64 if s[1..6] == [0xff9b, 0, 0, 0, 0] => return classify_v4(embedded(s[6], s[7])),
        0x2002 => return classify_v4(embedded(s[1], s[2])),
        // Local-use NAT64 (64:ff9b:1::/48, RFC 8215) translates into whatever
        // the site routes; Teredo (2001::/32) tunnels to an address inside.
        0x64 if s[1] == 0xff9b && s[2] == 1 => "local-use NAT64",
        0x2001 if s[1] == 0 => "Teredo",
        _ if ip.is_loopback() => LOOPBACK,
        _ if ip.is_unspecified() => "unspecified",
        // ::/8 (IPv4-compatible and other reserved) and 100::/64 (discard).
        0 | 0x100 => "reserved",
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0xdb8 => "documentation",
        _ => return None,
    })
}

/// `reqwest`'s resolver for federation fetches: the system's answer with
/// every refused address removed, so a name that resolves (or is rebound)
/// to an internal address is never connected to. IP literals never reach a
/// resolver: [`Reach::target`] checks them.
#[derive(Debug, Clone)]
pub struct PublicOnly {
    allow_loopback: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .filter(|a| match refused_address(a.ip(), allow_loopback) {
                    Some(class) => {
                        refused.get_or_insert(class);
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                let why = match refused {
                    Some(class) => format!("{host} resolves only to refused ({class}) addresses"),
                    None => format!("{host} resolves to no address"),
                };
                return Err(why.into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_classified_and_public_ones_pass() {
        for (addr, class) in [
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "reserved"),
            ("64:ff9b::a00:1", "private"),
            ("2002:c0a8:101::1", "private"),
            ("64:ff9b:1::a9fe:a9fe", "local-use NAT64"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001:db8::1", "documentation"),
        ] {
            assert_eq!(refused_address(ip(addr), false), Some(class), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "140.82.112.3",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(refused_address(ip(public), false), None, "{public}");
        }
        // Loopback, and only loopback, when allowed.
        for addr in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(refused_address(ip(addr), true), None, "{addr}");
        }
        for addr in ["10.0.0.1", "169.254.169.254", "fc00::1", "0.0.0.0", "::"] {
            assert!(refused_address(ip(addr), true).is_some(), "{addr}");
        }
    }

    fn not_allowed(r: Result<Url, Refused>) -> bool {
        matches!(r, Err(Refused::NotAllowed(_)))
    }

    #[test]
    fn issuers_are_https_on_public_addresses_and_loopback_http_only_when_allowed() {
        let strict = Reach::default();
        let dev = Reach::new(true, vec![]);
        for ok in [
            "https://token.actions.githubusercontent.com",
            "https://gitlab.com/",
            "https://8.8.8.8",
        ] {
            strict.issuer(ok).unwrap();
            dev.issuer(ok).unwrap();
        }
        for loopback in [
            "http://127.0.0.1:9000/x",
            "http://localhost/x",
            "http://[::1]/",
            "https://localhost:8443",
            "https://127.0.0.2",
            // url normalizes these spellings of 127.0.0.1.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(not_allowed(strict.issuer(loopback)), "{loopback}");
            dev.issuer(loopback).unwrap();
        }
        for internal in [
            "https://10.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://0.0.0.0/",
            "https://100.64.1.1/",
            "https://[::ffff:192.168.0.1]/",
        ] {
            assert!(not_allowed(strict.issuer(internal)), "{internal}");
            assert!(not_allowed(dev.issuer(internal)), "{internal}");
        }
        for bad in [
            "http://issuer.example",
            "http://10.0.0.1/",
            "https://user:pw@issuer.example",
            "file:///etc/passwd",
            "ftp://x",
            "not a url",
        ] {
            assert!(matches!(dev.issuer(bad), Err(Refused::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn the_allowlist_names_issuer_urls_or_hosts() {
        let entries = [
            "https://token.actions.githubusercontent.com/",
            "gitlab.com",
            "idp.acme.test:8443",
            " http://127.0.0.1:18550 ",
        ];
        let allowlist = entries.iter().map(|e| AllowedIssuer::parse(e).unwrap()).collect();
        let reach = Reach::new(true, allowlist);
        for ok in [
            "https://token.actions.githubusercontent.com",
            "https://token.actions.githubusercontent.com/",
            "https://gitlab.com",
            "https://GitLab.com/any/path",
            "https://idp.acme.test:8443/realms/x",
            "http://127.0.0.1:18550",
        ] {
            reach.issuer(ok).unwrap();
        }
        for refused in [
            "https://token.actions.githubusercontent.com/other",
            "https://evil.test",
            "https://gitlab.com.evil.test",
            "https://idp.acme.test/realms/x",
            "http://127.0.0.1:18551",
            "http://localhost:18550",
        ] {
            assert!(not_allowed(reach.issuer(refused)), "{refused}");
        }
        for bad in ["", "ftp://x", "https://", "host/path", "a b"] {
            assert!(AllowedIssuer::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The settings as `mayfly serve` parses them from its flags.
    #[test]
    fn federation_settings_parse_from_flags() {
        use crate::config::{Config, ServeArgs};
        use clap::{Args, FromArgMatches};
        let serve_args = |extra: &[&str]| {
            let base = ["t", "--database-url", "sqlite::memory:"];
            let command = ServeArgs::augment_args(clap::Command::new("t"));
            let matches = command.try_get_matches_from(base.iter().chain(extra)).unwrap();
            ServeArgs::from_arg_matches(&matches).unwrap()
        };
        let no_env = |_: &str| -> Option<std::ffi::OsString> { None };
        let args = serve_args(&[
            "--federation-issuers",
            "https://token.actions.githubusercontent.com, gitlab.com",
            "--federation-allow-loopback",
        ]);
        let config = Config::from_args(args, no_env).unwrap();
        assert_eq!(config.federation_issuers.len(), 2);
        assert!(config.federation_allow_loopback && Reach::of(&config).allows_loopback());
        let config = Config::from_args(serve_args(&[]), no_env).unwrap();
        assert!(config.federation_issuers.is_empty() && !Reach::of(&config).allows_loopback());
        let config = Config::from_args(serve_args(&["--dev"]), no_env).unwrap();
        assert!(Reach::of(&config).allows_loopback(), "--dev implies loopback issuers");
        let command = ServeArgs::augment_args(clap::Command::new("t"));
        assert!(
            command
                .try_get_matches_from(["t", "--federation-issuers", "ftp://x"])
                .is_err()
        );
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_dropped() {
        let strict = Reach::default().resolver();
        let name = |s: &str| s.parse::<Name>().unwrap();
        let e = match strict.resolve(name("localhost")).await {
            Err(e) => e.to_string(),
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
        };
        assert!(e.contains("refused (loopback)"), "{e}");
        let dev = Reach::new(true, vec![]).resolver();
        let addrs: Vec<SocketAddr> = dev.resolve(name("localhost")).await.unwrap().collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
