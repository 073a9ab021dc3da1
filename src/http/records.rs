//! Admin API over what mayfly records: leases, revocations, the audit trail
//! and the signing keys.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{
    Admin, AdminScope, ApiJson, ApiPath, ApiQuery, OptionalJson, admin_from_token, authenticate_client,
    basic_credentials, page_cursor, page_limit,
};
use crate::app::AppState;
use crate::audit::{ChainVerifier, actions};
use crate::keys::rotation::{self, RotationError};
use crate::leases::Selector;
use crate::storage::audit::AuditFilter;
use crate::storage::{LeaseFilter, LeaseStatus, NewRevocation, StoreError, encode_cursor};
use crate::tenants::{ClientKind, invalid, validate_client_id, validate_workflow, validate_workload};
use crate::tokens::issuer::Meta;

async fn authorize_tenant(state: &AppState, admin: &Admin, tenant: &str) -> Result<(), ApiError> {
    if !crate::tenants::is_tenant_path(tenant) {
        return Err(ApiError::not_found("tenant"));
    }
    admin.require_tenant(state, tenant).await?;
    match state.store.get_tenant(tenant).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err(ApiError::not_found("tenant")),
        Err(e) => Err(e.into()),
    }
}

/// Cursor over a descending sequence: items strictly older than the last one served.
fn seq_cursor(cursor: Option<&str>) -> Result<i64, ApiError> {
    match page_cursor(cursor)? {
        None => Ok(i64::MAX),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_query", "cursor is not one this server issued")),
    }
}

fn seq_page(items: Vec<Value>, last_seq: Option<i64>, limit: i64) -> Value {
    let next = (items.len() as i64 == limit)
        .then(|| last_seq.map(|s| encode_cursor(&s.to_string())))
        .flatten();
    json!({"items": items, "next_cursor": next})
}

// ---- leases ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseQuery {
    workflow: Option<String>,
    workload: Option<String>,
    client_id: Option<String>,
    active: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn lease_json(status: &LeaseStatus, now: DateTime<Utc>) -> Value {
    let lease = &status.lease;
    let mut v = json!(lease);
    v["active"] = json!(lease.revoked_at.is_none() && status.revoked_by.is_none() && lease.expires_at > now);
    // A rule revokes a lease before the background sweep marks its row.
    if lease.revocation_id.is_none() && status.revoked_by.is_some() {
        v["revocation_id"] = json!(status.revoked_by);
    }
    v
}

