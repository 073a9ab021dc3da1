//! Canonical form of resource URIs (RFC 8707, RFC 9728). Registered resources
//! are matched in canonical form; the token's `aud` keeps the string exactly as
//! the caller requested it.
//!
//! Equivalent spellings (RFC 3986 §6.2.2 and §6.2.3) must collide, or a grant
//! for one spelling could be dodged or doubled with another; anything whose
//! meaning other parsers might read differently is refused rather than guessed.

use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(&'static str);

const MAX_LEN: usize = 2048;
const INVALID_PORT: UriError = UriError("resource URI has an invalid port");
const INVALID_HOST: UriError = UriError("resource URI has an invalid host");

/// The canonical form of an absolute http(s) URI without fragment or user
/// info: lower-case scheme and host, no default port, decoded unreserved
/// characters and upper-case hex in other percent-encodings, no dot segments,
/// no trailing slash, no empty query. Idempotent.
pub fn canonicalize(uri: &str) -> Result<String, UriError> {
    if uri.len() > MAX_LEN {
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
    // `\`, `{`, `|` and the like are not URI characters; WHATWG parsers read
    // `\` as `/`, so letting one through would let two parsers disagree.
    if !uri.bytes().all(is_uri_char) {
        return Err(UriError("resource URI contains characters not allowed in a URI"));
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or(UriError("resource URI must be absolute (http:// or https://)"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
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
    let (host, port) = parse_authority(authority)?;
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if path_and_query.contains(['[', ']']) {
        return Err(UriError("resource URI path or query contains `[` or `]`"));
    }
    let mut out = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| *p != default_port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(&normalize_path(path)?);
    // RFC 3986 §6.2.3: `?` with nothing after it says nothing.
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(&normalize_percent(q)?);
    }
    // Normalising never lengthens a URI; checked so the output is always accepted again.
    if out.len() > MAX_LEN {
        return Err(UriError("resource URI is longer than 2048 characters"));
    }
    Ok(out)
}

/// RFC 3986 unreserved, gen-delims, sub-delims and `%`.
fn is_uri_char(b: u8) -> bool {
    is_unreserved(b) || b"%:/?#[]@!$&'()*+,;=".contains(&b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Host (canonical text) and port, if one is given.
fn parse_authority(authority: &str) -> Result<(String, Option<u16>), UriError> {
    let authority = authority.to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(INVALID_HOST)?;
        // Zone ids (`%25eth0`) and IPvFuture (`[v1.x]`) do not parse, so they are refused.
        let addr: Ipv6Addr = inner
            .parse()
            .map_err(|_| UriError("resource URI has an invalid IPv6 host"))?;
        let port = match after {
            "" => None,
            _ => parse_port(after.strip_prefix(':').ok_or(INVALID_HOST)?)?,
        };
        return Ok((format!("[{addr}]"), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, parse_port(port)?),
        None => (authority.as_str(), None),
    };
    Ok((parse_host(host)?, port))
}

/// Digits only, 1..=65535; leading zeros do not count. An empty port is no
/// port (RFC 3986 §6.2.3: `http://h:/` is `http://h/`).
fn parse_port(port: &str) -> Result<Option<u16>, UriError> {
    if port.is_empty() {
        return Ok(None);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID_PORT);
    }
    let digits = port.trim_start_matches('0');
    if digits.is_empty() || digits.len() > 5 {
        return Err(INVALID_PORT);
    }
    digits.parse::<u16>().map(Some).map_err(|_| INVALID_PORT)
}

/// A lower-cased DNS name of `[a-z0-9-]` labels (one trailing dot dropped),
/// or a dotted-quad IPv4 address.
fn parse_host(host: &str) -> Result<String, UriError> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(UriError("resource URI has no host"));
    }
    if host.len() > 253 {
        return Err(INVALID_HOST);
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(INVALID_HOST);
        }
    }
    // WHATWG parsers read a host ending in a number as IPv4 (`0x7f.1`,
    // `127.000.0.1` and `2130706433` are all 127.0.0.1): only the plain
    // dotted quad is accepted, so every spelling of an address is one string.
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        let addr: Ipv4Addr = host
            .parse()
            .map_err(|_| UriError("resource URI has an invalid IPv4 host"))?;
        return Ok(addr.to_string());
    }
    Ok(host.to_string())
}

/// Percent-encoding normalised, dot segments removed (RFC 3986 §5.2.4), the
/// trailing slash dropped. Empty segments are refused: servers differ on
/// whether `//x` is `/x`.
fn normalize_path(path: &str) -> Result<String, UriError> {
    // Decoding first, so `%2E%2E` is a dot segment like `..` (RFC 3986 §6.2.2).
    let path = normalize_percent(path)?;
    let Some(body) = path.strip_prefix('/') else {
        // The authority ends at `/` or `?`, so a path is empty or absolute.
        return Ok(String::new());
    };
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len() - 1;
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "" if i == last => {}
            "" => return Err(UriError("resource URI has an empty path segment")),
            "." => {}
            // Climbing above the root stays at the root, as RFC 3986 does.
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in kept {
        out.push('/');
        out.push_str(s);
    }
    Ok(out)
}

/// Decodes percent-encoded unreserved characters and upper-cases the hex of
/// the others (RFC 3986 §6.2.2.1-2); a `%` without two hex digits is refused.
fn normalize_percent(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (hex_value(bytes.get(i + 1)), hex_value(bytes.get(i + 2))) else {
            return Err(UriError("resource URI has an invalid percent-encoding"));
        };
        let decoded = (hi << 4) | lo;
        if is_unreserved(decoded) {
            out.push(char::from(decoded));
        } else {
            out.push('%');
            out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
            out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
        }
        i += 3;
    }
    Ok(out)
}

fn hex_value(b: Option<&u8>) -> Option<u8> {
    // Not `from_str_radix`: it would take `+1` as a number.
    char::from(*b?).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
#[path = "uri_tests.rs"]
mod tests;
