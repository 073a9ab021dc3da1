//! Revocation rules: `/v1/tenants/{tenant}/revocations` and the feed
//! `/v1/revocations` that offline verifiers poll.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{AdminScope, TenantAdmin, admin_from_token, basic_credentials, bearer};
use super::body::{ApiJson, ApiQuery};
use super::error::{ApiError, BadRequest, Forbidden, ListBusy, NotFound, Unauthorized, Unprocessable};
use super::pagination::{self, Page, PageQuery, encode_cursor};
use crate::audit::Origin;
use crate::leases::{Revocation, Selector};
use crate::state::AppState;
use crate::tenants::{ClientKind, invalid, validate_client_id, validate_workflow, validate_workload};

/// `POST /v1/tenants/{tenant}/revocations`: at most one selector; none = the whole tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", max_length = 128)]
    workflow: Option<String>,
    /// A token's `sub`.
    #[schema(pattern = r#"^[!#-\[\]-~]{1,256}$"#, max_length = 256)]
    workload: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", max_length = 128)]
    client_id: Option<String>,
    /// A lease id (the token's `jti`).
    #[schema(format = Uuid)]
    lease_id: Option<String>,
    /// Why, for the record (required).
    #[schema(min_length = 1, max_length = 500)]
    reason: Option<String>,
}

impl NewRevocation {
    fn selector(&self) -> Result<Selector, ApiError> {
        let named = [
            self.workflow.is_some(),
            self.workload.is_some(),
            self.client_id.is_some(),
            self.lease_id.is_some(),
        ];
        if named.iter().filter(|n| **n).count() > 1 {
            return Err(invalid(
                "selector",
                "name at most one of workflow, workload, client_id, lease_id",
            )
            .into());
        }
        Ok(if let Some(w) = &self.workflow {
            validate_workflow("workflow", w)?;
            Selector::Workflow(w.clone())
        } else if let Some(w) = &self.workload {
            validate_workload("workload", w)?;
            Selector::Workload(w.clone())
        } else if let Some(c) = &self.client_id {
            // A person's MCP client may be named by its metadata document URL.
            if !crate::people::cimd::is_document_url(c) || c.len() > 2048 || reqwest::Url::parse(c).is_err() {
                validate_client_id(c)?;
            }
            Selector::Client(c.clone())
        } else if let Some(l) = &self.lease_id {
            Selector::Lease(
                l.parse()
                    .map_err(|_| invalid("lease_id", "must be a lease id (UUID)"))?,
            )
        } else {
            Selector::Tenant
        })
    }
}

/// What a rule matches: `{}` for the whole tenant, else exactly one field.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct SelectorOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationOut {
    pub id: Uuid,
    /// Null for key rules, which span tenants.
    pub tenant: Option<String>,
    pub selector: SelectorOut,
    /// Exact, for offline verifiers: a matching token is revoked when its
    /// `lease_seq` claim is at or below this; null when the rule covers every
    /// matching token, whenever minted.
    pub cutoff_seq: Option<i64>,
    /// Tokens whose `iat` is at or before this are revoked (9999-12-31 for rules
    /// that cover later tokens too). Approximate across replicas' clocks:
    /// prefer `cutoff_seq`.
    pub issued_before: DateTime<Utc>,
    /// Lease rows marked so far by the background sweep.
    pub leases_revoked: i64,
    /// When every matching lease row had been marked.
    pub marked_at: Option<DateTime<Utc>>,
    pub created_by: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub reason: String,
}

impl From<Revocation> for RevocationOut {
    fn from(r: Revocation) -> Self {
        let mut selector = SelectorOut::default();
        match r.selector {
            Selector::Tenant => {}
            Selector::Workflow(w) => selector.workflow = Some(w),
            Selector::Workload(w) => selector.workload = Some(w),
            Selector::Client(c) => selector.client_id = Some(c),
            Selector::Lease(l) => selector.lease_id = Some(l),
            Selector::Key(k) => selector.kid = Some(k),
        }
        Self {
            id: r.id,
            tenant: r.tenant_id,
            selector,
            cutoff_seq: (r.cutoff_seq != i64::MAX).then_some(r.cutoff_seq),
            issued_before: r.issued_before,
            leases_revoked: r.leases_revoked,
            marked_at: r.marked_at,
            created_by: r.created_by,
            created_at: r.created_at,
            reason: r.reason,
        }
    }
}

/// Revoke by tenant, workflow, workload, client or lease: in force on every
/// replica when this returns; lease rows are marked in the background.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/revocations", tag = "records", params(("tenant" = String, Path)),
    request_body = NewRevocation,
    responses((status = 201, description = "Created.", body = RevocationOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 422, response = Unprocessable)))]
