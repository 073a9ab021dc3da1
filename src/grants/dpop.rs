//! The token endpoint's DPoP stage (RFC 9449 §5): the proof checked once per
//! request, before any grant decides: against the configured public token
//! URL (never one rebuilt from forwarded headers) and, when nonces are
//! required, its nonce opened and judged fresh. Its `jti` is spent with the
//! lease, in the lease's own transaction (`tokens::commit`), so a proof
//! replayed to any replica mints nothing and a good one costs no extra
//! round trip. A nonce is an
//! AEAD-sealed timestamp under a key every replica derives from the master
//! key: no state, any replica accepts it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta};
use ring::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};

use super::GrantError;
use crate::clock::Clock;
use crate::jose::dpop::{self, DpopError, Expected, MAX_AGE_SECONDS};
use crate::jose::jwt;
use crate::tokens::commit::Spend;

/// How long a nonce is accepted after it was issued.
const NONCE_LIFETIME_SECONDS: i64 = 300;
/// How far ahead of this replica's clock another replica's may run.
const NONCE_SKEW_SECONDS: i64 = 5;
const NONCE_AAD: &[u8] = b"mayfly dpop nonce v1";

/// Server nonces: sealed timestamps.
pub struct Nonces {
    key: LessSafeKey,
    /// The previous master key's, while a rotation rolls through the
    /// replicas: their nonces are still good.
    previous: Option<LessSafeKey>,
}

impl Nonces {
    pub fn new(key: LessSafeKey, previous: Option<LessSafeKey>) -> Self {
        Self { key, previous }
    }

    /// A fresh nonce naming `now`.
    pub fn issue(&self, now: i64) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        crate::keys::seal::fill_random(&mut nonce);
        let mut body = now.to_be_bytes().to_vec();
        // Sealing fails only for inputs larger than GCM allows; this is 8 bytes.
        if self
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(NONCE_AAD), &mut body)
            .is_err()
        {
            return String::new();
        }
        let mut out = nonce.to_vec();
        out.extend(body);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Whether `nonce` is one of ours, issued within its lifetime.
    pub fn fresh(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != NONCE_LEN + 8 + 16 {
            return false;
        }
        let (n, body) = raw.split_at(NONCE_LEN);
        let opened = |key: &LessSafeKey| {
            let n = Nonce::try_assume_unique_for_key(n).ok()?;
            let mut body = body.to_vec();
            let plain = key.open_in_place(n, Aad::from(NONCE_AAD), &mut body).ok()?;
            <[u8; 8]>::try_from(&plain[..]).ok().map(i64::from_be_bytes)
        };
        let Some(at) = opened(&self.key).or_else(|| self.previous.as_ref().and_then(&opened)) else {
            return false;
        };
        at <= now + NONCE_SKEW_SECONDS && now - at <= NONCE_LIFETIME_SECONDS
    }
}

/// A valid proof: the thumbprint the token binds to, and its `jti` to spend.
pub struct Bound {
    pub jkt: String,
    pub spend: Spend,
}

/// The DPoP stage.
pub struct ProofCheck {
    /// The public token endpoint URL, as the metadata names it.
    htu: String,
    clock: Arc<dyn Clock>,
    nonces: Option<Nonces>,
}

fn refuse(e: DpopError) -> GrantError {
    GrantError::Dpop {
        code: "invalid_dpop_proof",
        description: e.to_string(),
        nonce: None,
    }
}

impl ProofCheck {
    pub fn new(htu: String, clock: Arc<dyn Clock>, nonces: Option<Nonces>) -> Self {
        Self { htu, clock, nonces }
    }

    /// A fresh nonce to hand out with an answer, when nonces are required.
    pub fn nonce(&self) -> Option<String> {
        self.nonces.as_ref().map(|n| n.issue(self.clock.now().timestamp()))
    }

