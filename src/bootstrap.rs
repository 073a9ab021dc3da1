//! Start-up work that must happen exactly once per database, whichever replica
//! gets there first: the global admin client and (with --dev) the demo
//! tenant. (The first signing key is the key service's.) Each runs under the
//! writer-order lock (the `audit_chain` row, exclusively), which serialises
//! replicas racing through start-up.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::audit::{Caller, actions};
use crate::clock::Clock;
use crate::storage::{Store, StoreError};
use crate::tenants::{self, Client, ClientKind, Grant, Resource, Tenant, secret};
use crate::tokens::issuer::IssuerId;

/// What bootstrap needs to know.
pub struct Bootstrap<'a> {
    pub store: &'a Store,
    pub clock: &'a Arc<dyn Clock>,
    pub issuer: &'a IssuerId,
    pub admin_secret: Option<&'a SecretString>,
    /// Token lifetime ceiling, in seconds (the admin's cap).
    pub max_ttl: i64,
    /// Move the database to `issuer` if it was set up with another.
    pub change_issuer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(
        "this database belongs to the issuer {stored}, but this instance is configured as {configured}: \
         set MAYFLY_ISSUER={stored} (every replica must use the same), or start once with --change-issuer \
         (MAYFLY_CHANGE_ISSUER=true) to move the database to {configured}"
    )]
    IssuerMismatch { stored: String, configured: String },
}

/// What start-up did that the operator must hear about once.
#[derive(Debug, Default)]
pub struct Started {
    pub bootstrap_secret: Option<String>,
    pub dev_command: Option<String>,
}

