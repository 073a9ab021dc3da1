//! Where signing keys live (MAYFLY_SIGNER) and how to reach an outside
//! signer. Checked here, before anything connects.

use std::path::PathBuf;

use clap::Args;

use super::ConfigError;
use crate::keys::pkcs11::Pkcs11Config;
use crate::keys::transit::TransitConfig;

/// Which signer holds new signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SignerKind {
    /// Sealed in the database under the master key.
    #[default]
    Local,
    /// A PKCS#11 token (an HSM): keys generated and used inside it.
    Pkcs11,
    /// OpenBao/Vault transit: keys generated and used inside it.
    Transit,
}

#[derive(Debug, Clone, Args)]
pub struct SignerArgs {
    /// Where new signing keys are made and kept: `local` (sealed in the
    /// database), `pkcs11` (an HSM) or `transit` (OpenBao/Vault transit).
    #[arg(long, env = "MAYFLY_SIGNER", default_value = "local", value_enum)]
    pub signer: SignerKind,

    /// The PKCS#11 module (shared library) of the HSM (MAYFLY_SIGNER=pkcs11).
    #[arg(long, env = "MAYFLY_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,

    /// The label of the token that holds the keys.
    #[arg(long, env = "MAYFLY_PKCS11_TOKEN")]
    pub pkcs11_token: Option<String>,

    /// A file holding the token's user PIN.
    #[arg(long, env = "MAYFLY_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,

    /// The transit server, `http(s)://host:port` (MAYFLY_SIGNER=transit).
    #[arg(long, env = "MAYFLY_TRANSIT_ADDR")]
    pub transit_addr: Option<String>,

    /// A file holding the transit token (re-read when it changes).
    #[arg(long, env = "MAYFLY_TRANSIT_TOKEN_FILE")]
    pub transit_token_file: Option<PathBuf>,

    /// The transit engine's mount path.
    #[arg(long, env = "MAYFLY_TRANSIT_MOUNT", default_value = "transit")]
    pub transit_mount: String,

    /// Auto-unseal: the transit encryption key that wraps the master key
    /// (instead of MAYFLY_MASTER_KEY); uses MAYFLY_TRANSIT_ADDR and its token.
    #[arg(long, env = "MAYFLY_MASTER_KEY_TRANSIT_KEY")]
    pub master_key_transit_key: Option<String>,
}

/// Auto-unseal: where the master key's wrapping key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unseal {
    pub transit: TransitConfig,
    /// The transit encryption key's name.
    pub key: String,
}

/// The validated signer configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SignerConfig {
    #[default]
    Local,
    Pkcs11(Pkcs11Config),
    Transit(TransitConfig),
}

impl SignerArgs {
    /// The signer, and auto-unseal if asked for.
    pub fn resolve(self) -> Result<(SignerConfig, Option<Unseal>), ConfigError> {
        let unseal = match &self.master_key_transit_key {
            None => None,
            Some(key) => {
                let valid = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid || key.starts_with('.') {
                    return Err(ConfigError(format!(
                        "MAYFLY_MASTER_KEY_TRANSIT_KEY `{key}` is not a transit key name"
                    )));
                }
                let transit = self.transit("MAYFLY_MASTER_KEY_TRANSIT_KEY")?;
                Some(Unseal {
                    transit,
                    key: key.clone(),
                })
            }
        };
        Ok((self.signer()?, unseal))
    }

    fn transit(&self, wanted_by: &str) -> Result<TransitConfig, ConfigError> {
        let (Some(addr), Some(token_file)) = (self.transit_addr.clone(), self.transit_token_file.clone()) else {
            return Err(ConfigError(format!(
                "{wanted_by} needs MAYFLY_TRANSIT_ADDR and MAYFLY_TRANSIT_TOKEN_FILE"
            )));
        };
        let config = TransitConfig {
            addr,
            token_file,
            mount: self.transit_mount.clone(),
        };
        check_transit(&config)?;
        Ok(config)
    }

    fn signer(self) -> Result<SignerConfig, ConfigError> {
        match self.signer {
            SignerKind::Local => Ok(SignerConfig::Local),
            SignerKind::Pkcs11 => {
                let (Some(module), Some(token), Some(pin_file)) =
                    (self.pkcs11_module, self.pkcs11_token, self.pkcs11_pin_file)
                else {
                    return Err(ConfigError(
                        "MAYFLY_SIGNER=pkcs11 needs MAYFLY_PKCS11_MODULE, MAYFLY_PKCS11_TOKEN and MAYFLY_PKCS11_PIN_FILE"
                            .into(),
                    ));
                };
                Ok(SignerConfig::Pkcs11(Pkcs11Config {
                    module,
                    token,
                    pin_file,
                }))
            }
            SignerKind::Transit => Ok(SignerConfig::Transit(self.transit("MAYFLY_SIGNER=transit")?)),
        }
    }
}

