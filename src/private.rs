//! Files only billd's own user may read or write: the database (customers, amounts, card masks) and its side files, opened never through a symlink, refused if others could write them or the folders above them, and kept 0600 whatever the umask.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the files billd creates.
pub const MODE: u32 = 0o600;

/// Opens the file at `path` (read-only: the handle is for `fstat` and `flock`), creating it empty with mode 0600 if
/// it does not exist. Never through a symlink: a symlink at `path`, dangling or not, is an error that says so, and
/// nothing is created where it points (`O_NOFOLLOW`, and `O_EXCL` to create). Then the file opened (its `fstat`,
/// not the path) is checked: a regular file that group and others cannot write (refused if they could: rows they
/// wrote would be believed) nor read (read bits found for them are removed, on the open file). Its folder and every
/// folder above it must be safe from other users too ([`trusted_folder`]). SQLite creates a database's `-wal` and `-shm` files with the database file's
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

/// The checks [`open`] makes of `path`'s folder, for a caller that does not create the file (a listing of a book
/// not created yet): an error names what is wrong.
pub fn check_folder(path: &Path) -> Result<(), String> {
    trusted_folder(path).map(|_| ())
}

/// The owner of the database's folder, which must not be writable by group or others (another user could plant a
/// database there, or remove it and have every period billed again); a sticky folder (`/tmp`) is no better. Every
/// folder above it, up to `/` (as written and as resolved through symlinks), must be owned by root, billd's user or
/// the folder's owner, and not writable by group or others unless it is sticky (like `/tmp`, where only an entry's
/// owner may rename it): otherwise another user could move the folder away and put one of their own in its place.
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
    let owner = meta.uid();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let written = std::path::absolute(dir).map_err(|e| format!("{}: cannot read its folder: {e}", path.display()))?;
    let resolved =
        std::fs::canonicalize(dir).map_err(|e| format!("{}: cannot read its folder: {e}", path.display()))?;
    for above in written.ancestors().skip(1).chain(resolved.ancestors().skip(1)) {
        let m = std::fs::metadata(above)
            .map_err(|e| format!("{}: cannot read the folder {}: {e}", path.display(), above.display()))?;
        let (mode, by) = (m.mode() & 0o7777, m.uid());
        let why = if ![0, me, owner].contains(&by) {
            format!("it belongs to uid {by}, neither root, billd's user (uid {me}) nor the owner of the book's folder")
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            format!("other users can write it (mode {mode:04o}) and it is not sticky")
        } else {
            continue;
        };
        return Err(format!(
            "{}: the folder {} above it is not safe: {why}; another user could move the book's folder away and put \
             their own in its place. Keep the database under folders only root or billd's user can change (chmod \
             go-w, or +t like /tmp)",
            path.display(),
            above.display()
        ));
    }
    Ok(owner)
}

/// Checks a side file of the database (`-wal`, `-shm`, `-journal`) if it exists, without opening it (SQLite may
/// have it open in this process, and another descriptor of it, once closed, would drop SQLite's POSIX locks on it):
/// not a symlink (SQLite would refuse it with a vaguer error), a regular file, not writable by others (refused, as
/// the database is) and private (narrowed by path).
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
    if let Some(why) = writable_by_others(path, mode) {
        return Err(why);
    }
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

/// Why a file of the book with `mode` is refused, if its group or others can write it: what they wrote (a forged
/// 'paid' row) would be believed. Narrowing the mode would not undo what they may have written already.
fn writable_by_others(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o022 != 0).then(|| {
        format!(
            "{}: its mode {mode:04o} lets other users write it, so rows in it may not be billd's own (a forged 'paid' \
             row would be believed); billd does not use it. Check what it holds (another user may have changed it: \
             `sqlite3` shows it), then `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// The open file is a regular file that neither group nor others can write (refused), and that they cannot read
/// (read bits removed if they had them; the owner's bits are kept, so a read-only file stays read-only).
fn keep_private(file: &File, path: &Path) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| format!("{}: cannot read its mode: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mode = meta.mode() & 0o7777;
    if let Some(why) = writable_by_others(path, mode) {
        return Err(why);
    }
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

    /// Issue 24 hardening, F6a: a database other users could write is refused, not narrowed and used (rows they
    /// planted before would be believed: a forged 'paid' row answered "already paid").
    #[test]
    fn a_file_others_could_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("book");
        for m in [0o666, 0o620, 0o602, 0o660] {
            std::fs::write(&db, b"planted").unwrap();
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(m)).unwrap();
            let e = open(&db).expect_err(&format!("mode {m:o} was used"));
            assert!(e.contains(&format!("{m:04o}")) && e.contains("chmod 600"), "{e}");
            assert_eq!(mode(&db), m, "the mode was changed");
        }
        // A side file others could write is refused too.
        let wal = dir.path().join("book-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check_side_by_path(&wal).unwrap_err().contains("chmod 600"));
    }

    /// Issue 24 hardening, F6b: every folder above the database is checked, not only its own: a world-writable
    /// one (not sticky) lets another user swap the folder.
    #[test]
    fn a_folder_above_others_could_write_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let open_to_all = top.path().join("shared");
        let own = open_to_all.join("billd");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).unwrap();
        for m in [0o777, 0o775] {
            std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(m)).unwrap();
            let e = open(&own.join("book")).expect_err(&format!("an ancestor of mode {m:o} was trusted"));
            assert!(e.contains(&open_to_all.display().to_string()), "{e}");
        }
        assert!(!own.join("book").exists(), "nothing is created under an untrusted folder");
        // Sticky (like /tmp): only the owner of an entry may replace it.
        std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o1777)).unwrap();
        open(&own.join("book")).unwrap();
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
