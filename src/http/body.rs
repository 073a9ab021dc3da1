//! Request bodies and parameters: JSON in the admin error shape, OAuth form
//! parameters (each at most once), query and path parameters. Postgres text
//! cannot hold NUL, so NUL is refused at the edge.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::{ApiError, OAuthError};

pub fn is_content_type(parts_headers: &axum::http::HeaderMap, expected: &str) -> bool {
    parts_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case(expected) || (expected == "application/json" && v.ends_with("+json"))
        })
}

async fn read_body(req: Request) -> Result<(axum::http::HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, &()).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::bad_request("invalid_body", "cannot read request body")
        }
    })?;
    Ok((headers, bytes))
}

fn parse_json<T: DeserializeOwned>(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_content_type(headers, "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    // Postgres text cannot hold NUL; refuse it here rather than fail in the store.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(ApiError::bad_request("invalid_body", "NUL characters are not accepted"));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request("invalid_body", e.to_string()),
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })
}

/// A JSON body; unknown fields are refused by the target types.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = read_body(req).await?;
        parse_json(&headers, &bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out entirely (then `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (headers, bytes) = read_body(req).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&headers, &bytes).map(OptionalJson)
    }
}

/// OAuth form parameters (RFC 6749 §3.2): each at most once.
pub struct OAuthParams {
    pub headers: axum::http::HeaderMap,
    params: HashMap<String, String>,
}

impl OAuthParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthParams {
    type Rejection = OAuthError;
    async fn from_request(req: Request, _: &S) -> Result<Self, OAuthError> {
        let (headers, bytes) = read_body(req).await.map_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                OAuthError::too_large()
            } else {
                OAuthError::invalid_request(e.message)
            }
        })?;
        if !is_content_type(&headers, "application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "send parameters as application/x-www-form-urlencoded",
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| OAuthError::invalid_request("body is not UTF-8"))?;
        let mut params = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (form_decode(k), form_decode(v));
            let (Some(k), Some(v)) = (k, v) else {
                return Err(OAuthError::invalid_request("malformed form encoding"));
            };
            if params.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{}` is repeated",
                    truncate(&k, 64)
                )));
            }
        }
        Ok(OAuthParams { headers, params })
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// application/x-www-form-urlencoded decoding: `+` is a space, `%XX` a byte.
pub fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would take `%+1`.
                let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    // Postgres text cannot hold NUL; no parameter of ours needs one.
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Query parameters, refused in the admin error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters, refused in the admin error shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::form_decode;
    use proptest::prelude::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%2Fc%2fd").as_deref(), Some("a b/c/d"));
        assert_eq!(form_decode("%C3%A9").as_deref(), Some("\u{e9}"));
        for bad in ["%", "%4", "%zz", "%+1", "%-1", "%00", "%C3", "%\u{e9}"] {
            assert_eq!(form_decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn form_decode_never_panics_or_yields_nul(s in any::<String>()) {
            if let Some(d) = form_decode(&s) {
                prop_assert!(!d.contains('\0'));
            }
        }

        // Mostly percent-encodings, so that decoding (and NUL) is reached often.
        #[test]
        fn form_decode_of_encoded_bytes_never_panics_or_yields_nul(
            s in "([a-z+=&]|%[0-9a-fA-F]{2}|%[0-9a-zA-Z+-]{0,2}|%00|\u{e9}){0,40}"
        ) {
            if let Some(d) = form_decode(&s) {
                prop_assert!(!d.contains('\0'));
            }
        }
    }
}
