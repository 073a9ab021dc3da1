//! The two error shapes: `{"error","message"}` on the admin API and RFC 6749
//! §5.2 `{"error","error_description"}` on the OAuth endpoints. 4xx carry a
//! stable code and a safe message; 5xx carry nothing internal (the detail is
//! logged inside the request's span, which holds the request id).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use serde::Serialize;
use utoipa::{ToResponse, ToSchema};

use crate::error::Error;
use crate::grants::GrantError;
use crate::storage::StoreError;
use crate::tenants::Invalid;
use crate::tenants::authn::Refused;

/// RFC 9449 §8's header.
pub static DPOP_NONCE: axum::http::HeaderName = axum::http::HeaderName::from_static("dpop-nonce");

/// An admin API error: a stable code and a message safe to show.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// RFC 6749 §5.2 error.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: String,
}

/// Invalid input (`invalid_body`, `malformed_json`, `invalid_query`, `invalid_path`); nothing changed.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct BadRequest(#[to_schema] ErrorBody);
/// No valid admin token (`unauthorized`).
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct Unauthorized(#[to_schema] ErrorBody);
/// The token does not administer this (`forbidden`).
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct Forbidden(#[to_schema] ErrorBody);
/// No such object in this tenant (`not_found`).
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct NotFound(#[to_schema] ErrorBody);
/// The identifier is taken, or the change would break an invariant (`conflict`).
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct Conflict(#[to_schema] ErrorBody);
/// The body is not `application/json` (`unsupported_media_type`); nothing changed.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct UnsupportedMediaType(#[to_schema] ErrorBody);
/// Well-formed but invalid (`validation_failed`); nothing changed.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct Unprocessable(#[to_schema] ErrorBody);
/// Well-formed but invalid (`validation_failed`), or an issuer the operator's
/// federation settings refuse (`issuer_not_allowed`: not in
/// MAYFLY_FEDERATION_ISSUERS, loopback, or an internal address); nothing changed.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct UnprocessableIssuer(#[to_schema] ErrorBody);
/// An admin list is refused for now (`unavailable`, with `Retry-After: 1`):
/// the tenant's list slots (two) or the process's share of the pool are all
/// in use, or the list ran past its 5 s statement timeout (narrow it).
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct ListBusy(#[to_schema] ErrorBody);
/// An OAuth error (`invalid_request`, `invalid_scope`, `invalid_target`, `unauthorized_client`, …).
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct OAuthBadRequest(#[to_schema] OAuthErrorBody);
/// Client authentication failed (`invalid_client`), with a Basic challenge.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct OAuthInvalidClient(#[to_schema] OAuthErrorBody);
/// Too many failed authentications (`temporarily_unavailable`), with Retry-After.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct OAuthThrottled(#[to_schema] OAuthErrorBody);
/// `temporarily_unavailable`, with Retry-After: the database is going away,
/// or (jwt-bearer, token exchange) the client or resource changed while the
/// request was decided. Retry.
#[derive(ToResponse)]
#[allow(dead_code)] // documentation only: the body is written by IntoResponse
pub struct OAuthUnavailable(#[to_schema] OAuthErrorBody);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message)
    }
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("object"),
            StoreError::Conflict(_) => ApiError::conflict("an object with this identifier already exists"),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry shortly")
            }
            StoreError::Busy(m) => ApiError::unavailable(m),
            StoreError::Stale => ApiError::unavailable(e.to_string()),
            StoreError::Spent => ApiError::conflict("a single-use value was used before"),
            other => ApiError::internal(other),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::unprocessable(e.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(what) => ApiError::not_found(what),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Invalid(i) => i.into(),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::IssuerNotAllowed(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "issuer_not_allowed", m),
            Error::Store(e) => e.into(),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled(wait) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("too many failed authentications from this address; retry in {wait} s"),
            ),
            Refused::Invalid => ApiError::unauthorized("client authentication failed"),
            Refused::Store(e) => e.into(),
        }
    }
}

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Refused { code, description } => OAuthError::new(code, description),
            GrantError::InvalidClient => OAuthError::invalid_client(),
            GrantError::Throttled(wait) => OAuthError::throttled(wait),
            GrantError::Limited(l) => OAuthError {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(l.retry_after),
                ..OAuthError::new("temporarily_unavailable", format!("limit reached: {}", l.what))
            },
            GrantError::Dpop {
                code,
                description,
                nonce,
            } => OAuthError {
                dpop_nonce: nonce,
                ..OAuthError::new(code, description)
            },
            GrantError::Unavailable(why) => OAuthError::new("temporarily_unavailable", why),
            GrantError::Store(e) => e.into(),
        }
    }
}

impl From<Refused> for OAuthError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled(wait) => OAuthError::throttled(wait),
            Refused::Invalid => OAuthError::invalid_client(),
            Refused::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mayfly\""),
            );
        }
        res
    }
}

/// RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub retry_after: Option<i64>,
    /// RFC 9449 §8: the nonce the client's next DPoP proof must carry.
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
            dpop_nonce: None,
        }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }
    pub fn invalid_client() -> Self {
        Self::new("invalid_client", "client authentication failed")
    }
    pub fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::invalid_request("request body is too large")
        }
    }
    /// Too many failed authentications from this address; retry in `retry_after` seconds.
    pub fn throttled(retry_after: i64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(retry_after),
            ..Self::new(
                "temporarily_unavailable",
                "too many failed authentications from this address; retry later",
            )
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy(m) => OAuthError::new("temporarily_unavailable", m),
            StoreError::Stale => OAuthError::new("temporarily_unavailable", e.to_string()),
            StoreError::Spent => OAuthError::new("invalid_grant", e.to_string()),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "database unavailable");
                OAuthError::new("temporarily_unavailable", "the database is unavailable; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "internal error");
                OAuthError::new("server_error", "internal error")
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(wait) = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1))
        {
            h.insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mayfly\""),
            );
        }
        if let Some(v) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert(DPOP_NONCE.clone(), v);
        }
        res
    }
}