pub async fn list_leases(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<LeaseQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize_tenant(&state, &admin, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let before = seq_cursor(q.cursor.as_deref())?;
    let filter = LeaseFilter {
        workflow: q.workflow,
        workload: q.workload,
        client_id: q.client_id,
        active: q.active,
    };
    let now = state.clock.now();
    let leases = state.store.list_leases(&tenant, &filter, now, before, limit).await?;
    let last = leases.last().map(|l| l.lease.seq);
    Ok(Json(seq_page(
        leases.iter().map(|l| lease_json(l, now)).collect(),
        last,
        limit,
    )))
}

pub async fn get_lease(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((tenant, lease_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize_tenant(&state, &admin, &tenant).await?;
    let id: Uuid = lease_id.parse().map_err(|_| ApiError::not_found("lease"))?;
    let status = match state.store.lease_status(id).await {
        Ok(s) if s.lease.tenant_id == tenant => s,
        Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::not_found("lease")),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(lease_json(&status, state.clock.now())))
}

// ---- revocations ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationBody {
    workflow: Option<String>,
    workload: Option<String>,
    client_id: Option<String>,
    lease_id: Option<String>,
    reason: Option<String>,
}

fn selector(body: &RevocationBody) -> Result<Selector, ApiError> {
    let named = [&body.workflow, &body.workload, &body.client_id, &body.lease_id]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if named > 1 {
        return Err(invalid(
            "selector",
            "name at most one of workflow, workload, client_id, lease_id",
        )
        .into());
    }
    Ok(if let Some(w) = &body.workflow {
        validate_workflow("workflow", w)?;
        Selector::Workflow(w.clone())
    } else if let Some(w) = &body.workload {
        validate_workload("workload", w)?;
        Selector::Workload(w.clone())
    } else if let Some(c) = &body.client_id {
        validate_client_id(c)?;
        Selector::Client(c.clone())
    } else if let Some(l) = &body.lease_id {
        Selector::Lease(
            l.parse()
                .map_err(|_| invalid("lease_id", "must be a lease id (UUID)"))?,
        )
    } else {
        Selector::Tenant
    })
}

pub async fn create_revocation(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<RevocationBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize_tenant(&state, &admin, &tenant).await?;
    let selector = selector(&body)?;
    let reason = body.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(invalid("reason", "say why, in 1 to 500 characters").into());
    }
    if let Selector::Lease(id) = &selector {
        match state.store.get_lease(*id).await {
            Ok(l) if l.tenant_id == tenant => {}
            Ok(_) | Err(StoreError::NotFound) => return Err(ApiError::not_found("lease")),
            Err(e) => return Err(e.into()),
        }
    }
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let rule = tx
        .insert_revocation(&NewRevocation {
            id: Uuid::now_v7(),
            tenant_id: Some(&tenant),
            selector: &selector,
            reason,
            created_by: Some(admin.identity()),
            now,
            prune_after: now + TimeDelta::seconds(state.config.max_ttl_seconds()),
            forever: false,
        })
        .await?;
    let mut event = admin.event(actions::REVOCATION_CREATED, now);
    event.tenant = Some(tenant.clone());
    event.reason = Some(format!("{reason} (revocation {})", rule.id));
    match &selector {
        Selector::Tenant => {}
        Selector::Workflow(w) => event.workflow = Some(w.clone()),
        Selector::Workload(w) => event.workload = Some(w.clone()),
        Selector::Client(c) => event.client_id = Some(c.clone()),
        Selector::Lease(l) => event.lease_id = Some(*l),
        Selector::Key(_) => {}
    }
    tx.append_audit(&[event]).await?;
    tx.commit().await?;
    state.sweeper.notify_one();
    Ok((StatusCode::CREATED, Json(rule.to_json())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_revocations(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize_tenant(&state, &admin, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let before = seq_cursor(q.cursor.as_deref())?;
    let rules = state.store.list_revocations(&tenant, before, limit).await?;
    let last = rules.last().map(|r| r.seq);
    Ok(Json(seq_page(rules.iter().map(|r| r.to_json()).collect(), last, limit)))
}

// ---- audit ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    workflow: Option<String>,
    workload: Option<String>,
    client_id: Option<String>,
    action: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_audit(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize_tenant(&state, &admin, &tenant).await?;
    let limit = page_limit(q.limit)?;
    let before = seq_cursor(q.cursor.as_deref())?;
    let filter = AuditFilter {
        workflow: q.workflow,
        workload: q.workload,
        client_id: q.client_id,
        action: q.action,
        since: q.since,
        until: q.until,
    };
    let events = state.store.list_audit(&tenant, &filter, before, limit).await?;
    let last = events.last().map(|e| e.seq);
    let items = events
        .iter()
        .map(|e| {
            let mut v = json!(e.event);
            v["prev_hash"] = json!(e.prev_hash);
            v["hash"] = json!(e.hash);
            v
        })
        .collect();
    Ok(Json(seq_page(items, last, limit)))
}

/// Recomputes the whole chain (global admins only: the chain spans tenants).
pub async fn verify_audit(State(state): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    admin.require_global(&state).await?;
    Ok(Json(json!(verify_chain(&state.store).await?)))
}

pub async fn verify_chain(store: &crate::storage::Store) -> Result<crate::audit::Verification, StoreError> {
    // Read the head first: events appended while we walk are past it.
    let head = store.audit_head().await?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_chain_page(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            verifier.check(e);
            if e.hash == head {
                return Ok(verifier.finish(&head));
            }
        }
    }
    Ok(verifier.finish(&head))
}

// ---- keys ----

pub async fn list_keys(State(state): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    admin.require_global(&state).await?;
    let mut items = Vec::new();
    for k in state.store.list_keys().await? {
        items.push(json!({
            "kid": k.kid,
            "alg": k.alg,
            "state": k.state,
            "published": k.state().is_some_and(crate::keys::KeyState::is_published),
            "created_at": k.created_at,
            "activates_at": k.activates_at,
            "activated_at": k.activated_at,
            "retired_at": k.retired_at,
            "removed_at": k.removed_at,
            "tokens_signed": state.store.tokens_signed(&k.kid).await?,
        }));
    }
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

fn rotation_error(e: RotationError) -> ApiError {
    match e {
        RotationError::Store(StoreError::NotFound) => ApiError::not_found("key"),
        RotationError::Store(e) => e.into(),
        RotationError::NotPublished(kid) => ApiError::conflict(format!("key {kid} is already revoked or removed")),
        RotationError::Key(e) => ApiError::internal(e),
    }
}

/// Promotes the prepared key now and prepares the next one.
pub async fn rotate_keys(State(state): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    admin.require_global(&state).await?;
    let kid = rotation::rotate_now(&state, admin.identity())
        .await
        .map_err(rotation_error)?;
    Ok(Json(json!({"active": kid})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRevocationBody {
    reason: Option<String>,
}

/// Emergency: the key leaves the JWKS, every token it signed is revoked.
pub async fn revoke_key(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(kid): ApiPath<String>,
    OptionalJson(body): OptionalJson<KeyRevocationBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin.require_global(&state).await?;
    let reason = body.reason.unwrap_or_else(|| "signing key revoked".into());
    if reason.trim().is_empty() || reason.chars().count() > 500 {
        return Err(invalid("reason", "say why, in 1 to 500 characters").into());
    }
    let rule = rotation::revoke_key(&state, &kid, admin.identity(), &reason)
        .await
        .map_err(rotation_error)?;
    Ok((StatusCode::CREATED, Json(rule.to_json())))
}

// ---- the revocation feed ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    since: Option<String>,
    limit: Option<i64>,
}

/// Who reads the feed: a global admin sees every rule; a tenant admin or a
/// `resource_server` client of a tenant sees that tenant's rules and the key
/// rules that span tenants.
async fn feed_reader(state: &AppState, headers: &HeaderMap, meta: Meta) -> Result<Option<String>, ApiError> {
    if let Some(creds) = basic_credentials(headers) {
        let creds = creds.map_err(|_| ApiError::unauthorized("client authentication failed"))?;
        let client = authenticate_client(state, &creds, &meta).await?;
        if client.kind != ClientKind::ResourceServer {
            return Err(ApiError::forbidden(
                "only resource_server clients may read the revocation feed",
            ));
        }
        return Ok(Some(client.tenant_id));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("authenticate as a resource_server client or an admin"))?;
    Ok(match admin_from_token(state, token.trim(), meta).await?.scope {
        AdminScope::Global => None,
        AdminScope::Tenant(t) => Some(t),
    })
}

/// `GET /v1/revocations?since=`: rules in the order they were made, for
/// verifiers that check tokens offline. A token is revoked when a rule's
/// selector matches it (tenant, workflow, sub, client_id, jti or kid) and its
/// `iat` is at or before the rule's `issued_before`. Poll with the returned
/// `next_cursor`; `If-None-Match` answers 304 when nothing changed.
pub async fn revocation_feed(
    State(state): State<AppState>,
    meta: Meta,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    let tenant = feed_reader(&state, &headers, meta).await?;
    let limit = page_limit(q.limit)?;
    let after = match page_cursor(q.since.as_deref())? {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_query", "`since` is not a cursor this server issued"))?,
    };
    let rules = state.store.revocation_feed(tenant.as_deref(), after, limit).await?;
    let last = rules.last().map_or(after, |r| r.seq);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(format!("{tenant:?}/{after}/{limit}").as_bytes());
    rules.iter().for_each(|r| digest.update(r.id.as_bytes()));
    let etag = format!("\"{}\"", crate::keys::seal::hex(&digest.finish().as_ref()[..12]));
    let mut res = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let items: Vec<Value> = rules.iter().map(|r| r.to_json()).collect();
        Json(json!({"items": items, "next_cursor": encode_cursor(&last.to_string())})).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}
