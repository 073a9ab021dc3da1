//! The console's files: ES modules loaded from the index, each served from
//! the compiled-in table with a JavaScript type (browsers refuse a module
//! script of any other type), and nothing served beyond the table.

use std::collections::BTreeSet;

use regex_lite::Regex;
use reqwest::StatusCode;

use crate::harness::{Backend, TestApp, spawn_app};

/// GETs a console path: (status, content type, body).
async fn get(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let res = app.http.get(app.url(path)).send().await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, res.text().await.unwrap())
}

/// `specifier` (`./api.js`, `../x.js`, `/console/js/y.js`) as a path, from the module at `from`.
fn resolve(from: &str, specifier: &str) -> String {
    if specifier.starts_with('/') {
        return specifier.to_string();
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in specifier.split('/') {
        match part {
            "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_module_the_console_loads_is_served_as_javascript_and_other_paths_are_404() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, _, index) = get(&app, "/console").await;
    assert_eq!(status, StatusCode::OK);
    let entry = Regex::new(r#"<script type="module" src="([^"]+)""#).unwrap();
    let imports = Regex::new(r#"(?:\bfrom|^import)\s*['"]([^'"]+)['"]"#).unwrap();

    // Walk the import graph from the entry modules the index names, as the browser does.
    let mut todo: Vec<String> = entry.captures_iter(&index).map(|c| c[1].to_string()).collect();
    assert!(!todo.is_empty(), "the index loads no module: {index}");
    let mut seen = BTreeSet::new();
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let (status, content_type, body) = get(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(content_type.starts_with("text/javascript"), "{path}: {content_type}");
        for line in body.lines() {
            for c in imports.captures_iter(line.trim_start()) {
                todo.push(resolve(&path, &c[1]));
            }
        }
    }
    assert!(seen.contains("/console/js/main.js"), "{seen:?}");
    assert!(seen.len() > 5, "the walk found only {seen:?}");

    // Outside the table: nothing, the bundle the modules replaced included.
    for path in ["/console/js/nope.js", "/console/app.js", "/console/js/main.mjs"] {
        let (status, _, _) = get(&app, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}
