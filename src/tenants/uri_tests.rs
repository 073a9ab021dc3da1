//! Tests of URI canonicalisation: equivalent spellings collide, unusual ones
//! are refused, and canonicalising twice changes nothing.

use super::canonicalize;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

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
        "https://h/\u{e9}",
        "https://h/\u{7f}",
    ] {
        assert!(canonicalize(bad).is_err(), "{bad}");
    }
    assert!(canonicalize(&format!("https://h/{}", "a".repeat(2040))).is_err());
}

#[test]
fn equivalent_spellings_collide() {
    for (spelling, canonical) in [
        ("https://h:0443/github", "https://h/github"),
        ("http://h:080/github", "http://h/github"),
        ("https://h:08443/github", "https://h:8443/github"),
        ("https://h./github", "https://h/github"),
        ("https://mcp.acme.test./github", "https://mcp.acme.test/github"),
        ("https://h/%67ithub", "https://h/github"),
        ("https://h/%7Euser/%2d%5F%2E", "https://h/~user/-_."),
        ("https://h/a%2fb", "https://h/a%2Fb"),
        ("https://h/x/../github", "https://h/github"),
        ("https://h/./github/.", "https://h/github"),
        ("https://h/a/b/../../github", "https://h/github"),
        ("https://h/x/%2E%2E/github", "https://h/github"),
        ("https://h/../github", "https://h/github"),
        ("https://h/x/..", "https://h"),
        ("https://h/github?", "https://h/github"),
        ("https://h/?", "https://h"),
        ("https://h/github?a=%7e&b=%2f", "https://h/github?a=~&b=%2F"),
        ("https://h:/github", "https://h/github"),
        ("https://[::1]:0443/x", "https://[::1]/x"),
        ("http://[0:0:0:0:0:0:0:1]:8080/", "http://[::1]:8080"),
        ("http://[2001:DB8::A]/", "http://[2001:db8::a]"),
        ("http://[::ffff:127.0.0.1]/", "http://[::ffff:127.0.0.1]"),
        ("http://127.0.0.1./x", "http://127.0.0.1/x"),
    ] {
        assert_eq!(canonicalize(spelling).as_deref(), Ok(canonical), "{spelling}");
        assert_eq!(canonicalize(canonical).as_deref(), Ok(canonical), "{canonical}");
    }
}

#[test]
fn unusual_spellings_are_refused() {
    for (bad, why) in [
        ("https://h//github", "empty path segment"),
        ("https://h/a//b", "empty path segment"),
        ("https://h/a//", "empty path segment"),
        ("https://h:443:443/x", "invalid port"),
        ("https://h:abc/x", "invalid port"),
        ("https://h:0/x", "invalid port"),
        ("https://h:000/x", "invalid port"),
        ("https://h:65536/x", "invalid port"),
        ("https://h:-1/x", "invalid port"),
        ("https://h:+443/x", "invalid port"),
        ("https://[::1]:x/", "invalid port"),
        ("https://[::1]:443:443/", "invalid port"),
        ("https://h../x", "invalid host"),
        ("https://.h/x", "invalid host"),
        ("https://a..b/x", "invalid host"),
        ("https://h_1/x", "invalid host"),
        ("https://-h/x", "invalid host"),
        ("https://%68/x", "invalid host"),
        ("https://h%2eacme/x", "invalid host"),
        ("https://[::1]x/", "invalid host"),
        ("https://[::1/", "invalid host"),
        ("https://::1/x", "invalid port"),
        ("https://[fe80::1%25eth0]/", "invalid IPv6 host"),
        ("https://[v1.x]/", "invalid IPv6 host"),
        ("https://127.000.0.1/", "invalid IPv4 host"),
        ("https://0x7f.0.0.1/", "invalid IPv4 host"),
        ("https://2130706433/", "invalid IPv4 host"),
        ("https://1.2.3/", "invalid IPv4 host"),
        ("https://acme.0x1f/", "invalid IPv4 host"),
        ("https://./x", "no host"),
        ("https://:443/x", "no host"),
        ("https://h/%", "invalid percent-encoding"),
        ("https://h/%4", "invalid percent-encoding"),
        ("https://h/%zz", "invalid percent-encoding"),
        ("https://h/%+1", "invalid percent-encoding"),
        ("https://h/x?%g0", "invalid percent-encoding"),
        ("https://h\\@evil/x", "not allowed"),
        ("https://h/a\\b", "not allowed"),
        ("https://h/{x}", "not allowed"),
        ("https://h/a[0]", "`[` or `]`"),
    ] {
        match canonicalize(bad) {
            Err(e) => assert!(e.to_string().contains(why), "{bad}: {e}"),
            Ok(c) => panic!("{bad} was accepted as {c}"),
        }
    }
}

