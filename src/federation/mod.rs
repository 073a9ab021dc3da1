//! Federation: tokens with no stored secret. A CI job, a pod or a person
//! presents an OIDC token its platform signed; a trust policy of the tenant
//! that owns the requested resource decides what it becomes. Clients may
//! also authenticate with private_key_jwt, by a key they registered or by a
//! workload token a policy binds to them. Refusals are `invalid_grant` to the
//! caller and name the failed condition in the audit trail.

pub mod admin;
pub mod keys;
pub mod policy;
pub mod reach;
pub mod sql;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use self::keys::IssuerKeys;
use self::policy::{Matched, TrustPolicy};
use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::jose::jwt::{self, JwkSet, Unverified};
use crate::storage::{Store, StoreError};
use crate::tenants::brake::{Brake, FailureLog};
use crate::tenants::{Catalog, Client, uri};
use crate::tokens::issuer::IssuerId;
use crate::tokens::terms::MintTerms;

/// Longest lifetime accepted for a client's own assertion (RFC 7523 §3: short).
const MAX_CLIENT_ASSERTION: i64 = 600;

/// Longest remaining lifetime of an assertion under a `single_use` policy.
const MAX_SINGLE_USE_SECONDS: i64 = 86_400;

/// What an external token is presented for.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// A token of its own (jwt-bearer or token exchange with no actor).
    Direct,
    /// A subject the named agent client acts for.
    ActingFor(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Safe to show: the condition that failed, never the token.
    #[error("{0}")]
    Invalid(String),
    /// Failures from this source are over its budget: retry in this many seconds.
    #[error("too many failed requests; retry in {0} s")]
    Throttled(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token a trust policy accepted.
#[derive(Debug, Clone)]
pub struct Federated {
    pub policy: TrustPolicy,
    pub matched: Matched,
}

impl Federated {
    /// What leases and audit events record of the external identity.
    pub fn provenance(&self) -> serde_json::Value {
        json!({
            "issuer": self.policy.issuer,
            "subject": self.matched.subject,
            "jti": self.matched.jti,
            "policy": self.policy.id,
            "policy_name": self.policy.name,
        })
    }

    /// The terms a token is minted on: the policy's grants, workflow and
    /// lifetime, recorded under the client the policy is bound to (loaded
    /// from the catalog: its stamp, state and rate limit hold) or, for a
    /// policy bound to none, under a client id of the policy's own.
    fn terms(&self, bound: Option<&Client>) -> MintTerms {
        let p = &self.policy;
        MintTerms {
            tenant_id: p.tenant_id.clone(),
            client_id: bound.map_or_else(|| format!("policy.{}", p.name), |c| c.client_id.clone()),
            workflows: vec![self.matched.workflow.clone()],
            grants: p.grants.clone(),
            max_ttl_seconds: bound.map_or(p.max_ttl_seconds, |c| c.max_ttl_seconds.min(p.max_ttl_seconds)),
            workload_pattern: None,
            workload_verified: true,
            max_mints_per_second: bound.and_then(|c| c.max_mints_per_second),
            stamp: bound.and_then(|c| c.catalog_version),
            dpop_bound: bound.is_some_and(|c| c.dpop_bound_access_tokens),
        }
    }
}

#[derive(Clone)]
pub struct Federation {
    store: Store,
    catalog: Arc<Catalog>,
    keys: IssuerKeys,
    audit: AuditLog,
    brake: Arc<Brake>,
    failures: Arc<FailureLog>,
    clock: Arc<dyn Clock>,
    issuer: IssuerId,
}

fn refuse(why: impl Into<String>) -> Refusal {
    Refusal::Invalid(why.into())
}

impl Federation {
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        issuer: IssuerId,
        keys: IssuerKeys,
        failures: (Arc<Brake>, Arc<FailureLog>),
    ) -> Self {
        Self {
            store,
            catalog,
            keys,
            audit,
            brake: failures.0,
            failures: failures.1,
            clock,
            issuer,
        }
    }

    /// A refusal, audited. These callers are not authenticated: their
    /// events are aggregated per source and tenant (the first written at
    /// once, the rest counted), and a source over its failure budget is
    /// answered 429 rather than given another verdict to learn from.
    async fn deny(&self, tenant: &str, client_id: Option<&str>, why: &str, origin: &Origin) -> Refusal {
        let now = self.clock.now();
        let mut event = origin.event(actions::TOKEN_DENIED, Outcome::Denied, now);
        event.reason = Some(format!("invalid_grant: {why}"));
        event.tenant = Some(tenant.to_string());
        event.client_id = client_id.map(str::to_string);
        let Ok(ip) = origin.source.parse::<std::net::IpAddr>() else {
            event.reason = event.reason.map(|r| crate::audit::sanitize(&r, 300));
            return match self.audit.append(&[event]).await {
                Ok(()) => refuse(why),
                Err(e) => e.into(),
            };
        };
        if let Some(first) = self.failures.note(ip, event)
            && let Err(e) = self.audit.append(&[first]).await
        {
            return e.into();
        }
        metrics::counter!("mayfly_federation_refusals_total").increment(1);
        match self.brake.record_failure(ip, &format!("federation:{tenant}"), now) {
            Some(wait) => Refusal::Throttled(wait),
            None => refuse(why),
        }
    }

    /// The terms a federated token is minted on. A policy bound to a client
    /// mints as that client only while it is enabled, under its catalog
    /// stamp and its rate limit.
    pub async fn terms(&self, f: &Federated, origin: &Origin) -> Result<MintTerms, Refusal> {
        let Some(bound) = f.policy.client_id.as_deref() else {
            return Ok(f.terms(None));
        };
        match self.catalog.client(Some(&f.policy.tenant_id), bound).await? {
            Some(client) if !client.disabled => Ok(f.terms(Some(&client))),
            _ => {
                let why = format!("the client bound to policy {} is disabled or deleted", f.policy.name);
                Err(self.deny(&f.policy.tenant_id, Some(bound), &why, origin).await)
            }
        }
    }

    /// Verifies `token` against the policies given (all of one tenant and
    /// issuer) and returns the first that accepts it.
    async fn judge(
        &self,
        token: &Unverified,
        policies: Vec<TrustPolicy>,
        tenant: &str,
        client_id: Option<&str>,
        origin: &Origin,
    ) -> Result<Federated, Refusal> {
        // Shown shortened; keys are fetched for, and replays recorded under,
        // the issuer exactly as the policies name it.
        let shown: String = token.claim_str("iss").unwrap_or_default().chars().take(200).collect();
        let Some(issuer) = policies.first().map(|p| p.issuer.clone()) else {
            return Err(self
                .deny(
                    tenant,
                    client_id,
                    &format!("no trust policy for issuer {shown}"),
                    origin,
                )
                .await);
        };
        let keys = match self.keys.keys(&issuer, token.header.kid.as_deref()).await {
            Ok(keys) => keys,
            // The audit trail gets the detail; the caller the same words for
            // every cause (a closed port must not look unlike a 404).
            Err(e) => {
                return Err(match self.deny(tenant, client_id, &e.detail(), origin).await {
                    Refusal::Invalid(_) => refuse(e.to_string()),
                    other => other,
                });
            }
        };
        if let Err(e) = token.verify(&keys) {
            return Err(self
                .deny(tenant, client_id, &format!("{e} (issuer {shown})"), origin)
                .await);
        }
        let now = self.clock.now();
        let mut why = String::new();
        for policy in policies {
            match policy.evaluate(&token.claims, now) {
                Ok(matched) => {
                    if policy.single_use {
                        let Some(jti) = matched.jti.as_deref() else {
                            let why = format!("jti missing (policy {})", policy.name);
                            return Err(self.deny(tenant, client_id, &why, origin).await);
                        };
                        // The replay row lives until `exp`, bounded to a day: an
                        // assertion living longer is refused, not remembered too briefly.
                        if matched.exp.saturating_sub(now.timestamp()) > MAX_SINGLE_USE_SECONDS {
                            let why = format!(
                                "lives longer than 24 h, too long for single_use (policy {})",
                                policy.name
                            );
                            return Err(self.deny(tenant, client_id, &why, origin).await);
                        }
                        let exp = matched.exp;
                        let until = DateTime::from_timestamp(exp, 0).unwrap_or(now) + TimeDelta::minutes(2);
                        let fresh = self
                            .store
                            .read()
                            .await?
                            .conn()
                            .use_assertion(&issuer, jti, until)
                            .await?;
                        if !fresh {
                            let why = format!("replayed (policy {})", policy.name);
                            return Err(self.deny(tenant, client_id, &why, origin).await);
                        }
                    }
                    return Ok(Federated { policy, matched });
                }
                Err(m) => why = format!("{} (policy {})", m.0, policy.name),
            }
        }
        Err(self.deny(tenant, client_id, &why, origin).await)
    }

    /// An external token presented for `resource` (the jwt-bearer grant, or
    /// token exchange with a JWT subject): judged by the trust policies of
    /// the tenant that owns the resource.
    pub async fn for_resource(
        &self,
        token: &str,
        resource: &str,
        purpose: Purpose<'_>,
        origin: &Origin,
    ) -> Result<Federated, Refusal> {
        let token = jwt::parse(token).map_err(|e| refuse(e.to_string()))?;
        let issuer = token
            .claim_str("iss")
            .ok_or_else(|| refuse("the token has no iss"))?
            .to_string();
        let canonical = uri::canonicalize(resource).map_err(|e| refuse(format!("invalid resource: {e}")))?;
        let tenant = self
            .store
            .read()
            .await?
            .conn()
            .resource_owner(&canonical)
            .await?
            .ok_or_else(|| refuse("unknown resource"))?;
        let for_issuer = self
            .store
            .read()
            .await?
            .conn()
            .policies_for_issuer(&tenant, &issuer)
            .await?;
        let any = !for_issuer.is_empty();
        let policies: Vec<TrustPolicy> = for_issuer
            .into_iter()
            .filter(|p| match purpose {
                // A policy that names actors is for delegation only: its
                // subjects' tokens are minted for an agent, narrowed and
                // attributed, never handed out bare to whoever holds them.
                Purpose::Direct => p.actors.is_empty(),
                Purpose::ActingFor(actor) => p.actors.iter().any(|a| a == actor),
            })
            .collect();
        let actor = match purpose {
            Purpose::ActingFor(actor) => Some(actor),
            Purpose::Direct => None,
        };
        if any && policies.is_empty() {
            // Policies for this issuer exist: say which rule turned it away.
            let shown: String = issuer.chars().take(200).collect();
            let why = match actor {
                Some(a) => format!("no trust policy for issuer {shown} names `{a}` among its actors"),
                None => format!("the trust policies for issuer {shown} are for delegation only (they name actors)"),
            };
            return Err(self.deny(&tenant, actor, &why, origin).await);
        }
        self.judge(&token, policies, &tenant, actor, origin).await
    }

    /// private_key_jwt (RFC 7523 §2.2): the client's own assertion, signed by
    /// a key it registered (`iss` = `sub` = its id, `aud` this server, short
    /// lived, `jti` used once), or a workload token a trust policy binds to
    /// it. The client is the `client_id` sent, else the assertion's `iss`,
    /// else (a workload token, as the MCP SDK's static assertion provider
    /// sends it, with no `client_id`) the client named by the policy of the
    /// resource's tenant that accepts the token. Returns the client, and the
    /// policy match when a policy vouched for it.
    pub async fn authenticate_client(
        &self,
        client_id: Option<&str>,
        assertion: &str,
        resource: Option<&str>,
        origin: &Origin,
    ) -> Result<(Client, Option<Federated>), Refusal> {
        let failed = || refuse("client authentication failed");
        let token = jwt::parse(assertion).map_err(|_| failed())?;
        let iss = token.claim_str("iss").unwrap_or_default().to_string();
        let now = self.clock.now();
        let named = client_id.unwrap_or(&iss);
        // From the catalog, stamped: a lease minted on it commits only while
        // the client is as it was read (a disable wins, on every replica).
        let client = match self.catalog.client(None, named).await? {
            Some(client) if !client.disabled => Some(client),
            Some(_) => return Err(failed()),
            None if client_id.is_none() => None,
            None => return Err(failed()),
        };
        if let Some(client) = client {
            if iss == client.client_id {
                self.own_assertion(&client, &token, now, origin).await?;
                return Ok((client, None));
            }
            let policies: Vec<TrustPolicy> = self
                .store
                .read()
                .await?
                .conn()
                .policies_for_client(&client.tenant_id, &client.client_id)
                .await?
                .into_iter()
                // A policy naming actors is for delegation only: its
                // subjects never authenticate as a client of their own.
                .filter(|p| p.issuer.trim_end_matches('/') == iss.trim_end_matches('/') && p.actors.is_empty())
                .collect();
            let federated = self
                .judge(&token, policies, &client.tenant_id, Some(&client.client_id), origin)
                .await?;
            return Ok((client, Some(federated)));
        }
        // No client named: the resource's tenant's policies that name one.
        let resource = resource.ok_or_else(failed)?;
        let canonical = uri::canonicalize(resource).map_err(|_| failed())?;
        let mut c = self.store.read().await?;
        let tenant = c.conn().resource_owner(&canonical).await?.ok_or_else(failed)?;
        let policies: Vec<TrustPolicy> = c
            .conn()
            .policies_for_issuer(&tenant, &iss)
            .await?
            .into_iter()
            .filter(|p| p.client_id.is_some() && p.actors.is_empty())
            .collect();
        drop(c);
        let federated = self.judge(&token, policies, &tenant, None, origin).await?;
        let bound = federated.policy.client_id.clone().unwrap_or_default();
        let client = match self.catalog.client(Some(&tenant), &bound).await? {
            Some(client) if !client.disabled => client,
            _ => return Err(failed()),
        };
        Ok((client, Some(federated)))
    }

    async fn own_assertion(
        &self,
        client: &Client,
        token: &Unverified,
        now: DateTime<Utc>,
        origin: &Origin,
    ) -> Result<(), Refusal> {
        let tenant = client.tenant_id.as_str();
        let id = Some(client.client_id.as_str());
        let keys = client
            .jwks
            .as_ref()
            .and_then(|j| serde_json::from_value::<JwkSet>(j.clone()).ok())
            .map(|set| set.usable())
            .unwrap_or_default();
        if keys.is_empty() {
            return Err(self.deny(tenant, id, "the client registered no keys", origin).await);
        }
        if let Err(e) = token.verify(&keys) {
            return Err(self.deny(tenant, id, &format!("client assertion: {e}"), origin).await);
        }
        let token_endpoint = format!("{}/oauth2/token", self.issuer.url);
        let aud_ok = match token.claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == self.issuer.url || *a == token_endpoint,
            Some(serde_json::Value::Array(l)) => l
                .iter()
                .any(|a| a.as_str() == Some(self.issuer.url.as_str()) || a.as_str() == Some(token_endpoint.as_str())),
            _ => false,
        };
        let t = now.timestamp();
        let exp = token.claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(0);
        let why = if token.claim_str("sub") != Some(client.client_id.as_str()) {
            Some("client assertion: sub is not the client")
        } else if !aud_ok {
            Some("client assertion: audience")
        } else if exp.saturating_add(policy::SKEW_SECONDS) <= t {
            Some("client assertion: expired")
        } else if exp - t > MAX_CLIENT_ASSERTION {
            Some("client assertion: lives too long")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(self.deny(tenant, id, why, origin).await);
        }
        let Some(jti) = token.claim_str("jti") else {
            return Err(self.deny(tenant, id, "client assertion: jti missing", origin).await);
        };
        let until =
            DateTime::from_timestamp(exp.min(t + MAX_CLIENT_ASSERTION), 0).unwrap_or(now) + TimeDelta::minutes(2);
        let issuer = format!("client:{}", client.client_id);
        if !self
            .store
            .read()
            .await?
            .conn()
            .use_assertion(&issuer, jti, until)
            .await?
        {
            return Err(self.deny(tenant, id, "client assertion: replayed", origin).await);
        }
        Ok(())
    }
}
