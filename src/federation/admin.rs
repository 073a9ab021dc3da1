//! Trust policies as admins manage them: validated, tenant-scoped, every
//! change audited in its transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::policy::{ClaimCondition, TrustPolicy, anchored, pinned, template_claims};
use super::reach::{Reach, Refused};
use crate::audit::{Caller, actions};
use crate::clock::Clock;
use crate::error::Error;
use crate::storage::{Store, StoreError, Tx};
use crate::tenants::clients::GrantBody;
use crate::tenants::{Directory, Grant, invalid, validate_client_id};

/// `POST /v1/tenants/{tenant}/trust-policies`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrustPolicy {
    /// Unique in the tenant; tokens minted under it carry `client_id` `policy.{name}`
    /// unless `client_id` is set.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length = 64)]
    pub name: String,
    /// The token's exact `iss`: https on a public address (http only for a
    /// loopback issuer, when the operator allows those), and one the
    /// operator's allowlist names when it is set (`issuer_not_allowed`).
    #[schema(max_length = 512, example = "https://token.actions.githubusercontent.com")]
    pub issuer: String,
    /// Must be in the token's `aud`.
    #[schema(min_length = 1, max_length = 512)]
    pub audience: String,
    /// The exact `sub`; or give `subject_pattern`.
    #[schema(max_length = 512)]
    pub subject: Option<String>,
    /// An anchored pattern for `sub` that does not match nearly everything.
    #[schema(max_length = 512, example = "^repo:acme/app:ref:refs/heads/main$")]
    pub subject_pattern: Option<String>,
    /// Conditions on other claims: a value, a list of values, or `{"pattern": "^…$"}`.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimCondition>,
    #[schema(minimum = 1, maximum = 86400)]
    pub max_token_age_seconds: Option<i64>,
    /// Refuse a token whose `jti` was seen before, across replicas.
    #[serde(default)]
    pub single_use: bool,
    /// `{claim}` placeholders allowed, e.g. `release` or `{job_workflow_ref}`.
    #[schema(max_length = 256)]
    pub workflow_template: String,
    /// The token's `sub`, e.g. `github:{repository}@{ref}`.
    #[schema(max_length = 256)]
    pub workload_template: String,
    #[schema(min_items = 1, max_items = 100)]
    pub grants: Vec<GrantBody>,
    /// Defaults to MAYFLY_DEFAULT_TTL.
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ttl_seconds: Option<i64>,
    /// Who answers for this policy.
    #[schema(max_length = 200)]
    pub owner: Option<String>,
    /// After this, the policy matches nothing.
    pub expires_at: Option<DateTime<Utc>>,
    /// The client this policy authenticates through private_key_jwt.
    #[schema(max_length = 128)]
    pub client_id: Option<String>,
    /// Agent clients allowed to act for the subjects it matches.
    /// Naming any makes the policy delegation-only: its subjects' tokens are
    /// honoured for these agents, never exchanged for a bare token.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub actors: Vec<String>,
}

/// `PATCH …/trust-policies/{id}`: the whole policy as it should be.
pub type TrustPolicyPatch = NewTrustPolicy;

#[derive(Clone)]
pub struct TrustPolicies {
    store: Store,
    clock: Arc<dyn Clock>,
    directory: Directory,
    default_ttl: i64,
    max_ttl: i64,
    reach: Reach,
}

