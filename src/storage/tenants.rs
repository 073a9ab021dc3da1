//! Tenants, resources, clients and client secrets.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, StoreError, Tx, on_pool, on_tx};
use crate::tenants::{Client, Resource, Tenant};

impl Store {
    pub async fn get_tenant(&self, id: &str) -> Result<Tenant> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Tenant>(
            "SELECT id, name, created_at FROM tenants WHERE id = $1 AND deleted_at IS NULL")
            .bind(id).fetch_one(c).await)?)
    }

    /// Tenants in id order after `after`, hiding the system tenant.
    pub async fn list_tenants(&self, after: &str, limit: i64) -> Result<Vec<Tenant>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Tenant>(
            "SELECT id, name, created_at FROM tenants
             WHERE deleted_at IS NULL AND id > $1 AND id <> '_system' ORDER BY id LIMIT $2")
            .bind(after).bind(limit).fetch_all(c).await)?)
    }

    pub async fn get_resource(&self, tenant: &str, id: Uuid) -> Result<Resource> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Resource>(
            "SELECT id, tenant_id, uri, canonical_uri, name, scopes, default_ttl_seconds, max_ttl_seconds, created_at, updated_at
             FROM resources WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).fetch_one(c).await)?)
    }

    pub async fn find_resource_by_uri(&self, tenant: &str, canonical_uri: &str) -> Result<Resource> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Resource>(
            "SELECT id, tenant_id, uri, canonical_uri, name, scopes, default_ttl_seconds, max_ttl_seconds, created_at, updated_at
             FROM resources WHERE tenant_id = $1 AND canonical_uri = $2")
            .bind(tenant).bind(canonical_uri).fetch_one(c).await)?)
    }

    pub async fn list_resources(&self, tenant: &str, after: &str, limit: i64) -> Result<Vec<Resource>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Resource>(
            "SELECT id, tenant_id, uri, canonical_uri, name, scopes, default_ttl_seconds, max_ttl_seconds, created_at, updated_at
             FROM resources WHERE tenant_id = $1 AND canonical_uri > $2 ORDER BY canonical_uri LIMIT $3")
            .bind(tenant).bind(after).bind(limit).fetch_all(c).await)?)
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Client> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Client>(
            "SELECT client_id, tenant_id, name, kind, workflows, grants, max_ttl_seconds, disabled, created_at, updated_at
             FROM clients WHERE client_id = $1 AND deleted_at IS NULL")
            .bind(client_id).fetch_one(c).await)?)
    }

    pub async fn list_clients(&self, tenant: &str, after: &str, limit: i64) -> Result<Vec<Client>> {
        Ok(on_pool!(self, c => sqlx::query_as::<_, Client>(
            "SELECT client_id, tenant_id, name, kind, workflows, grants, max_ttl_seconds, disabled, created_at, updated_at
             FROM clients WHERE tenant_id = $1 AND deleted_at IS NULL AND client_id > $2 ORDER BY client_id LIMIT $3")
            .bind(tenant).bind(after).bind(limit).fetch_all(c).await)?)
    }
}

