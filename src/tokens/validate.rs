//! Is this token active right now? Signature and claims first (no I/O), then
//! the lease and the revocation rules in the database, so the answer is the
//! same on every replica the moment a revocation commits.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::claims::AccessClaims;
use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::jose::jws::{self, JwsError};
use crate::keys::{KeyService, KeySet};
use crate::leases::{Lease, LeaseProbe};
use crate::storage::{Store, StoreError};

/// Allowance for verifiers' clocks on `nbf`.
const LEEWAY_SECONDS: i64 = 30;

/// Why a token is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Malformed,
    UnknownKey,
    BadSignature,
    WrongType,
    WrongIssuer,
    Expired,
    NotYetValid,
    /// No lease, or one that disagrees with the token.
    UnknownLease,
    Revoked,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::WrongType => "wrong_type",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::UnknownLease => "unknown_lease",
            Reason::Revoked => "revoked",
        }
    }
}

impl From<JwsError> for Reason {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed => Reason::Malformed,
            JwsError::UnknownKey => Reason::UnknownKey,
            JwsError::BadSignature => Reason::BadSignature,
            JwsError::WrongType => Reason::WrongType,
        }
    }
}

#[derive(Debug)]
pub enum Validity {
    Active {
        claims: Box<AccessClaims>,
        lease: Box<Lease>,
    },
    Inactive {
        reason: Reason,
        claims: Option<Box<AccessClaims>>,
    },
}

/// Checks what can be checked without the database: signature, `typ`, `iss`,
/// time window. Returns the claims or the reason they are refused.
pub fn check_offline(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    now: DateTime<Utc>,
) -> Result<Box<AccessClaims>, (Reason, Option<Box<AccessClaims>>)> {
    let (_, raw) = jws::verify(token, &keys.published).map_err(|e| (Reason::from(e), None))?;
    let claims: Box<AccessClaims> = serde_json::from_slice(&raw).map_err(|_| (Reason::Malformed, None))?;
    if claims.iss != issuer {
        return Err((Reason::WrongIssuer, Some(claims)));
    }
    let t = now.timestamp();
    if claims.exp <= t {
        return Err((Reason::Expired, Some(claims)));
    }
    if claims.nbf > t + LEEWAY_SECONDS {
        return Err((Reason::NotYetValid, Some(claims)));
    }
    Ok(claims)
}

/// Judges the lease a token names. The lease is the record: a token that
/// disagrees with it in any claim that grants something was not minted
/// here, whatever key signed it.
pub fn judge(claims: Box<AccessClaims>, lease: Lease, revoked_by_rule: bool, now: DateTime<Utc>) -> Validity {
    if lease.tenant_id != claims.tenant
        || lease.client_id != claims.client_id
        || lease.workload != claims.sub
        || lease.workflow != claims.workflow
        || lease.resource != claims.aud
        || lease.scopes.join(" ") != claims.scope
        || lease.expires_at.timestamp() != claims.exp
        || lease.actor != claims.act
        || claims.lease_seq.is_some_and(|seq| seq != lease.seq)
    {
        return Validity::Inactive {
            reason: Reason::UnknownLease,
            claims: Some(claims),
        };
    }
    if lease.revoked_at.is_some() || revoked_by_rule {
        return Validity::Inactive {
            reason: Reason::Revoked,
            claims: Some(claims),
        };
    }
    if lease.expires_at <= now {
        return Validity::Inactive {
            reason: Reason::Expired,
            claims: Some(claims),
        };
    }
    Validity::Active {
        claims,
        lease: Box::new(lease),
    }
}

/// Checks mayfly's own tokens: offline, then against the lease and rules.
#[derive(Clone)]
pub struct Verifier {
    leases: LeaseProbe,
    keys: KeyService,
    audit: AuditLog,
    issuer: String,
    /// The admin API's canonical URI (the issuer's).
    admin_api: String,
    clock: Arc<dyn Clock>,
}

/// Who introspects: a resource server of a tenant, or an admin (global: no tenant).
#[derive(Debug, Clone)]
pub struct Introspecting {
    pub tenant: Option<String>,
    pub client_id: String,
    /// A resource server: never told about admin-API tokens, and (with
    /// `serves`) only about tokens for the resources it serves.
    pub resource_server: bool,
    /// Canonical URIs it serves; None: every resource of its tenant.
    pub serves: Option<Vec<String>>,
}

