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

/// The SQLite database file a URL names, or None for Postgres and memory.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
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

/// Held while a server runs on an SQLite database: a second process on the
/// same data directory is refused (SQLite is one node; two servers would
/// each believe their in-memory catalog and key ring). Released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Locks the data directory of an SQLite `url` (None for Postgres and memory).
pub fn lock_sqlite_dir(url: &str) -> Result<Option<DataDirLock>, String> {
    let Some(dir) = sqlite_data_dir(url) else {
        return Ok(None);
    };
    create_private_dir(&dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join("mayfly.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(DataDirLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another mayfly process is serving the SQLite database in {} (it holds {}); \
             SQLite is for one node: use Postgres for replicas",
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}
