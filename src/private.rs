//! Files only billd's own user may read: the database (customers, amounts, card masks) and its lock, created 0600 whatever the umask.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the files billd creates.
pub const MODE: u32 = 0o600;

/// Creates `path` empty with mode 0600 if it does not exist (the umask cannot widen it, nor narrow it below what
/// billd needs); an existing file is left as it is. SQLite creates a database's `-wal` and `-shm` files with the
/// database file's own mode, so creating the database file this way before SQLite opens it covers them too.
pub fn create(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(MODE).open(path) {
        // The umask has already been applied to MODE: set the mode exactly.
        Ok(file) => file.set_permissions(std::fs::Permissions::from_mode(MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_leaves_an_existing_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        create(&new).unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().permissions().mode() & 0o777, 0o600);
        let old = dir.path().join("old");
        std::fs::write(&old, b"data").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        create(&old).unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"data");
        assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o640);
    }
}
