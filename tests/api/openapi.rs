//! openapi.yaml and the router must agree: the same paths, and on each path
//! exactly the methods the server answers (read from the `Allow` header of a
//! 405). A route added without documenting it, or documented but missing,
//! fails here.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Backend, spawn_app};

/// Paths and their methods from openapi.yaml's `paths:` block (two-space
/// indented path keys, four-space indented method keys).
fn spec_operations() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let mut ops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_paths = false;
    let mut current = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("  ")
            .filter(|r| r.starts_with('/') || r.starts_with("'/") || r.starts_with("\"/"))
        {
            let path = rest
                .trim_end()
                .trim_end_matches(':')
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string();
            ops.entry(path.clone()).or_default();
            current = Some(path);
        } else if let (Some(rest), Some(path)) = (line.strip_prefix("    "), &current) {
            let key = rest.trim_end().trim_end_matches(':');
            if !rest.starts_with(' ') && ["get", "post", "put", "patch", "delete"].contains(&key) {
                ops.get_mut(path).unwrap().insert(key.to_uppercase());
            }
        }
    }
    ops
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_routed() {
    let spec: BTreeSet<String> = spec_operations().into_keys().collect();
    let routed: BTreeSet<String> = mayfly::http::routes().paths.iter().map(|p| p.to_string()).collect();
    assert!(!spec.is_empty());
    assert_eq!(
        spec.difference(&routed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not routed"
    );
    assert_eq!(
        routed.difference(&spec).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routed but not documented"
    );
}

#[tokio::test]
async fn each_path_serves_exactly_the_documented_methods() {
    let app = spawn_app(Backend::Sqlite).await;
    for (path, methods) in spec_operations() {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{client_id}", "c")
            .replace("{lease_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{kid}", "k")
            .replace("{id}", "00000000-0000-0000-0000-000000000000");
        let res = app
            .http
            .request(reqwest::Method::TRACE, app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow: BTreeSet<String> = res.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| m != "HEAD")
            .collect();
        assert_eq!(
            allow, methods,
            "{path}: server allows {allow:?}, spec documents {methods:?}"
        );
    }
}
