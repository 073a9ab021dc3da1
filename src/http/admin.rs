//! Admin API for tenants, resources and clients. Every route authorizes the
//! admin for the tenant in the path before reading or changing anything, and
//! every change is audited in the same transaction.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::TimeDelta;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery, MAX_PAGE, OptionalJson, page_body, page_cursor, page_limit};
use crate::app::AppState;
use crate::audit::actions;
use crate::leases::Selector;
use crate::storage::{NewRevocation, StoreError};
use crate::tenants::{
    self, Client, ClientKind, Grant, Resource, Tenant, invalid, secret, uri, validate_client_id, validate_name,
    validate_resource_scopes, validate_tenant_id, validate_ttls, validate_workflows,
};

type Created = (StatusCode, Json<Value>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A tenant in a path must be a slug; anything else cannot exist.
fn tenant_path(tenant: &str) -> Result<(), ApiError> {
    if tenants::is_tenant_path(tenant) {
        Ok(())
    } else {
        Err(ApiError::not_found("tenant"))
    }
}

async fn load_tenant(state: &AppState, admin: &Admin, tenant: &str) -> Result<Tenant, ApiError> {
    tenant_path(tenant)?;
    admin.require_tenant(state, tenant).await?;
    state.store.get_tenant(tenant).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("tenant"),
        e => e.into(),
    })
}

fn not_found(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(what),
        e => e.into(),
    }
}

// ---- tenants ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: String,
    name: Option<String>,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<Created, ApiError> {
    admin.require_global(&state).await?;
    validate_tenant_id(&body.id)?;
    let name = body.name.unwrap_or_else(|| body.id.clone());
    validate_name("name", &name)?;
    let now = state.clock.now();
    let tenant = Tenant {
        id: body.id,
        name,
        created_at: now,
    };
    let mut tx = state.store.begin().await?;
    tx.insert_tenant(&tenant).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::conflict(format!("tenant `{}` exists (or existed)", tenant.id)),
        e => e.into(),
    })?;
    let mut event = admin.event(actions::TENANT_CREATED, now);
    event.tenant = Some(tenant.id.clone());
    tx.append_audit(&[event]).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!(tenant))))
}

pub async fn list_tenants(
    State(state): State<AppState>,
    admin: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after = page_cursor(q.cursor.as_deref())?.unwrap_or_default();
    let tenants = match &admin.scope {
        super::extract::AdminScope::Global => state.store.list_tenants(&after, limit).await?,
        // A tenant admin sees its own tenant only.
        super::extract::AdminScope::Tenant(t) if after.is_empty() => {
            vec![state.store.get_tenant(t).await.map_err(not_found("tenant"))?]
        }
        super::extract::AdminScope::Tenant(_) => vec![],
    };
    Ok(Json(page_body(&tenants, limit, |t| t.id.clone())))
}

pub async fn get_tenant(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(load_tenant(&state, &admin, &tenant).await?)))
}

/// Deleting a tenant revokes every token in it and disables its clients.
pub async fn delete_tenant(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    tenant_path(&tenant)?;
    admin.require_global(&state).await?;
    if tenant == tenants::SYSTEM_TENANT {
        return Err(ApiError::conflict(
            "the system tenant holds the global admins and cannot be deleted",
        ));
    }
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    tx.delete_tenant(&tenant, now).await.map_err(not_found("tenant"))?;
    let rule = tx
        .insert_revocation(&NewRevocation {
            id: Uuid::now_v7(),
            tenant_id: Some(&tenant),
            selector: &Selector::Tenant,
            reason: "tenant deleted",
            created_by: Some(admin.identity()),
            now,
            prune_after: now + TimeDelta::seconds(2 * state.config.max_ttl_seconds()),
            forever: true,
        })
        .await?;
    let mut event = admin.event(actions::TENANT_DELETED, now);
    event.tenant = Some(tenant.clone());
    event.reason = Some(format!("revocation {}", rule.id));
    tx.append_audit(&[event]).await?;
    tx.commit().await?;
    state.sweeper.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

// ---- resources ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    uri: String,
    name: Option<String>,
    scopes: Vec<String>,
    default_ttl_seconds: Option<i64>,
    max_ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    default_ttl_seconds: Option<i64>,
    max_ttl_seconds: Option<i64>,
}

