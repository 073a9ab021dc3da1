//! Start-up work that must happen exactly once per database, whichever replica
//! gets there first: the first signing key, the global admin client, and (with
//! --dev) the demo tenant. Each runs under the audit-chain lock, which
//! serialises replicas racing through start-up.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

use crate::app::{AppState, StartError};
use crate::audit::{AuditEvent, Outcome, actions};
use crate::keys::{self, KeySet, KeyState, rotation};
use crate::storage::StoreError;
use crate::tenants::{self, Client, ClientKind, Grant, Resource, Tenant, secret};

fn system_actor() -> serde_json::Value {
    json!({"system": "bootstrap"})
}

/// Makes sure one active signing key exists, then loads the keyring. A master
/// key that cannot open the stored keys stops start-up here.
pub async fn ensure_signing_key(state: &AppState) -> Result<(), StartError> {
    let mut rows = state.store.list_keys().await?;
    if !rows.iter().any(|k| k.state == KeyState::Active.as_str()) {
        let mut tx = state.store.begin().await?;
        tx.lock_chain().await?;
        if tx.count_active_keys().await? == 0 {
            let now = state.clock.now();
            let kid = rotation::create_key(state, &mut tx, KeyState::Active, now, Some(now))
                .await
                .map_err(|e| keys::KeyError::Stored {
                    kid: "new".into(),
                    why: e.to_string(),
                })?;
            let mut event = AuditEvent::new(actions::KEY_CREATED, Outcome::Success, now);
            event.reason = Some(format!(
                "first signing key {kid} ({})",
                state.config.signing_alg.as_str()
            ));
            event.admin = Some(system_actor());
            tx.append_audit(&[event]).await?;
        }
        tx.commit().await?;
        rows = state.store.list_keys().await?;
    }
    keys::check_all_open(&rows, &state.master, state.master_previous.as_ref())?;
    state.keyring.replace(KeySet::from_stored(
        &rows,
        &state.master,
        state.master_previous.as_ref(),
    )?);
    Ok(())
}

/// Reloads the keyring when the stored keys change (another replica rotated):
/// at once on a Postgres notification, and by polling as a safety net.
pub fn spawn_key_refresh(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(rotation::tick_interval(state.config.key_publish_lead));
        let mut listener = None;
        let mut last: Vec<(String, String)> = Vec::new();
        loop {
            if listener.is_none() {
                listener = state.store.key_change_listener().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot listen for key changes; polling only");
                    None
                });
            }
            match listener.as_mut() {
                Some(l) => tokio::select! {
                    _ = tick.tick() => {}
                    note = l.recv() => {
                        if note.is_err() {
                            listener = None; // reconnect on the next turn
                        }
                    }
                },
                None => {
                    tick.tick().await;
                }
            }
            match state.store.list_keys().await {
                Ok(rows) => {
                    let seen: Vec<_> = rows.iter().map(|k| (k.kid.clone(), k.state.clone())).collect();
                    if seen != last {
                        match KeySet::from_stored(&rows, &state.master, state.master_previous.as_ref()) {
                            Ok(set) => {
                                state.keyring.replace(set);
                                state.keyring.set_stale(false);
                                last = seen;
                            }
                            Err(e) => {
                                state.keyring.set_stale(true);
                                tracing::error!(error = %e, "cannot load signing keys; this replica is not ready");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot refresh signing keys"),
            }
        }
    })
}

/// Creates the global admin client on an empty database. Returns its secret
/// when it was generated here (to be printed once).
pub async fn ensure_admin(state: &AppState) -> Result<crate::app::Started, StartError> {
    let mut started = crate::app::Started::default();
    match state.store.get_client(tenants::BOOTSTRAP_ADMIN).await {
        Ok(admin) => follow_issuer(state, admin).await?,
        Err(StoreError::NotFound) => {
            let now = state.clock.now();
            let mut tx = state.store.begin().await?;
            tx.lock_chain().await?;
            if !tx.tenant_exists(tenants::SYSTEM_TENANT).await? {
                tx.insert_tenant(&Tenant {
                    id: tenants::SYSTEM_TENANT.into(),
                    name: "mayfly system".into(),
                    created_at: now,
                })
                .await?;
            }
            if !tx.client_exists(tenants::BOOTSTRAP_ADMIN).await? {
                let (secret, generated) = match &state.config.bootstrap_admin_secret {
                    Some(s) => (s.clone(), false),
                    None => (secret::generate(), true),
                };
                let admin = Client {
                    client_id: tenants::BOOTSTRAP_ADMIN.into(),
                    tenant_id: tenants::SYSTEM_TENANT.into(),
                    name: "Global admin (bootstrap)".into(),
                    kind: ClientKind::Service,
                    workflows: vec!["admin".into()],
                    grants: vec![Grant {
                        resource: state.config.issuer.clone(),
                        scopes: vec![tenants::GLOBAL_ADMIN_SCOPE.into()],
                    }],
                    max_ttl_seconds: state.config.max_ttl_seconds(),
                    disabled: false,
                    created_at: now,
                    updated_at: now,
                };
                tx.insert_client(&admin).await?;
                tx.insert_secret(&admin.client_id, &secret::digest(secret.expose_secret()), now)
                    .await?;
                let mut event = AuditEvent::new(actions::CLIENT_CREATED, Outcome::Success, now);
                event.client_id = Some(admin.client_id.clone());
                event.admin = Some(system_actor());
                event.reason = Some("bootstrap global admin".into());
                tx.append_audit(&[event]).await?;
                if generated {
                    started.bootstrap_secret = Some(secret.expose_secret().to_string());
                }
            }
            tx.commit().await?;
        }
        Err(e) => return Err(e.into()),
    }
    if state.config.dev {
        started.dev_command = Some(seed_demo(state).await?);
    }
    Ok(started)
}

