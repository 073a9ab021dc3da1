//! Sender-constrained tokens at the gateway (RFC 9449 §7): a token bound to
//! a DPoP key (`cnf.jkt`) is accepted only as `Authorization: DPoP` with a
//! proof for this request (`htm`, `htu` = the route's public URI, `ath` =
//! the token's hash) made with that key, and each proof once per gateway
//! replica. A bound token sent as `Bearer`, or an unbound one sent as
//! `DPoP`, is refused: the scheme must say what the token is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use axum::http::{HeaderMap, HeaderName, header};

use super::trust::Caller;
use crate::jose::dpop::{self, Expected, MAX_AGE_SECONDS, MAX_SKEW_SECONDS};

static DPOP: HeaderName = HeaderName::from_static("dpop");
/// Proofs remembered at most, and per key: a holder flooding its own proofs
/// is refused before it can crowd out anyone else's.
const MAX_SEEN: usize = 200_000;
const MAX_SEEN_PER_KEY: usize = 20_000;

/// How the caller presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The token and its scheme from `Authorization`, if one of ours.
pub fn authorization(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token.trim())).filter(|(_, t)| !t.is_empty())
}

/// Proof `jti`s seen within the window a proof is accepted in, per key,
/// forgotten in the order they expire (O(1) a request, whatever the load).
#[derive(Default)]
pub struct SeenProofs {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    keys: HashSet<(String, String)>,
    /// (forget at, key), in the order they were seen: expiry order too.
    order: VecDeque<(i64, (String, String))>,
    per_key: HashMap<String, usize>,
}

impl SeenProofs {
    /// True the first time this key's `jti` is presented.
    fn first_use(&self, jkt: &str, jti: &str, now: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let seen = &mut *seen;
        while seen.order.front().is_some_and(|(until, _)| *until < now) {
            if let Some((_, key)) = seen.order.pop_front() {
                if let Some(n) = seen.per_key.get_mut(&key.0) {
                    *n -= 1;
                    if *n == 0 {
                        seen.per_key.remove(&key.0);
                    }
                }
                seen.keys.remove(&key);
            }
        }
        let key = (jkt.to_string(), jti.to_string());
        if seen.keys.contains(&key) {
            return false;
        }
        // Full of live proofs (or this key's share is): refuse rather than forget one.
        if seen.keys.len() >= MAX_SEEN || seen.per_key.get(jkt).copied().unwrap_or(0) >= MAX_SEEN_PER_KEY {
            return false;
        }
        // Kept as long as a proof seen now could still be accepted.
        seen.order
            .push_back((now + MAX_AGE_SECONDS + MAX_SKEW_SECONDS, key.clone()));
        *seen.per_key.entry(jkt.to_string()).or_default() += 1;
        seen.keys.insert(key);
        true
    }
}

/// Why a presentation was refused: the `error` of the DPoP challenge and a
/// description.
pub type Refused = (&'static str, String);

/// One request's presentation of a token.
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub scheme: Scheme,
    pub token: &'a str,
    pub method: &'a str,
    /// The route's public URI.
    pub htu: &'a str,
    pub now: i64,
}

/// Checks how a token was presented against what it is.
pub fn check(p: &Presented<'_>, caller: &Caller, seen: &SeenProofs) -> Result<(), Refused> {
    let Presented {
        headers,
        scheme,
        token,
        method,
        htu,
        now,
    } = *p;
    let bound = caller.claims.cnf.as_ref().map(|c| c.jkt.as_str());
    let proof = match (scheme, bound) {
        (Scheme::Bearer, None) => return Ok(()),
        (Scheme::Bearer, Some(_)) => {
            return Err((
                "invalid_token",
                "a DPoP-bound token is sent as `Authorization: DPoP` with its proof".into(),
            ));
        }
        (Scheme::Dpop, None) => {
            return Err((
                "invalid_token",
                "this token is not DPoP-bound: send it as Bearer".into(),
            ));
        }
        (Scheme::Dpop, Some(_)) => match headers.get_all(&DPOP).iter().collect::<Vec<_>>()[..] {
            [one] => one
                .to_str()
                .map_err(|_| ("invalid_dpop_proof", "the DPoP header is not visible ASCII".to_string()))?,
            [] => return Err(("invalid_dpop_proof", "a DPoP proof is required".into())),
            _ => return Err(("invalid_dpop_proof", "one DPoP header at most".into())),
        },
    };
    let ath = dpop::ath(token);
    let expected = Expected {
        htm: method,
        htu,
        now,
        ath: Some(&ath),
    };
    let proof = dpop::verify(proof, &expected).map_err(|e| ("invalid_dpop_proof", e.to_string()))?;
    if Some(proof.jkt.as_str()) != bound {
        return Err((
            "invalid_dpop_proof",
            "the DPoP proof is made with another key than the token is bound to".into(),
        ));
    }
    if !seen.first_use(&proof.jkt, &proof.jti, now) {
        return Err((
            "invalid_dpop_proof",
            "the DPoP proof was used before (jti replayed)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_taken_once_per_key_while_it_could_be_accepted() {
        let seen = SeenProofs::default();
        assert!(seen.first_use("k1", "j", 100));
        assert!(!seen.first_use("k1", "j", 101));
        assert!(!seen.first_use("k1", "j", 100 + MAX_AGE_SECONDS + MAX_SKEW_SECONDS));
        assert!(seen.first_use("k2", "j", 101), "another key's jti is its own");
        // Forgotten only once no proof with it could be accepted any more.
        assert!(seen.first_use("k1", "j", 101 + MAX_AGE_SECONDS + MAX_SKEW_SECONDS));
    }

    #[test]
    fn one_key_flooding_its_proofs_is_refused_and_others_are_not() {
        let seen = SeenProofs::default();
        for i in 0..MAX_SEEN_PER_KEY {
            assert!(seen.first_use("flood", &i.to_string(), 100));
        }
        assert!(!seen.first_use("flood", "one more", 100));
        assert!(seen.first_use("other", "j", 100));
        // Its share comes back as its proofs expire.
        assert!(seen.first_use("flood", "later", 100 + MAX_AGE_SECONDS + MAX_SKEW_SECONDS + 1));
    }

    #[test]
    fn the_scheme_is_read_case_insensitively_and_others_are_not_ours() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "dpop abc".parse().unwrap());
        assert_eq!(authorization(&h), Some((Scheme::Dpop, "abc")));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(authorization(&h), Some((Scheme::Bearer, "abc")));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(authorization(&h), None);
        h.insert(header::AUTHORIZATION, "DPoP ".parse().unwrap());
        assert_eq!(authorization(&h), None);
    }
}
