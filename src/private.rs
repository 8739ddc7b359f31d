//! Files only billd's own user may read: the database (customers, amounts, card masks) and its side files, opened never through a symlink and kept 0600 whatever the umask.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the files billd creates.
pub const MODE: u32 = 0o600;

/// Opens the file at `path` (read-only: the handle is for `fstat` and `flock`), creating it empty with mode 0600 if
/// it does not exist. Never through a symlink: a symlink at `path`, dangling or not, is an error that says so, and
/// nothing is created where it points (`O_NOFOLLOW`, and `O_EXCL` to create). Then the file opened (its `fstat`,
/// not the path) is checked: a regular file, that group and others can neither read nor write (bits found for them
/// are removed, on the open file). SQLite creates a database's `-wal` and `-shm` files with the database file's
/// own mode, so a database opened this way before SQLite opens it gets 0600 side files too.
pub fn open(path: &Path) -> Result<File, String> {
    let folder = trusted_folder(path)?;
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(MODE).custom_flags(flags).open(path) {
                Ok(_) => {}
                // Another process created it meanwhile: open what it created, checked as below.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(failed(path, &e, "create")),
            }
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)
                .map_err(|e| failed(path, &e, "open"))?
        }
        Err(e) => return Err(failed(path, &e, "open")),
    };
    keep_private(&file, path)?;
    // Like the config (`crate::trust`): a book another user owns is theirs to read and change. Its owner is billd's
    // own user, root, or the owner of its folder (the service's user, when root runs a command on its book).
    let owner = file.metadata().map_err(|e| format!("{}: cannot read its owner: {e}", path.display()))?.uid();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if owner != me && owner != 0 && owner != folder {
        return Err(format!(
            "{} belongs to uid {owner}, not to billd's user (uid {me}), root, or the owner of its folder: another \
             user could read or change the book; chown it, or point billing.database at billd's own file",
            path.display()
        ));
    }
    Ok(file)
}

/// The owner of the database's folder, which must not be writable by group or others (another user could plant a
/// database there, or remove it and have every period billed again); a sticky folder (`/tmp`) is no better.
fn trusted_folder(path: &Path) -> Result<u32, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: cannot read its folder: {e}", path.display()))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{}: its folder {} can be written by other users (mode {mode:04o}): they could plant or remove the book; \
             keep the database in a folder only billd's user can write (the unit's StateDirectory, /var/lib/billd)",
            path.display(),
            dir.display()
        ));
    }
    Ok(meta.uid())
}

/// Checks a side file of the database (`-wal`, `-shm`, `-journal`) if it exists, without opening it (SQLite may
/// have it open in this process, and another descriptor of it, once closed, would drop SQLite's POSIX locks on it):
/// not a symlink (SQLite would refuse it with a vaguer error), a regular file, and private (narrowed by path).
pub fn check_side_by_path(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(path, &e, "read")),
    };
    if meta.file_type().is_symlink() {
        return Err(failed(path, &io::Error::from_raw_os_error(libc::ELOOP), "open"));
    }
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|e| format!("{}: its mode {mode:04o} lets other users read it: {e}", path.display()))?;
    }
    Ok(())
}

/// Why `doing` (open, create) failed at `path`: a symlink (`ELOOP` from `O_NOFOLLOW`, or `O_EXCL` meeting a
/// dangling one) is said as such.
fn failed(path: &Path, e: &io::Error, doing: &str) -> String {
    let symlink = e.raw_os_error() == Some(libc::ELOOP)
        || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !symlink {
        return format!("{}: cannot {doing}: {e}", path.display());
    }
    format!(
        "{} is a symlink: billd opens its database and side files only at their own path (a symlink could make it \
         create or use a file elsewhere, readable by others); set billing.database to the real file",
        path.display()
    )
}

/// The open file is a regular file and neither group nor others have any access to it (removed if they had; the
/// owner's bits are kept, so a read-only file stays read-only).
fn keep_private(file: &File, path: &Path) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| format!("{}: cannot read its mode: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        let narrowed = mode & 0o700;
        file.set_permissions(std::fs::Permissions::from_mode(narrowed)).map_err(|e| {
            format!("{}: its mode {mode:04o} lets other users read it, and it cannot be narrowed: {e}", path.display())
        })?;
        tracing::warn!(event = "file.mode", file = %path.display(),
            "file.mode: {} had mode {mode:04o} (other users could read it); narrowed to {narrowed:04o}",
            path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_0600_and_narrows_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        open(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old");
        std::fs::write(&old, b"data").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        open(&old).unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"data");
        assert_eq!(mode(&old), 0o600);
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o444)).unwrap();
        open(&old).unwrap();
        assert_eq!(mode(&old), 0o400, "a read-only file stays read-only");
    }

    #[test]
    fn never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open(&link).unwrap_err();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(!target.exists(), "a file was created where the dangling symlink points");
        std::fs::write(&target, b"").unwrap();
        assert!(open(&link).unwrap_err().contains("is a symlink"));
        assert!(check_side_by_path(&link).unwrap_err().contains("is a symlink"));
        assert_eq!(check_side_by_path(&dir.path().join("absent")), Ok(()));
    }
}