/// After MAYFLY_ISSUER changes, the bootstrap admin's grant on the admin API
/// (whose URI is the issuer) is moved to the new issuer, so the operator is
/// not locked out. Tenant admins' grants are theirs to update.
async fn follow_issuer(state: &AppState, mut admin: Client) -> Result<(), StartError> {
    let current = &state.issuer_canonical;
    let mut changed = false;
    for grant in admin.grants.iter_mut() {
        let on_admin_api = grant.scopes.iter().any(|s| s == tenants::GLOBAL_ADMIN_SCOPE);
        if on_admin_api && tenants::uri::canonicalize(&grant.resource).ok().as_ref() != Some(current) {
            grant.resource = state.config.issuer.clone();
            changed = true;
        }
    }
    if !changed {
        return Ok(());
    }
    let now = state.clock.now();
    admin.updated_at = now;
    let mut tx = state.store.begin().await?;
    tx.update_client(&admin).await?;
    let mut event = AuditEvent::new(actions::CLIENT_UPDATED, Outcome::Success, now);
    event.client_id = Some(admin.client_id.clone());
    event.admin = Some(system_actor());
    event.reason = Some(format!("admin API grant moved to the issuer {}", state.config.issuer));
    tx.append_audit(&[event]).await?;
    tx.commit().await?;
    Ok(())
}

pub const DEMO_TENANT: &str = "demo";
pub const DEMO_CLIENT: &str = "demo-ci";
pub const DEMO_RESOURCE: &str = "https://mcp.demo.test/github";

/// Seeds (or refreshes) the demo tenant and returns a ready-to-paste mint
/// command. The demo client's secret is re-issued at every --dev start, since
/// a secret is never shown twice.
async fn seed_demo(state: &AppState) -> Result<String, StartError> {
    let now = state.clock.now();
    let secret: SecretString = secret::generate();
    let mut tx = state.store.begin().await?;
    tx.lock_chain().await?;
    let mut events = Vec::new();
    if !tx.tenant_exists(DEMO_TENANT).await? {
        tx.insert_tenant(&Tenant {
            id: DEMO_TENANT.into(),
            name: "Demo".into(),
            created_at: now,
        })
        .await?;
        tx.insert_resource(&Resource {
            id: Uuid::now_v7(),
            tenant_id: DEMO_TENANT.into(),
            uri: DEMO_RESOURCE.into(),
            canonical_uri: DEMO_RESOURCE.into(),
            name: "Demo GitHub MCP server".into(),
            scopes: vec!["issues:read".into(), "issues:write".into()],
            default_ttl_seconds: 600,
            max_ttl_seconds: state.config.max_ttl_seconds().min(3600),
            created_at: now,
            updated_at: now,
        })
        .await?;
        tx.insert_client(&Client {
            client_id: DEMO_CLIENT.into(),
            tenant_id: DEMO_TENANT.into(),
            name: "Demo CI pipeline".into(),
            kind: ClientKind::Ci,
            workflows: vec!["release".into(), "nightly".into()],
            grants: vec![Grant {
                resource: DEMO_RESOURCE.into(),
                scopes: vec!["issues:read".into(), "issues:write".into()],
            }],
            max_ttl_seconds: 900,
            disabled: false,
            created_at: now,
            updated_at: now,
        })
        .await?;
        let mut e = AuditEvent::new(actions::TENANT_CREATED, Outcome::Success, now);
        e.tenant = Some(DEMO_TENANT.into());
        e.admin = Some(json!({"system": "dev-seed"}));
        events.push(e);
    }
    if tx.client_exists(DEMO_CLIENT).await? {
        tx.expire_secrets_for_rotation(DEMO_CLIENT, now, now).await?;
        tx.insert_secret(DEMO_CLIENT, &secret::digest(secret.expose_secret()), now)
            .await?;
        let mut e = AuditEvent::new(actions::CLIENT_SECRET_ROTATED, Outcome::Success, now);
        e.tenant = Some(DEMO_TENANT.into());
        e.client_id = Some(DEMO_CLIENT.into());
        e.admin = Some(json!({"system": "dev-seed"}));
        events.push(e);
    }
    tx.append_audit(&events).await?;
    tx.commit().await?;
    Ok(format!(
        "  curl -s -u '{DEMO_CLIENT}:{}' \\\n    -d grant_type=client_credentials -d resource={DEMO_RESOURCE} \\\n    -d scope=issues:read -d workflow=release \\\n    {}/oauth2/token",
        secret.expose_secret(),
        state.config.issuer
    ))
}
