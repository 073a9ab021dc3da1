//! The browser's endpoints of the authorization code flow: `/oauth2/authorize`,
//! `/oauth2/callback` (the IdP's answer) and `/oauth2/consent`. Pages are
//! plain server-rendered HTML under a strict CSP (no script at all), and
//! cannot be framed. A cookie (SameSite=Lax, so it survives the IdP's
//! redirect back) binds the request to the browser that started it.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::body::{OAuthParams, form_decode};
use super::session::{cookie, secure};
use crate::audit::Origin;
use crate::people::flow::{AuthorizeRequest, ConsentView, Next, Refusal};
use crate::people::registration::{RegistrationError, RegistrationRequest, RegistrationResponse};
use crate::state::AppState;

const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'";
const COOKIE: &str = "mayfly_authz";
const COOKIE_HOST: &str = "__Host-mayfly_authz";

fn cookie_name(state: &AppState) -> &'static str {
    if secure(state) { COOKIE_HOST } else { COOKIE }
}

/// A browser's query: each parameter at most once (RFC 6749 §3.1), none
/// overlong; a bad query is answered with a page saying why, never passed on.
pub struct BrowserQuery(HashMap<String, String>);

impl BrowserQuery {
    /// A parameter, when present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for BrowserQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Response> {
        parse_query(parts.uri.query()).map(BrowserQuery).map_err(|why| {
            html(
                StatusCode::BAD_REQUEST,
                "Bad request",
                &format!("<p>{}</p>", escape(&why)),
            )
        })
    }
}

fn parse_query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (form_decode(k), form_decode(v)) else {
            return Err("the query is not well formed".into());
        };
        if v.len() > 4096 {
            return Err(format!(
                "parameter `{}` is too long",
                k.chars().take(64).collect::<String>()
            ));
        }
        if params.insert(k.clone(), v).is_some() {
            return Err(format!(
                "parameter `{}` is repeated",
                k.chars().take(64).collect::<String>()
            ));
        }
    }
    Ok(params)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: no script, no framing, never cached.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t} · mayfly</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;color:#222}}\
         code{{background:#f3f3f3;padding:0 .2em}}button{{font:inherit;padding:.4em 1.2em;margin-right:.6em}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut res = (status, page).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

fn redirect(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Page { status, title, message } => html(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            title,
            &format!("<p>{}</p>", escape(&message)),
        ),
        Refusal::Redirect(location) => redirect(&location),
        Refusal::Store(e) => {
            tracing::warn!(error = %e, "authorization flow: store unavailable");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>mayfly cannot complete the sign-in right now. Try again in a moment.</p>",
            )
        }
    }
}

/// Where a redirect URI answers: its scheme and host (a loopback port
/// aside, which changes every time).
fn answer_host(uri: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(u) => match u.host_str() {
            Some(h) if u.port().is_some() && !matches!(h, "127.0.0.1" | "localhost" | "[::1]") => {
                format!("{}://{h}:{}", u.scheme(), u.port().unwrap_or_default())
            }
            Some(h) => format!("{}://{h}", u.scheme()),
            None => format!("{}:", u.scheme()),
        },
        Err(_) => uri.chars().take(100).collect(),
    }
}

fn consent_page(v: &ConsentView) -> Response {
    let name = v.client_name.as_deref().unwrap_or("An application");
    let scopes: String = v
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let body = format!(
        "<p><strong>{name}</strong> (<code>{id}</code>) asks to act as <strong>{person}</strong> at</p>\
         <p><code>{resource}</code></p><p>with these permissions:</p><ul>{scopes}</ul>\
         <p>Allowing sends it a code at <code>{answer}</code>.</p>\
         <p>Its access is recorded and your administrators can end it at any time.</p>\
         <form method=\"post\" action=\"consent\"><input type=\"hidden\" name=\"request\" value=\"{req}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        name = escape(name),
        id = escape(&v.client_id),
        person = escape(&v.person),
        resource = escape(&v.resource),
        req = escape(&v.request),
        answer = escape(&answer_host(&v.redirect_uri)),
    );
    html(StatusCode::OK, "Allow access?", &body)
}

/// The authorization code flow's start (RFC 6749 §4.1 with PKCE S256,
/// RFC 8707 `resource`). The person signs in at the resource's tenant's IdP.
#[utoipa::path(get, path = "/oauth2/authorize", tag = "oauth",
    params(("response_type" = String, Query, description = "`code`"),
        ("client_id" = String, Query, description = "The https URL of the client's metadata document (CIMD)."),
        ("redirect_uri" = Option<String>, Query), ("code_challenge" = String, Query),
        ("code_challenge_method" = String, Query, description = "`S256`"),
        ("resource" = String, Query, description = "The MCP server (names the tenant)."),
        ("scope" = Option<String>, Query), ("state" = Option<String>, Query)),
    responses((status = 303, description = "To the IdP, or back to the client with `error` and `iss`."),
        (status = 400, description = "A page: the client or redirect cannot be trusted.", content_type = "text/html"),
        (status = 503, description = "A page: the IdP cannot be reached.", content_type = "text/html")))]
