//! People at the keyboard: IDE and desktop MCP clients sign a person in with
//! the authorization code flow. mayfly stores no passwords: the person signs
//! in at the tenant's company IdP (a login provider), agrees on a consent
//! page, and the MCP client redeems a single-use code. What it gets is a
//! lease like any other (`sub` = the person) and a refresh token in a family
//! (a "session") that every revocation rule reaching the person, the client
//! or the first lease ends. Nothing here knows HTTP.

pub mod cimd;
mod ending;
pub mod flow;
pub mod idp;
pub mod providers;
pub mod registration;
pub mod sessions;
mod signin;
pub mod sql;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::federation::policy::ClaimCondition;
use crate::tenants::Grant;

pub use flow::People;

/// How long an authorization request may take, sign-in and consent included.
pub const AUTHORIZATION_SECONDS: i64 = 600;
/// How long a code lives once issued (DESIGN: 60 s).
pub const CODE_SECONDS: i64 = 60;
/// The workflow people's tokens name unless the provider says otherwise.
pub const DEFAULT_WORKFLOW: &str = "interactive";

/// A tenant's company IdP.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginProvider {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    /// The client secret at the IdP, sealed under the master key.
    pub sealed_secret: Option<Vec<u8>>,
    #[sqlx(json)]
    pub scopes: Vec<String>,
    #[sqlx(json)]
    pub claims: BTreeMap<String, ClaimCondition>,
    pub workload_template: String,
    pub workflow: String,
    #[sqlx(json)]
    pub grants: Vec<Grant>,
    pub max_ttl_seconds: i64,
    pub refresh_ttl_seconds: i64,
    /// Whether clients registered through RFC 7591 may sign people in here.
    pub allow_registration: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One authorization request, from `/oauth2/authorize` to the code's redemption.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Authorization {
    /// Random; the IdP leg's `state`.
    pub id: String,
    pub tenant_id: String,
    pub provider_id: Uuid,
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    pub resource: String,
    /// What the person is asked to grant (already narrowed to the provider's grants).
    #[sqlx(json)]
    pub scopes: Vec<String>,
    pub client_state: Option<String>,
    pub code_challenge: String,
    /// SHA-256 of the cookie of the browser that started the request.
    pub browser_digest: String,
    pub idp_nonce: String,
    pub idp_verifier: String,
    /// The person (the provider's workload template), once signed in.
    pub person: Option<String>,
    #[sqlx(json(nullable))]
    pub identity: Option<serde_json::Value>,
    pub code_digest: Option<String>,
    pub session_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// A person's session with one MCP client: a refresh-token family.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub id: Uuid,
    pub tenant_id: String,
    pub provider_id: Uuid,
    pub client_id: String,
    pub client_name: Option<String>,
    pub workload: String,
    pub workflow: String,
    pub resource: String,
    #[sqlx(json)]
    pub scopes: Vec<String>,
    #[sqlx(json)]
    pub identity: serde_json::Value,
    /// The DPoP key the family is bound to (RFC 9449 §5: a public client's
    /// refresh tokens are bound to the key of its first proof).
    pub jkt: Option<String>,
    pub root_lease_id: Option<Uuid>,
    pub latest_lease_id: Option<Uuid>,
    pub refreshes: i64,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

/// A fresh secret with a recognisable prefix (for secret scanners).
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    crate::keys::seal::fill_random(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// How opaque secrets (codes, refresh tokens, browser cookies) are stored.
pub fn digest(secret: &str) -> String {
    crate::keys::seal::hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// RFC 7636 S256: BASE64URL(SHA-256(verifier)).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

/// Compares two secrets in constant time (through ring's HMAC verification).
pub fn same(presented: &str, expected: &str) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"mayfly people compare v1");
    let tag = ring::hmac::sign(&key, expected.as_bytes());
    ring::hmac::verify(&key, presented.as_bytes(), tag.as_ref()).is_ok()
}