impl Tx {
    pub async fn insert_tenant(&mut self, t: &Tenant) -> Result<()> {
        on_tx!(self, c => sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&t.id).bind(&t.name).bind(t.created_at).execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    /// Tombstones a tenant and disables its clients; its leases and audit stay.
    pub async fn delete_tenant(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE tenants SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id).bind(now).execute(&mut **c).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        on_tx!(self, c => sqlx::query(
            "UPDATE clients SET disabled = $2, deleted_at = $3, updated_at = $3 WHERE tenant_id = $1 AND deleted_at IS NULL")
            .bind(id).bind(true).bind(now).execute(&mut **c).await.map(|_| ()))?;
        // Its resource URIs become free for a new owner; its leases keep the URI as text.
        on_tx!(self, c => sqlx::query("DELETE FROM resources WHERE tenant_id = $1")
            .bind(id).execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_resource(&mut self, r: &Resource) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO resources (id, tenant_id, uri, canonical_uri, name, scopes, default_ttl_seconds, max_ttl_seconds, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(r.id).bind(&r.tenant_id).bind(&r.uri).bind(&r.canonical_uri).bind(&r.name)
            .bind(Json(&r.scopes)).bind(r.default_ttl_seconds).bind(r.max_ttl_seconds)
            .bind(r.created_at).bind(r.updated_at)
            .execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn update_resource(&mut self, r: &Resource) -> Result<()> {
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE resources SET name = $3, scopes = $4, default_ttl_seconds = $5, max_ttl_seconds = $6, updated_at = $7
             WHERE tenant_id = $1 AND id = $2")
            .bind(&r.tenant_id).bind(r.id).bind(&r.name).bind(Json(&r.scopes))
            .bind(r.default_ttl_seconds).bind(r.max_ttl_seconds).bind(r.updated_at)
            .execute(&mut **c).await.map(|r| r.rows_affected()))?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    pub async fn delete_resource(&mut self, tenant: &str, id: Uuid) -> Result<()> {
        let n = on_tx!(self, c => sqlx::query("DELETE FROM resources WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).execute(&mut **c).await.map(|r| r.rows_affected()))?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    pub async fn insert_client(&mut self, cl: &Client) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO clients (client_id, tenant_id, name, kind, workflows, grants, max_ttl_seconds, disabled, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&cl.client_id).bind(&cl.tenant_id).bind(&cl.name).bind(cl.kind.as_str())
            .bind(Json(&cl.workflows)).bind(Json(&cl.grants)).bind(cl.max_ttl_seconds).bind(cl.disabled)
            .bind(cl.created_at).bind(cl.updated_at)
            .execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn update_client(&mut self, cl: &Client) -> Result<()> {
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE clients SET name = $2, workflows = $3, grants = $4, max_ttl_seconds = $5, disabled = $6, updated_at = $7
             WHERE client_id = $1 AND deleted_at IS NULL")
            .bind(&cl.client_id).bind(&cl.name).bind(Json(&cl.workflows)).bind(Json(&cl.grants))
            .bind(cl.max_ttl_seconds).bind(cl.disabled).bind(cl.updated_at)
            .execute(&mut **c).await.map(|r| r.rows_affected()))?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    pub async fn delete_client(&mut self, client_id: &str, now: DateTime<Utc>) -> Result<()> {
        let n = on_tx!(self, c => sqlx::query(
            "UPDATE clients SET disabled = $2, deleted_at = $3, updated_at = $3 WHERE client_id = $1 AND deleted_at IS NULL")
            .bind(client_id).bind(true).bind(now).execute(&mut **c).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        on_tx!(self, c => sqlx::query("UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > $2)")
            .bind(client_id).bind(now).execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_secret(&mut self, client_id: &str, digest: &[u8], now: DateTime<Utc>) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO client_secrets (id, client_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, NULL)")
            .bind(Uuid::now_v7()).bind(client_id).bind(digest).bind(now)
            .execute(&mut **c).await.map(|_| ()))?;
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
        on_tx!(self, c => sqlx::query(
            "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND expires_at IS NOT NULL AND expires_at > $2")
            .bind(client_id).bind(now).execute(&mut **c).await.map(|_| ()))?;
        on_tx!(self, c => sqlx::query(
            "UPDATE client_secrets SET expires_at = $2 WHERE client_id = $1 AND expires_at IS NULL")
            .bind(client_id).bind(previous_until).execute(&mut **c).await.map(|_| ()))?;
        Ok(())
    }
}

impl Tx {
    pub async fn tenant_exists(&mut self, id: &str) -> Result<bool> {
        Ok(
            on_tx!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tenants WHERE id = $1")
            .bind(id).fetch_one(&mut **c).await)?
                > 0,
        )
    }

    pub async fn client_exists(&mut self, client_id: &str) -> Result<bool> {
        Ok(
            on_tx!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM clients WHERE client_id = $1")
            .bind(client_id).fetch_one(&mut **c).await)?
                > 0,
        )
    }
}

/// A client with one of its live secret digests (none if it has none).
#[derive(Debug, sqlx::FromRow)]
struct ClientSecretRow {
    #[sqlx(flatten)]
    client: Client,
    secret_hash: Option<Vec<u8>>,
}

impl Store {
    /// The client and the digests of its secrets live at `now`, in one round
    /// trip (the same one whether or not the client exists).
    pub async fn client_for_auth(&self, client_id: &str, now: DateTime<Utc>) -> Result<(Client, Vec<Vec<u8>>)> {
        let rows = on_pool!(self, c => sqlx::query_as::<_, ClientSecretRow>(
            "SELECT c.client_id, c.tenant_id, c.name, c.kind, c.workflows, c.grants, c.max_ttl_seconds, c.disabled,
                    c.created_at, c.updated_at, s.secret_hash
             FROM clients c
             LEFT JOIN client_secrets s ON s.client_id = c.client_id AND (s.expires_at IS NULL OR s.expires_at > $2)
             WHERE c.client_id = $1 AND c.deleted_at IS NULL")
            .bind(client_id).bind(now).fetch_all(c).await)?;
        let digests = rows.iter().filter_map(|r| r.secret_hash.clone()).collect();
        let client = rows.into_iter().next().ok_or(StoreError::NotFound)?.client;
        Ok((client, digests))
    }
}