impl TrustPolicies {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Directory,
        default_ttl: i64,
        max_ttl: i64,
        reach: Reach,
    ) -> Self {
        Self {
            store,
            clock,
            directory,
            default_ttl,
            max_ttl,
            reach,
        }
    }

    /// Checks a body and builds the policy it describes.
    async fn build(
        &self,
        tx: &mut Tx,
        tenant: &str,
        id: Uuid,
        b: NewTrustPolicy,
        created_at: DateTime<Utc>,
    ) -> Result<TrustPolicy, Error> {
        validate_client_id(&b.name).map_err(|_| invalid("name", "letters, digits, `.`, `_`, `-`, at most 64"))?;
        if b.name.len() > 64 {
            return Err(invalid("name", "at most 64 characters").into());
        }
        if b.issuer.len() > 512 {
            return Err(invalid("issuer", "at most 512 characters").into());
        }
        // Stored without a trailing `/`, which never tells issuers apart (a
        // GitHub policy naming `…githubusercontent.com/` could never match).
        let mut b = b;
        b.issuer = b.issuer.trim_end_matches('/').to_string();
        // Refused here so a tenant admin learns at once; never contacted in any case.
        self.reach.issuer(&b.issuer).map_err(|e| match e {
            Refused::Invalid(m) => Error::from(invalid("issuer", m)),
            Refused::NotAllowed(m) => Error::IssuerNotAllowed(format!("issuer: {m}")),
        })?;
        if b.audience.trim().is_empty() || b.audience.len() > 512 {
            return Err(invalid("audience", "1 to 512 characters").into());
        }
        match (&b.subject, &b.subject_pattern) {
            (Some(s), None) if !s.is_empty() && s.len() <= 512 => {}
            (None, Some(p)) => {
                anchored("subject_pattern", p)?;
                pinned(p, &b.claims)?;
            }
            _ => return Err(invalid("subject", "give exactly one of subject and subject_pattern").into()),
        }
        if b.claims.len() > 32 {
            return Err(invalid("claims", "at most 32 conditions").into());
        }
        for (name, condition) in &b.claims {
            template_claims("claims", &format!("{{{name}}}"))?;
            match condition {
                ClaimCondition::Exact(v) if v.len() <= 512 => {}
                ClaimCondition::AnyOf(vs) if !vs.is_empty() && vs.len() <= 100 => {}
                ClaimCondition::Pattern(p) => {
                    anchored("claims", &p.pattern)?;
                }
                _ => return Err(invalid("claims", format!("condition on `{name}` is empty or too long")).into()),
            }
        }
        if let Some(age) = b.max_token_age_seconds
            && !(1..=86_400).contains(&age)
        {
            return Err(invalid("max_token_age_seconds", "between 1 and 86400").into());
        }
        template_claims("workflow_template", &b.workflow_template)?;
        template_claims("workload_template", &b.workload_template)?;
        if b.grants.is_empty() {
            return Err(invalid("grants", "grant at least one resource").into());
        }
        let grants: Vec<Grant> = b.grants.into_iter().map(Grant::from).collect();
        self.directory.validate_grants(tx, tenant, &grants).await?;
        let max_ttl = b.max_ttl_seconds.unwrap_or(self.default_ttl);
        if !(1..=self.max_ttl).contains(&max_ttl) {
            return Err(invalid("max_ttl_seconds", format!("between 1 and {}", self.max_ttl)).into());
        }
        let now = self.clock.now();
        if b.expires_at.is_some_and(|t| t <= now) {
            return Err(invalid("expires_at", "must be in the future").into());
        }
        if b.owner.as_ref().is_some_and(|o| o.chars().count() > 200) {
            return Err(invalid("owner", "at most 200 characters").into());
        }
        let mut named = b.actors.clone();
        named.extend(b.client_id.clone());
        if b.actors.len() > 100 {
            return Err(invalid("actors", "at most 100").into());
        }
        for client in named {
            tx.conn().get_client(tenant, &client).await.map_err(|e| match e {
                StoreError::NotFound => Error::from(invalid(
                    "client_id",
                    format!("`{client}` is not a client of this tenant"),
                )),
                e => e.into(),
            })?;
        }
        Ok(TrustPolicy {
            id,
            tenant_id: tenant.to_string(),
            name: b.name,
            issuer: b.issuer,
            audience: b.audience,
            subject: b.subject,
            subject_pattern: b.subject_pattern,
            claims: b.claims,
            max_token_age_seconds: b.max_token_age_seconds,
            single_use: b.single_use,
            workflow_template: b.workflow_template,
            workload_template: b.workload_template,
            grants,
            max_ttl_seconds: max_ttl,
            owner: b.owner,
            expires_at: b.expires_at,
            client_id: b.client_id,
            actors: b.actors,
            created_at,
            updated_at: now,
        })
    }

    fn event(caller: &Caller, action: &str, p: &TrustPolicy, now: DateTime<Utc>) -> crate::audit::AuditEvent {
        let mut e = caller.event(action, now);
        e.tenant = Some(p.tenant_id.clone());
        e.client_id = p.client_id.clone();
        e.reason = Some(format!("trust policy {} ({}) for issuer {}", p.name, p.id, p.issuer));
        e
    }

    pub async fn create(&self, caller: &Caller, tenant: &str, body: NewTrustPolicy) -> Result<TrustPolicy, Error> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let policy = self.build(&mut tx, tenant, Uuid::now_v7(), body, now).await?;
        tx.conn().insert_policy(&policy).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict("a trust policy of this name exists".into()),
            e => e.into(),
        })?;
        let event = Self::event(caller, actions::TRUST_POLICY_CREATED, &policy, now);
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await?;
        Ok(policy)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<TrustPolicy, Error> {
        let id: Uuid = id.parse().map_err(|_| Error::NotFound("trust policy"))?;
        self.store
            .read()
            .await?
            .conn()
            .get_policy(tenant, id)
            .await
            .map_err(Error::or_not_found("trust policy"))
    }

    pub async fn list(&self, tenant: &str, after: &str, limit: i64) -> Result<Vec<TrustPolicy>, Error> {
        Ok(self
            .store
            .read()
            .await?
            .conn()
            .list_policies(tenant, after, limit)
            .await?)
    }

    pub async fn replace(
        &self,
        caller: &Caller,
        tenant: &str,
        id: &str,
        body: NewTrustPolicy,
    ) -> Result<TrustPolicy, Error> {
        let old = self.get(tenant, id).await?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let policy = self.build(&mut tx, tenant, old.id, body, old.created_at).await?;
        tx.conn().update_policy(&policy).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict("a trust policy of this name exists".into()),
            StoreError::NotFound => Error::NotFound("trust policy"),
            e => e.into(),
        })?;
        let event = Self::event(caller, actions::TRUST_POLICY_UPDATED, &policy, now);
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await?;
        Ok(policy)
    }

    /// Tokens already minted under the policy run out (revoke its client id
    /// `policy.{name}` or its workflows to end them sooner).
    pub async fn delete(&self, caller: &Caller, tenant: &str, id: &str) -> Result<(), Error> {
        let policy = self.get(tenant, id).await?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.conn()
            .delete_policy(tenant, policy.id)
            .await
            .map_err(Error::or_not_found("trust policy"))?;
        let event = Self::event(caller, actions::TRUST_POLICY_DELETED, &policy, now);
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await?;
        Ok(())
    }
}
