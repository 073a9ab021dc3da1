//! External JWTs (CI, workload and person OIDC tokens, client assertions):
//! split, pick the key the header names among the issuer's, verify with
//! ring. The algorithm is pinned to the key's type: RS256 for RSA, ES256 for
//! P-256, EdDSA for Ed25519. `none`, HMAC and anything else are refused, and
//! a header can never bring its own key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Larger tokens are refused before any parsing.
const MAX_TOKEN: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("no key of the issuer matches the token's kid")]
    UnknownKey,
    #[error("invalid signature")]
    BadSignature,
}

/// A public key as published in a JWK set (RFC 7517); private members are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<serde_json::Value>,
}

impl JwkSet {
    /// The keys this module can use; others (symmetric, unknown types) are skipped.
    pub fn usable(&self) -> Vec<Jwk> {
        self.keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter(|k| k.algorithm().is_some() && k.use_.as_deref().is_none_or(|u| u == "sig"))
            .collect()
    }
}

impl Jwk {
    /// The one algorithm this key verifies with, from its type.
    pub fn algorithm(&self) -> Option<&'static str> {
        let alg = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) if self.n.is_some() && self.e.is_some() => "RS256",
            ("EC", Some("P-256")) if self.x.is_some() && self.y.is_some() => "ES256",
            ("OKP", Some("Ed25519")) if self.x.is_some() => "EdDSA",
            _ => return None,
        };
        // A key that names another algorithm is not used at all.
        match &self.alg {
            Some(a) if a != alg => None,
            _ => Some(alg),
        }
    }

    /// Whether `sig` is this key's signature of `message`, under the key's
    /// one algorithm.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let field = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
        match self.algorithm() {
            Some("RS256") => {
                let (Some(n), Some(e)) = (field(&self.n), field(&self.e)) else {
                    return false;
                };
                RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                    .is_ok()
            }
            Some("ES256") => {
                let (Some(x), Some(y)) = (field(&self.x), field(&self.y)) else {
                    return false;
                };
                if x.len() != 32 || y.len() != 32 {
                    return false;
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Some("EdDSA") => {
                let Some(x) = field(&self.x) else { return false };
                UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    /// A key the header carries (DPoP proofs only; never trusted elsewhere).
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
}

/// A token split but not yet trusted.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Header,
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub(crate) signed: String,
    pub(crate) signature: Vec<u8>,
}

pub fn parse(token: &str) -> Result<Unverified, JwtError> {
    if token.len() > MAX_TOKEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed);
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
    let claims = serde_json::from_slice(&decode(c)?).map_err(|_| JwtError::Malformed)?;
    Ok(Unverified {
        header,
        claims,
        signed: format!("{h}.{c}"),
        signature: decode(s)?,
    })
}

impl Unverified {
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }

    /// Verifies against `keys` (the issuer's): the key the `kid` names, or
    /// with no `kid` each key of the header's algorithm in turn.
    pub fn verify(&self, keys: &[Jwk]) -> Result<(), JwtError> {
        if !matches!(self.header.alg.as_str(), "RS256" | "ES256" | "EdDSA") {
            return Err(JwtError::Algorithm);
        }
        let candidates: Vec<&Jwk> = keys
            .iter()
            .filter(|k| match &self.header.kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        // The algorithm comes from the key; a header claiming another is refused.
        let pinned: Vec<&&Jwk> = candidates
            .iter()
            .filter(|k| k.algorithm() == Some(self.header.alg.as_str()))
            .collect();
        if pinned.is_empty() {
            return Err(JwtError::Algorithm);
        }
        if pinned.iter().any(|k| k.verify(self.signed.as_bytes(), &self.signature)) {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair};

    use super::*;

    fn es256() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("k1".into()),
            alg: None,
            use_: None,
            crv: Some("P-256".into()),
            n: None,
            e: None,
            x: Some(URL_SAFE_NO_PAD.encode(&public[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&public[33..65])),
        };
        (pair, jwk)
    }

    fn sign(pair: &EcdsaKeyPair, header: &str, claims: &str) -> String {
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let sig = pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn a_token_verifies_only_with_its_key_and_its_keys_algorithm() {
        let (pair, jwk) = es256();
        let token = sign(&pair, r#"{"alg":"ES256","kid":"k1"}"#, r#"{"sub":"x"}"#);
        let t = parse(&token).unwrap();
        assert_eq!(t.verify(std::slice::from_ref(&jwk)), Ok(()));
        assert_eq!(t.claim_str("sub"), Some("x"));
        let (_, other) = es256();
        assert_eq!(t.verify(std::slice::from_ref(&other)), Err(JwtError::BadSignature));
        let mut renamed = other;
        renamed.kid = Some("k2".into());
        assert_eq!(t.verify(&[renamed]), Err(JwtError::UnknownKey));
        // A header naming another algorithm than the key's is refused, as are none and HMAC.
        for alg in ["RS256", "none", "HS256"] {
            let forged = sign(&pair, &format!(r#"{{"alg":"{alg}","kid":"k1"}}"#), r#"{"sub":"x"}"#);
            assert_eq!(
                parse(&forged).unwrap().verify(std::slice::from_ref(&jwk)).unwrap_err(),
                JwtError::Algorithm
            );
        }
        // A key that says it is for another algorithm is not used.
        let mut hs = jwk;
        hs.alg = Some("HS256".into());
        assert_eq!(t.verify(&[hs]), Err(JwtError::Algorithm));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(20_000)] {
            assert_eq!(parse(bad).unwrap_err(), JwtError::Malformed);
        }
    }
}
