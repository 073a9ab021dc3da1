//! The console's session: `__Host-` cookies under an https issuer and a
//! CSRF token bound to its session (security review, finding 16).

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, TestApp, spawn_app};
use crate::on_both_backends;

on_both_backends!(console_cookies_are_host_prefixed_under_https_and_csrf_is_bound_to_the_session);

/// Signs in to the console; returns the `Set-Cookie` lines by cookie name.
async fn console_sign_in(app: &TestApp) -> std::collections::HashMap<String, String> {
    let res = app
        .http
        .post(app.url("/console/session"))
        .json(&json!({"client_id": "mayfly-admin", "client_secret": crate::harness::ADMIN_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    set_cookies(&res)
}

fn set_cookies(res: &reqwest::Response) -> std::collections::HashMap<String, String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .map(|line| (line.split('=').next().unwrap().to_string(), line))
        .collect()
}

/// The value of a `Set-Cookie` line.
fn value(line: &str) -> &str {
    line.split_once('=').unwrap().1.split(';').next().unwrap()
}

/// Finding 16: under an https issuer the console's cookies carry the
/// `__Host-` prefix (so the browser keeps them only Secure, for `/`, without
/// `Domain`), and the CSRF token is a MAC of its session: another session's
/// token, or a pair an attacker planted as cookie and header, is refused. On
/// loopback http (development) the names stay unprefixed and not Secure.
async fn console_cookies_are_host_prefixed_under_https_and_csrf_is_bound_to_the_session(b: Backend) {
    let app = TestApp::on(b)
        .config(|c| mayfly::Config {
            issuer: "https://mayfly.test".into(),
            ..c
        })
        .start()
        .await;
    let one = console_sign_in(&app).await;
    let (session, csrf) = (&one["__Host-mayfly_console"], &one["__Host-mayfly_csrf"]);
    for (line, http_only) in [(session, true), (csrf, false)] {
        let attrs: Vec<&str> = line.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"Secure") && attrs.contains(&"Path=/"), "{line}");
        assert!(attrs.contains(&"SameSite=Strict"), "{line}");
        assert_eq!(attrs.contains(&"HttpOnly"), http_only, "{line}");
        assert!(!line.to_ascii_lowercase().contains("domain="), "{line}");
    }
    assert!(
        !one.contains_key("mayfly_console") && !one.contains_key("mayfly_csrf"),
        "{one:?}"
    );
    let two = console_sign_in(&app).await;
    let csrf_two = value(&two["__Host-mayfly_csrf"]);
    assert_ne!(value(csrf), csrf_two);

    let post = |cookie: String, token: Option<String>, id: &'static str| {
        let mut req = app
            .http
            .post(app.url("/v1/tenants"))
            .header("cookie", cookie)
            .json(&json!({"id": id}));
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            (status, res.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let cookie = |extra: &str| format!("__Host-mayfly_console={}{extra}", value(session));
    // Another session's token; an attacker's pair planted as cookie and header; none.
    for (cookie, token) in [
        (cookie(""), Some(csrf_two.to_string())),
        (cookie("; __Host-mayfly_csrf=planted"), Some("planted".to_string())),
        (
            cookie(&format!("; __Host-mayfly_csrf={csrf_two}")),
            Some(csrf_two.to_string()),
        ),
        (cookie(""), None),
    ] {
        let (s, body) = post(cookie.clone(), token, "nope").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{cookie}: {body}");
        assert_eq!(body["error"], "csrf", "{body}");
    }
    // The unprefixed name is not this issuer's session cookie.
    let (s, _) = post(
        format!("mayfly_console={}", value(session)),
        Some(value(csrf).into()),
        "nope",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = post(cookie(""), Some(value(csrf).into()), "made-by-console").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    // Signing out clears the prefixed cookies, with the attributes they were set with.
    let res = app
        .http
        .delete(app.url("/console/session"))
        .header("cookie", cookie(""))
        .header("x-csrf-token", value(csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&res);
    for name in ["__Host-mayfly_console", "__Host-mayfly_csrf"] {
        let line = &cleared[name];
        assert!(
            line.contains("Max-Age=0") && line.contains("Secure") && line.contains("Path=/"),
            "{line}"
        );
    }

    // Loopback http: the unprefixed names, not Secure.
    let dev = spawn_app(b).await;
    let cookies = console_sign_in(&dev).await;
    for name in ["mayfly_console", "mayfly_csrf"] {
        assert!(!cookies[name].contains("Secure"), "{}", cookies[name]);
    }
}
