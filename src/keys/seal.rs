//! The master key and the sealing of private signing keys with AES-256-GCM
//! (ring). Private key material exists in plaintext only in memory; it is
//! never stored, logged or returned.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::storage::files::{create_private_dir, sqlite_data_dir};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes given as base64 or 64 hex digits")]
    BadMasterKey,
    #[error("cannot read master key file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("MAYFLY_MASTER_KEY (or MAYFLY_MASTER_KEY_FILE) is required with Postgres: every replica must share it")]
    Required,
    #[error("sealed key material is corrupt or was sealed under another master key")]
    Open,
}

pub struct MasterKey {
    key: LessSafeKey,
    /// Keys audit checkpoints; derived, so the master key itself signs nothing.
    checkpoint: ring::hmac::Key,
    /// Keys the console's CSRF tokens (HKDF from the master key, so every
    /// replica sharing the master key derives the same one).
    console_csrf: ring::hmac::Key,
    /// Seals DPoP nonces (HKDF from the master key: any replica opens them).
    dpop_nonces: LessSafeKey,
    /// Short digest naming this key, stored beside what it sealed so a wrong
    /// key is reported as such. Reveals nothing usable about the key.
    pub id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadMasterKey)?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"mayfly master key id v1");
        ctx.update(bytes);
        let id = hex(&ctx.finish().as_ref()[..8]);
        let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes);
        let derived = ring::hmac::sign(&derive, b"mayfly audit checkpoint key v1");
        let console_csrf = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"mayfly")
            .extract(bytes)
            .expand(&[b"mayfly console csrf key v1"], ring::hmac::HMAC_SHA256)
            .map_err(|_| SealError::BadMasterKey)?
            .into();
        let dpop_nonces: UnboundKey = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"mayfly")
            .extract(bytes)
            .expand(&[b"mayfly dpop nonce key v1"], &AES_256_GCM)
            .map_err(|_| SealError::BadMasterKey)?
            .into();
        Ok(Self {
            dpop_nonces: LessSafeKey::new(dpop_nonces),
            key: LessSafeKey::new(unbound),
            checkpoint: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()),
            console_csrf,
            id,
        })
    }

    /// The key the console's CSRF tokens are MAC'd with.
    pub fn console_csrf_key(&self) -> ring::hmac::Key {
        self.console_csrf.clone()
    }

    /// The key DPoP nonces are sealed with.
    pub fn dpop_nonce_key(&self) -> LessSafeKey {
        self.dpop_nonces.clone()
    }

    /// The key audit checkpoints are MAC'd with.
    pub fn checkpoint_key(&self) -> ring::hmac::Key {
        self.checkpoint.clone()
    }

    /// Accepts base64 (standard or URL-safe, padded or not) or hex.
    pub fn from_text(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        let bytes = Zeroizing::new(decoded.ok_or(SealError::BadMasterKey)?);
        if bytes.len() != 32 {
            return Err(SealError::BadMasterKey);
        }
        Self::from_bytes(&bytes)
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        // Sealing only fails for inputs larger than GCM allows; ours are a few hundred bytes.
        if self
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .is_err()
        {
            std::process::abort();
        }
        out.extend_from_slice(&body);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| SealError::Open)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

pub fn fill_random(buf: &mut [u8]) {
    // A machine without randomness can do nothing safely: stop rather than continue.
    if SystemRandom::new().fill(buf).is_err() {
        std::process::abort();
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the master key came from; a generated one earns a warning at every start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

/// Finds the master key: `MAYFLY_MASTER_KEY`, `MAYFLY_MASTER_KEY_FILE`, or (on
/// the embedded SQLite store only) a key file generated in the data directory.
pub fn load_master_key(config: &Config) -> Result<(MasterKey, MasterKeySource), SealError> {
    if let Some(text) = &config.master_key {
        return Ok((
            MasterKey::from_text(text.expose_secret())?,
            MasterKeySource::Environment,
        ));
    }
    if let Some(path) = &config.master_key_file {
        let text = read_key_file(path)?;
        return Ok((MasterKey::from_text(&text)?, MasterKeySource::File(path.clone())));
    }
    let Some(dir) = sqlite_data_dir(&config.database_url) else {
        return Err(SealError::Required);
    };
    let path = dir.join("master.key");
    let file_err = |source| SealError::File {
        path: path.clone(),
        source,
    };
    if path.exists() {
        let text = read_key_file(&path)?;
        return Ok((MasterKey::from_text(&text)?, MasterKeySource::Generated(path)));
    }
    create_private_dir(&dir).map_err(file_err)?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill_random(bytes.as_mut());
    let text = Zeroizing::new(STANDARD.encode(bytes.as_ref()));
    let mut file = open_private(&path).map_err(file_err)?;
    file.write_all(text.as_bytes()).map_err(file_err)?;
    file.sync_all().map_err(file_err)?;
    Ok((MasterKey::from_bytes(bytes.as_ref())?, MasterKeySource::Generated(path)))
}

fn read_key_file(path: &Path) -> Result<Zeroizing<String>, SealError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| SealError::File {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_material_opens_only_with_the_same_key_and_label() {
        let a = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let b = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        let sealed = a.seal(b"private", b"kid-1");
        assert_eq!(a.open(&sealed, b"kid-1").unwrap().as_slice(), b"private");
        assert!(a.open(&sealed, b"kid-2").is_err());
        assert!(b.open(&sealed, b"kid-1").is_err());
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn master_keys_are_read_as_base64_or_hex_and_must_be_32_bytes() {
        let hex_key = "00".repeat(32);
        let b64 = STANDARD.encode([0u8; 32]);
        assert_eq!(
            MasterKey::from_text(&hex_key).unwrap().id,
            MasterKey::from_text(&b64).unwrap().id
        );
        assert!(MasterKey::from_text("short").is_err());
        assert!(MasterKey::from_text(&STANDARD.encode([0u8; 16])).is_err());
    }

    #[test]
    fn the_data_directory_comes_from_the_sqlite_url() {
        assert_eq!(
            sqlite_data_dir("sqlite://./mayfly-data/mayfly.db"),
            Some(PathBuf::from("./mayfly-data"))
        );
        assert_eq!(sqlite_data_dir("sqlite:x.db?mode=rwc"), Some(PathBuf::from(".")));
        assert_eq!(sqlite_data_dir("postgres://localhost/db"), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_generated_master_key_lives_in_a_directory_only_its_owner_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("mayfly-seal-{}", uuid::Uuid::new_v4().simple()));
        let _cleanup = crate::testing::TempDir(root.clone());
        let config = Config::new(
            format!("sqlite://{}/data/mayfly.db", root.display()),
            "http://127.0.0.1:8420",
        );
        let (_, source) = load_master_key(&config).unwrap();
        let key = root.join("data").join("master.key");
        assert_eq!(source, MasterKeySource::Generated(key.clone()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700, "missing parents too");
        assert_eq!(mode(&root.join("data")), 0o700);
        assert_eq!(mode(&key), 0o600);
    }
}
