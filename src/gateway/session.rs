//! MCP session ids bound to the workload that opened them, without shared
//! state: the gateway hands out `<upstream id>.<tag>`, the tag an HMAC over
//! the route's resource, the opener (`tenant/sub`) and the upstream's id,
//! keyed from the gateway client's secret, so every replica checks every
//! session and a restart forgets none. Another workload's token cannot use
//! the id, and the upstream only ever sees its own id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};

/// Longest session id taken from a caller.
const MAX_SESSION_ID: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Not an id this gateway (or a replica) handed out.
    Malformed,
    /// Handed out to another workload, or for another route.
    NotYours,
}

pub struct SessionSeal {
    key: hmac::Key,
}

impl SessionSeal {
    pub fn new(secret: &SecretString) -> Self {
        // A key of its own, derived from the secret every replica of this gateway holds.
        let derive = hmac::Key::new(hmac::HMAC_SHA256, b"mayfly gateway session ids v1");
        let derived = hmac::sign(&derive, secret.expose_secret().as_bytes());
        SessionSeal {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    fn message(resource: &str, owner: &str, upstream: &str) -> Vec<u8> {
        [resource, owner, upstream].join("\0").into_bytes()
    }

    /// The id to hand the caller for the upstream's `upstream` id.
    pub fn seal(&self, resource: &str, owner: &str, upstream: &str) -> String {
        let tag = hmac::sign(&self.key, &Self::message(resource, owner, upstream));
        format!("{upstream}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The upstream's id inside `sealed`, if `owner` opened it on this resource.
    pub fn open(&self, resource: &str, owner: &str, sealed: &str) -> Result<String, SessionError> {
        if sealed.len() > MAX_SESSION_ID {
            return Err(SessionError::Malformed);
        }
        let (upstream, tag) = sealed.rsplit_once('.').ok_or(SessionError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SessionError::Malformed)?;
        hmac::verify(&self.key, &Self::message(resource, owner, upstream), &tag).map_err(|_| SessionError::NotYours)?;
        Ok(upstream.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_for_its_opener_on_its_route_and_for_any_replica() {
        let seal = SessionSeal::new(&SecretString::from("gateway-secret"));
        let id = seal.seal("https://mcp/a", "acme/bot", "up.stream-1");
        assert_eq!(
            seal.open("https://mcp/a", "acme/bot", &id),
            Ok("up.stream-1".to_string())
        );
        let replica = SessionSeal::new(&SecretString::from("gateway-secret"));
        assert_eq!(
            replica.open("https://mcp/a", "acme/bot", &id),
            Ok("up.stream-1".to_string())
        );
        assert_eq!(
            seal.open("https://mcp/a", "acme/other", &id),
            Err(SessionError::NotYours)
        );
        assert_eq!(seal.open("https://mcp/b", "acme/bot", &id), Err(SessionError::NotYours));
        assert_eq!(
            seal.open("https://mcp/a", "acme/bot", "up.stream-1"),
            Err(SessionError::NotYours)
        );
        assert_eq!(
            seal.open("https://mcp/a", "acme/bot", "plain"),
            Err(SessionError::Malformed)
        );
        let other_key = SessionSeal::new(&SecretString::from("another-gateway"));
        assert_eq!(
            other_key.open("https://mcp/a", "acme/bot", &id),
            Err(SessionError::NotYours)
        );
    }
}