    /// The key a valid proof binds the token to, and the `jti` to spend
    /// with its lease; None without a proof.
    pub fn check(&self, header: Option<&str>) -> Result<Option<Bound>, GrantError> {
        let Some(proof) = header else {
            return Ok(None);
        };
        let now = self.clock.now();
        let expected = Expected {
            htm: "POST",
            htu: &self.htu,
            now: now.timestamp(),
            ath: None,
        };
        let proof = dpop::verify(proof, &expected).map_err(refuse)?;
        if let Some(nonces) = &self.nonces {
            let why = match &proof.nonce {
                None => Some("a DPoP nonce is required: retry with the one in DPoP-Nonce"),
                Some(n) if !nonces.fresh(n, now.timestamp()) => {
                    Some("the DPoP nonce is stale: retry with the one in DPoP-Nonce")
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(GrantError::Dpop {
                    code: "use_dpop_nonce",
                    description: why.into(),
                    nonce: Some(nonces.issue(now.timestamp())),
                });
            }
        }
        // Remembered as long as the proof could be accepted, and a little more.
        let until = DateTime::from_timestamp(proof.iat, 0).unwrap_or(now) + TimeDelta::seconds(MAX_AGE_SECONDS + 60);
        Ok(Some(Bound {
            spend: Spend {
                key: format!("dpop:{}", proof.jkt),
                jti: proof.jti,
                until,
            },
            jkt: proof.jkt,
        }))
    }
}

/// A bound token (a subject, an actor token, a jwt-bearer assertion; ours
/// or any issuer's) is used only by its holder: the request's proof must be
/// made with the key it is bound to (RFC 9449 allows one proof a request, so
/// all of them, if bound, must share the key). The claims are read
/// unverified here; every token is verified before anything is minted, so a
/// `cnf` cannot be forged or stripped. A token bound any other way (mTLS
/// `x5t#S256`, a `jwk`, a malformed `cnf`) is refused: its holder cannot be
/// proven here, so it fails closed.
pub(super) fn bound_alike(tokens: &[&str], jkt: Option<&str>) -> Result<(), GrantError> {
    let refuse = |why: &str| GrantError::Dpop {
        code: "invalid_dpop_proof",
        description: why.to_string(),
        nonce: None,
    };
    for token in tokens {
        let Some(cnf) = jwt::parse(token).ok().and_then(|t| t.claims.get("cnf").cloned()) else {
            continue;
        };
        let bound = cnf
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("jkt"))
            .and_then(|j| j.as_str());
        match bound {
            None => return Err(refuse("a token bound other than by DPoP (cnf.jkt) cannot be used here")),
            Some(b) if Some(b) != jkt => {
                return Err(refuse("a DPoP-bound token is used only with a proof made with its key"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ring::aead::{AES_256_GCM, UnboundKey};

    use super::*;

    fn key(byte: u8) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[byte; 32]).unwrap())
    }

    fn nonces(byte: u8) -> Nonces {
        Nonces::new(key(byte), None)
    }

    fn token_with(claims: serde_json::Value) -> String {
        format!(
            "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn a_bound_token_needs_its_keys_proof_and_any_other_binding_fails_closed() {
        let jkt = serde_json::json!({"cnf": {"jkt": "k1"}});
        assert!(bound_alike(&[&token_with(jkt.clone())], Some("k1")).is_ok());
        assert!(bound_alike(&[&token_with(jkt.clone())], Some("k2")).is_err());
        assert!(bound_alike(&[&token_with(jkt)], None).is_err());
        assert!(bound_alike(&[&token_with(serde_json::json!({"sub": "x"}))], None).is_ok());
        for other in [
            serde_json::json!({"cnf": {"x5t#S256": "abc"}}),
            serde_json::json!({"cnf": {"jkt": 7}}),
            serde_json::json!({"cnf": "k1"}),
            serde_json::json!({"cnf": {"jkt": "k1", "jwk": {}}}),
        ] {
            assert!(
                bound_alike(&[&token_with(other.clone())], Some("k1")).is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn a_nonce_is_fresh_for_its_lifetime_and_only_under_its_key() {
        let n = nonces(1);
        let issued = n.issue(1000);
        // While the master key rotates, the previous key's nonces still open.
        let rotated = Nonces::new(key(2), Some(key(1)));
        assert!(rotated.fresh(&issued, 1000));
        assert!(n.fresh(&issued, 1000));
        assert!(n.fresh(&issued, 1000 + NONCE_LIFETIME_SECONDS));
        assert!(!n.fresh(&issued, 1001 + NONCE_LIFETIME_SECONDS), "stale");
        assert!(n.fresh(&issued, 996), "from a replica whose clock runs a little ahead");
        assert!(!n.fresh(&issued, 994), "from the future");
        assert!(!nonces(2).fresh(&issued, 1000), "another master key");
        assert!(!n.fresh("bm9wZQ", 1000));
        let mut forged = URL_SAFE_NO_PAD.decode(&issued).unwrap();
        forged[NONCE_LEN] ^= 1;
        assert!(!n.fresh(&URL_SAFE_NO_PAD.encode(forged), 1000));
    }
}