/// One logical resource URI and two spellings of it: the canonical one
/// and one with every equivalent variation the rules allow.
#[derive(Debug, Clone)]
struct Spellings {
    canonical: String,
    respelled: String,
}

/// A piece of a path segment or query: an unreserved character (may be
/// percent-encoded), a byte that must stay encoded, or a sub-delimiter.
#[derive(Debug, Clone)]
enum Atom {
    Unreserved(char, Option<bool>),
    Encoded(u8, bool),
    Raw(char),
}

fn hex(byte: u8, lower: bool) -> String {
    if lower {
        format!("%{byte:02x}")
    } else {
        format!("%{byte:02X}")
    }
}

impl Atom {
    fn canonical(&self) -> String {
        match self {
            Atom::Unreserved(c, _) | Atom::Raw(c) => c.to_string(),
            Atom::Encoded(b, _) => hex(*b, false),
        }
    }
    fn respelled(&self) -> String {
        match self {
            Atom::Unreserved(c, None) | Atom::Raw(c) => c.to_string(),
            Atom::Unreserved(c, Some(lower)) => hex(*c as u8, *lower),
            Atom::Encoded(b, lower) => hex(*b, *lower),
        }
    }
}

fn atom() -> impl Strategy<Value = Atom> {
    let unreserved = proptest::sample::select(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
            .chars()
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        6 => (unreserved, proptest::option::of(any::<bool>())).prop_map(|(c, e)| Atom::Unreserved(c, e)),
        1 => (any::<u8>(), any::<bool>())
            .prop_filter("must stay encoded", |(b, _)| !super::is_unreserved(*b))
            .prop_map(|(b, l)| Atom::Encoded(b, l)),
        1 => proptest::sample::select(vec!['!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@'])
            .prop_map(Atom::Raw),
    ]
}

/// A non-empty path segment that is not itself a dot segment.
fn segment() -> impl Strategy<Value = Vec<Atom>> {
    proptest::collection::vec(atom(), 1..6).prop_filter("not a dot segment", |atoms| {
        let s: String = atoms.iter().map(Atom::canonical).collect();
        s != "." && s != ".."
    })
}

/// What to put before a segment in the re-spelling: nothing, `./`, or `detour/../`.
#[derive(Debug, Clone)]
enum Detour {
    None,
    Dot,
    Back(String),
}

fn detour() -> impl Strategy<Value = Detour> {
    prop_oneof![
        4 => Just(Detour::None),
        1 => Just(Detour::Dot),
        1 => "[a-z]{1,4}".prop_map(Detour::Back),
    ]
}

