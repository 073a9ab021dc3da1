//! Client secrets: 256 random bits behind a recognisable prefix (so secret
//! scanners can spot a leaked one). Only a keyed SHA-256 digest is stored, and
//! comparison goes through ring's constant-time HMAC verification.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

pub const PREFIX: &str = "mfy_cs_";

/// Domain separation for the stored digest; not a secret. The secrets carry
/// 256 bits of entropy, so a fast digest is the right tool (no password KDF).
const DIGEST_KEY: &[u8] = b"mayfly client secret digest v1";

pub fn generate() -> SecretString {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .unwrap_or_else(|_| std::process::abort()); // no randomness: nothing is safe to do
    SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes.as_ref())))
}

pub fn digest(secret: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, DIGEST_KEY);
    hmac::sign(&key, secret.as_bytes()).as_ref().to_vec()
}

/// Constant-time check of a presented secret against a stored digest.
pub fn matches(presented: &SecretString, stored_digest: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, DIGEST_KEY);
    hmac::verify(&key, presented.expose_secret().as_bytes(), stored_digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_matches_its_digest_and_nothing_else() {
        let s = generate();
        assert!(s.expose_secret().starts_with(PREFIX));
        assert_eq!(s.expose_secret().len(), PREFIX.len() + 43);
        let d = digest(s.expose_secret());
        assert!(matches(&s, &d));
        assert!(!matches(&generate(), &d));
        assert!(!matches(&SecretString::from(""), &d));
    }
}
