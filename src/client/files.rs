//! Writing the token where the caller wants it: appended to a file
//! ($GITHUB_OUTPUT), or replacing a file atomically as a private file that no
//! link planted at its name can redirect.

use std::io::Write;
use std::path::Path;

use super::FetchError;

pub(super) fn append(path: &Path, line: &str) -> Result<(), FetchError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| FetchError::Output(format!("{}: {e}", path.display())))?;
    f.write_all(line.as_bytes())
        .map_err(|e| FetchError::Output(format!("{}: {e}", path.display())))
}

/// Writes `content` to a new owner-only file beside `path` and renames it
/// over `path`, so the token is never readable by others, even briefly, and
/// whatever a link at `path` points at is never written to.
pub(super) fn write_private(path: &Path, content: &str) -> Result<(), FetchError> {
    let fail = |e: std::io::Error| FetchError::Output(format!("{}: {e}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(FetchError::Output(format!(
                "{}: is a symbolic link; refusing to write the token through it",
                path.display()
            )));
        }
        Ok(m) if !m.is_file() => {
            return Err(FetchError::Output(format!("{}: is not a regular file", path.display())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let name = path
        .file_name()
        .ok_or_else(|| FetchError::Output(format!("{}: not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let tmp = dir.join(tmp_name);

    let mut options = std::fs::OpenOptions::new();
    // create_new: never open something already there (nor follow a link planted at the name).
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let f = options.open(&tmp).map_err(fail)?;
    if let Err(e) = fill_and_rename(f, content, &tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    // Make the rename itself durable; failing here loses nothing written.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn fill_and_rename(mut f: std::fs::File, content: &str, tmp: &Path, path: &Path) -> std::io::Result<()> {
    // The umask may have narrowed the mode; fix it on the handle, not by name.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    drop(f);
    // rename replaces a link at `path` rather than following it.
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::write_private;

    #[cfg(unix)]
    #[test]
    fn the_env_file_is_replaced_by_a_private_file_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mayfly-client-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = crate::testing::TempDir(dir.clone());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let target = dir.join("elsewhere");
        std::fs::write(&target, "precious\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("link.env");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_private(&link, "MAYFLY_TOKEN=t\n").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(mode(&target), 0o644);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());

        let existing = dir.join("existing.env");
        std::fs::write(&existing, "old\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&existing, "MAYFLY_TOKEN=t\n").unwrap();
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "MAYFLY_TOKEN=t\n");
        assert_eq!(mode(&existing), 0o600);

        let fresh = dir.join("fresh.env");
        write_private(&fresh, "MAYFLY_TOKEN=u\n").unwrap();
        assert_eq!(mode(&fresh), 0o600);

        assert!(
            write_private(&dir, "MAYFLY_TOKEN=t\n").is_err(),
            "a directory is not replaced"
        );
        // No temporary files are left behind.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["elsewhere", "existing.env", "fresh.env", "link.env"]);
    }
}