fn resource_event(
    admin: &Admin,
    action: &str,
    r: &Resource,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::audit::AuditEvent {
    let mut event = admin.event(action, now);
    event.tenant = Some(r.tenant_id.clone());
    event.resource = Some(r.uri.clone());
    event.scopes = Some(r.scopes.clone());
    event
}

pub async fn create_resource(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<NewResource>,
) -> Result<Created, ApiError> {
    load_tenant(&state, &admin, &tenant).await?;
    let canonical = uri::canonicalize(&body.uri).map_err(|e| invalid("uri", e.to_string()))?;
    if canonical == state.issuer_canonical {
        return Err(invalid("uri", "the issuer URI is the admin API, reserved").into());
    }
    let name = body.name.unwrap_or_else(|| body.uri.clone());
    validate_name("name", &name)?;
    validate_resource_scopes(&body.scopes)?;
    let ceiling = state.config.max_ttl_seconds();
    let max_ttl = body.max_ttl_seconds.unwrap_or(ceiling);
    let default_ttl = body
        .default_ttl_seconds
        .unwrap_or(state.config.default_ttl_seconds().min(max_ttl));
    validate_ttls(default_ttl, max_ttl, ceiling)?;
    let now = state.clock.now();
    let resource = Resource {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        uri: body.uri,
        canonical_uri: canonical,
        name,
        scopes: body.scopes,
        default_ttl_seconds: default_ttl,
        max_ttl_seconds: max_ttl,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.store.begin().await?;
    tx.insert_resource(&resource).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::conflict("this resource URI is already registered"),
        e => e.into(),
    })?;
    tx.append_audit(&[resource_event(&admin, actions::RESOURCE_CREATED, &resource, now)])
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!(resource))))
}

pub async fn list_resources(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    load_tenant(&state, &admin, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let after = page_cursor(q.cursor.as_deref())?.unwrap_or_default();
    let items = state.store.list_resources(&tenant, &after, limit).await?;
    Ok(Json(page_body(&items, limit, |r| r.canonical_uri.clone())))
}

async fn load_resource(state: &AppState, admin: &Admin, tenant: &str, id: &str) -> Result<Resource, ApiError> {
    load_tenant(state, admin, tenant).await?;
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found("resource"))?;
    state
        .store
        .get_resource(tenant, id)
        .await
        .map_err(not_found("resource"))
}

pub async fn get_resource(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(load_resource(&state, &admin, &tenant, &id).await?)))
}

pub async fn update_resource(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<ResourcePatch>,
) -> Result<Json<Value>, ApiError> {
    let mut r = load_resource(&state, &admin, &tenant, &id).await?;
    if let Some(name) = patch.name {
        validate_name("name", &name)?;
        r.name = name;
    }
    if let Some(scopes) = patch.scopes {
        validate_resource_scopes(&scopes)?;
        r.scopes = scopes;
    }
    r.default_ttl_seconds = patch.default_ttl_seconds.unwrap_or(r.default_ttl_seconds);
    r.max_ttl_seconds = patch.max_ttl_seconds.unwrap_or(r.max_ttl_seconds);
    validate_ttls(r.default_ttl_seconds, r.max_ttl_seconds, state.config.max_ttl_seconds())?;
    let now = state.clock.now();
    r.updated_at = now;
    let mut tx = state.store.begin().await?;
    tx.update_resource(&r).await.map_err(not_found("resource"))?;
    tx.append_audit(&[resource_event(&admin, actions::RESOURCE_UPDATED, &r, now)])
        .await?;
    tx.commit().await?;
    Ok(Json(json!(r)))
}

