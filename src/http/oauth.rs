//! The OAuth endpoints: token (RFC 6749 client credentials, RFC 8707
//! resource), introspection (RFC 7662) and revocation (RFC 7009).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;
use serde_json::json;
use uuid::Uuid;

use super::error::OAuthError;
use super::extract::{OAuthParams, admin_from_token, authenticate_client, client_credentials};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, actions};
use crate::leases::Selector;
use crate::storage::{NewRevocation, StoreError};
use crate::tenants::{Client, ClientKind};
use crate::tokens::issuer::{self, Meta, MintError};
use crate::tokens::policy::MintRequest;
use crate::tokens::validate::{self, Validity};

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Authenticates the calling client by its credentials in the request.
async fn authenticate(state: &AppState, params: &OAuthParams, meta: &Meta) -> Result<Client, OAuthError> {
    let creds = client_credentials(params)?;
    Ok(authenticate_client(state, &creds, meta).await?)
}

pub async fn token(State(state): State<AppState>, meta: Meta, params: OAuthParams) -> Result<Response, OAuthError> {
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("`grant_type` is required"))?;
    match grant_type {
        GRANT_CLIENT_CREDENTIALS => {}
        GRANT_JWT_BEARER | GRANT_TOKEN_EXCHANGE => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "federated grants are not enabled on this server",
            ));
        }
        _ => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "supported: client_credentials",
            ));
        }
    }
    let client = authenticate(&state, &params, &meta).await?;
    let resource = match (params.get("resource"), params.get("audience")) {
        (Some(r), Some(a)) if r != a => {
            return Err(OAuthError::invalid_request(
                "`resource` and `audience` disagree; send one",
            ));
        }
        (r, a) => r.or(a),
    };
    let request = MintRequest {
        scope: params.get("scope"),
        workflow: params.get("workflow"),
        workload: params.get("workload"),
        expires_in: params.get("expires_in"),
    };
    let issued = match issuer::issue(&state, &client, resource, &request, &meta).await {
        Ok(issued) => issued,
        Err(MintError::Denied(d)) => return Err(OAuthError::new(d.code(), d.message())),
        Err(MintError::NoSigningKey) => {
            return Err(OAuthError::new("temporarily_unavailable", "no signing key is loaded"));
        }
        Err(MintError::Store(e)) => return Err(e.into()),
    };
    let span = tracing::Span::current();
    span.record("workflow", issued.lease.workflow.as_str());
    span.record("workload", issued.lease.workload.as_str());
    let mut res = Json(json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }))
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}