fn flip_case(s: &str, mask: &[bool]) -> String {
    s.chars()
        .zip(mask.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect()
}

prop_compose! {
    fn spellings()(
        https in any::<bool>(),
        case in proptest::collection::vec(any::<bool>(), 1..8),
        labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", 0..3),
        top in "[a-z][a-z0-9]{0,5}",
        trailing_dot in any::<bool>(),
        port in proptest::option::of(prop_oneof![Just(None), (1u16..=u16::MAX).prop_map(Some)]),
        zeros in 0usize..3,
        path in proptest::collection::vec((detour(), segment()), 0..5),
        climb in any::<bool>(),
        trailing_slash in any::<bool>(),
        empty_query in any::<bool>(),
        query in proptest::option::of(proptest::collection::vec(
            prop_oneof![4 => atom(), 1 => proptest::sample::select(vec!['/', '?']).prop_map(Atom::Raw)],
            1..6,
        )),
    ) -> Spellings {
        let scheme = if https { "https" } else { "http" };
        let default = if https { 443 } else { 80 };
        let mut host = labels.join(".");
        if !host.is_empty() {
            host.push('.');
        }
        host.push_str(&top);
        // `Some(None)` is the default port written out; `Some(Some(p))` any port.
        let port = port.map(|p| p.unwrap_or(default));
        let mut canonical = format!("{scheme}://{host}");
        if let Some(p) = port.filter(|p| *p != default) {
            canonical.push_str(&format!(":{p}"));
        }
        let mut respelled = format!("{}://{}", flip_case(scheme, &case), flip_case(&host, &case));
        if trailing_dot {
            respelled.push('.');
        }
        if let Some(p) = port {
            respelled.push_str(&format!(":{}{p}", "0".repeat(zeros)));
        }
        if climb {
            respelled.push_str("/..");
        }
        for (detour, atoms) in &path {
            match detour {
                Detour::None => {}
                Detour::Dot => respelled.push_str("/."),
                Detour::Back(d) => respelled.push_str(&format!("/{d}/..")),
            }
            canonical.push('/');
            respelled.push('/');
            for a in atoms {
                canonical.push_str(&a.canonical());
                respelled.push_str(&a.respelled());
            }
        }
        if trailing_slash {
            respelled.push('/');
        }
        match query {
            Some(atoms) => {
                canonical.push('?');
                respelled.push('?');
                for a in &atoms {
                    canonical.push_str(&a.canonical());
                    respelled.push_str(&a.respelled());
                }
            }
            // An empty query says nothing.
            None if empty_query => respelled.push('?'),
            None => {}
        }
        Spellings { canonical, respelled }
    }
}

/// Strings that look like URIs, mostly well formed with some noise in
/// every part, so that many reach the host, port, path and query rules.
fn uri_like() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        4 => "[a-zA-Z0-9]{1,6}(\\.[a-zA-Z0-9-]{1,6}){0,2}\\.?".boxed(),
        1 => any::<Ipv4Addr>().prop_map(|a| a.to_string()).boxed(),
        1 => any::<Ipv6Addr>().prop_map(|a| format!("[{a}]")).boxed(),
        1 => any::<[u16; 8]>()
            .prop_map(|s| format!("[{}]", s.map(|p| format!("{p:04X}")).join(":")))
            .boxed(),
        1 => any::<Ipv4Addr>().prop_map(|a| format!("[{}]", a.to_ipv6_mapped())).boxed(),
        1 => "[0-9a-fA-FxX.:%\\[\\]-]{0,12}".boxed(),
    ];
    let port = proptest::option::of(prop_oneof![4 => "0{0,2}[0-9]{1,5}", 1 => "[0-9a-z:+-]{0,4}"]);
    let segment = prop_oneof![
        6 => "[a-zA-Z0-9._~:@!$&'()*+,;=-]{1,6}",
        2 => "(%[0-9a-fA-F]{2}|[a-z]){1,4}",
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => "(%2[eE]){1,2}",
        1 => "[%a-zA-Z0-9]{0,3}",
    ];
    let query = proptest::option::of("([a-zA-Z0-9=&/?.-]|%[0-9a-fA-F]{2}|%){0,10}");
    (
        "[hH][tT][tT][pP][sS]?",
        host,
        port,
        proptest::collection::vec(segment, 0..6),
        any::<bool>(),
        query,
    )
        .prop_map(|(scheme, host, port, path, slash, query)| {
            let mut uri = format!("{scheme}://{host}");
            if let Some(p) = port {
                uri.push_str(&format!(":{p}"));
            }
            for s in path {
                uri.push('/');
                uri.push_str(&s);
            }
            if slash {
                uri.push('/');
            }
            if let Some(q) = query {
                uri.push('?');
                uri.push_str(&q);
            }
            uri
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonicalize_never_panics_and_is_idempotent(s in any::<String>()) {
        if let Ok(c) = canonicalize(&s) {
            prop_assert_eq!(canonicalize(&c), Ok(c.clone()));
        }
    }

    #[test]
    fn canonicalize_is_idempotent_on_uri_like_strings(s in uri_like()) {
        if let Ok(c) = canonicalize(&s) {
            prop_assert_eq!(canonicalize(&c), Ok(c.clone()));
        }
    }

    #[test]
    fn respelled_uris_canonicalise_alike(u in spellings()) {
        prop_assert_eq!(canonicalize(&u.canonical), Ok(u.canonical.clone()));
        prop_assert_eq!(canonicalize(&u.respelled), Ok(u.canonical.clone()));
    }
}
