//! `/v1/keys`: the signing keys, rotation now, emergency revocation (global admins).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::GlobalAdmin;
use super::body::{ApiPath, OptionalJson};
use super::error::{ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unprocessable};
use super::pagination::Page;
use super::revocations::RevocationOut;
use crate::keys::{Alg, KeyState};
use crate::state::AppState;
use crate::tenants::invalid;

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOut {
    pub kid: String,
    #[schema(value_type = String, example = "ES256")]
    pub alg: Alg,
    #[schema(value_type = String, example = "active")]
    pub state: KeyState,
    /// In the JWKS (next, active, retired).
    pub published: bool,
    pub created_at: DateTime<Utc>,
    /// When a `next` key is due to sign.
    pub activates_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    /// Where the private half lives: `local` (sealed in the database) or
    /// `transit` (an OpenBao/Vault transit key `mayfly-{kid}`).
    #[schema(example = "local")]
    pub custody: &'static str,
    /// When the private half was confirmed destroyed (removed and revoked keys).
    pub destroyed_at: Option<DateTime<Utc>>,
    pub tokens_signed: i64,
}

/// Which key signs now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    pub active: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRevocation {
    #[schema(min_length = 1, max_length = 500)]
    reason: Option<String>,
}

/// Every signing key with its lifecycle times.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "OK.", body = Page<KeyOut>), (status = 401, response = Unauthorized), (status = 403, response = Forbidden)))]
pub async fn list_keys(
    State(AppState { keys, .. }): State<AppState>,
    _: GlobalAdmin,
) -> Result<Json<Page<KeyOut>>, ApiError> {
    let items = keys
        .list()
        .await?
        .into_iter()
        .map(|(k, tokens_signed)| KeyOut {
            kid: k.kid,
            alg: k.alg,
            published: k.state.is_published(),
            state: k.state,
            created_at: k.created_at,
            activates_at: k.activates_at,
            activated_at: k.activated_at,
            retired_at: k.retired_at,
            removed_at: k.removed_at,
            custody: k.custody.as_str(),
            destroyed_at: k.destroyed_at,
            tokens_signed,
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Promote the prepared key now and prepare the next one.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "keys",
    responses((status = 200, description = "OK.", body = Rotated), (status = 401, response = Unauthorized), (status = 403, response = Forbidden)))]
pub async fn rotate_keys(
    State(AppState { keys, .. }): State<AppState>,
    GlobalAdmin(admin): GlobalAdmin,
) -> Result<Json<Rotated>, ApiError> {
    let active = keys.rotate_now(&admin.caller).await?;
    Ok(Json(Rotated { active }))
}

/// Emergency: the key leaves the JWKS and every token it signed is revoked.
#[utoipa::path(post, path = "/v1/keys/{kid}/revoke", tag = "keys", params(("kid" = String, Path)),
    request_body(content = Option<KeyRevocation>),
    responses((status = 201, description = "Created.", body = RevocationOut), (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
pub async fn revoke_key(
    State(AppState { keys, .. }): State<AppState>,
    GlobalAdmin(admin): GlobalAdmin,
    ApiPath(kid): ApiPath<String>,
    OptionalJson(body): OptionalJson<KeyRevocation>,
) -> Result<(StatusCode, Json<RevocationOut>), ApiError> {
    let reason = body.reason.unwrap_or_else(|| "signing key revoked".into());
    if reason.trim().is_empty() || reason.chars().count() > 500 {
        return Err(invalid("reason", "say why, in 1 to 500 characters").into());
    }
    let rule = keys.revoke(&kid, &admin.caller, &reason).await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}
