//! Canonical form of resource URIs (RFC 8707, RFC 9728). Registered resources
//! are matched in canonical form; the token's `aud` keeps the string exactly as
//! the caller requested it.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(&'static str);

/// Lower-cases scheme and host, drops a default port and a trailing slash.
/// Refuses anything that is not an absolute http(s) URI without fragment or
/// user info.
pub fn canonicalize(uri: &str) -> Result<String, UriError> {
    if uri.len() > 2048 {
        return Err(UriError("resource URI is longer than 2048 characters"));
    }
    if uri.chars().any(|c| c.is_ascii_control() || c == ' ' || !c.is_ascii()) {
        return Err(UriError(
            "resource URI contains spaces, control or non-ASCII characters",
        ));
    }
    if uri.contains('#') {
        return Err(UriError("resource URI must not contain a fragment"));
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or(UriError("resource URI must be absolute (http:// or https://)"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Err(UriError("resource URI scheme must be http or https")),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(split);
    if authority.is_empty() {
        return Err(UriError("resource URI has no host"));
    }
    if authority.contains('@') {
        return Err(UriError("resource URI must not contain user info"));
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && port.is_empty() => host.to_string(),
        Some((host, port)) if port == default_port && !host.is_empty() => host.to_string(),
        Some((_, port)) if !port.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']') => {
            return Err(UriError("resource URI has an invalid port"));
        }
        _ => authority,
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let path = path.trim_end_matches('/');
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::canonicalize;

    #[test]
    fn case_default_port_and_trailing_slash_do_not_matter() {
        let c = canonicalize("https://mcp.acme.test/github").unwrap();
        for same in [
            "HTTPS://MCP.Acme.test/github",
            "https://mcp.acme.test:443/github/",
            "https://mcp.acme.test/github/",
        ] {
            assert_eq!(canonicalize(same).unwrap(), c, "{same}");
        }
        assert_eq!(canonicalize("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(canonicalize("http://host:80").unwrap(), "http://host");
    }

    #[test]
    fn path_case_and_other_ports_are_significant() {
        assert_ne!(
            canonicalize("https://h/GitHub").unwrap(),
            canonicalize("https://h/github").unwrap()
        );
        assert_ne!(
            canonicalize("https://h:8443/").unwrap(),
            canonicalize("https://h/").unwrap()
        );
    }

    #[test]
    fn refuses_what_is_not_an_absolute_http_uri() {
        for bad in [
            "mcp.acme.test",
            "ftp://h/x",
            "https://h/x#frag",
            "https://user@h/x",
            "https:///x",
            "https://h:port/x",
            "https://h/ x",
        ] {
            assert!(canonicalize(bad).is_err(), "{bad}");
        }
    }
}
