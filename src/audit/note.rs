//! C2SP signed notes and `tlog-checkpoint` bodies (issue 22): what the
//! audit log publishes so that anyone can check its size and root with
//! their own code. Ed25519 via ring; the key hash is the first four bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`, the verifier key is
//! `name+hash+base64(0x01 || public key)`. Knows no storage or event.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::merkle::Hash;

/// The signature algorithm byte of Ed25519 in C2SP signed notes.
const ED25519_ALG: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a verifier key (name+hash+key)")]
    BadKey,
    #[error("not a signed note")]
    Malformed,
    #[error("no signature by {0} verifies")]
    Unsigned(String),
    #[error("not a checkpoint (origin, size, root)")]
    NotACheckpoint,
}

fn key_hash(name: &str, public: &[u8]) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ED25519_ALG]);
    ctx.update(public);
    let mut out = [0u8; 4];
    out.copy_from_slice(&ctx.finish().as_ref()[..4]);
    out
}

/// The verifier key of an Ed25519 `public` key under `name`:
/// `name+hash+base64(0x01 || public key)`.
pub fn verifier_key(name: &str, public: &[u8]) -> String {
    let mut data = vec![ED25519_ALG];
    data.extend_from_slice(public);
    format!("{name}+{}+{}", hex(&key_hash(name, public)), STANDARD.encode(data))
}

/// A log's signing key under its origin name.
pub struct NoteSigner {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    pub fn new(name: &str, key: Ed25519KeyPair) -> Self {
        Self {
            name: name.to_string(),
            key,
        }
    }

    /// `name+hash+base64(0x01 || public key)`, for verifiers.
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, self.key.public_key().as_ref())
    }

    /// `text` (ending in a newline) signed: the text, a blank line, and the
    /// signature line `— name base64(hash || signature)`.
    pub fn sign(&self, text: &str) -> String {
        let public = self.key.public_key().as_ref();
        let mut sig = key_hash(&self.name, public).to_vec();
        sig.extend_from_slice(self.key.sign(text.as_bytes()).as_ref());
        format!("{text}\n\u{2014} {} {}\n", self.name, STANDARD.encode(sig))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A verifier key, parsed.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    hash: [u8; 4],
    public: Vec<u8>,
}

impl NoteVerifier {
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey);
        };
        let data = STANDARD.decode(data).map_err(|_| NoteError::BadKey)?;
        let hash = u32::from_str_radix(hash, 16)
            .map_err(|_| NoteError::BadKey)?
            .to_be_bytes();
        match data.split_first() {
            Some((&ED25519_ALG, public))
                if public.len() == 32 && key_hash(name, public) == hash && !name.is_empty() =>
            {
                Ok(Self {
                    name: name.to_string(),
                    hash,
                    public: public.to_vec(),
                })
            }
            _ => Err(NoteError::BadKey),
        }
    }

    /// The note's text, if a signature line by this key verifies over it.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note.rfind("\n\n").ok_or(NoteError::Malformed)?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Malformed);
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed);
            };
            let Ok(sig) = STANDARD.decode(sig) else {
                return Err(NoteError::Malformed);
            };
            if name != self.name || sig.len() != 4 + 64 || sig[..4] != self.hash {
                continue;
            }
            if UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(text.as_bytes(), &sig[4..])
                .is_ok()
            {
                return Ok(text);
            }
        }
        Err(NoteError::Unsigned(self.name.clone()))
    }
}

/// A `tlog-checkpoint` body: the origin line, the tree size, the base64 root.
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", STANDARD.encode(root))
}

/// Reads a checkpoint body (extension lines after the root are allowed).
pub fn parse_checkpoint(text: &str) -> Result<(String, u64, Hash), NoteError> {
    let mut lines = text.lines();
    let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(NoteError::NotACheckpoint);
    };
    let size = size.parse::<u64>().map_err(|_| NoteError::NotACheckpoint)?;
    let root: Hash = STANDARD
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or(NoteError::NotACheckpoint)?;
    if origin.is_empty() {
        return Err(NoteError::NotACheckpoint);
    }
    Ok((origin.to_string(), size, root))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    fn signer(name: &str) -> NoteSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        NoteSigner::new(name, Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// The example of golang.org/x/mod/sumdb/note, whose format C2SP signed
    /// notes are: a note signed by PeterNeumann's key verifies with ours.
    #[test]
    fn the_reference_note_verifies_with_the_reference_key() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let v = NoteVerifier::parse(vkey).unwrap();
        assert!(v.open(note).unwrap().starts_with("If you think"));
        assert!(v.open(&note.replace("answer", "Answer")).is_err());
    }

    #[test]
    fn a_checkpoint_signed_by_the_log_opens_with_its_verifier_key_only() {
        let log = signer("mayfly.test/audit");
        let root = crate::audit::merkle::leaf_hash(b"x");
        let note = log.sign(&checkpoint_body("mayfly.test/audit", 7, &root));
        let v = NoteVerifier::parse(&log.verifier_key()).unwrap();
        let text = v.open(&note).unwrap();
        assert_eq!(parse_checkpoint(text).unwrap(), ("mayfly.test/audit".into(), 7, root));
        // Another key, a changed size, or a key under another name: refused.
        let other = NoteVerifier::parse(&signer("mayfly.test/audit").verifier_key()).unwrap();
        assert!(other.open(&note).is_err());
        assert!(v.open(&note.replacen("\n7\n", "\n8\n", 1)).is_err());
        let renamed = log.verifier_key().replacen("mayfly.test/audit", "other", 1);
        assert_eq!(NoteVerifier::parse(&renamed).unwrap_err(), NoteError::BadKey);
    }
}
