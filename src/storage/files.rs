//! Where an embedded database lives on disk, and making it private: the
//! data directory (0700) holds the database and the generated master key.

use std::path::{Path, PathBuf};

/// Creates `dir` and any missing parents readable by the owner only (0700):
/// the data directory holds the database and the generated master key. An
/// existing directory is left as it is (it may be the working directory).
#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// The directory of an SQLite database file, or None for Postgres and memory.
pub fn sqlite_data_dir(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let parent = Path::new(path).parent().map(Path::to_path_buf).unwrap_or_default();
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    })
}
