//! The audit trail: append-only events that carry who/what/for-whom/outcome,
//! never a secret or a token. Each event is hashed over its own canonical
//! content and folded into a transparency log (`log`: an RFC 6962 tree with
//! signed checkpoints); events from before the log were chained, each hashed
//! over its predecessor's hash, and stay verifiable as that chain.

pub mod checkpoint;
pub mod export;
pub mod log;
pub mod merkle;
pub mod note;
pub mod prove;
pub mod sql;
pub mod tlog;
pub mod tree;
pub mod tree_sql;
pub mod verify;

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub use log::AuditLog;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Text an unauthenticated caller had a hand in, made fit for an event: at
/// most `max` characters (an ellipsis marks the cut), control characters
/// (terminal escapes, newlines that forge log lines) replaced.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// One audit event, as stored, hashed and served. Field order is the hash's
/// canonical order: do not reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub action: String,
    pub outcome: String,
    pub reason: Option<String>,
    #[sqlx(rename = "tenant_id")]
    pub tenant: Option<String>,
    pub workflow: Option<String>,
    pub workload: Option<String>,
    pub client_id: Option<String>,
    #[sqlx(json(nullable))]
    pub actor: Option<serde_json::Value>,
    #[sqlx(json(nullable))]
    pub admin: Option<serde_json::Value>,
    pub resource: Option<String>,
    #[sqlx(json(nullable))]
    pub scopes: Option<Vec<String>>,
    pub lease_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub source: Option<String>,
    /// What an MCP request through a gateway did (`mcp.request` only):
    /// absent from every other event, so their hashes are as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[sqlx(json(nullable))]
    pub mcp: Option<serde_json::Value>,
}

/// What the event sealing the pre-log chain says: the chain's length and
/// head, so the chain's end is fixed inside the signed tree.
pub fn chain_seal_reason(count: i64, head: &str) -> String {
    format!("the chain written before the log ends here: {count} events, head {head}")
}

impl AuditEvent {
    pub fn new(action: &str, outcome: Outcome, at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7(),
            at,
            action: action.to_string(),
            outcome: outcome.as_str().to_string(),
            reason: None,
            tenant: None,
            workflow: None,
            workload: None,
            client_id: None,
            actor: None,
            admin: None,
            resource: None,
            scopes: None,
            lease_id: None,
            request_id: None,
            source: None,
            mcp: None,
        }
    }

    /// The event as every store gives it back: its time to the microsecond
    /// (Postgres keeps no finer) and no negative zero in its JSON (a
    /// `jsonb` number has none). What the content hash is taken over, so
    /// the hash recomputed from a stored row is the one recorded.
    pub fn as_stored(&self) -> std::borrow::Cow<'_, AuditEvent> {
        let fine = crate::clock::truncate_micros(self.at) != self.at;
        let zero = [&self.actor, &self.admin, &self.mcp]
            .into_iter()
            .flatten()
            .any(has_negative_zero);
        if !fine && !zero {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut e = self.clone();
        e.at = crate::clock::truncate_micros(e.at);
        for v in [&mut e.actor, &mut e.admin, &mut e.mcp].into_iter().flatten() {
            clear_negative_zero(v);
        }
        std::borrow::Cow::Owned(e)
    }

    /// SHA-256 of the canonical JSON of the event (the struct's field order,
    /// no whitespace, object keys sorted): what a log leaf commits to.
    pub fn content_hash(&self) -> [u8; 32] {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, &body).as_ref());
        out
    }

    /// hash = SHA-256(previous hash ‖ '\n' ‖ canonical JSON of the event), hex:
    /// the link of the chain written before the log.
    pub fn chain_hash(&self, prev_hash: &str) -> String {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev_hash.as_bytes());
        ctx.update(b"\n");
        ctx.update(&body);
        crate::keys::seal::hex(ctx.finish().as_ref())
    }
}

fn has_negative_zero(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()),
        serde_json::Value::Array(a) => a.iter().any(has_negative_zero),
        serde_json::Value::Object(o) => o.values().any(has_negative_zero),
        _ => false,
    }
}

fn clear_negative_zero(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) => {
            *v = serde_json::json!(0.0);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(clear_negative_zero),
        serde_json::Value::Object(o) => o.values_mut().for_each(clear_negative_zero),
        _ => {}
    }
}

