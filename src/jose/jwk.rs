//! Public keys as JWKs (RFC 7517) and their RFC 7638 thumbprints: mayfly's
//! own published keys (`VerifyingKey`), and the thumbprint of any public
//! JWK (a key id, and later a DPoP key's `jkt`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::json;

use super::signer::Alg;

/// One of mayfly's published public keys.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub alg: Alg,
    public: Vec<u8>,
}

/// Why a JWK could not be read as one of our keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwkError(pub String);

impl VerifyingKey {
    /// From raw public key bytes: the uncompressed point (65 bytes) for
    /// ES256, the 32-byte key for EdDSA.
    pub fn new(kid: String, alg: Alg, public: Vec<u8>) -> Result<Self, JwkError> {
        let expected = match alg {
            Alg::Es256 => 65,
            Alg::EdDsa => 32,
        };
        if public.len() != expected {
            return Err(JwkError("JWK has the wrong key length".into()));
        }
        Ok(Self { kid, alg, public })
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match self.alg {
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::EdDsa => &signature::ED25519,
        };
        UnparsedPublicKey::new(alg, &self.public).verify(message, sig).is_ok()
    }

    /// The public JWK with `kid`, `alg`, `use`.
    pub fn jwk(&self) -> serde_json::Value {
        let mut jwk = thumbprint_members(self.alg, &self.public);
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), json!(self.kid));
            obj.insert("alg".into(), json!(self.alg.as_str()));
            obj.insert("use".into(), json!("sig"));
        }
        jwk
    }

    pub fn from_jwk(kid: &str, alg: Alg, jwk: &serde_json::Value) -> Result<Self, JwkError> {
        let field = |name: &str| -> Result<Vec<u8>, JwkError> {
            jwk.get(name)
                .and_then(|v| v.as_str())
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .ok_or_else(|| JwkError(format!("JWK lacks `{name}`")))
        };
        let public = match alg {
            Alg::Es256 => {
                let mut p = vec![4u8];
                p.extend(field("x")?);
                p.extend(field("y")?);
                p
            }
            Alg::EdDsa => field("x")?,
        };
        Self::new(kid.to_string(), alg, public)
    }

    /// The RFC 7638 thumbprint: the key id mayfly gives its own keys.
    pub fn thumbprint(&self) -> String {
        digest_members(&thumbprint_members(self.alg, &self.public))
    }
}

/// The RFC 7638 required members of one of our keys, in lexicographic order.
fn thumbprint_members(alg: Alg, public: &[u8]) -> serde_json::Value {
    match alg {
        Alg::Es256 => json!({
            "crv": "P-256",
            "kty": "EC",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        }),
        Alg::EdDsa => json!({"crv": "Ed25519", "kty": "OKP", "x": URL_SAFE_NO_PAD.encode(public)}),
    }
}

/// base64url(SHA-256(members)), the members serialised with no whitespace
/// in lexicographic order (serde_json's map is ordered).
fn digest_members(members: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        members.to_string().as_bytes(),
    ))
}

/// The RFC 7638 thumbprint of any public JWK (EC, OKP or RSA), from its
/// required members only; None when a required member is missing.
pub fn thumbprint(jwk: &serde_json::Value) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let members = match jwk.get("kty")?.as_str()? {
        "EC" => json!({"crv": member("crv")?, "kty": "EC", "x": member("x")?, "y": member("y")?}),
        "OKP" => json!({"crv": member("crv")?, "kty": "OKP", "x": member("x")?}),
        "RSA" => json!({"e": member("e")?, "kty": "RSA", "n": member("n")?}),
        _ => return None,
    };
    Some(digest_members(&members))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn the_rfc_7638_example_key_has_the_rfc_7638_thumbprint() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(thumbprint(&json!({"kty": "EC", "crv": "P-256"})), None);
        assert_eq!(thumbprint(&json!({"kty": "oct", "k": "c2VjcmV0"})), None);
    }

    #[test]
    fn our_keys_thumbprint_alike_from_bytes_and_from_their_jwk() {
        let public = [&[4u8][..], &[1u8; 64][..]].concat();
        let key = VerifyingKey::new("k".into(), Alg::Es256, public).unwrap();
        assert_eq!(thumbprint(&key.jwk()), Some(key.thumbprint()));
        assert!(VerifyingKey::new("k".into(), Alg::EdDsa, vec![0; 31]).is_err());
    }
}