/// An address mayfly may send a token to: plain http only to loopback.
pub fn check_transit(config: &TransitConfig) -> Result<(), ConfigError> {
    let url = url::Url::parse(&config.addr)
        .map_err(|_| ConfigError(format!("MAYFLY_TRANSIT_ADDR `{}` is not a URL", config.addr)))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(ConfigError(
                "MAYFLY_TRANSIT_ADDR: the transit token may go over plain http only to a loopback address".into(),
            ));
        }
        _ => return Err(ConfigError("MAYFLY_TRANSIT_ADDR must be an http(s) URL".into())),
    }
    let extra =
        url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some();
    if !url.path().trim_matches('/').is_empty() || extra {
        return Err(ConfigError(
            "MAYFLY_TRANSIT_ADDR is the server alone (`https://bao.internal:8200`), without path, query or credentials"
                .into(),
        ));
    }
    let mount = config.mount.trim_matches('/');
    let odd_segment = mount.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if odd_segment || !mount.chars().all(|c| c.is_ascii_alphanumeric() || "-_/.".contains(c)) {
        return Err(ConfigError(format!(
            "MAYFLY_TRANSIT_MOUNT `{}` is not a mount path",
            config.mount
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(signer: SignerKind, addr: Option<&str>, mount: &str) -> SignerArgs {
        SignerArgs {
            signer,
            pkcs11_module: None,
            pkcs11_token: None,
            pkcs11_pin_file: None,
            transit_addr: addr.map(str::to_string),
            transit_token_file: addr.map(|_| "/run/bao-token".into()),
            transit_mount: mount.into(),
            master_key_transit_key: None,
        }
    }

    fn transit(addr: &str, mount: &str) -> Result<SignerConfig, ConfigError> {
        args(SignerKind::Transit, Some(addr), mount).resolve().map(|(s, _)| s)
    }

    #[test]
    fn transit_addresses_carry_the_token_only_over_tls_or_loopback() {
        assert!(transit("https://bao.internal:8200", "transit").is_ok());
        assert!(transit("http://127.0.0.1:8200", "transit").is_ok());
        assert!(transit("http://localhost:8200/", "kms/transit").is_ok());
        for (addr, mount, why) in [
            ("http://bao.internal:8200", "transit", "loopback"),
            ("ftp://127.0.0.1", "transit", "http(s)"),
            ("https://bao.internal:8200/v1", "transit", "without path"),
            ("https://u:p@bao.internal", "transit", "credentials"),
            ("https://:p@bao.internal", "transit", "credentials"),
            ("https://bao.internal#x", "transit", "credentials"),
            ("https://bao.internal", "../sys", "mount path"),
            ("https://bao.internal", "", "mount path"),
        ] {
            let e = transit(addr, mount).unwrap_err().to_string();
            assert!(e.contains(why), "{addr} {mount}: {e}");
        }
    }

    #[test]
    fn each_outside_signer_names_what_it_is_missing() {
        let e = args(SignerKind::Transit, None, "transit")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("MAYFLY_SIGNER=transit needs MAYFLY_TRANSIT_ADDR"), "{e}");
        let e = args(SignerKind::Pkcs11, None, "transit")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("MAYFLY_PKCS11_PIN_FILE"), "{e}");
        let unseal = SignerArgs {
            master_key_transit_key: Some("mayfly-master".into()),
            ..args(SignerKind::Local, None, "transit")
        };
        let e = unseal.resolve().unwrap_err().to_string();
        assert!(
            e.contains("MAYFLY_MASTER_KEY_TRANSIT_KEY needs MAYFLY_TRANSIT_ADDR"),
            "{e}"
        );
        let unseal = SignerArgs {
            master_key_transit_key: Some("../keys".into()),
            ..args(SignerKind::Local, Some("http://127.0.0.1:8200"), "transit")
        };
        assert!(
            unseal
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("not a transit key name")
        );
        let unseal = SignerArgs {
            master_key_transit_key: Some("mayfly-master".into()),
            ..args(SignerKind::Local, Some("http://127.0.0.1:8200"), "transit")
        };
        let (signer, unseal) = unseal.resolve().unwrap();
        assert_eq!(signer, SignerConfig::Local);
        assert_eq!(unseal.unwrap().key, "mayfly-master");
    }
}
