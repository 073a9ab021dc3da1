//! Compact JWS (RFC 7515) over ring: just what mayfly needs to sign its own
//! access tokens (through whatever `Signer` holds the key) and to check
//! tokens it issued. No `none`, no algorithm the key was not made for, no
//! header-supplied keys.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::jwk::VerifyingKey;
use super::signer::{SignError, Signer};

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    pub kid: String,
    pub typ: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid signature")]
    BadSignature,
    #[error("not an access token (typ)")]
    WrongType,
}

/// Signs `claims` as an access token (`typ: at+jwt`) with `signer`.
pub async fn sign(signer: &dyn Signer, claims: &impl Serialize) -> Result<String, SignError> {
    let header = Header {
        alg: signer.alg().as_str().into(),
        kid: signer.kid().to_string(),
        typ: ACCESS_TOKEN_TYP.into(),
    };
    // Serializing plain structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(64 + claims.len() * 4 / 3 + 90);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let sig = signer.sign(token.as_bytes()).await?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    Ok(token)
}

/// Checks structure, `typ`, `kid` and signature against the published keys and
/// returns the header and the raw claims JSON. Claims are not judged here.
pub fn verify(token: &str, published: &HashMap<String, VerifyingKey>) -> Result<(Header, Vec<u8>), JwsError> {
    if token.len() > 8192 {
        return Err(JwsError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwsError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| JwsError::Malformed)?;
    if header.typ != ACCESS_TOKEN_TYP && header.typ != "application/at+jwt" {
        return Err(JwsError::WrongType);
    }
    let key = published.get(&header.kid).ok_or(JwsError::UnknownKey)?;
    if key.alg.as_str() != header.alg {
        return Err(JwsError::BadSignature);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwsError::Malformed)?;
    let signed = &token[..h.len() + 1 + c.len()];
    if !key.verify(signed.as_bytes(), &sig) {
        return Err(JwsError::BadSignature);
    }
    let claims = URL_SAFE_NO_PAD.decode(c).map_err(|_| JwsError::Malformed)?;
    Ok((header, claims))
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;
    use crate::jose::signer::{Alg, Signing};

    /// A P-256 key held in memory, for these tests.
    #[derive(Debug)]
    struct TestSigner(EcdsaKeyPair, VerifyingKey);

    impl Signer for TestSigner {
        fn kid(&self) -> &str {
            &self.1.kid
        }
        fn alg(&self) -> Alg {
            Alg::Es256
        }
        fn sign<'a>(&'a self, message: &'a [u8]) -> Signing<'a> {
            let sig = self.0.sign(&SystemRandom::new(), message).map(|s| s.as_ref().to_vec());
            Box::pin(async move {
                sig.map_err(|_| SignError {
                    kid: self.1.kid.clone(),
                    why: "rng".into(),
                })
            })
        }
    }

    /// One key for every case: a fresh key per case would only slow the suite.
    static KEY: LazyLock<(TestSigner, HashMap<String, VerifyingKey>)> = LazyLock::new(|| {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = VerifyingKey::new("k1".into(), Alg::Es256, pair.public_key().as_ref().to_vec()).unwrap();
        let published = HashMap::from([(public.kid.clone(), public.clone())]);
        (TestSigner(pair, public), published)
    });

    fn sign_now(claims: &serde_json::Value) -> String {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(sign(&KEY.0, claims))
            .unwrap()
    }

    fn none() -> HashMap<String, VerifyingKey> {
        HashMap::new()
    }

    /// Every character a token of ours holds, and a few it never does.
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// JOSE headers, mostly well formed, naming our key, no key, or `none`.
    fn header() -> impl Strategy<Value = String> {
        let alg = || {
            prop_oneof![
                Just("none".to_string()),
                Just("ES256".into()),
                Just("EdDSA".into()),
                Just("HS256".into()),
                any::<String>()
            ]
        };
        let kid = || prop_oneof![Just(KEY.0.kid().to_string()), Just("x".into()), any::<String>()];
        let typ = || {
            prop_oneof![
                Just(ACCESS_TOKEN_TYP.to_string()),
                Just("application/at+jwt".into()),
                Just("JWT".into()),
                any::<String>()
            ]
        };
        prop_oneof![
            4 => (alg(), kid(), typ()).prop_map(|(alg, kid, typ)| json!({"alg": alg, "kid": kid, "typ": typ}).to_string()),
            1 => (alg(), kid(), typ()).prop_map(|(alg, kid, typ)| json!({"alg": alg, "kid": kid, "typ": typ, "jwk": {}, "alg ": 1}).to_string()),
            1 => (alg(), kid()).prop_map(|(alg, kid)| json!({"alg": alg, "kid": kid}).to_string()),
            1 => r#"\{("[a-z]{0,4}":("[a-zA-Z0-9+/]{0,8}"|[0-9]{1,3}|null|\[\]|\{\}),?){0,4}\}"#,
            1 => any::<String>(),
        ]
    }

    #[test]
    fn every_single_character_change_breaks_a_signed_token() {
        let (signer, keys) = &*KEY;
        let token = sign_now(&json!({"sub": "ci", "aud": "https://mcp.acme.test"}));
        let (header, claims) = verify(&token, keys).unwrap();
        assert_eq!(header.kid, signer.kid());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&claims).unwrap()["sub"],
            "ci"
        );
        for i in 0..token.len() {
            for with in [b'A', b'g', b'_', b'.'] {
                let mut changed = token.clone().into_bytes();
                if changed[i] == with {
                    continue;
                }
                changed[i] = with;
                let changed = String::from_utf8(changed).unwrap();
                assert!(verify(&changed, keys).is_err(), "{changed}");
            }
        }
    }

    #[test]
    fn unsigned_and_foreign_tokens_are_refused() {
        let (signer, keys) = &*KEY;
        let header = json!({"alg": "none", "kid": signer.kid(), "typ": ACCESS_TOKEN_TYP});
        let unsigned = format!("{}.{}.", b64(header.to_string()), b64(r#"{"sub":"x"}"#));
        assert_eq!(verify(&unsigned, keys).unwrap_err(), JwsError::BadSignature);
        let token = sign_now(&json!({"sub": "x"}));
        assert_eq!(verify(&token, &none()).unwrap_err(), JwsError::UnknownKey);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn verify_never_panics_on_arbitrary_strings(s in any::<String>()) {
            prop_assert!(verify(&s, &none()).is_err());
            prop_assert!(verify(&s, &KEY.1).is_err());
        }

        #[test]
        fn verify_never_panics_on_three_base64url_parts(
            header in header(),
            claims in proptest::collection::vec(any::<u8>(), 0..64),
            sig in prop_oneof![proptest::collection::vec(any::<u8>(), 0..80), proptest::collection::vec(any::<u8>(), 64..=64)],
        ) {
            let token = format!("{}.{}.{}", b64(&header), b64(&claims), b64(&sig));
            prop_assert!(verify(&token, &none()).is_err());
            // Random signatures do not verify, whatever the header claims.
            prop_assert!(verify(&token, &KEY.1).is_err());
        }

        #[test]
        fn a_signed_token_verifies_and_no_flipped_character_does(
            sub in any::<String>(),
            at in any::<proptest::sample::Index>(),
            shift in 1..CHARS.len(),
        ) {
            let keys = &KEY.1;
            let claims = json!({"sub": sub});
            let token = sign_now(&claims);
            let verified = verify(&token, keys).map(|(_, c)| serde_json::from_slice::<serde_json::Value>(&c).ok());
            prop_assert_eq!(verified, Ok(Some(claims)));
            // A different character, always: shifted along CHARS, which holds every token character.
            let mut flipped = token.into_bytes();
            let i = at.index(flipped.len());
            let from = CHARS.iter().position(|c| *c == flipped[i]).unwrap();
            flipped[i] = CHARS[(from + shift) % CHARS.len()];
            let flipped = String::from_utf8(flipped).unwrap();
            prop_assert!(verify(&flipped, keys).is_err(), "{}", flipped);
        }
    }
}
