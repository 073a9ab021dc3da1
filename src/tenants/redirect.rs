//! A client's redirect URIs and PKCE values, checked before anything is looked up: the
//! request's shape, PKCE (S256 only), and the redirect URI rule (exact,
//! except the port of a loopback redirect, RFC 8252 §7.3).

use reqwest::Url;

/// A PKCE verifier or challenge: 43 to 128 unreserved characters (RFC 7636 §4.1).
pub fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether a redirect URI may be registered at all: https, a plain-http
/// loopback one (a native app's local listener), or a private-use scheme
/// (`vscode://…`, RFC 8252 §7.1). No fragment, no credentials.
pub fn registrable(uri: &str) -> Result<Url, String> {
    if uri.chars().any(char::is_control) {
        return Err("a redirect URI has no control characters".into());
    }
    let url = Url::parse(uri).map_err(|_| format!("`{uri}` is not an absolute URI"))?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{uri}` has a fragment or credentials"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err(format!("`{uri}`: plain http only on a loopback address")),
        "javascript" | "data" | "file" | "blob" | "about" => Err(format!("`{uri}`: scheme not allowed")),
        // A private-use scheme has a dot in it (reverse domain) per RFC 8252
        // §7.1; IDE clients use their product name (`vscode`, `cursor`).
        _ => Ok(url),
    }
}

/// Whether `asked` is one of `registered`: exactly, or (for a plain-http
/// loopback redirect) on any port, everything else exact.
pub fn matches_registered(registered: &[String], asked: &str) -> bool {
    if registered.iter().any(|r| r == asked) {
        return true;
    }
    let Ok(asked_url) = Url::parse(asked) else {
        return false;
    };
    if asked_url.scheme() != "http" || !is_loopback_host(&asked_url) {
        return false;
    }
    registered.iter().any(|r| {
        let Ok(reg) = Url::parse(r) else { return false };
        reg.scheme() == "http"
            && is_loopback_host(&reg)
            && reg.host() == asked_url.host()
            && reg.path() == asked_url.path()
            && reg.query() == asked_url.query()
            && reg.fragment().is_none()
            && asked_url.fragment().is_none()
            && asked_url.username().is_empty()
            && asked_url.password().is_none()
    })
}

/// Whether a consent given for this redirect may be remembered: only an
/// https one on a real host. A loopback or private-scheme redirect can be
/// named by any program on the person's machine, so it is asked each time.
pub fn consent_may_be_remembered(uri: &str) -> bool {
    Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && !is_loopback_host(&u))
}

/// `redirect_uri` with the authorization response's parameters appended.
pub fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_redirect_matches_on_any_port_and_nothing_else_does() {
        let reg = vec![
            "http://127.0.0.1/callback".to_string(),
            "https://app.example/cb".to_string(),
            "http://localhost:3030/callback".to_string(),
        ];
        assert!(matches_registered(&reg, "http://127.0.0.1:49152/callback"));
        assert!(matches_registered(&reg, "http://localhost:5555/callback"));
        assert!(matches_registered(&reg, "https://app.example/cb"));
        for bad in [
            "https://app.example/cb/",
            "https://app.example:8443/cb",
            "https://APP.example.evil/cb",
            "http://127.0.0.1:49152/callback/x",
            "http://127.0.0.1:49152/callback?x=1",
            "http://127.0.0.2:49152/callback",
            "http://[::1]:49152/callback",
            "http://user@127.0.0.1:49152/callback",
            "https://127.0.0.1:49152/callback",
            "not a uri",
        ] {
            assert!(!matches_registered(&reg, bad), "{bad}");
        }
    }

    #[test]
    fn only_safe_redirects_are_registrable() {
        for ok in [
            "https://a.example/cb",
            "http://127.0.0.1/cb",
            "http://localhost:1/cb",
            "vscode://x/cb",
        ] {
            assert!(registrable(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://a.example/cb",
            "https://a.example/cb#x",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://u:p@a.example/",
            "/relative",
        ] {
            assert!(registrable(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pkce_values_are_shaped_as_rfc_7636_says() {
        assert!(pkce_shaped(&"a".repeat(43)));
        assert!(pkce_shaped(&"A-._~9".repeat(10)));
        assert!(!pkce_shaped(&"a".repeat(42)));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }
}
