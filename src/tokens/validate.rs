//! Is this token active right now? Signature and claims first (no I/O), then
//! the lease and the revocation rules in the database, so the answer is the
//! same on every replica the moment a revocation commits.

use chrono::{DateTime, Utc};

use super::claims::AccessClaims;
use super::jws;
use crate::keys::KeySet;
use crate::leases::{Inactive, Lease};
use crate::storage::{Store, StoreError};

/// Allowance for verifiers' clocks on `nbf`.
const LEEWAY_SECONDS: i64 = 30;

#[derive(Debug)]
pub enum Validity {
    Active {
        claims: Box<AccessClaims>,
        lease: Box<Lease>,
    },
    Inactive {
        reason: &'static str,
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
) -> Result<Box<AccessClaims>, (&'static str, Option<Box<AccessClaims>>)> {
    let (_, raw) = jws::verify(token, keys).map_err(|e| {
        (
            match e {
                jws::JwsError::Malformed => "malformed",
                jws::JwsError::UnknownKey => "unknown_key",
                jws::JwsError::BadSignature => "bad_signature",
                jws::JwsError::WrongType => "wrong_type",
            },
            None,
        )
    })?;
    let claims: Box<AccessClaims> = serde_json::from_slice(&raw).map_err(|_| ("malformed", None))?;
    if claims.iss != issuer {
        return Err(("wrong_issuer", Some(claims)));
    }
    let t = now.timestamp();
    if claims.exp <= t {
        return Err((Inactive::Expired.as_str(), Some(claims)));
    }
    if claims.nbf > t + LEEWAY_SECONDS {
        return Err((Inactive::NotYetValid.as_str(), Some(claims)));
    }
    Ok(claims)
}

pub async fn check(
    store: &Store,
    keys: &KeySet,
    issuer: &str,
    now: DateTime<Utc>,
    token: &str,
) -> Result<Validity, StoreError> {
    let claims = match check_offline(token, keys, issuer, now) {
        Ok(c) => c,
        Err((reason, claims)) => return Ok(Validity::Inactive { reason, claims }),
    };
    let Ok(lease_id) = claims.jti.parse() else {
        return Ok(Validity::Inactive {
            reason: "malformed",
            claims: Some(claims),
        });
    };
    let status = match store.lease_status(lease_id).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => {
            return Ok(Validity::Inactive {
                reason: Inactive::Unknown.as_str(),
                claims: Some(claims),
            });
        }
        Err(e) => return Err(e),
    };
    let lease = status.lease;
    // The lease is the record; a token disagreeing with it was not minted here.
    // The lease is the record: a token that disagrees with it in any claim
    // that grants something was not minted here, whatever key signed it.
    if lease.tenant_id != claims.tenant
        || lease.client_id != claims.client_id
        || lease.workload != claims.sub
        || lease.workflow != claims.workflow
        || lease.resource != claims.aud
        || lease.scopes.join(" ") != claims.scope
        || lease.expires_at.timestamp() != claims.exp
        || lease.actor != claims.act
    {
        return Ok(Validity::Inactive {
            reason: Inactive::Unknown.as_str(),
            claims: Some(claims),
        });
    }
    if lease.revoked_at.is_some() || status.revoked_by.is_some() {
        return Ok(Validity::Inactive {
            reason: Inactive::Revoked.as_str(),
            claims: Some(claims),
        });
    }
    if lease.expires_at <= now {
        return Ok(Validity::Inactive {
            reason: Inactive::Expired.as_str(),
            claims: Some(claims),
        });
    }
    Ok(Validity::Active {
        claims,
        lease: Box::new(lease),
    })
}

/// As `check`, but a token signed by a key this replica has not loaded yet
/// (another replica just rotated or replaced it) gets one keyring reload
/// first, at most once a second, so every replica agrees within a request.
pub async fn check_fresh(state: &crate::app::AppState, token: &str) -> Result<Validity, StoreError> {
    let issuer = &state.config.issuer;
    let validity = check(&state.store, &state.keyring.current(), issuer, state.clock.now(), token).await?;
    if matches!(
        validity,
        Validity::Inactive {
            reason: "unknown_key",
            ..
        }
    ) && state.keyring.may_reload()
    {
        if let Err(e) = crate::keys::rotation::reload(state).await {
            tracing::warn!(error = %e, "cannot reload signing keys");
        }
        return check(&state.store, &state.keyring.current(), issuer, state.clock.now(), token).await;
    }
    Ok(validity)
}