impl Verifier {
    pub fn new(
        store: Store,
        keys: KeyService,
        audit: AuditLog,
        issuer: &crate::tokens::issuer::IssuerId,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            leases: LeaseProbe::spawn(store),
            keys,
            audit,
            issuer: issuer.url.clone(),
            admin_api: issuer.canonical.clone(),
            clock,
        }
    }

    /// Why a resource server may not learn about an active token of its own tenant.
    fn withheld(&self, caller: &Introspecting, claims: &AccessClaims) -> Option<&'static str> {
        if !caller.resource_server {
            return None;
        }
        let aud = crate::tenants::uri::canonicalize(&claims.aud).unwrap_or_default();
        if aud == self.admin_api {
            return Some("admin_token");
        }
        match &caller.serves {
            Some(serves) if !serves.contains(&aud) => Some("not_served"),
            _ => None,
        }
    }

    /// RFC 7662: the claims of an active token of the caller's tenant, or
    /// None. Inactive answers are audited in the caller's tenant, naming the
    /// lease only when it is theirs; another tenant's token is reported as
    /// inactive whatever its state.
    pub async fn introspect(
        &self,
        caller: &Introspecting,
        token: &str,
        origin: &Origin,
    ) -> Result<Option<Box<AccessClaims>>, StoreError> {
        let theirs = |c: &AccessClaims| caller.tenant.as_ref().is_none_or(|t| *t == c.tenant);
        let (reason, claims) = match self.check(token).await? {
            Validity::Active { claims, .. } if theirs(&claims) => match self.withheld(caller, &claims) {
                None => {
                    metrics::counter!("mayfly_introspections_total", "active" => "true").increment(1);
                    return Ok(Some(claims));
                }
                Some(why) => (why, Some(claims)),
            },
            Validity::Active { claims, .. } => ("other_tenant", Some(claims)),
            Validity::Inactive {
                claims: Some(claims), ..
            } if !theirs(&claims) => ("other_tenant", Some(claims)),
            Validity::Inactive { reason, claims } => (reason.as_str(), claims),
        };
        let mut event = origin.event(actions::TOKEN_INTROSPECTED, Outcome::Denied, self.clock.now());
        event.reason = Some(reason.to_string());
        event.tenant = caller.tenant.clone();
        event.client_id = Some(caller.client_id.clone());
        if let Some(c) = claims.filter(|c| theirs(c)) {
            event.tenant = Some(c.tenant);
            event.workflow = Some(c.workflow);
            event.workload = Some(c.sub);
            event.resource = Some(c.aud);
            event.lease_id = c.jti.parse().ok();
        }
        self.audit.append(&[event]).await?;
        metrics::counter!("mayfly_introspections_total", "active" => "false").increment(1);
        Ok(None)
    }

    /// Checks signature and claims only (no database): for a holder revoking its own token.
    pub fn check_offline(&self, token: &str) -> Result<Box<AccessClaims>, Reason> {
        check_offline(token, &self.keys.keyring().current(), &self.issuer, self.clock.now()).map_err(|(r, _)| r)
    }

    async fn check_once(&self, token: &str) -> Result<Validity, StoreError> {
        let now = self.clock.now();
        let claims = match check_offline(token, &self.keys.keyring().current(), &self.issuer, now) {
            Ok(c) => c,
            Err((reason, claims)) => return Ok(Validity::Inactive { reason, claims }),
        };
        let Ok(lease_id) = claims.jti.parse() else {
            return Ok(Validity::Inactive {
                reason: Reason::Malformed,
                claims: Some(claims),
            });
        };
        match self.leases.status(lease_id).await? {
            Some(status) => Ok(judge(claims, status.lease, status.revoked_by.is_some(), now)),
            None => Ok(Validity::Inactive {
                reason: Reason::UnknownLease,
                claims: Some(claims),
            }),
        }
    }

    /// Whether `token` is active now. A token signed by a key this replica
    /// has not loaded yet (another replica just rotated or replaced it) gets
    /// one keyring reload first, so every replica agrees within a request.
    pub async fn check(&self, token: &str) -> Result<Validity, StoreError> {
        let validity = self.check_once(token).await?;
        if let Validity::Inactive {
            reason: Reason::UnknownKey,
            ..
        } = validity
            && self.keys.reload_for_unknown_kid().await
        {
            return self.check_once(token).await;
        }
        Ok(validity)
    }
}
