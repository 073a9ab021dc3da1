//! The console's session at the HTTP edge: its cookies (names, attributes)
//! and the CSRF token bound to it. Shared by the console's handlers and the
//! admin extractor, which accepts the session cookie in place of a bearer
//! token.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::state::AppState;

/// Cookie names when the cookies are `Secure` (an https issuer): the
/// `__Host-` prefix makes the browser refuse them unless Secure, `Path=/` and
/// without `Domain`, so a sibling subdomain or a plain-http answer cannot
/// plant or shadow a session.
pub const SESSION_COOKIE_HOST: &str = "__Host-mayfly_console";
pub const CSRF_COOKIE_HOST: &str = "__Host-mayfly_csrf";
/// Cookie names on a loopback http issuer (development), where cookies are
/// not Secure and a `__Host-` name would be refused (Firefox and Safari take
/// no Secure cookie over http, even from localhost).
pub const SESSION_COOKIE: &str = "mayfly_console";
pub const CSRF_COOKIE: &str = "mayfly_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A cookie from the request.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session and CSRF cookie names this issuer uses (see `SESSION_COOKIE_HOST`).
pub fn cookie_names(state: &AppState) -> (&'static str, &'static str) {
    if secure(state) {
        (SESSION_COOKIE_HOST, CSRF_COOKIE_HOST)
    } else {
        (SESSION_COOKIE, CSRF_COOKIE)
    }
}

/// The session token of a console request, if it carries one. Only this
/// issuer's cookie name counts: under https an unprefixed `mayfly_console`
/// (which anyone able to set a cookie for the host could plant) is ignored.
pub fn session_token<'h>(state: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    cookie(headers, cookie_names(state).0).filter(|t| !t.is_empty())
}

/// The CSRF token of the session whose token has `jti`: only a holder of the
/// session (the page that signed in, which reads it from its cookie) and
/// this issuer know it, and it is worth nothing with another session.
pub fn csrf_token(state: &AppState, jti: &str) -> String {
    let tag = ring::hmac::sign(&state.web.console_csrf, jti.as_bytes());
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// Whether a cookie-authenticated, state-changing request carries the CSRF
/// token of its own session (`jti`), compared in constant time.
pub fn csrf_ok(state: &AppState, headers: &HeaderMap, jti: &str) -> bool {
    let Some(sent) = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim()).ok())
    else {
        return false;
    };
    ring::hmac::verify(&state.web.console_csrf, jti.as_bytes(), &sent).is_ok()
}

pub fn set_cookie(res: &mut Response, name: &str, value: &str, max_age: i64, http_only: bool, secure: bool) {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `Secure` cookies, except for an issuer on loopback http (development).
pub fn secure(state: &AppState) -> bool {
    let url = &state.issuer.id().url;
    !(url.starts_with("http://127.") || url.starts_with("http://localhost") || url.starts_with("http://[::1]"))
}