pub async fn authorize(State(state): State<AppState>, origin: Origin, q: BrowserQuery, headers: HeaderMap) -> Response {
    let get = |n: &str| q.get(n);
    let request = AuthorizeRequest {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        response_type: get("response_type"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        resource: get("resource"),
        scope: get("scope"),
        state: get("state"),
    };
    let name = cookie_name(&state);
    match state.people.begin(&request, cookie(&headers, name), &origin).await {
        Ok(started) => {
            let mut res = redirect(&started.location);
            let mut c = format!(
                "{name}={}; Path=/; Max-Age={}; SameSite=Lax; HttpOnly",
                started.browser_cookie,
                crate::people::AUTHORIZATION_SECONDS
            );
            if secure(&state) {
                c.push_str("; Secure");
            }
            if let Ok(v) = HeaderValue::from_str(&c) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res
        }
        Err(r) => refusal(r),
    }
}

/// Where the company IdP sends the person back (`{issuer}/oauth2/callback`,
/// registered at the IdP).
#[utoipa::path(get, path = "/oauth2/callback", tag = "oauth",
    params(("state" = String, Query), ("code" = Option<String>, Query), ("error" = Option<String>, Query)),
    responses((status = 200, description = "The consent page.", content_type = "text/html"),
        (status = 303, description = "Back to the client with `code`, `state` and `iss`."),
        (status = 400, description = "A page: unknown, expired or from another browser.", content_type = "text/html"),
        (status = 403, description = "A page: the sign-in could not be verified.", content_type = "text/html")))]
pub async fn callback(State(state): State<AppState>, origin: Origin, q: BrowserQuery, headers: HeaderMap) -> Response {
    let get = |n: &str| q.get(n);
    let browser = cookie(&headers, cookie_name(&state));
    match state
        .people
        .callback(
            get("state").unwrap_or_default(),
            get("code"),
            get("error"),
            get("iss"),
            browser,
            &origin,
        )
        .await
    {
        Ok(Next::Consent(view)) => consent_page(&view),
        Ok(Next::Redirect(location)) => redirect(&location),
        Err(r) => refusal(r),
    }
}

/// The consent page's form: `request` and `decision` (`allow` or `deny`).
#[utoipa::path(post, path = "/oauth2/consent", tag = "oauth",
    responses((status = 303, description = "Back to the client: `code` (allowed) or `error=access_denied`."),
        (status = 400, description = "A page: unknown, expired or from another browser.", content_type = "text/html")))]
pub async fn consent(State(state): State<AppState>, origin: Origin, params: OAuthParams) -> Response {
    let browser = cookie(&params.headers, cookie_name(&state));
    let allow = match params.get("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => return html(StatusCode::BAD_REQUEST, "Bad request", "<p>Choose Allow or Deny.</p>"),
    };
    let request = params.get("request").unwrap_or_default();
    match state.people.consent(request, allow, browser, &origin).await {
        Ok(location) => redirect(&location),
        Err(r) => refusal(r),
    }
}

/// RFC 7591: an MCP client that has no metadata document registers itself
/// as a public client. It signs people in only where a tenant's login
/// provider allows registered clients.
#[utoipa::path(post, path = "/oauth2/register", tag = "oauth",
    request_body(content = RegistrationRequest, content_type = "application/json"),
    responses((status = 201, description = "Registered.", body = RegistrationResponse),
        (status = 400, description = "`invalid_redirect_uri` or `invalid_client_metadata` (RFC 7591 §3.2.2)."),
        (status = 503, description = "Too many registered clients, or the store is unavailable.")))]
pub async fn register(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let error = |status: StatusCode, code: &str, description: &str| {
        let mut res = (
            status,
            axum::Json(serde_json::json!({"error": code, "error_description": description})),
        )
            .into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    };
    if !super::body::is_content_type(&headers, "application/json") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "send the metadata as application/json",
        );
    }
    let request: RegistrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                "the body is not client metadata JSON",
            );
        }
    };
    match state.people.register(request, &origin).await {
        Ok(registered) => {
            let mut res = (StatusCode::CREATED, axum::Json(registered)).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(RegistrationError::Invalid(code, why)) => error(StatusCode::BAD_REQUEST, code, &why),
        Err(RegistrationError::Throttled(_)) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "too many requests from this address; retry in a minute",
        ),
        Err(RegistrationError::Full) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "retry later",
        ),
        Err(RegistrationError::Store(e)) => {
            tracing::warn!(error = %e, "client registration: store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "retry later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(escape("<script>\"x\"&'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;");
    }

    #[test]
    fn repeated_or_malformed_query_parameters_are_refused() {
        assert!(parse_query(Some("a=1&a=2")).is_err());
        assert!(parse_query(Some("a=%zz")).is_err());
        assert_eq!(parse_query(Some("a=1&b=x+y")).unwrap()["b"], "x y");
    }
}