/// Where a request came from: stamped on its leases and audit events.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: String,
    pub source: String,
}

impl Origin {
    /// An event of the request this is the origin of: its request id and
    /// source address already stamped.
    pub fn event(&self, action: &str, outcome: Outcome, at: DateTime<Utc>) -> AuditEvent {
        let mut e = AuditEvent::new(action, outcome, at);
        e.request_id = Some(self.request_id.clone());
        e.source = Some(self.source.clone());
        e
    }
}

/// An administrator acting through the API, known by its admin token.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminId {
    pub client_id: String,
    pub sub: String,
    pub jti: String,
    pub act: Option<serde_json::Value>,
}

/// Who caused an event and from where. Client ids come first in the record:
/// a `sub` is chosen by the caller, a client id is authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The `admin` field of events: the admin's identity, or `{"system": …}`.
    pub identity: serde_json::Value,
    pub act: Option<serde_json::Value>,
    pub origin: Origin,
}

impl Caller {
    /// The authenticated client id is the identity; the token's `sub` is a
    /// label the client chose when minting, recorded as `workload`.
    pub fn admin(admin: &AdminId, origin: Origin) -> Self {
        let mut identity = json!({"client_id": admin.client_id, "workload": admin.sub, "jti": admin.jti});
        if let Some(act) = &admin.act {
            identity["act"] = act.clone();
        }
        Self {
            identity,
            act: admin.act.clone(),
            origin,
        }
    }

    /// mayfly itself (start-up, the key schedule, a CLI command).
    pub fn system(what: &str) -> Self {
        Self {
            identity: json!({"system": what}),
            act: None,
            origin: Origin::default(),
        }
    }

    /// A successful event attributed to this caller.
    pub fn event(&self, action: &str, at: DateTime<Utc>) -> AuditEvent {
        let mut e = AuditEvent::new(action, Outcome::Success, at);
        e.admin = Some(self.identity.clone());
        e.actor = self.act.clone();
        if !self.origin.request_id.is_empty() {
            e.request_id = Some(self.origin.request_id.clone());
            e.source = Some(self.origin.source.clone());
        }
        e
    }
}

/// A stored event with its place in the record: a chain link (`prev_hash`
/// set: written before the log) or a log entry (`prev_hash` empty, `hash`
/// its content hash, `log_index` once integrated).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainedEvent {
    pub seq: i64,
    #[sqlx(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
    pub log_index: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub ok: bool,
    pub checked: u64,
    /// The first event whose hash or link is wrong; null when none is (a
    /// chain that is sound but shorter than it should be: `problem` says so).
    pub first_broken: Option<Uuid>,
    /// What is wrong, when something is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Events in the transparency log, every one recomputed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_size: Option<u64>,
}

/// Walks events in chain order, carrying the expected previous hash.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_prev: String,
    pub checked: u64,
    pub first_broken: Option<Uuid>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_prev: GENESIS.to_string(),
            checked: 0,
            first_broken: None,
        }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, e: &ChainedEvent) {
        if e.prev_hash.is_empty() {
            // A log entry: the tree vouches for it, not the chain.
            return;
        }
        self.checked += 1;
        if self.first_broken.is_none()
            && (e.prev_hash != self.expected_prev || e.event.chain_hash(&e.prev_hash) != e.hash)
        {
            self.first_broken = Some(e.event.id);
        }
        self.expected_prev = e.hash.clone();
    }

    /// `head` is the hash the chain table says is last: a truncated tail shows here.
    pub fn finish(self, head: &str) -> Verification {
        let mut first_broken = self.first_broken;
        let mut problem = first_broken.map(|_| "an event's hash or link does not match".to_string());
        if first_broken.is_none() && head != self.expected_prev {
            first_broken = Some(Uuid::nil());
            problem = Some("the recorded head is not the last event".into());
        }
        Verification {
            ok: first_broken.is_none(),
            checked: self.checked,
            first_broken,
            problem,
            log_size: None,
        }
    }
}