/// Creates the global admin client on an empty database. Returns its secret
/// when it was generated here (to be printed once).
pub async fn ensure_admin(b: &Bootstrap<'_>) -> Result<Option<String>, BootstrapError> {
    let mut generated_secret = None;
    let existing = b
        .store
        .read()
        .await?
        .conn()
        .get_client(tenants::SYSTEM_TENANT, tenants::BOOTSTRAP_ADMIN)
        .await;
    match existing {
        Ok(admin) => follow_issuer(b, admin).await?,
        Err(StoreError::NotFound) => {
            let now = b.clock.now();
            let mut tx = b.store.begin().await?;
            tx.conn().lock_chain().await?;
            if !tx.conn().tenant_exists(tenants::SYSTEM_TENANT).await? {
                tx.conn()
                    .insert_tenant(&Tenant {
                        id: tenants::SYSTEM_TENANT.into(),
                        name: "mayfly system".into(),
                        created_at: now,
                        max_live_leases: None,
                        max_mints_per_second: None,
                    })
                    .await?;
            }
            if !tx.conn().client_exists(tenants::BOOTSTRAP_ADMIN).await? {
                let (secret, generated) = match b.admin_secret {
                    Some(s) => (s.clone(), false),
                    None => (secret::generate(), true),
                };
                let admin = Client {
                    name: "Global admin (bootstrap)".into(),
                    workflows: vec!["admin".into()],
                    grants: vec![Grant {
                        resource: b.issuer.url.clone(),
                        scopes: vec![tenants::GLOBAL_ADMIN_SCOPE.into()],
                    }],
                    max_ttl_seconds: b.max_ttl,
                    ..Client::new(
                        tenants::SYSTEM_TENANT,
                        tenants::BOOTSTRAP_ADMIN,
                        ClientKind::Service,
                        now,
                    )
                };
                tx.conn().insert_client(&admin).await?;
                tx.conn()
                    .insert_secret(&admin.client_id, &secret::digest(secret.expose_secret()), now)
                    .await?;
                let mut event = Caller::system("bootstrap").event(actions::CLIENT_CREATED, now);
                event.client_id = Some(admin.client_id.clone());
                event.reason = Some("bootstrap global admin".into());
                tx.conn().append_audit(&[event]).await?;
                if generated {
                    generated_secret = Some(secret.expose_secret().to_string());
                }
            }
            tx.commit().await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(generated_secret)
}

/// Resources registered under an older canonicalisation are moved to the
/// current canonical form of their URI, so requests spelled any equivalent
/// way still find them. One whose URI the current rules refuse is left as
/// it is (nothing can mint for it) and reported; so is one whose new form
/// another tenant already claimed.
pub async fn recanonicalize_resources(store: &Store) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let mut c = tx.conn();
    c.lock_chain().await?;
    for r in c.all_resources().await? {
        match tenants::uri::canonicalize(&r.uri) {
            Ok(canonical) if canonical == r.canonical_uri => {}
            Ok(canonical) => match c.recanonicalize_resource(&r, &canonical).await {
                Ok(()) => tracing::info!(resource = %r.id, "resource URI moved to its current canonical form"),
                Err(StoreError::Conflict(_)) => tracing::error!(
                    resource = %r.id, tenant = %r.tenant_id,
                    "resource URI's canonical form is claimed by another tenant; it cannot be minted for"
                ),
                Err(e) => return Err(e),
            },
            Err(e) => tracing::error!(
                resource = %r.id, tenant = %r.tenant_id, error = %e,
                "resource URI is no longer accepted; it cannot be minted for until it is re-registered"
            ),
        }
    }
    tx.commit().await
}

/// The bootstrap admin's grant on the admin API names the issuer the database
/// was set up with (the admin API's URI is the issuer). Another issuer stops
/// start-up, naming both, unless the operator asked to move: then the grant
/// follows, so the operator is not locked out. Tenant admins' grants are
/// theirs to update.
async fn follow_issuer(b: &Bootstrap<'_>, mut admin: Client) -> Result<(), BootstrapError> {
    let current = &b.issuer.canonical;
    let mut changed = false;
    for grant in admin.grants.iter_mut() {
        let on_admin_api = grant.scopes.iter().any(|s| s == tenants::GLOBAL_ADMIN_SCOPE);
        if on_admin_api && tenants::uri::canonicalize(&grant.resource).ok().as_ref() != Some(current) {
            if !b.change_issuer {
                return Err(BootstrapError::IssuerMismatch {
                    stored: grant.resource.clone(),
                    configured: b.issuer.url.clone(),
                });
            }
            grant.resource = b.issuer.url.clone();
            changed = true;
        }
    }
    if !changed {
        return Ok(());
    }
    let now = b.clock.now();
    admin.updated_at = now;
    let mut tx = b.store.begin().await?;
    tx.conn().update_client(&admin).await?;
    let mut event = Caller::system("bootstrap").event(actions::CLIENT_UPDATED, now);
    event.client_id = Some(admin.client_id.clone());
    event.reason = Some(format!("admin API grant moved to the issuer {}", b.issuer.url));
    tx.conn().append_audit(&[event]).await?;
    tx.commit().await?;
    Ok(())
}

pub const DEMO_TENANT: &str = "demo";
pub const DEMO_CLIENT: &str = "demo-ci";
pub const DEMO_RESOURCE: &str = "https://mcp.demo.test/github";

/// Seeds (or refreshes) the demo tenant and returns a ready-to-paste mint
/// command. The demo client's secret is re-issued at every --dev start, since
/// a secret is never shown twice.
pub async fn seed_demo(b: &Bootstrap<'_>) -> Result<String, StoreError> {
    let now = b.clock.now();
    let secret: SecretString = secret::generate();
    let seeder = Caller::system("dev-seed");
    let mut tx = b.store.begin().await?;
    let mut c = tx.conn();
    c.lock_chain().await?;
    let mut events = Vec::new();
    if !c.tenant_exists(DEMO_TENANT).await? {
        c.insert_tenant(&Tenant {
            id: DEMO_TENANT.into(),
            name: "Demo".into(),
            created_at: now,
            max_live_leases: None,
            max_mints_per_second: None,
        })
        .await?;
        c.insert_resource(&Resource {
            id: Uuid::now_v7(),
            tenant_id: DEMO_TENANT.into(),
            uri: DEMO_RESOURCE.into(),
            canonical_uri: DEMO_RESOURCE.into(),
            name: "Demo GitHub MCP server".into(),
            scopes: vec!["issues:read".into(), "issues:write".into()],
            default_ttl_seconds: 600,
            max_ttl_seconds: b.max_ttl.min(3600),
            created_at: now,
            updated_at: now,
            tools: None,
        })
        .await?;
        c.insert_client(&Client {
            name: "Demo CI pipeline".into(),
            workflows: vec!["release".into(), "nightly".into()],
            grants: vec![Grant {
                resource: DEMO_RESOURCE.into(),
                scopes: vec!["issues:read".into(), "issues:write".into()],
            }],
            max_ttl_seconds: 900,
            ..Client::new(DEMO_TENANT, DEMO_CLIENT, ClientKind::Ci, now)
        })
        .await?;
        let mut e = seeder.event(actions::TENANT_CREATED, now);
        e.tenant = Some(DEMO_TENANT.into());
        events.push(e);
    }
    if c.client_exists(DEMO_CLIENT).await? {
        c.expire_secrets_for_rotation(DEMO_CLIENT, now, now).await?;
        c.insert_secret(DEMO_CLIENT, &secret::digest(secret.expose_secret()), now)
            .await?;
        let mut e = seeder.event(actions::CLIENT_SECRET_ROTATED, now);
        e.tenant = Some(DEMO_TENANT.into());
        e.client_id = Some(DEMO_CLIENT.into());
        events.push(e);
    }
    c.append_audit(&events).await?;
    tx.commit().await?;
    Ok(format!(
        "  curl -s -u '{DEMO_CLIENT}:{}' \\\n    -d grant_type=client_credentials -d resource={DEMO_RESOURCE} \\\n    -d scope=issues:read -d workflow=release \\\n    {}/oauth2/token",
        secret.expose_secret(),
        b.issuer.url
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{temp_store, test_clock};

    #[tokio::test]
    async fn resources_stored_under_an_older_canonical_form_are_moved_to_the_current_one() {
        let (store, _dir) = temp_store().await;
        let now = test_clock().now();
        let old = Resource {
            id: Uuid::now_v7(),
            tenant_id: "acme".into(),
            uri: "https://mcp.acme.test/x/../%67ithub".into(),
            // What the old canonicalisation stored for it.
            canonical_uri: "https://mcp.acme.test/x/../%67ithub".into(),
            name: "GitHub".into(),
            scopes: vec!["read".into()],
            default_ttl_seconds: 60,
            max_ttl_seconds: 600,
            created_at: now,
            updated_at: now,
            tools: None,
        };
        let mut tx = store.begin().await.unwrap();
        let acme = Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            created_at: now,
            max_live_leases: None,
            max_mints_per_second: None,
        };
        tx.conn().insert_tenant(&acme).await.unwrap();
        tx.conn().insert_resource(&old).await.unwrap();
        tx.commit().await.unwrap();
        recanonicalize_resources(&store).await.unwrap();
        let mut c = store.read().await.unwrap();
        let moved = c
            .conn()
            .find_resource_by_uri("acme", "https://mcp.acme.test/github")
            .await
            .unwrap();
        assert_eq!(moved.id, old.id);
        // Running it again changes nothing.
        recanonicalize_resources(&store).await.unwrap();
    }
}