/// Tokens already minted for the resource stay valid until they expire
/// (revoke by workflow or client to end them sooner); new mints fail.
pub async fn delete_resource(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let r = load_resource(&state, &admin, &tenant, &id).await?;
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    tx.delete_resource(&tenant, r.id).await.map_err(not_found("resource"))?;
    tx.append_audit(&[resource_event(&admin, actions::RESOURCE_DELETED, &r, now)])
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- clients ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    client_id: Option<String>,
    name: Option<String>,
    kind: ClientKind,
    workflows: Vec<String>,
    #[serde(default)]
    grants: Vec<Grant>,
    max_ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    name: Option<String>,
    workflows: Option<Vec<String>>,
    grants: Option<Vec<Grant>>,
    max_ttl_seconds: Option<i64>,
    disabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRotation {
    /// How long the current secret keeps working (default 3600, 0 = at once).
    grace_period_seconds: Option<i64>,
}

/// Grants must name this tenant's resources and scopes they define; a grant
/// on the admin API may only carry this tenant's admin scope.
async fn validate_grants(state: &AppState, tenant: &str, grants: &[Grant]) -> Result<(), ApiError> {
    if grants.len() > 100 {
        return Err(invalid("grants", "at most 100 grants").into());
    }
    let mut seen = Vec::new();
    for g in grants {
        let canonical =
            uri::canonicalize(&g.resource).map_err(|e| invalid("grants", format!("{}: {e}", g.resource)))?;
        if seen.contains(&canonical) {
            return Err(invalid("grants", format!("`{}` is granted twice", g.resource)).into());
        }
        if g.scopes.is_empty() {
            return Err(invalid("grants", format!("grant on `{}` lists no scopes", g.resource)).into());
        }
        if canonical == state.issuer_canonical {
            // Clients of the system tenant are global admins; any other tenant's, its own admins.
            let allowed = if tenant == tenants::SYSTEM_TENANT {
                tenants::GLOBAL_ADMIN_SCOPE.to_string()
            } else {
                tenants::tenant_admin_scope(tenant)
            };
            if g.scopes.iter().any(|s| *s != allowed) {
                return Err(invalid(
                    "grants",
                    format!("on the admin API a client of `{tenant}` may hold only `{allowed}`"),
                )
                .into());
            }
        } else {
            let resource = state
                .store
                .find_resource_by_uri(tenant, &canonical)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => ApiError::from(invalid(
                        "grants",
                        format!("`{}` is not a resource of this tenant", g.resource),
                    )),
                    e => e.into(),
                })?;
            if let Some(s) = g.scopes.iter().find(|s| !resource.scopes.contains(s)) {
                return Err(invalid("grants", format!("`{}` does not define scope `{s}`", g.resource)).into());
            }
        }
        seen.push(canonical);
    }
    Ok(())
}

/// The system tenant must keep one enabled global admin, or nobody could
/// administer mayfly again.
async fn keep_a_global_admin(state: &AppState, tenant: &str, client_id: &str) -> Result<(), ApiError> {
    if tenant != tenants::SYSTEM_TENANT {
        return Ok(());
    }
    let others = state.store.list_clients(tenants::SYSTEM_TENANT, "", MAX_PAGE).await?;
    if others.iter().any(|c| c.client_id != client_id && !c.disabled) {
        return Ok(());
    }
    Err(ApiError::conflict(
        "this is the last enabled global admin; create another one first",
    ))
}

fn client_event(
    admin: &Admin,
    action: &str,
    c: &Client,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::audit::AuditEvent {
    let mut event = admin.event(action, now);
    event.tenant = Some(c.tenant_id.clone());
    event.client_id = Some(c.client_id.clone());
    event
}

pub async fn create_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<NewClient>,
) -> Result<Created, ApiError> {
    load_tenant(&state, &admin, &tenant).await?;
    let client_id = body
        .client_id
        .unwrap_or_else(|| format!("{tenant}-{}", Uuid::new_v4().simple()));
    validate_client_id(&client_id)?;
    let name = body.name.unwrap_or_else(|| client_id.clone());
    validate_name("name", &name)?;
    validate_workflows(&body.workflows)?;
    validate_grants(&state, &tenant, &body.grants).await?;
    let ceiling = state.config.max_ttl_seconds();
    let max_ttl = body.max_ttl_seconds.unwrap_or(state.config.default_ttl_seconds());
    if !(1..=ceiling).contains(&max_ttl) {
        return Err(invalid("max_ttl_seconds", format!("must be between 1 and {ceiling}")).into());
    }
    let now = state.clock.now();
    let client = Client {
        client_id,
        tenant_id: tenant,
        name,
        kind: body.kind,
        workflows: body.workflows,
        grants: body.grants,
        max_ttl_seconds: max_ttl,
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    let secret = secret::generate();
    let mut tx = state.store.begin().await?;
    tx.insert_client(&client).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::conflict(format!("client_id `{}` is taken", client.client_id)),
        e => e.into(),
    })?;
    tx.insert_secret(&client.client_id, &secret::digest(secret.expose_secret()), now)
        .await?;
    tx.append_audit(&[client_event(&admin, actions::CLIENT_CREATED, &client, now)])
        .await?;
    tx.commit().await?;
    let mut body = json!(client);
    body["client_secret"] = json!(secret.expose_secret());
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list_clients(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    load_tenant(&state, &admin, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let after = page_cursor(q.cursor.as_deref())?.unwrap_or_default();
    let items = state.store.list_clients(&tenant, &after, limit).await?;
    Ok(Json(page_body(&items, limit, |c| c.client_id.clone())))
}

async fn load_client(state: &AppState, admin: &Admin, tenant: &str, client_id: &str) -> Result<Client, ApiError> {
    load_tenant(state, admin, tenant).await?;
    match state.store.get_client(client_id).await {
        Ok(c) if c.tenant_id == tenant => Ok(c),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::not_found("client")),
        Err(e) => Err(e.into()),
    }
}

