//! Lists: `limit` and an opaque `cursor` in, `{items, next_cursor}` out. A
//! cursor carries the sort key of the last item served (an id, a URI, or a
//! sequence number for lists newest first).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// `limit` and `cursor` of a plain list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Opaque; from `next_cursor`.
    #[param(max_length = 2048)]
    pub cursor: Option<String>,
}

/// A page of items and the cursor of the next page, if there may be one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("c:{key}"))
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    // Cursors are ours: anything with control characters (NUL included) is not.
    if text.chars().any(char::is_control) {
        return None;
    }
    text.strip_prefix("c:").map(str::to_string)
}

fn not_ours() -> ApiError {
    ApiError::bad_request("invalid_query", "cursor is not one this server issued")
}

pub fn limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// The key after which a list ordered by a text key resumes ("" = the start).
pub fn text_cursor(cursor: Option<&str>) -> Result<String, ApiError> {
    match cursor {
        None | Some("") => Ok(String::new()),
        Some(c) => decode_cursor(c).ok_or_else(not_ours),
    }
}

/// The sequence number before which a newest-first list resumes.
pub fn seq_cursor(cursor: Option<&str>) -> Result<i64, ApiError> {
    match cursor {
        None | Some("") => Ok(i64::MAX),
        Some(c) => decode_cursor(c).and_then(|s| s.parse().ok()).ok_or_else(not_ours),
    }
}

/// The sequence number after which an oldest-first feed resumes.
pub fn since_cursor(cursor: Option<&str>) -> Result<i64, ApiError> {
    match cursor {
        None | Some("") => Ok(0),
        Some(c) => decode_cursor(c).and_then(|s| s.parse().ok()).ok_or_else(not_ours),
    }
}

impl<T> Page<T> {
    /// `key` gives the cursor of an item; there may be more when the page is full.
    pub fn of<R>(rows: Vec<R>, limit: i64, key: impl Fn(&R) -> String, wire: impl Fn(R) -> T) -> Self {
        let next_cursor = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| encode_cursor(&key(r))))
            .flatten();
        Self {
            items: rows.into_iter().map(wire).collect(),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(text_cursor(Some(&encode_cursor("acme"))).unwrap(), "acme");
        assert_eq!(seq_cursor(Some(&encode_cursor("42"))).unwrap(), 42);
        assert_eq!(seq_cursor(None).unwrap(), i64::MAX);
        assert!(seq_cursor(Some(&encode_cursor("x"))).is_err());
        assert!(text_cursor(Some("not-base64!")).is_err());
        assert!(text_cursor(Some(&URL_SAFE_NO_PAD.encode("c:\u{0}"))).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn cursor_parsers_never_panic(s in any::<String>()) {
            let _ = text_cursor(Some(&s));
            let _ = seq_cursor(Some(&s));
            let _ = since_cursor(Some(&s));
        }

        // Well-formed base64url of arbitrary bytes, so decoding gets past base64.
        #[test]
        fn cursor_parsers_never_panic_on_base64(bytes in proptest::collection::vec(any::<u8>(), 0..64), prefix in any::<bool>()) {
            let raw = if prefix { [b"c:".as_slice(), &bytes].concat() } else { bytes };
            let c = URL_SAFE_NO_PAD.encode(raw);
            if let Ok(key) = text_cursor(Some(&c)) {
                prop_assert!(!key.chars().any(char::is_control));
            }
            let _ = seq_cursor(Some(&c));
            let _ = since_cursor(Some(&c));
        }

        #[test]
        fn cursors_round_trip(key in any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>())) {
            prop_assert_eq!(text_cursor(Some(&encode_cursor(&key))).ok(), Some(key));
        }

        #[test]
        fn sequence_cursors_round_trip(n in any::<i64>()) {
            prop_assert_eq!(seq_cursor(Some(&encode_cursor(&n.to_string()))).ok(), Some(n));
            prop_assert_eq!(since_cursor(Some(&encode_cursor(&n.to_string()))).ok(), Some(n));
        }
    }
}
