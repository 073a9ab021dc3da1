//! `/v1/tenants/{tenant}/clients`: registered callers and their secrets.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::TenantAdmin;
use super::body::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unprocessable};
use super::pagination::{self, Page, PageQuery};
use crate::state::AppState;
use crate::tenants::clients::{ClientPatch, NewClient, SecretRotation};
use crate::tenants::{Client, ClientKind, Grant};

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantOut {
    pub resource: String,
    pub scopes: Vec<String>,
}

impl From<Grant> for GrantOut {
    fn from(g: Grant) -> Self {
        Self {
            resource: g.resource,
            scopes: g.scopes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientOut {
    pub client_id: String,
    pub tenant: String,
    pub name: String,
    pub kind: ClientKind,
    pub workflows: Vec<String>,
    pub grants: Vec<GrantOut>,
    pub max_ttl_seconds: i64,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// resource_server only: canonical URIs whose tokens it may introspect (null: all of its tenant's).
    pub serves: Option<Vec<String>>,
    pub workload_pattern: Option<String>,
    /// Its own mint rate limit (per replica), if any.
    pub max_mints_per_second: Option<i64>,
    /// Public keys for private_key_jwt, as stored: their public members only.
    pub jwks: Option<serde_json::Value>,
    /// Agents that may act for this client's tokens.
    pub delegates: Option<Vec<String>>,
    /// Its tokens are bound to a DPoP key (RFC 9449).
    pub dpop_bound_access_tokens: bool,
    /// interactive clients: where the authorization code flow answers them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uris: Option<Vec<String>>,
}

impl From<Client> for ClientOut {
    fn from(c: Client) -> Self {
        Self {
            client_id: c.client_id,
            tenant: c.tenant_id,
            name: c.name,
            kind: c.kind,
            workflows: c.workflows,
            grants: c.grants.into_iter().map(GrantOut::from).collect(),
            max_ttl_seconds: c.max_ttl_seconds,
            disabled: c.disabled,
            created_at: c.created_at,
            updated_at: c.updated_at,
            serves: c.serves,
            workload_pattern: c.workload_pattern,
            max_mints_per_second: c.max_mints_per_second,
            jwks: c.jwks,
            delegates: c.delegates,
            dpop_bound_access_tokens: c.dpop_bound_access_tokens,
            redirect_uris: c.redirect_uris,
        }
    }
}

/// A new client and its secret, shown only in this answer (none for a
/// client that registered keys).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientWithSecret {
    #[serde(flatten)]
    pub client: ClientOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// A rotated secret, shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub client_id: String,
    pub client_secret: String,
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// Register a client; its secret is in this answer only (only a digest is stored).
///
/// A tenant already holding MAYFLY_MAX_CLIENTS_PER_TENANT live clients gets 409 `conflict`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/clients", tag = "clients", params(("tenant" = String, Path)),
    request_body = NewClient,
    responses((status = 201, description = "Created.", body = ClientWithSecret), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
pub async fn create_client(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiJson(body): ApiJson<NewClient>,
) -> Result<(StatusCode, Json<ClientWithSecret>), ApiError> {
    let (client, secret) = directory.create_client(at.caller(), at.id(), body).await?;
    let body = ClientWithSecret {
        client: client.into(),
        client_secret: secret.map(|s| s.expose_secret().to_string()),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Clients in id order.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/clients", tag = "clients",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, description = "OK.", body = Page<ClientOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn list_clients(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ClientOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let after = pagination::text_cursor(q.cursor.as_deref())?;
    let items = directory.list_clients(at.id(), &after, limit).await?;
    Ok(Json(Page::of(items, limit, |c| c.client_id.clone(), ClientOut::from)))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/clients/{client_id}", tag = "clients",
    params(("tenant" = String, Path), ("client_id" = String, Path)),
    responses((status = 200, description = "OK.", body = ClientOut), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn get_client(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, client_id)): ApiPath<(String, String)>,
) -> Result<Json<ClientOut>, ApiError> {
    Ok(Json(directory.get_client(at.id(), &client_id).await?.into()))
}

/// Change a client; `disabled: true` stops its minting at once.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/clients/{client_id}", tag = "clients",
    params(("tenant" = String, Path), ("client_id" = String, Path)), request_body = ClientPatch,
    responses((status = 200, description = "OK.", body = ClientOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
pub async fn update_client(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, client_id)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<ClientPatch>,
) -> Result<Json<ClientOut>, ApiError> {
    Ok(Json(
        directory
            .update_client(at.caller(), at.id(), &client_id, patch)
            .await?
            .into(),
    ))
}

/// Delete a client: its secrets end and every token it minted is revoked.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/clients/{client_id}", tag = "clients",
    params(("tenant" = String, Path), ("client_id" = String, Path)),
    responses((status = 204, description = "Deleted."), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound), (status = 409, response = Conflict)))]
pub async fn delete_client(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, client_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    directory.delete_client(at.caller(), at.id(), &client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new secret; the current one keeps working for the grace period.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/clients/{client_id}/secrets", tag = "clients",
    params(("tenant" = String, Path), ("client_id" = String, Path)), request_body(content = Option<SecretRotation>),
    responses((status = 201, description = "Created.", body = RotatedSecret), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 422, response = Unprocessable)))]
pub async fn rotate_secret(
    State(AppState { directory, .. }): State<AppState>,
    at: TenantAdmin,
    ApiPath((_, client_id)): ApiPath<(String, String)>,
    OptionalJson(body): OptionalJson<SecretRotation>,
) -> Result<(StatusCode, Json<RotatedSecret>), ApiError> {
    let rotated = directory.rotate_secret(at.caller(), at.id(), &client_id, body).await?;
    let body = RotatedSecret {
        client_id: rotated.client.client_id,
        client_secret: rotated.secret.expose_secret().to_string(),
        previous_secret_expires_at: rotated.previous_expires_at,
    };
    Ok((StatusCode::CREATED, Json(body)))
}