pub mod actions {
    pub const TOKEN_ISSUED: &str = "token.issued";
    pub const TOKEN_DENIED: &str = "token.denied";
    pub const TOKEN_INTROSPECTED: &str = "token.introspected";
    pub const TOKEN_REVOKED: &str = "token.revoked";
    pub const CLIENT_AUTH_FAILED: &str = "client.auth_failed";
    pub const ADMIN_DENIED: &str = "admin.denied";
    pub const TENANT_CREATED: &str = "tenant.created";
    pub const TENANT_UPDATED: &str = "tenant.updated";
    pub const TENANT_DELETED: &str = "tenant.deleted";
    pub const RESOURCE_CREATED: &str = "resource.created";
    pub const RESOURCE_UPDATED: &str = "resource.updated";
    pub const RESOURCE_DELETED: &str = "resource.deleted";
    pub const CLIENT_CREATED: &str = "client.created";
    pub const CLIENT_UPDATED: &str = "client.updated";
    pub const CLIENT_DELETED: &str = "client.deleted";
    pub const CLIENT_SECRET_ROTATED: &str = "client.secret_rotated";
    pub const REVOCATION_CREATED: &str = "revocation.created";
    pub const TRUST_POLICY_CREATED: &str = "trust_policy.created";
    pub const TRUST_POLICY_UPDATED: &str = "trust_policy.updated";
    pub const TRUST_POLICY_DELETED: &str = "trust_policy.deleted";
    pub const TOKEN_EXCHANGED: &str = "token.exchanged";
    pub const KEY_CREATED: &str = "key.created";
    pub const KEY_ROTATED: &str = "key.rotated";
    pub const KEY_REMOVED: &str = "key.removed";
    pub const KEY_REVOKED: &str = "key.revoked";
    pub const KEY_REWRAPPED: &str = "key.rewrapped";
    /// A removed or revoked key held outside the database was destroyed there.
    pub const KEY_DESTROYED: &str = "key.destroyed";
    pub const MCP_REQUEST: &str = "mcp.request";
    pub const LOGIN_PROVIDER_CREATED: &str = "login_provider.created";
    pub const LOGIN_PROVIDER_UPDATED: &str = "login_provider.updated";
    pub const LOGIN_PROVIDER_DELETED: &str = "login_provider.deleted";
    /// An authorization request refused before sign-in (client, redirect, PKCE, resource).
    pub const AUTHORIZATION_REFUSED: &str = "authorization.refused";
    pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
    pub const LOGIN_FAILED: &str = "login.failed";
    pub const CONSENT_GRANTED: &str = "consent.granted";
    pub const CONSENT_DENIED: &str = "consent.denied";
    /// A person's session (refresh family) ended: revoked, or a spent code or refresh token reused.
    pub const SESSION_REVOKED: &str = "session.revoked";
    /// A public client registered itself (RFC 7591).
    pub const CLIENT_REGISTERED: &str = "client.registered";
    pub const CHAIN_SEALED: &str = "audit.chain_sealed";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chained(events: &[AuditEvent]) -> Vec<ChainedEvent> {
        let mut prev = GENESIS.to_string();
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let hash = e.chain_hash(&prev);
                let c = ChainedEvent {
                    seq: i as i64,
                    event: e.clone(),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    log_index: None,
                };
                prev = hash;
                c
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_an_edit_is_located() {
        let events: Vec<_> = (0..3)
            .map(|_| AuditEvent::new("token.issued", Outcome::Success, DateTime::UNIX_EPOCH))
            .collect();
        let mut chain = chained(&events);
        let head = chain[2].hash.clone();
        let mut v = ChainVerifier::default();
        chain.iter().for_each(|e| v.check(e));
        assert_eq!(
            v.finish(&head),
            Verification {
                ok: true,
                checked: 3,
                first_broken: None,
                problem: None,
                log_size: None,
            }
        );

        chain[1].event.reason = Some("edited".into());
        let mut v = ChainVerifier::default();
        chain.iter().for_each(|e| v.check(e));
        let r = v.finish(&head);
        assert!(!r.ok);
        assert_eq!(r.first_broken, Some(events[1].id));
    }

    #[test]
    fn a_truncated_tail_is_detected_through_the_head() {
        let events: Vec<_> = (0..2)
            .map(|_| AuditEvent::new("a.b", Outcome::Success, DateTime::UNIX_EPOCH))
            .collect();
        let chain = chained(&events);
        let mut v = ChainVerifier::default();
        v.check(&chain[0]);
        assert!(!v.finish(&chain[1].hash).ok);
    }
}
