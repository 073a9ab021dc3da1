//! Compact JWS (RFC 7515) over ring: just what mayfly needs to sign its own
//! access tokens and to check tokens it issued. No `none`, no algorithm the
//! key was not made for, no header-supplied keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::keys::{KeySet, SigningKey};

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

pub fn sign(key: &SigningKey, claims: &impl Serialize) -> String {
    let header = Header {
        alg: key.alg.as_str().into(),
        kid: key.kid.clone(),
        typ: ACCESS_TOKEN_TYP.into(),
    };
    // Serializing plain structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(64 + claims.len() * 4 / 3 + 90);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let sig = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    token
}

/// Checks structure, `typ`, `kid` and signature against the published keys and
/// returns the header and the raw claims JSON. Claims are not judged here.
pub fn verify(token: &str, keys: &KeySet) -> Result<(Header, Vec<u8>), JwsError> {
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
    let key = keys.published.get(&header.kid).ok_or(JwsError::UnknownKey)?;
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
    use std::collections::HashMap;
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::keys::{Alg, Generated, generate};

    /// One key for every case: a fresh key per case would only slow the suite.
    static KEY: LazyLock<(Generated, KeySet)> = LazyLock::new(|| {
        let g = generate(Alg::Es256).unwrap();
        let keys = KeySet {
            published: HashMap::from([(g.verifying.kid.clone(), g.verifying.clone())]),
            ..KeySet::default()
        };
        (g, keys)
    });

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
        let kid = || prop_oneof![Just(KEY.0.verifying.kid.clone()), Just("x".into()), any::<String>()];
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
        let (g, keys) = &*KEY;
        let token = sign(&g.signing, &json!({"sub": "ci", "aud": "https://mcp.acme.test"}));
        let (header, claims) = verify(&token, keys).unwrap();
        assert_eq!(header.kid, g.verifying.kid);
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
        let (g, keys) = &*KEY;
        let header = json!({"alg": "none", "kid": g.verifying.kid, "typ": ACCESS_TOKEN_TYP});
        let none = format!("{}.{}.", b64(header.to_string()), b64(r#"{"sub":"x"}"#));
        assert_eq!(verify(&none, keys).unwrap_err(), JwsError::BadSignature);
        let token = sign(&g.signing, &json!({"sub": "x"}));
        assert_eq!(verify(&token, &KeySet::default()).unwrap_err(), JwsError::UnknownKey);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn verify_never_panics_on_arbitrary_strings(s in any::<String>()) {
            prop_assert!(verify(&s, &KeySet::default()).is_err());
            prop_assert!(verify(&s, &KEY.1).is_err());
        }

        #[test]
        fn verify_never_panics_on_three_base64url_parts(
            header in header(),
            claims in proptest::collection::vec(any::<u8>(), 0..64),
            sig in prop_oneof![proptest::collection::vec(any::<u8>(), 0..80), proptest::collection::vec(any::<u8>(), 64..=64)],
        ) {
            let token = format!("{}.{}.{}", b64(&header), b64(&claims), b64(&sig));
            prop_assert!(verify(&token, &KeySet::default()).is_err());
            // Random signatures do not verify, whatever the header claims.
            prop_assert!(verify(&token, &KEY.1).is_err());
        }

        #[test]
        fn a_signed_token_verifies_and_no_flipped_character_does(
            sub in any::<String>(),
            at in any::<proptest::sample::Index>(),
            shift in 1..CHARS.len(),
        ) {
            let (g, keys) = &*KEY;
            let claims = json!({"sub": sub});
            let token = sign(&g.signing, &claims);
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
