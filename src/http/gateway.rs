//! What `mayfly gateway` calls: the tool policy of a resource it serves
//! (`/v1/resource-policy`) and the delivery of the MCP requests it handled
//! (`/v1/mcp-events`). The caller is a `resource_server` client, by HTTP
//! Basic, as for introspection and the revocation feed.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::basic_credentials;
use super::body::{ApiJson, ApiQuery};
use super::error::{ApiError, BadRequest, Forbidden, NotFound, Unauthorized};
use crate::activity::{IngestReport, McpEventIn, ResourcePolicy};
use crate::audit::Origin;
use crate::state::AppState;
use crate::tenants::Client;

/// Largest `/v1/mcp-events` body: a full batch of well-formed events fits.
pub const EVENTS_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The gateway's client, authenticated by HTTP Basic.
async fn gateway_client(state: &AppState, headers: &HeaderMap, origin: &Origin) -> Result<Client, ApiError> {
    let creds = basic_credentials(headers)
        .ok_or_else(|| ApiError::unauthorized("authenticate as a resource_server client (HTTP Basic)"))?
        .map_err(|_| ApiError::unauthorized("client authentication failed"))?;
    Ok(state.authn.authenticate(&creds, origin).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// The resource URI the gateway fronts.
    #[param(max_length = 2048)]
    resource: String,
}

/// The per-tool policy of a resource the calling gateway serves, with an
/// `ETag` (`If-None-Match` answers 304), so gateways can poll it cheaply.
#[utoipa::path(get, path = "/v1/resource-policy", tag = "gateway", params(PolicyQuery),
    responses((status = 200, description = "OK.", body = ResourcePolicy), (status = 304, description = "Unchanged."),
        (status = 400, response = BadRequest), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound)))]
pub async fn resource_policy(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> Result<Response, ApiError> {
    let gateway = gateway_client(&state, &headers, &origin).await?;
    let policy = state.activity.policy(&gateway, &q.resource).await?;
    let body = serde_json::to_vec(&policy).map_err(|_| ApiError::internal("policy did not serialise"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let etag = format!("\"{}\"", crate::keys::seal::hex(&digest.as_ref()[..12]));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}

/// `POST /v1/mcp-events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpEventBatch {
    #[schema(max_items = 1000)]
    events: Vec<McpEventIn>,
}

/// MCP requests a gateway handled, recorded as `mcp.request` audit events
/// (at least once from the gateway, once here: a known event id counts as a
/// duplicate). Each event is checked against its lease; one that fails is
/// rejected alone and will never be accepted.
#[utoipa::path(post, path = "/v1/mcp-events", tag = "gateway", request_body = McpEventBatch,
    responses((status = 200, description = "Recorded.", body = IngestReport), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden)))]
pub async fn mcp_events(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<McpEventBatch>,
) -> Result<Json<IngestReport>, ApiError> {
    let gateway = gateway_client(&state, &headers, &origin).await?;
    Ok(Json(state.activity.ingest(&gateway, batch.events).await?))
}