pub async fn introspect(
    State(state): State<AppState>,
    meta: Meta,
    params: OAuthParams,
) -> Result<Response, OAuthError> {
    // The caller: a resource_server client (its tenant only) or an admin token.
    let bearer = params
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let (caller_tenant, caller_id) = match bearer {
        Some(token) => {
            let admin = admin_from_token(&state, &token, meta.clone())
                .await
                .map_err(|_| OAuthError::invalid_client())?;
            let tenant = match admin.scope {
                super::extract::AdminScope::Global => None,
                super::extract::AdminScope::Tenant(t) => Some(t),
            };
            (tenant, admin.client_id)
        }
        None => {
            let client = authenticate(&state, &params, &meta).await?;
            if client.kind != ClientKind::ResourceServer {
                return Err(OAuthError {
                    status: StatusCode::FORBIDDEN,
                    ..OAuthError::new("unauthorized_client", "only resource_server clients may introspect")
                });
            }
            (Some(client.tenant_id), client.client_id)
        }
    };
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    let now = state.clock.now();
    let validity = validate::check_fresh(&state, token).await?;
    let (reason, claims) = match validity {
        Validity::Active { claims, .. } if caller_tenant.as_ref().is_none_or(|t| *t == claims.tenant) => {
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "scope": claims.scope,
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "exp": claims.exp,
                "iat": claims.iat,
                "nbf": claims.nbf,
                "jti": claims.jti,
                "tenant": claims.tenant,
                "workflow": claims.workflow,
            });
            if let Some(act) = claims.act {
                body["act"] = act;
            }
            metrics::counter!("mayfly_introspections_total", "active" => "true").increment(1);
            return Ok(Json(body).into_response());
        }
        Validity::Active { claims, .. } => ("other_tenant", Some(claims)),
        // Another tenant's token: say nothing about its state, even in our own log.
        Validity::Inactive {
            claims: Some(claims), ..
        } if caller_tenant.as_ref().is_some_and(|t| *t != claims.tenant) => ("other_tenant", Some(claims)),
        Validity::Inactive { reason, claims } => (reason, claims),
    };
    // Inactive: audited for the caller's tenant, naming the lease only when it is theirs.
    let mut event = AuditEvent::new(actions::TOKEN_INTROSPECTED, Outcome::Denied, now);
    event.reason = Some(reason.to_string());
    event.tenant = caller_tenant.clone();
    event.client_id = Some(caller_id);
    if let Some(c) = claims.filter(|c| caller_tenant.as_ref().is_none_or(|t| *t == c.tenant)) {
        event.tenant = Some(c.tenant);
        event.workflow = Some(c.workflow);
        event.workload = Some(c.sub);
        event.resource = Some(c.aud);
        event.lease_id = c.jti.parse().ok();
    }
    event.request_id = Some(meta.request_id);
    event.source = Some(meta.source);
    state.store.append_audit(&[event]).await?;
    metrics::counter!("mayfly_introspections_total", "active" => "false").increment(1);
    Ok(Json(json!({"active": false})).into_response())
}

/// RFC 7009: a client revokes a token it holds. Unknown or foreign tokens get
/// the same empty 200, as the RFC asks.
pub async fn revoke(State(state): State<AppState>, meta: Meta, params: OAuthParams) -> Result<Response, OAuthError> {
    let client = authenticate(&state, &params, &meta).await?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    let keys = state.keyring.current();
    let now = state.clock.now();
    let claims = match validate::check_offline(token, &keys, &state.config.issuer, now) {
        Ok(c) => c,
        Err(_) => return Ok(StatusCode::OK.into_response()),
    };
    let Ok(lease_id) = claims.jti.parse::<Uuid>() else {
        return Ok(StatusCode::OK.into_response());
    };
    if claims.client_id != client.client_id || claims.tenant != client.tenant_id {
        return Ok(StatusCode::OK.into_response());
    }
    match state.store.get_lease(lease_id).await {
        Ok(lease) if lease.revoked_at.is_none() && lease.client_id == client.client_id => {
            let selector = Selector::Lease(lease_id);
            let mut tx = state.store.begin().await?;
            let rule = tx
                .insert_revocation(&NewRevocation {
                    id: Uuid::now_v7(),
                    tenant_id: Some(&client.tenant_id),
                    selector: &selector,
                    reason: "revoked by its holder (RFC 7009)",
                    created_by: Some(json!({"client_id": client.client_id})),
                    now,
                    prune_after: now + TimeDelta::seconds(state.config.max_ttl_seconds()),
                    forever: false,
                })
                .await?;
            let mut event = AuditEvent::new(actions::TOKEN_REVOKED, Outcome::Success, now);
            event.tenant = Some(lease.tenant_id);
            event.workflow = Some(lease.workflow);
            event.workload = Some(lease.workload);
            event.client_id = Some(lease.client_id);
            event.resource = Some(lease.resource);
            event.lease_id = Some(lease.id);
            event.reason = Some(format!("revocation {}", rule.id));
            event.request_id = Some(meta.request_id);
            event.source = Some(meta.source);
            tx.append_audit(&[event]).await?;
            tx.commit().await?;
        }
        Ok(_) | Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(StatusCode::OK.into_response())
}

/// There is no interactive flow; the endpoint exists because MCP clients
/// require `authorization_endpoint` in the metadata.
pub async fn authorize() -> OAuthError {
    OAuthError::new(
        "unsupported_response_type",
        "mayfly issues tokens to machines only: use the token endpoint (client_credentials)",
    )
}
