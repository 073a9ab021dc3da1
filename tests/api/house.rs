//! The shape of the house, checked: domain modules take their parts as
//! arguments and never reach for the app state or the HTTP layer, storage
//! is the floor (it imports no domain module: each domain owns its SQL),
//! and no source or test file grows past 600 lines.

use std::path::{Path, PathBuf};

pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn domain_modules_never_import_the_app_or_the_http_layer() {
    let mut offenders = Vec::new();
    for module in [
        "tokens",
        "keys",
        "leases",
        "audit",
        "tenants",
        "storage",
        "federation",
        "delegation",
        "grants",
    ] {
        let dir = src().join(module);
        if !dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.contains("crate::app") || text.contains("crate::http") {
                offenders.push(file.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "domain modules importing the app or HTTP layer: {offenders:?}"
    );
}

/// The domain modules storage must never name.
const DOMAIN: [&str; 9] = [
    "tokens",
    "keys",
    "leases",
    "audit",
    "tenants",
    "federation",
    "delegation",
    "grants",
    "gateway",
];

#[test]
fn storage_is_the_floor_and_imports_no_domain_module() {
    let mut files = Vec::new();
    rust_files(&src().join("storage"), &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for module in DOMAIN {
            let path = format!("crate::{module}");
            let named = text
                .match_indices(&path)
                .any(|(at, _)| !text[at + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
            if named {
                offenders.push(format!("{} names {path}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "storage reaching up: {offenders:?}");
}

#[test]
fn no_source_or_test_file_is_over_600_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n})", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by responsibility: {long:?}");
}
