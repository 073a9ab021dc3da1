//! DPoP proofs (RFC 9449 §4): a JWT the client signs with the key its token
//! is bound to, naming one HTTP request. This module checks a proof against
//! the request it came with, statelessly; whether its `jti` was seen before
//! and whether its nonce is fresh are the caller's to decide. The key comes
//! from the proof's own header, so the algorithm is pinned to that key and a
//! private key, `none` or HMAC is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::jwt::{self, Jwk};

/// The algorithms a proof may be signed with (also the metadata's
/// `dpop_signing_alg_values_supported`).
pub const ALGORITHMS: [&str; 3] = ["ES256", "EdDSA", "RS256"];
/// How far a proof's `iat` may lie in the past (RFC 9449 §11.1 leaves it to
/// the server; a proof is made for one request, just before it).
pub const MAX_AGE_SECONDS: i64 = 60;
/// How far ahead of ours a client's clock may run.
pub const MAX_SKEW_SECONDS: i64 = 5;
/// Larger `jti`s are refused (they are stored for replay detection).
const MAX_JTI: usize = 128;
/// JWK members that only a private key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused; the message is safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("the DPoP proof is not a JWT")]
    Malformed,
    #[error("the DPoP proof's typ must be dpop+jwt")]
    Type,
    #[error("the DPoP proof's alg must be ES256, EdDSA or RS256, matching its key")]
    Algorithm,
    #[error("the DPoP proof's jwk must be one public key")]
    Key,
    #[error("the DPoP proof's signature does not verify with its jwk")]
    Signature,
    #[error("the DPoP proof lacks `{0}`")]
    Missing(&'static str),
    #[error("the DPoP proof's htm is not this request's method")]
    Method,
    #[error("the DPoP proof's htu is not this endpoint's URL")]
    Url,
    #[error("the DPoP proof's iat is too old or in the future")]
    Time,
    #[error("the DPoP proof's ath is not the hash of the access token")]
    AccessTokenHash,
}

/// The request a proof must name.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub htm: &'a str,
    /// The URL as configured, without query or fragment.
    pub htu: &'a str,
    /// Unix seconds, now.
    pub now: i64,
    /// With an access token (at a resource): its `ath`.
    pub ath: Option<&'a str>,
}

/// A proof that verified: its key's RFC 7638 thumbprint, and what the
/// caller still has to judge (replay, nonce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    pub nonce: Option<String>,
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes()))
}

