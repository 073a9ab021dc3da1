//! Login providers as admins manage them: validated, tenant-scoped, every
//! change audited in its transaction. The client secret is sealed under the
//! master key (bound to the provider's id) and never shown again.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{DEFAULT_WORKFLOW, LoginProvider};
use crate::audit::{Caller, actions};
use crate::clock::Clock;
use crate::error::Error;
use crate::federation::policy::{ClaimCondition, anchored, template_claims};
use crate::federation::reach::{Reach, Refused};
use crate::keys::MasterKeys;
use crate::storage::{Store, StoreError};
use crate::tenants::clients::GrantBody;
use crate::tenants::{Directory, Grant, invalid, validate_client_id, validate_workflow};

/// The longest a session (refresh family) may last.
pub const MAX_REFRESH_TTL: i64 = 30 * 86_400;
const DEFAULT_REFRESH_TTL: i64 = 86_400;

/// `POST /v1/tenants/{tenant}/login-providers`; `PATCH` takes the whole
/// provider as it should be (an absent `client_secret` keeps the stored one).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLoginProvider {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length = 64)]
    pub name: String,
    /// The IdP's issuer: https on a public address (plain-http loopback only
    /// when the operator allows it), on the allowlist when one is set.
    #[schema(max_length = 512, example = "https://login.acme.example")]
    pub issuer: String,
    /// mayfly's client id at the IdP; its redirect URI there is `{issuer}/oauth2/callback`.
    #[schema(min_length = 1, max_length = 256)]
    pub client_id: String,
    /// mayfly's client secret at the IdP (client_secret_basic). Sealed, never shown.
    #[schema(max_length = 1024)]
    pub client_secret: Option<String>,
    /// Asked of the IdP; `openid` is always included. Default `openid email profile`.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub scopes: Vec<String>,
    /// Conditions on the id_token's claims, as trust policies take them.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimCondition>,
    /// The token's `sub` (the person), from id_token claims; starts with
    /// `person:`. Default `person:{email}`.
    #[schema(max_length = 256, example = "person:{email}")]
    pub workload_template: Option<String>,
    /// The workflow people's tokens name. Default `interactive`.
    #[schema(max_length = 128)]
    pub workflow: Option<String>,
    #[schema(min_items = 1, max_items = 100)]
    pub grants: Vec<GrantBody>,
    /// Access tokens' longest life. Defaults to MAYFLY_DEFAULT_TTL.
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ttl_seconds: Option<i64>,
    /// How long a session lasts without signing in again. Default one day, at most 30.
    #[schema(minimum = 60, maximum = 2592000)]
    pub refresh_ttl_seconds: Option<i64>,
    /// Whether clients registered through RFC 7591 (`POST /oauth2/register`)
    /// may sign people in here, beside those named by a metadata document.
    #[serde(default)]
    pub allow_registration: bool,
}

#[derive(Clone)]
pub struct LoginProviders {
    store: Store,
    clock: Arc<dyn Clock>,
    directory: Directory,
    masters: Arc<MasterKeys>,
    reach: Reach,
    default_ttl: i64,
    max_ttl: i64,
}

/// The secret is bound to the provider and to where it may be sent: moving
/// the issuer or client id needs the secret again.
fn aad(id: Uuid, issuer: &str, client_id: &str) -> Vec<u8> {
    format!("mayfly login provider secret v1 {id} {issuer} {client_id}").into_bytes()
}