pub async fn get_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, client_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(load_client(&state, &admin, &tenant, &client_id).await?)))
}

pub async fn update_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, client_id)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<ClientPatch>,
) -> Result<Json<Value>, ApiError> {
    let mut c = load_client(&state, &admin, &tenant, &client_id).await?;
    if let Some(name) = patch.name {
        validate_name("name", &name)?;
        c.name = name;
    }
    if let Some(workflows) = patch.workflows {
        validate_workflows(&workflows)?;
        c.workflows = workflows;
    }
    if let Some(grants) = patch.grants {
        validate_grants(&state, &tenant, &grants).await?;
        c.grants = grants;
    }
    if let Some(max_ttl) = patch.max_ttl_seconds {
        let ceiling = state.config.max_ttl_seconds();
        if !(1..=ceiling).contains(&max_ttl) {
            return Err(invalid("max_ttl_seconds", format!("must be between 1 and {ceiling}")).into());
        }
        c.max_ttl_seconds = max_ttl;
    }
    if let Some(disabled) = patch.disabled {
        if disabled {
            keep_a_global_admin(&state, &tenant, &c.client_id).await?;
        }
        c.disabled = disabled;
    }
    let now = state.clock.now();
    c.updated_at = now;
    let mut tx = state.store.begin().await?;
    tx.update_client(&c).await.map_err(not_found("client"))?;
    tx.append_audit(&[client_event(&admin, actions::CLIENT_UPDATED, &c, now)])
        .await?;
    tx.commit().await?;
    Ok(Json(json!(c)))
}

/// Deleting a client ends its secrets and revokes every token it minted.
pub async fn delete_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, client_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let c = load_client(&state, &admin, &tenant, &client_id).await?;
    keep_a_global_admin(&state, &tenant, &c.client_id).await?;
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    tx.delete_client(&c.client_id, now).await.map_err(not_found("client"))?;
    let selector = Selector::Client(c.client_id.clone());
    let rule = tx
        .insert_revocation(&NewRevocation {
            id: Uuid::now_v7(),
            tenant_id: Some(&tenant),
            selector: &selector,
            reason: "client deleted",
            created_by: Some(admin.identity()),
            now,
            prune_after: now + TimeDelta::seconds(2 * state.config.max_ttl_seconds()),
            forever: true,
        })
        .await?;
    let mut event = client_event(&admin, actions::CLIENT_DELETED, &c, now);
    event.reason = Some(format!("revocation {}", rule.id));
    tx.append_audit(&[event]).await?;
    tx.commit().await?;
    state.sweeper.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rotate_secret(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, client_id)): ApiPath<(String, String)>,
    OptionalJson(body): OptionalJson<SecretRotation>,
) -> Result<Created, ApiError> {
    let c = load_client(&state, &admin, &tenant, &client_id).await?;
    let grace = body.grace_period_seconds.unwrap_or(3600);
    if !(0..=7 * 24 * 3600).contains(&grace) {
        return Err(invalid("grace_period_seconds", "must be between 0 and 604800 (7 days)").into());
    }
    let now = state.clock.now();
    let previous_until = now + TimeDelta::seconds(grace);
    let secret = secret::generate();
    let mut tx = state.store.begin().await?;
    tx.expire_secrets_for_rotation(&c.client_id, now, previous_until)
        .await?;
    tx.insert_secret(&c.client_id, &secret::digest(secret.expose_secret()), now)
        .await?;
    let mut event = client_event(&admin, actions::CLIENT_SECRET_ROTATED, &c, now);
    event.reason = Some(format!("previous secret valid for {grace} more seconds"));
    tx.append_audit(&[event]).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "client_id": c.client_id,
            "client_secret": secret.expose_secret(),
            "previous_secret_expires_at": previous_until,
        })),
    ))
}