/// Checks `proof` against the request it came with.
pub fn verify(proof: &str, expected: &Expected<'_>) -> Result<Proof, DpopError> {
    let parsed = jwt::parse(proof).map_err(|_| DpopError::Malformed)?;
    if !parsed
        .header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(DpopError::Type);
    }
    if !ALGORITHMS.contains(&parsed.header.alg.as_str()) {
        return Err(DpopError::Algorithm);
    }
    let raw = parsed.header.jwk.as_ref().ok_or(DpopError::Key)?;
    let members = raw.as_object().ok_or(DpopError::Key)?;
    if PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m)) {
        return Err(DpopError::Key);
    }
    let key: Jwk = serde_json::from_value(raw.clone()).map_err(|_| DpopError::Key)?;
    match key.algorithm() {
        None => return Err(DpopError::Key),
        Some(alg) if alg != parsed.header.alg => return Err(DpopError::Algorithm),
        Some(_) => {}
    }
    if !key.verify(parsed.signed.as_bytes(), &parsed.signature) {
        return Err(DpopError::Signature);
    }
    let claim = |name: &'static str| parsed.claim_str(name).ok_or(DpopError::Missing(name));
    let jti = claim("jti")?;
    // Stored for replay detection: printable text only (Postgres refuses NUL).
    if jti.is_empty() || jti.len() > MAX_JTI || jti.chars().any(char::is_control) {
        return Err(DpopError::Missing("jti"));
    }
    if claim("htm")? != expected.htm {
        return Err(DpopError::Method);
    }
    // RFC 9449 §4.3: compared without query and fragment; otherwise exactly,
    // so a proof made for another host, port or path prefix is refused.
    let htu = claim("htu")?;
    let htu = htu.split(['?', '#']).next().unwrap_or_default();
    if htu != expected.htu {
        return Err(DpopError::Url);
    }
    let iat = parsed
        .claims
        .get("iat")
        .and_then(serde_json::Value::as_i64)
        .ok_or(DpopError::Missing("iat"))?;
    if iat < expected.now - MAX_AGE_SECONDS || iat > expected.now + MAX_SKEW_SECONDS {
        return Err(DpopError::Time);
    }
    if let Some(want) = expected.ath {
        let got = parsed.claim_str("ath").ok_or(DpopError::Missing("ath"))?;
        if got != want {
            return Err(DpopError::AccessTokenHash);
        }
    }
    let jkt = super::thumbprint(raw).ok_or(DpopError::Key)?;
    Ok(Proof {
        jkt,
        jti: jti.to_string(),
        iat,
        nonce: parsed.claim_str("nonce").map(str::to_string),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::{Value, json};

    use super::*;

    /// A client's DPoP key, for tests.
    pub(crate) struct ProofKey(EcdsaKeyPair);

    impl ProofKey {
        pub(crate) fn new() -> Self {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }

        pub(crate) fn jwk(&self) -> Value {
            let p = self.0.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
        }

        pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = self.0.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }

        pub(crate) fn header(&self) -> Value {
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
        }
    }

    const URL: &str = "https://as.test/oauth2/token";

    fn expected(now: i64) -> Expected<'static> {
        Expected {
            htm: "POST",
            htu: URL,
            now,
            ath: None,
        }
    }

    fn claims(iat: i64) -> Value {
        json!({"jti": "j1", "htm": "POST", "htu": URL, "iat": iat})
    }

    #[test]
    fn a_proof_for_this_request_verifies_and_names_its_keys_thumbprint() {
        let key = ProofKey::new();
        let proof = key.sign(&key.header(), &claims(1000));
        let p = verify(&proof, &expected(1010)).unwrap();
        assert_eq!(p.jkt, crate::jose::thumbprint(&key.jwk()).unwrap());
        assert_eq!((p.jti.as_str(), p.iat, p.nonce), ("j1", 1000, None));
        // Query and fragment do not count (RFC 9449 §4.3).
        let c = json!({"jti": "j", "htm": "POST", "htu": format!("{URL}?a=1#f"), "iat": 1000});
        assert!(verify(&key.sign(&key.header(), &c), &expected(1000)).is_ok());
    }

    #[test]
    fn each_wrong_part_is_refused_with_its_reason() {
        let key = ProofKey::new();
        let with = |k: &str, v: Value| {
            let mut c = claims(1000);
            c[k] = v;
            key.sign(&key.header(), &c)
        };
        let e = expected(1000);
        assert_eq!(verify(&with("htm", json!("GET")), &e), Err(DpopError::Method));
        for url in [
            "https://as.test/oauth2/token/",
            "https://AS.test:443/oauth2/token",
            "https://as.test/proxy/oauth2/token",
            "http://as.test/oauth2/token",
        ] {
            assert_eq!(verify(&with("htu", json!(url)), &e), Err(DpopError::Url), "{url}");
        }
        assert_eq!(verify(&with("iat", json!(1000 - 61)), &e), Err(DpopError::Time));
        assert_eq!(verify(&with("iat", json!(1000 + 6)), &e), Err(DpopError::Time));
        assert_eq!(verify(&with("iat", json!("1000")), &e), Err(DpopError::Missing("iat")));
        assert_eq!(verify(&with("jti", json!("")), &e), Err(DpopError::Missing("jti")));
        assert_eq!(
            verify(&with("jti", json!("a\u{0}b")), &e),
            Err(DpopError::Missing("jti"))
        );
        let mut h = key.header();
        h["typ"] = json!("JWT");
        assert_eq!(verify(&key.sign(&h, &claims(1000)), &e), Err(DpopError::Type));
        for alg in ["none", "HS256", "RS256", "EdDSA"] {
            let mut h = key.header();
            h["alg"] = json!(alg);
            assert_eq!(
                verify(&key.sign(&h, &claims(1000)), &e),
                Err(DpopError::Algorithm),
                "{alg}"
            );
        }
        // Signed by another key than the one it carries.
        let other = ProofKey::new();
        assert_eq!(
            verify(&other.sign(&key.header(), &claims(1000)), &e),
            Err(DpopError::Signature)
        );
        // A private key in the header, or none at all.
        let mut h = key.header();
        h["jwk"]["d"] = json!("c2VjcmV0");
        assert_eq!(verify(&key.sign(&h, &claims(1000)), &e), Err(DpopError::Key));
        let mut h = key.header();
        h.as_object_mut().unwrap().remove("jwk");
        assert_eq!(verify(&key.sign(&h, &claims(1000)), &e), Err(DpopError::Key));
        let mut h = key.header();
        h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(verify(&key.sign(&h, &claims(1000)), &e), Err(DpopError::Key));
    }

    #[test]
    fn at_a_resource_the_proof_must_carry_the_tokens_hash() {
        let key = ProofKey::new();
        let token_hash = ath("the.token.here");
        let e = Expected {
            ath: Some(&token_hash),
            ..expected(1000)
        };
        let mut c = claims(1000);
        assert_eq!(verify(&key.sign(&key.header(), &c), &e), Err(DpopError::Missing("ath")));
        c["ath"] = json!(ath("another.token.here"));
        assert_eq!(
            verify(&key.sign(&key.header(), &c), &e),
            Err(DpopError::AccessTokenHash)
        );
        c["ath"] = json!(token_hash);
        assert!(verify(&key.sign(&key.header(), &c), &e).is_ok());
    }

    #[test]
    fn an_ed25519_proof_verifies_too() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims(1000).to_string())
        );
        let proof = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(pair.sign(signed.as_bytes())));
        assert!(verify(&proof, &expected(1000)).is_ok());
    }
}
