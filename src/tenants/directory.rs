//! The directory: what admins create, change and delete in a tenant
//! (tenants and resources here, clients in `clients.rs`). Each change is
//! validated, written and audited in one transaction; deletions that must
//! end tokens record their revocation rule in that same transaction. The
//! caller has already been authorized for the tenant.

use std::sync::Arc;

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::catalog::Catalog;
use super::tools::ToolPolicy;
use super::{
    Resource, SYSTEM_TENANT, Tenant, invalid, uri, validate_name, validate_resource_scopes, validate_tenant_id,
    validate_ttls,
};
use crate::audit::{AuditEvent, Caller, actions};
use crate::clock::Clock;
use crate::error::Error;
use crate::leases::{Cover, Revocations, Selector};
use crate::storage::{Store, StoreError, Tx};
use crate::tokens::issuer::{IssuerId, Lifetimes};

/// `POST /v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The slug used in paths.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", max_length = 63)]
    pub id: String,
    /// Defaults to the id.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Past this many live leases, mints answer 429 (absent: no limit).
    #[schema(minimum = 1, maximum = 1000000000)]
    pub max_live_leases: Option<i64>,
    /// Past this many mints per second (per replica), mints answer 429.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_mints_per_second: Option<i64>,
}

/// `PATCH /v1/tenants/{tenant}`: the name (any admin of the tenant) and the
/// limits (global admins only; `null` removes one).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000000)]
    pub max_live_leases: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000)]
    pub max_mints_per_second: Option<Option<i64>>,
}

/// A field that was sent (`Some`), possibly as `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn check_limit(field: &'static str, value: Option<i64>, max: i64) -> Result<Option<i64>, Error> {
    match value {
        Some(v) if !(1..=max).contains(&v) => Err(invalid(field, format!("must be between 1 and {max}")).into()),
        v => Ok(v),
    }
}

/// `POST /v1/tenants/{tenant}/resources`: an MCP server tokens may be used at.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    /// Absolute http(s) URI (RFC 8707); matched in canonical form, unique across tenants.
    #[schema(max_length = 2048, example = "https://mcp.acme.test/github")]
    pub uri: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(min_items = 1, max_items = 100, inline)]
    pub scopes: Vec<ScopeName>,
    /// Defaults to MAYFLY_DEFAULT_TTL (at most `max_ttl_seconds`).
    #[schema(minimum = 1, maximum = 86400)]
    pub default_ttl_seconds: Option<i64>,
    /// Defaults to MAYFLY_MAX_TTL, which it may not exceed.
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ttl_seconds: Option<i64>,
    /// The per-tool policy `mayfly gateway` enforces: tool name (or `*`) →
    /// `{scopes, calls_per_minute}`. With a map, a tool with no entry is
    /// refused; without one, any valid token may call any tool.
    pub tools: Option<ToolPolicy>,
}

/// A scope token (RFC 6749 §3.3); `mayfly:` is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, ToSchema)]
#[schema(value_type = String, pattern = r"^[\x21\x23-\x5B\x5D-\x7E]{1,128}$", max_length = 128)]
#[serde(transparent)]
pub struct ScopeName(pub String);

pub fn scope_names(s: Vec<ScopeName>) -> Vec<String> {
    s.into_iter().map(|s| s.0).collect()
}

/// `PATCH /v1/tenants/{tenant}/resources/{id}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(min_items = 1, max_items = 100, inline)]
    pub scopes: Option<Vec<ScopeName>>,
    #[schema(minimum = 1, maximum = 86400)]
    pub default_ttl_seconds: Option<i64>,
    #[schema(minimum = 1, maximum = 86400)]
    pub max_ttl_seconds: Option<i64>,
    /// `null` removes the map (any tool again).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ToolPolicy>)]
    pub tools: Option<Option<ToolPolicy>>,
}

/// Admin changes to tenants, resources and clients.
#[derive(Clone)]
pub struct Directory {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) revocations: Revocations,
    pub(super) issuer: IssuerId,
    pub(super) lifetimes: Lifetimes,
    pub(super) catalog: Arc<Catalog>,
    /// Live clients a tenant may have (MAYFLY_MAX_CLIENTS_PER_TENANT): each
    /// one sits in every replica's catalog.
    pub(super) max_clients_per_tenant: i64,
}