pub async fn create_revocation(
    State(AppState { revocations, .. }): State<AppState>,
    at: TenantAdmin,
    ApiJson(body): ApiJson<NewRevocation>,
) -> Result<(StatusCode, Json<RevocationOut>), ApiError> {
    let selector = body.selector()?;
    let reason = body.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(invalid("reason", "say why, in 1 to 500 characters").into());
    }
    let rule = revocations.revoke(at.caller(), at.id(), &selector, reason).await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

/// A tenant's rules, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/revocations", tag = "records",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, description = "OK.", body = Page<RevocationOut>), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = ListBusy)))]
pub async fn list_revocations(
    State(AppState { ledger, .. }): State<AppState>,
    at: TenantAdmin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<RevocationOut>>, ApiError> {
    let limit = pagination::limit(q.limit)?;
    let before = pagination::seq_cursor(q.cursor.as_deref())?;
    let rules = ledger.rules(at.id(), before, limit).await?;
    Ok(Json(Page::of(rules, limit, |r| r.seq.to_string(), RevocationOut::from)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next_cursor` of the previous poll; absent = from the start.
    #[param(max_length = 2048)]
    after: Option<String>,
    /// The older name of `after`.
    #[param(max_length = 2048)]
    since: Option<String>,
    /// Long poll: with nothing new, hold the answer up to this many seconds
    /// and answer as soon as a rule is made (on any replica).
    #[param(minimum = 0, maximum = 25)]
    wait: Option<u64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The longest long poll: under the request timeout, with room to answer.
const MAX_WAIT_SECONDS: u64 = 25;

/// Who reads the feed: a global admin sees every rule; a tenant admin or a
/// `resource_server` client of a tenant sees that tenant's rules and the key
/// rules that span tenants.
async fn feed_reader(state: &AppState, headers: &HeaderMap, origin: Origin) -> Result<Option<String>, ApiError> {
    if let Some(creds) = basic_credentials(headers) {
        let creds = creds.map_err(|_| ApiError::unauthorized("client authentication failed"))?;
        let client = state.authn.authenticate(&creds, &origin).await?;
        if client.kind != ClientKind::ResourceServer {
            return Err(ApiError::forbidden(
                "only resource_server clients may read the revocation feed",
            ));
        }
        return Ok(Some(client.tenant_id));
    }
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("authenticate as a resource_server client or an admin"))?;
    Ok(match admin_from_token(state, token, origin).await?.scope {
        AdminScope::Global => None,
        AdminScope::Tenant(t) => Some(t),
    })
}

/// Rules in the order they were made, for verifiers that check tokens
/// offline. A token is revoked when a rule's selector matches it (tenant,
/// workflow, sub or a `sub` in its `act` chain, client_id, jti or kid) and
/// its `lease_seq` is at or below the rule's `cutoff_seq` (null: any).
/// Follow with `after=<next_cursor>&wait=<seconds>` (a long poll: a rule
/// reaches a follower well within a second); `If-None-Match` answers 304.
#[utoipa::path(get, path = "/v1/revocations", tag = "records", params(FeedQuery),
    responses((status = 200, description = "OK.", body = Page<RevocationOut>), (status = 304, description = "Nothing new."),
        (status = 400, response = BadRequest), (status = 401, response = Unauthorized), (status = 403, response = Forbidden)))]
pub async fn revocation_feed(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    let tenant = feed_reader(&state, &headers, origin).await?;
    let limit = pagination::limit(q.limit)?;
    if q.after.is_some() && q.since.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "name the cursor once: `after` (or `since`)",
        ));
    }
    let after = pagination::since_cursor(q.after.as_deref().or(q.since.as_deref()))?;
    let wait = match q.wait.unwrap_or(0) {
        w if w > MAX_WAIT_SECONDS => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`wait` is at most {MAX_WAIT_SECONDS} seconds"),
            ));
        }
        w => std::time::Duration::from_secs(w),
    };
    let mut rules = match wait.is_zero() {
        true => state.ledger.feed(tenant.as_deref(), after, limit).await?,
        false => {
            let changed = state.revocations.feed_signal();
            state
                .ledger
                .follow(
                    tenant.as_deref(),
                    after,
                    limit,
                    wait,
                    &changed,
                    state.revocations.draining(),
                )
                .await?
        }
    };
    let last = rules.last().map_or(after, |r| r.seq);
    if tenant.is_some() {
        // Key rules span tenants: who made them is not each tenant's business.
        rules
            .iter_mut()
            .filter(|r| r.tenant_id.is_none())
            .for_each(|r| r.created_by = None);
    }
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
        let page = Page {
            items: rules.into_iter().map(RevocationOut::from).collect(),
            next_cursor: Some(encode_cursor(&last.to_string())),
        };
        Json(page).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}
