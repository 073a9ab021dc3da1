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