impl LoginProviders {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Directory,
        masters: Arc<MasterKeys>,
        reach: Reach,
        lifetimes: (i64, i64),
    ) -> Self {
        Self {
            store,
            clock,
            directory,
            masters,
            reach,
            default_ttl: lifetimes.0,
            max_ttl: lifetimes.1,
        }
    }

    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// The provider's client secret, opened (with the previous master key
    /// while a rewrap is under way).
    pub fn secret(&self, p: &LoginProvider) -> Option<SecretString> {
        let sealed = p.sealed_secret.as_ref()?;
        let keys = std::iter::once(&self.masters.current).chain(self.masters.previous.as_ref());
        let opened = keys
            .into_iter()
            .find_map(|k| k.open(sealed, &aad(p.id, &p.issuer, &p.client_id)).ok());
        if opened.is_none() {
            tracing::error!(provider = %p.id, "the login provider's client secret does not open under the master key: send it again (PATCH)");
        }
        opened.and_then(|plain| String::from_utf8(plain.to_vec()).ok().map(SecretString::from))
    }

    async fn build(
        &self,
        tenant: &str,
        id: Uuid,
        b: NewLoginProvider,
        old: Option<&LoginProvider>,
    ) -> Result<LoginProvider, Error> {
        validate_client_id(&b.name).map_err(|_| invalid("name", "letters, digits, `.`, `_`, `-`, at most 64"))?;
        if b.name.len() > 64 {
            return Err(invalid("name", "at most 64 characters").into());
        }
        let issuer = b.issuer.trim_end_matches('/').to_string();
        if issuer.len() > 512 {
            return Err(invalid("issuer", "at most 512 characters").into());
        }
        self.reach.issuer(&issuer).map_err(|e| match e {
            Refused::Invalid(m) => Error::from(invalid("issuer", m)),
            Refused::NotAllowed(m) => Error::IssuerNotAllowed(format!("issuer: {m}")),
        })?;
        if b.client_id.trim().is_empty() || b.client_id.len() > 256 {
            return Err(invalid("client_id", "1 to 256 characters").into());
        }
        if b.client_secret.as_ref().is_some_and(|s| s.is_empty() || s.len() > 1024) {
            return Err(invalid("client_secret", "1 to 1024 characters").into());
        }
        let mut scopes = vec!["openid".to_string()];
        let asked = if b.scopes.is_empty() {
            vec!["email".to_string(), "profile".to_string()]
        } else {
            b.scopes
        };
        for s in asked {
            if s.is_empty() || s.len() > 64 || !s.bytes().all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\') {
                return Err(invalid("scopes", "each 1 to 64 visible characters").into());
            }
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        if scopes.len() > 20 {
            return Err(invalid("scopes", "at most 20").into());
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
        let workload_template = b.workload_template.unwrap_or_else(|| "person:{email}".into());
        // A person's name never reads as a machine's: a CI job's or an
        // agent's workload cannot be claimed by whoever picks a username.
        if !workload_template.starts_with("person:") {
            return Err(invalid("workload_template", "must start with `person:`, e.g. `person:{email}`").into());
        }
        if template_claims("workload_template", &workload_template)?.is_empty() {
            return Err(invalid(
                "workload_template",
                "must name at least one claim, e.g. `person:{email}`",
            )
            .into());
        }
        let workflow = b.workflow.unwrap_or_else(|| DEFAULT_WORKFLOW.into());
        validate_workflow("workflow", &workflow)?;
        if b.grants.is_empty() {
            return Err(invalid("grants", "grant at least one resource").into());
        }
        let grants: Vec<Grant> = b.grants.into_iter().map(Grant::from).collect();
        let mut tx = self.store.begin().await?;
        self.directory.validate_grants(&mut tx, tenant, &grants).await?;
        drop(tx);
        if grants.iter().any(|g| g.scopes.iter().any(|s| s.starts_with("mayfly:"))) {
            return Err(invalid("grants", "people sign in to MCP servers, not the admin API").into());
        }
        let max_ttl = b.max_ttl_seconds.unwrap_or(self.default_ttl);
        if !(1..=self.max_ttl).contains(&max_ttl) {
            return Err(invalid("max_ttl_seconds", format!("between 1 and {}", self.max_ttl)).into());
        }
        let refresh_ttl = b.refresh_ttl_seconds.unwrap_or(DEFAULT_REFRESH_TTL);
        if !(60..=MAX_REFRESH_TTL).contains(&refresh_ttl) {
            return Err(invalid("refresh_ttl_seconds", format!("between 60 and {MAX_REFRESH_TTL}")).into());
        }
        let now = self.clock.now();
        let sealed_secret = match (b.client_secret, old) {
            (Some(s), _) => Some(self.masters.current.seal(s.as_bytes(), &aad(id, &issuer, &b.client_id))),
            // Kept only while it would go where it went before.
            (None, Some(old)) if old.issuer == issuer && old.client_id == b.client_id => old.sealed_secret.clone(),
            (None, Some(old)) if old.sealed_secret.is_some() => {
                return Err(invalid(
                    "client_secret",
                    "send the client secret again when the issuer or client_id changes",
                )
                .into());
            }
            (None, _) => None,
        };
        Ok(LoginProvider {
            id,
            tenant_id: tenant.to_string(),
            name: b.name,
            issuer,
            client_id: b.client_id,
            sealed_secret,
            scopes,
            claims: b.claims,
            workload_template,
            workflow,
            grants,
            max_ttl_seconds: max_ttl,
            refresh_ttl_seconds: refresh_ttl,
            allow_registration: b.allow_registration,
            created_at: old.map_or(now, |o| o.created_at),
            updated_at: now,
        })
    }

    fn event(caller: &Caller, action: &str, p: &LoginProvider, now: DateTime<Utc>) -> crate::audit::AuditEvent {
        let mut e = caller.event(action, now);
        e.tenant = Some(p.tenant_id.clone());
        e.workflow = Some(p.workflow.clone());
        e.reason = Some(format!("login provider {} ({}) at {}", p.name, p.id, p.issuer));
        e
    }

    async fn save(
        &self,
        caller: &Caller,
        p: &LoginProvider,
        insert: bool,
        action: &str,
        end_sessions: bool,
    ) -> Result<(), Error> {
        let mut tx = self.store.begin().await?;
        if end_sessions {
            tx.conn().end_provider_sessions(p.id, p.updated_at).await?;
        }
        tx.conn().upsert_provider(p, insert).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict("a login provider of this name exists".into()),
            StoreError::NotFound => Error::NotFound("login provider"),
            e => e.into(),
        })?;
        tx.conn()
            .append_audit(&[Self::event(caller, action, p, p.updated_at)])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create(&self, caller: &Caller, tenant: &str, body: NewLoginProvider) -> Result<LoginProvider, Error> {
        let p = self.build(tenant, Uuid::now_v7(), body, None).await?;
        self.save(caller, &p, true, actions::LOGIN_PROVIDER_CREATED, false)
            .await?;
        Ok(p)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<LoginProvider, Error> {
        let id: Uuid = id.parse().map_err(|_| Error::NotFound("login provider"))?;
        let mut c = self.store.read().await?;
        c.conn()
            .get_provider(tenant, id)
            .await
            .map_err(Error::or_not_found("login provider"))
    }

    pub async fn list(&self, tenant: &str, after: &str, limit: i64) -> Result<Vec<LoginProvider>, Error> {
        Ok(self
            .store
            .read()
            .await?
            .conn()
            .list_providers(tenant, after, limit)
            .await?)
    }

    pub async fn replace(
        &self,
        caller: &Caller,
        tenant: &str,
        id: &str,
        body: NewLoginProvider,
    ) -> Result<LoginProvider, Error> {
        let old = self.get(tenant, id).await?;
        let p = self.build(tenant, old.id, body, Some(&old)).await?;
        // Who may sign in, and who they are, changed: sessions started under
        // the old terms end (people sign in again under the new ones).
        let narrowed = old.issuer != p.issuer
            || old.client_id != p.client_id
            || old.claims != p.claims
            || old.workload_template != p.workload_template
            || old.workflow != p.workflow
            || (old.allow_registration && !p.allow_registration);
        self.save(caller, &p, false, actions::LOGIN_PROVIDER_UPDATED, narrowed)
            .await?;
        Ok(p)
    }

    /// Deleting a provider ends its sessions (no refresh after this); the
    /// access tokens already minted run out, or are revoked by workload.
    pub async fn delete(&self, caller: &Caller, tenant: &str, id: &str) -> Result<(), Error> {
        let p = self.get(tenant, id).await?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.conn()
            .delete_provider(tenant, p.id)
            .await
            .map_err(Error::or_not_found("login provider"))?;
        tx.conn().end_provider_sessions(p.id, now).await?;
        tx.conn()
            .append_audit(&[Self::event(caller, actions::LOGIN_PROVIDER_DELETED, &p, now)])
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// `mayfly keys rewrap`: re-seals each login provider's client secret under
/// the current master key, opening those sealed under the previous one.
/// Returns how many were re-sealed, and the providers whose secret opens
/// under neither (they need the secret sent again). Safe to run again.
pub async fn rewrap_secrets(
    store: &Store,
    masters: &MasterKeys,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<String>), StoreError> {
    let (mut count, mut lost) = (0, Vec::new());
    let providers = store.read().await?.conn().providers_with_secrets().await?;
    for p in providers {
        let Some(sealed) = &p.sealed_secret else { continue };
        let aad = aad(p.id, &p.issuer, &p.client_id);
        if masters.current.open(sealed, &aad).is_ok() {
            continue;
        }
        let Some(plain) = masters.previous.as_ref().and_then(|m| m.open(sealed, &aad).ok()) else {
            lost.push(format!("{}/{} ({})", p.tenant_id, p.name, p.id));
            continue;
        };
        let mut tx = store.begin().await?;
        tx.conn()
            .reseal_provider_secret(p.id, &masters.current.seal(&plain, &aad))
            .await?;
        let mut e = Caller::system("mayfly keys rewrap").event(actions::LOGIN_PROVIDER_UPDATED, now);
        e.tenant = Some(p.tenant_id.clone());
        e.reason = Some(format!(
            "login provider {} ({}): client secret re-sealed under master key {}",
            p.name, p.id, masters.current.id
        ));
        tx.conn().append_audit(&[e]).await?;
        tx.commit().await?;
        count += 1;
    }
    Ok((count, lost))
}
