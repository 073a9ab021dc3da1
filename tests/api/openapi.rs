//! openapi.yaml is generated from the code (`mayfly openapi > openapi.yaml`):
//! the committed file must be exactly what this build generates, and every
//! documented path must serve exactly its documented methods (read from the
//! `Allow` header of a 405).

use std::collections::BTreeSet;

use crate::harness::{Backend, spawn_app};

#[test]
fn the_committed_openapi_yaml_is_the_generated_one() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let generated = mayfly::http::openapi::yaml().unwrap();
    assert!(
        committed == generated,
        "openapi.yaml is stale: run `cargo run -- openapi > openapi.yaml` and commit it"
    );
}

fn documented_methods(item: &utoipa::openapi::PathItem) -> BTreeSet<String> {
    [
        ("GET", item.get.is_some()),
        ("POST", item.post.is_some()),
        ("PUT", item.put.is_some()),
        ("PATCH", item.patch.is_some()),
        ("DELETE", item.delete.is_some()),
    ]
    .into_iter()
    .filter(|(_, documented)| *documented)
    .map(|(m, _)| m.to_string())
    .collect()
}

#[tokio::test]
async fn each_path_serves_exactly_the_documented_methods() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = mayfly::http::openapi::document();
    assert!(doc.paths.paths.len() >= 25);
    for (path, item) in &doc.paths.paths {
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
        let methods = documented_methods(item);
        assert_eq!(
            allow, methods,
            "{path}: server allows {allow:?}, spec documents {methods:?}"
        );
    }
}