impl Directory {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        revocations: Revocations,
        issuer: IssuerId,
        lifetimes: Lifetimes,
        catalog: Arc<Catalog>,
        max_clients_per_tenant: u32,
    ) -> Self {
        Self {
            store,
            clock,
            revocations,
            issuer,
            lifetimes,
            catalog,
            max_clients_per_tenant: i64::from(max_clients_per_tenant),
        }
    }

    /// Commits a change to a tenant's clients or resources, then brings this
    /// replica's catalog up to it before the caller hears back (the others
    /// hear of it by notification, and mint only on what the database holds).
    pub(super) async fn commit(&self, tx: Tx, tenant: &str) -> Result<(), Error> {
        tx.commit().await?;
        if let Err(e) = self.catalog.catch_up(tenant).await {
            tracing::warn!(error = %e, tenant, "committed, but cannot reload the catalog yet; polling will");
        }
        Ok(())
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Tenant, Error> {
        self.store
            .read()
            .await?
            .conn()
            .get_tenant(id)
            .await
            .map_err(Error::or_not_found("tenant"))
    }

    /// Tenants after `after` in id order; a tenant admin (`own`) sees its own only.
    pub async fn list_tenants(&self, own: Option<&str>, after: &str, limit: i64) -> Result<Vec<Tenant>, Error> {
        Ok(match own {
            None => self.store.read().await?.conn().list_tenants(after, limit).await?,
            Some(t) if after.is_empty() => vec![self.get_tenant(t).await?],
            Some(_) => vec![],
        })
    }

    pub async fn create_tenant(&self, caller: &Caller, body: NewTenant) -> Result<Tenant, Error> {
        validate_tenant_id(&body.id)?;
        let name = body.name.unwrap_or_else(|| body.id.clone());
        validate_name("name", &name)?;
        let now = self.clock.now();
        let tenant = Tenant {
            id: body.id,
            name,
            created_at: now,
            max_live_leases: check_limit("max_live_leases", body.max_live_leases, 1_000_000_000)?,
            max_mints_per_second: check_limit("max_mints_per_second", body.max_mints_per_second, 1_000_000)?,
        };
        let mut tx = self.store.begin().await?;
        tx.conn().insert_tenant(&tenant).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict(format!("tenant `{}` exists (or existed)", tenant.id)),
            e => e.into(),
        })?;
        let mut event = caller.event(actions::TENANT_CREATED, now);
        event.tenant = Some(tenant.id.clone());
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Renames a tenant or (`global`) changes its limits.
    pub async fn update_tenant(
        &self,
        caller: &Caller,
        tenant: &str,
        global: bool,
        patch: TenantPatch,
    ) -> Result<Tenant, Error> {
        if !global && (patch.max_live_leases.is_some() || patch.max_mints_per_second.is_some()) {
            return Err(Error::Forbidden("only a global admin changes a tenant's limits".into()));
        }
        let mut t = self.get_tenant(tenant).await?;
        if let Some(name) = patch.name {
            validate_name("name", &name)?;
            t.name = name;
        }
        if let Some(limit) = patch.max_live_leases {
            t.max_live_leases = check_limit("max_live_leases", limit, 1_000_000_000)?;
        }
        if let Some(limit) = patch.max_mints_per_second {
            t.max_mints_per_second = check_limit("max_mints_per_second", limit, 1_000_000)?;
        }
        let mut tx = self.store.begin().await?;
        tx.conn()
            .update_tenant(&t)
            .await
            .map_err(Error::or_not_found("tenant"))?;
        let mut event = caller.event(actions::TENANT_UPDATED, self.clock.now());
        event.tenant = Some(t.id.clone());
        event.reason = Some(format!(
            "limits: max_live_leases {:?}, max_mints_per_second {:?}",
            t.max_live_leases, t.max_mints_per_second
        ));
        tx.conn().append_audit(&[event]).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Deleting a tenant revokes every token in it, whenever minted, and
    /// deletes its clients.
    pub async fn delete_tenant(&self, caller: &Caller, tenant: &str) -> Result<(), Error> {
        if tenant == SYSTEM_TENANT {
            return Err(Error::Conflict(
                "the system tenant holds the global admins and cannot be deleted".into(),
            ));
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.conn()
            .delete_tenant(tenant, now)
            .await
            .map_err(Error::or_not_found("tenant"))?;
        let rule = self
            .revocations
            .record(
                &mut tx,
                caller,
                Some(tenant),
                &Selector::Tenant,
                "tenant deleted",
                Cover::Forever,
            )
            .await?;
        let mut event = caller.event(actions::TENANT_DELETED, now);
        event.tenant = Some(tenant.to_string());
        event.reason = Some(format!("revocation {}", rule.id));
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(())
    }

    fn resource_event(caller: &Caller, action: &str, r: &Resource, now: chrono::DateTime<chrono::Utc>) -> AuditEvent {
        let mut event = caller.event(action, now);
        event.tenant = Some(r.tenant_id.clone());
        event.resource = Some(r.uri.clone());
        event.scopes = Some(r.scopes.clone());
        event
    }

    pub async fn create_resource(&self, caller: &Caller, tenant: &str, body: NewResource) -> Result<Resource, Error> {
        let canonical = uri::canonicalize(&body.uri).map_err(|e| invalid("uri", e.to_string()))?;
        if canonical == self.issuer.canonical {
            return Err(invalid("uri", "the issuer URI is the admin API, reserved").into());
        }
        let name = body.name.unwrap_or_else(|| body.uri.clone());
        validate_name("name", &name)?;
        let scopes = scope_names(body.scopes);
        validate_resource_scopes(&scopes)?;
        let ceiling = self.lifetimes.max_ttl;
        let max_ttl = body.max_ttl_seconds.unwrap_or(ceiling);
        let default_ttl = body
            .default_ttl_seconds
            .unwrap_or(self.lifetimes.default_ttl.min(max_ttl));
        validate_ttls(default_ttl, max_ttl, ceiling)?;
        if let Some(tools) = &body.tools {
            tools.validate(&scopes)?;
        }
        let now = self.clock.now();
        let resource = Resource {
            id: Uuid::now_v7(),
            tenant_id: tenant.to_string(),
            uri: body.uri,
            canonical_uri: canonical,
            name,
            scopes,
            default_ttl_seconds: default_ttl,
            max_ttl_seconds: max_ttl,
            created_at: now,
            updated_at: now,
            tools: body.tools,
        };
        let mut tx = self.store.begin().await?;
        tx.conn().insert_resource(&resource).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict("this resource URI is not available".into()),
            e => e.into(),
        })?;
        let event = Self::resource_event(caller, actions::RESOURCE_CREATED, &resource, now);
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(resource)
    }

    pub async fn list_resources(&self, tenant: &str, after: &str, limit: i64) -> Result<Vec<Resource>, Error> {
        Ok(self
            .store
            .read()
            .await?
            .conn()
            .list_resources(tenant, after, limit)
            .await?)
    }

    pub async fn get_resource(&self, tenant: &str, id: &str) -> Result<Resource, Error> {
        let id: Uuid = id.parse().map_err(|_| Error::NotFound("resource"))?;
        self.store
            .read()
            .await?
            .conn()
            .get_resource(tenant, id)
            .await
            .map_err(Error::or_not_found("resource"))
    }

    pub async fn update_resource(
        &self,
        caller: &Caller,
        tenant: &str,
        id: &str,
        patch: ResourcePatch,
    ) -> Result<Resource, Error> {
        let mut r = self.get_resource(tenant, id).await?;
        if let Some(name) = patch.name {
            validate_name("name", &name)?;
            r.name = name;
        }
        if let Some(scopes) = patch.scopes {
            let scopes = scope_names(scopes);
            validate_resource_scopes(&scopes)?;
            r.scopes = scopes;
        }
        r.default_ttl_seconds = patch.default_ttl_seconds.unwrap_or(r.default_ttl_seconds);
        r.max_ttl_seconds = patch.max_ttl_seconds.unwrap_or(r.max_ttl_seconds);
        validate_ttls(r.default_ttl_seconds, r.max_ttl_seconds, self.lifetimes.max_ttl)?;
        if let Some(tools) = patch.tools {
            r.tools = tools;
        }
        if let Some(tools) = &r.tools {
            // Also when only the scopes changed: a tool may not need a scope
            // the resource no longer defines.
            tools.validate(&r.scopes)?;
        }
        let now = self.clock.now();
        r.updated_at = now;
        let mut tx = self.store.begin().await?;
        tx.conn()
            .update_resource(&r)
            .await
            .map_err(Error::or_not_found("resource"))?;
        let event = Self::resource_event(caller, actions::RESOURCE_UPDATED, &r, now);
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(r)
    }

    /// Tokens already minted for the resource stay valid until they expire
    /// (revoke by workflow or client to end them sooner); new mints fail.
    pub async fn delete_resource(&self, caller: &Caller, tenant: &str, id: &str) -> Result<(), Error> {
        let r = self.get_resource(tenant, id).await?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.conn()
            .delete_resource(tenant, r.id)
            .await
            .map_err(Error::or_not_found("resource"))?;
        let event = Self::resource_event(caller, actions::RESOURCE_DELETED, &r, now);
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(())
    }
}
