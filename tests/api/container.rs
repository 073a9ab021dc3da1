//! The container image: no engine runs here, so the Dockerfile is read. Every
//! path the build needs (what `include_str!` and `sqlx::migrate!` compile in,
//! what Cargo.toml names) is copied into the build stage, and the runtime
//! stage runs as its own user in a directory it may write (the SQLite default
//! and a generated master key live there).

use std::path::PathBuf;

use crate::house::rust_files;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first string literal after each `marker` in `text`.
fn literals_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = &text[i + marker.len()..];
            let start = rest.find('"')? + 1;
            let len = rest[start..].find('"')?;
            Some(&rest[start..start + len])
        })
        .collect()
}

/// Every path under the repository the release build reads, relative to its root.
fn paths_the_build_reads() -> Vec<String> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string(), "src".to_string()];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for lit in literals_after(&text, "include_str!(") {
            // `include_str!(concat!("../../console/js/", $file))` reads a directory's files.
            let resolved = file.parent().unwrap().join(lit);
            let resolved = std::path::absolute(&resolved).unwrap();
            let normal: PathBuf = resolved.components().fold(PathBuf::new(), |mut p, c| {
                match c {
                    std::path::Component::ParentDir => {
                        p.pop();
                    }
                    other => p.push(other),
                }
                p
            });
            needed.push(normal.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
        }
        needed.extend(literals_after(&text, "sqlx::migrate!(").into_iter().map(str::to_string));
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for bench in literals_after(&manifest, "[[bench]]\nname = ") {
        needed.push(format!("benches/{bench}.rs"));
    }
    needed
}

#[test]
fn the_image_build_copies_every_path_the_build_reads_and_runs_unprivileged_in_a_writable_directory() {
    let dockerfile = format!("\n{}", std::fs::read_to_string(root().join("Dockerfile")).unwrap());
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let copied: Vec<&str> = stages[0]
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .map(|p| p.trim_end_matches('/'))
        .collect();
    let needed = paths_the_build_reads();
    assert!(
        needed.iter().any(|p| p.starts_with("console/")),
        "the console is compiled in: {needed:?}"
    );
    assert!(
        needed.iter().any(|p| p.starts_with("benches/")),
        "Cargo.toml names a bench: {needed:?}"
    );
    let missing: Vec<&String> = needed
        .iter()
        .filter(|p| !copied.iter().any(|c| p == c || p.starts_with(&format!("{c}/"))))
        .collect();
    assert!(
        missing.is_empty(),
        "the build stage does not copy {missing:?} (it copies {copied:?})"
    );

    let runtime = stages[1];
    let user = runtime.find("\nUSER mayfly").expect("the runtime runs as its own user");
    let workdir = runtime
        .find("\nWORKDIR /var/lib/mayfly")
        .expect("a working directory for the data");
    assert!(workdir > user, "the working directory is set for the mayfly user");
    assert!(
        runtime.contains("install -d -o mayfly -g mayfly -m 0700 /var/lib/mayfly"),
        "the mayfly user owns its working directory"
    );
}
