//! The signing seam: whatever holds a signing key (sealed in the database,
//! a PKCS#11 token, a KMS) is one `Signer`. Signing is asynchronous (an HSM
//! or a remote service answers later) and fallible: a failure is an error
//! the caller answers 503, never an abort.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// The JWS algorithms mayfly signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Alg {
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

impl TryFrom<String> for Alg {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Alg::parse(&s).ok_or_else(|| format!("unknown signing algorithm `{s}` in store"))
    }
}

/// Why a signature could not be made. Says nothing about key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing with key {kid} failed: {why}")]
pub struct SignError {
    pub kid: String,
    pub why: String,
}

/// A signature being made.
pub type Signing<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, SignError>> + Send + 'a>>;

/// A key that signs: its id, its algorithm, and the raw JWS signature of a
/// message (for ES256 the 64-byte `r || s`, as RFC 7518 §3.4 wants).
pub trait Signer: Send + Sync + std::fmt::Debug {
    fn kid(&self) -> &str;
    fn alg(&self) -> Alg;
    fn sign<'a>(&'a self, message: &'a [u8]) -> Signing<'a>;
}
