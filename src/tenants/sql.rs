//! Tenants, resources, clients and client secrets. Reads an admin makes are
//! scoped to the tenant inside the query.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::storage::{Conn, Result, StoreError, run};
use crate::tenants::{Client, Resource, Tenant};

macro_rules! tenant_columns {
    () => {
        "id, name, created_at, max_live_leases, max_mints_per_second"
    };
}
macro_rules! resource_columns {
    () => {
        "id, tenant_id, uri, canonical_uri, name, scopes, default_ttl_seconds, max_ttl_seconds, created_at, updated_at, tools"
    };
}
macro_rules! client_columns {
    () => {
        "c.client_id, c.tenant_id, c.name, c.kind, c.workflows, c.grants, c.max_ttl_seconds, c.disabled, c.created_at,
         c.updated_at, c.serves, c.workload_pattern, c.max_mints_per_second, c.jwks, c.delegates,
         c.dpop_bound_access_tokens, c.redirect_uris"
    };
}

fn found(n: u64) -> Result<()> {
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// A client with one of its live secret digests (none if it has none).
#[derive(Debug, sqlx::FromRow)]
struct ClientSecretRow {
    #[sqlx(flatten)]
    client: Client,
    secret_hash: Option<Vec<u8>>,
}

/// A client with one of its live secrets and when that secret expires.
#[derive(Debug, sqlx::FromRow)]
pub struct CatalogClientRow {
    #[sqlx(flatten)]
    pub client: Client,
    pub secret_hash: Option<Vec<u8>>,
    pub secret_expires_at: Option<DateTime<Utc>>,
}

impl Conn<'_> {
    pub async fn get_tenant(&mut self, id: &str) -> Result<Tenant> {
        Ok(run!(self, c => sqlx::query_as::<_, Tenant>(concat!(
            "SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1 AND deleted_at IS NULL"))
            .bind(id).fetch_one(c).await)?)
    }

    /// Whether the id was ever used (deleted tenants keep their id).
    pub async fn tenant_exists(&mut self, id: &str) -> Result<bool> {
        let n = run!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tenants WHERE id = $1")
            .bind(id).fetch_one(c).await)?;
        Ok(n > 0)
    }

    /// Tenants in id order after `after`, hiding the system tenant.
    pub async fn list_tenants(&mut self, after: &str, limit: i64) -> Result<Vec<Tenant>> {
        Ok(run!(self, c => sqlx::query_as::<_, Tenant>(concat!(
            "SELECT ", tenant_columns!(), " FROM tenants
             WHERE deleted_at IS NULL AND id > $1 AND id <> '_system' ORDER BY id LIMIT $2"))
            .bind(after).bind(limit).fetch_all(c).await)?)
    }

    pub async fn insert_tenant(&mut self, t: &Tenant) -> Result<()> {
        run!(self, c => sqlx::query(concat!("INSERT INTO tenants (", tenant_columns!(), ") VALUES ($1, $2, $3, $4, $5)"))
            .bind(&t.id).bind(&t.name).bind(t.created_at).bind(t.max_live_leases).bind(t.max_mints_per_second)
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn update_tenant(&mut self, t: &Tenant) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE tenants SET name = $2, max_live_leases = $3, max_mints_per_second = $4 WHERE id = $1 AND deleted_at IS NULL")
            .bind(&t.id).bind(&t.name).bind(t.max_live_leases).bind(t.max_mints_per_second)
            .execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Tombstones a tenant, deletes its clients and frees its resource URIs;
    /// its leases and audit events stay.
    pub async fn delete_tenant(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query("UPDATE tenants SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)?;
        run!(self, c => sqlx::query(
            "UPDATE clients SET disabled = $2, deleted_at = $3, updated_at = $3 WHERE tenant_id = $1 AND deleted_at IS NULL")
            .bind(id).bind(true).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        run!(self, c => sqlx::query("DELETE FROM resources WHERE tenant_id = $1").bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn get_resource(&mut self, tenant: &str, id: Uuid) -> Result<Resource> {
        Ok(run!(self, c => sqlx::query_as::<_, Resource>(concat!(
            "SELECT ", resource_columns!(), " FROM resources WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant).bind(id).fetch_one(c).await)?)
    }

    pub async fn find_resource_by_uri(&mut self, tenant: &str, canonical_uri: &str) -> Result<Resource> {
        Ok(run!(self, c => sqlx::query_as::<_, Resource>(concat!(
            "SELECT ", resource_columns!(), " FROM resources WHERE tenant_id = $1 AND canonical_uri = $2"))
            .bind(tenant).bind(canonical_uri).fetch_one(c).await)?)
    }

    pub async fn list_resources(&mut self, tenant: &str, after: &str, limit: i64) -> Result<Vec<Resource>> {
        Ok(run!(self, c => sqlx::query_as::<_, Resource>(concat!(
            "SELECT ", resource_columns!(), " FROM resources
             WHERE tenant_id = $1 AND canonical_uri > $2 ORDER BY canonical_uri LIMIT $3"))
            .bind(tenant).bind(after).bind(limit).fetch_all(c).await)?)
    }

    /// Claims a canonical URI for a tenant, for good: a URI only ever
    /// returns to the tenant that first registered it. Conflict otherwise.
    pub async fn claim_resource_uri(&mut self, tenant: &str, canonical_uri: &str, now: DateTime<Utc>) -> Result<()> {
        run!(self, c => sqlx::query(
            "INSERT INTO resource_uri_claims (canonical_uri, tenant_id, claimed_at) VALUES ($1, $2, $3)
             ON CONFLICT (canonical_uri) DO NOTHING")
            .bind(canonical_uri).bind(tenant).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        let owner = run!(self, c => sqlx::query_scalar::<_, String>(
            "SELECT tenant_id FROM resource_uri_claims WHERE canonical_uri = $1")
            .bind(canonical_uri).fetch_one(c).await)?;
        if owner == tenant {
            Ok(())
        } else {
            Err(StoreError::Conflict("resource_uri_claims".into()))
        }
    }

    /// Every resource of every tenant (start-up upkeep only).
    pub async fn all_resources(&mut self) -> Result<Vec<Resource>> {
        Ok(run!(self, c => sqlx::query_as::<_, Resource>(concat!(
            "SELECT ", resource_columns!(), " FROM resources ORDER BY canonical_uri"))
            .fetch_all(c).await)?)
    }

    /// Moves a resource and its tenant's claim to a new canonical form of its URI.
    pub async fn recanonicalize_resource(&mut self, r: &Resource, canonical_uri: &str) -> Result<()> {
        self.claim_resource_uri(&r.tenant_id, canonical_uri, r.created_at)
            .await?;
        let n = run!(self, c => sqlx::query("UPDATE resources SET canonical_uri = $2 WHERE id = $1")
            .bind(r.id).bind(canonical_uri).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn insert_resource(&mut self, r: &Resource) -> Result<()> {
        self.claim_resource_uri(&r.tenant_id, &r.canonical_uri, r.created_at)
            .await?;
        run!(self, c => sqlx::query(concat!(
            "INSERT INTO resources (", resource_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"))
            .bind(r.id).bind(&r.tenant_id).bind(&r.uri).bind(&r.canonical_uri).bind(&r.name)
            .bind(Json(&r.scopes)).bind(r.default_ttl_seconds).bind(r.max_ttl_seconds)
            .bind(r.created_at).bind(r.updated_at).bind(r.tools.as_ref().map(Json))
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn update_resource(&mut self, r: &Resource) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE resources SET name = $3, scopes = $4, default_ttl_seconds = $5, max_ttl_seconds = $6, updated_at = $7,
             tools = $8 WHERE tenant_id = $1 AND id = $2")
            .bind(&r.tenant_id).bind(r.id).bind(&r.name).bind(Json(&r.scopes))
            .bind(r.default_ttl_seconds).bind(r.max_ttl_seconds).bind(r.updated_at).bind(r.tools.as_ref().map(Json))
            .execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn delete_resource(&mut self, tenant: &str, id: Uuid) -> Result<()> {
        let n = run!(self, c => sqlx::query("DELETE FROM resources WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// A live client of `tenant`.
    pub async fn get_client(&mut self, tenant: &str, client_id: &str) -> Result<Client> {
        Ok(run!(self, c => sqlx::query_as::<_, Client>(concat!(
            "SELECT ", client_columns!(), " FROM clients c
             WHERE c.tenant_id = $1 AND c.client_id = $2 AND c.deleted_at IS NULL"))
            .bind(tenant).bind(client_id).fetch_one(c).await)?)
    }

    /// Whether the id was ever used (deleted clients keep their id).
    pub async fn client_exists(&mut self, client_id: &str) -> Result<bool> {
        let n = run!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM clients WHERE client_id = $1")
            .bind(client_id).fetch_one(c).await)?;
        Ok(n > 0)
    }

    pub async fn list_clients(&mut self, tenant: &str, after: &str, limit: i64) -> Result<Vec<Client>> {
        Ok(run!(self, c => sqlx::query_as::<_, Client>(concat!(
            "SELECT ", client_columns!(), " FROM clients c
             WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND c.client_id > $2 ORDER BY c.client_id LIMIT $3"))
            .bind(tenant).bind(after).bind(limit).fetch_all(c).await)?)
    }

    /// Every live client of `tenant`, for checks over all of them (the
    /// last-admin guard, a resource's scope holders).
    pub async fn all_clients(&mut self, tenant: &str) -> Result<Vec<Client>> {
        Ok(run!(self, c => sqlx::query_as::<_, Client>(concat!(
            "SELECT ", client_columns!(), " FROM clients c WHERE c.tenant_id = $1 AND c.deleted_at IS NULL ORDER BY c.client_id"))
            .bind(tenant).fetch_all(c).await)?)
    }

    /// How many live clients `tenant` has.
    pub async fn count_clients(&mut self, tenant: &str) -> Result<i64> {
        Ok(run!(self, c => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM clients WHERE tenant_id = $1 AND deleted_at IS NULL")
            .bind(tenant).fetch_one(c).await)?)
    }

    pub async fn insert_client(&mut self, cl: &Client) -> Result<()> {
        run!(self, c => sqlx::query(
            "INSERT INTO clients (client_id, tenant_id, name, kind, workflows, grants, max_ttl_seconds, disabled, created_at,
                                  updated_at, serves, workload_pattern, max_mints_per_second, jwks, delegates,
                                  dpop_bound_access_tokens, redirect_uris)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)")
            .bind(&cl.client_id).bind(&cl.tenant_id).bind(&cl.name).bind(cl.kind.as_str())
            .bind(Json(&cl.workflows)).bind(Json(&cl.grants)).bind(cl.max_ttl_seconds).bind(cl.disabled)
            .bind(cl.created_at).bind(cl.updated_at).bind(cl.serves.as_ref().map(Json)).bind(cl.workload_pattern.as_deref())
            .bind(cl.max_mints_per_second).bind(cl.jwks.as_ref().map(Json)).bind(cl.delegates.as_ref().map(Json))
            .bind(cl.dpop_bound_access_tokens).bind(cl.redirect_uris.as_ref().map(Json))
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn update_client(&mut self, cl: &Client) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE clients SET name = $3, workflows = $4, grants = $5, max_ttl_seconds = $6, disabled = $7, updated_at = $8,
                                serves = $9, workload_pattern = $10, max_mints_per_second = $11, jwks = $12,
                                delegates = $13, dpop_bound_access_tokens = $14, redirect_uris = $15
             WHERE tenant_id = $1 AND client_id = $2 AND deleted_at IS NULL")
            .bind(&cl.tenant_id).bind(&cl.client_id).bind(&cl.name).bind(Json(&cl.workflows)).bind(Json(&cl.grants))
            .bind(cl.max_ttl_seconds).bind(cl.disabled).bind(cl.updated_at)
            .bind(cl.serves.as_ref().map(Json)).bind(cl.workload_pattern.as_deref()).bind(cl.max_mints_per_second)
            .bind(cl.jwks.as_ref().map(Json)).bind(cl.delegates.as_ref().map(Json))
            .bind(cl.dpop_bound_access_tokens).bind(cl.redirect_uris.as_ref().map(Json))
            .execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Tombstones a client and ends its secrets.
    pub async fn delete_client(&mut self, tenant: &str, client_id: &str, now: DateTime<Utc>) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE clients SET disabled = $3, deleted_at = $4, updated_at = $4
             WHERE tenant_id = $1 AND client_id = $2 AND deleted_at IS NULL")
            .bind(tenant).bind(client_id).bind(true).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)?;
        run!(self, c => sqlx::query(
            "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > $2)")
            .bind(client_id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn insert_secret(&mut self, client_id: &str, digest: &[u8], now: DateTime<Utc>) -> Result<()> {
        run!(self, c => sqlx::query(
            "INSERT INTO client_secrets (id, client_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, NULL)")
            .bind(Uuid::now_v7()).bind(client_id).bind(digest).bind(now)
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Rotation: secrets already on their way out expire now; the current one
    /// stays valid until `previous_until`. At most two secrets are ever live.
    pub async fn expire_secrets_for_rotation(
        &mut self,
        client_id: &str,
        now: DateTime<Utc>,
        previous_until: DateTime<Utc>,
    ) -> Result<()> {
        run!(self, c => sqlx::query(
            "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND expires_at IS NOT NULL AND expires_at > $2")
            .bind(client_id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        run!(self, c => sqlx::query(
            "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND expires_at IS NULL")
            .bind(client_id).bind(previous_until).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The client and the digests of its secrets live at `now`, in one round
    /// trip (the same one whether or not the client exists).
    pub async fn client_for_auth(&mut self, client_id: &str, now: DateTime<Utc>) -> Result<(Client, Vec<Vec<u8>>)> {
        let rows = run!(self, c => sqlx::query_as::<_, ClientSecretRow>(concat!(
            "SELECT ", client_columns!(), ", s.secret_hash
             FROM clients c
             LEFT JOIN client_secrets s ON s.client_id = c.client_id AND (s.expires_at IS NULL OR s.expires_at > $2)
             WHERE c.client_id = $1 AND c.deleted_at IS NULL"))
            .bind(client_id).bind(now).fetch_all(c).await)?;
        let digests = rows.iter().filter_map(|r| r.secret_hash.clone()).collect();
        let client = rows.into_iter().next().ok_or(StoreError::NotFound)?.client;
        Ok((client, digests))
    }

    /// Every tenant's catalog version (see migrations/*/0003_catalog.sql).
    pub async fn catalog_versions(&mut self) -> Result<Vec<(String, i64)>> {
        Ok(
            run!(self, c => sqlx::query_as::<_, (String, i64)>("SELECT tenant_id, version FROM catalog_versions")
            .fetch_all(c).await)?,
        )
    }

    /// One tenant's catalog version; 0 before anything of it was stored.
    pub async fn catalog_version(&mut self, tenant: &str) -> Result<i64> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, i64>("SELECT version FROM catalog_versions WHERE tenant_id = $1")
            .bind(tenant).fetch_optional(c).await)?
            .unwrap_or(0),
        )
    }

    /// A tenant's live clients, one row per live secret (or one with none).
    pub async fn catalog_clients(&mut self, tenant: &str, now: DateTime<Utc>) -> Result<Vec<CatalogClientRow>> {
        Ok(run!(self, c => sqlx::query_as::<_, CatalogClientRow>(concat!(
            "SELECT ", client_columns!(), ", s.secret_hash, s.expires_at AS secret_expires_at
             FROM clients c
             LEFT JOIN client_secrets s ON s.client_id = c.client_id AND (s.expires_at IS NULL OR s.expires_at > $2)
             WHERE c.tenant_id = $1 AND c.deleted_at IS NULL"))
            .bind(tenant).bind(now).fetch_all(c).await)?)
    }

    /// Every resource of a tenant.
    pub async fn catalog_resources(&mut self, tenant: &str) -> Result<Vec<Resource>> {
        Ok(run!(self, c => sqlx::query_as::<_, Resource>(concat!(
            "SELECT ", resource_columns!(), " FROM resources WHERE tenant_id = $1"))
            .bind(tenant).fetch_all(c).await)?)
    }

    /// The catalog versions of some tenants (absent: 0).
    pub async fn catalog_versions_of(&mut self, tenants: &[&str]) -> Result<std::collections::HashMap<String, i64>> {
        if tenants.is_empty() {
            return Ok(Default::default());
        }
        let rows = run!(self, c => {
            let mut q = sqlx::QueryBuilder::new("SELECT tenant_id, version FROM catalog_versions WHERE tenant_id IN (");
            let mut list = q.separated(", ");
            for t in tenants {
                list.push_bind(*t);
            }
            q.push(")");
            q.build_query_as::<(String, i64)>().fetch_all(c).await
        })?;
        Ok(rows.into_iter().collect())
    }
}
