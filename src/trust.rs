//! Files billd trusts (the config, secret files): read only when owned by root or billd's own user and writable by no one else, like sshd's StrictModes.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Reads the file at `path` (`what` names it in errors: "config file", "secret file") if it may be trusted: a
/// regular file owned by root or by the user billd runs as, that neither its group nor others can write. Anyone
/// else who can write it could point billd at another gateway or secret, so it is refused, saying which file and
/// why. The checks are of the file opened (its `fstat`), not of the path, so a file swapped in between is not read.
pub fn read(path: &Path, what: &str) -> Result<String, String> {
    let shown = path.display();
    // O_NONBLOCK: a FIFO planted at the path must not hold billd in open(2) (it is refused below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read the {what} {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read the {what} {shown}: {e}"))?;
    if let Some(why) = refusal(meta.is_file(), meta.uid(), meta.mode(), euid()) {
        return Err(format!("refusing the {what} {shown}: {why}"));
    }
    // At most MAX_BYTES, whatever the file says its size is (a /proc file says 0 and can hold far more): a path
    // naming the wrong file (`/proc/self/pagemap`, a disk image) is refused instead of filling the memory.
    let mut text = String::new();
    let read = file.take(MAX_BYTES + 1).read_to_string(&mut text);
    read.map_err(|e| format!("cannot read the {what} {shown}: {e}"))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!(
            "refusing the {what} {shown}: it holds more than {} MiB (is it the right file?)",
            MAX_BYTES >> 20
        ));
    }
    Ok(text)
}

/// The most billd reads of a config or secret file: 64 MiB (a config of several hundred thousand subscriptions).
pub const MAX_BYTES: u64 = 64 << 20;

/// A warning if the secret file `key` names (at `path`) can be read by users other than its owner: they have the
/// secret (`None`: it cannot, or it cannot be looked at now; reading it later says why). Like ssh's refusal of a
/// private key others can read, but a warning (`billd check` and every command's start say it), so that a
/// deployment that works keeps working.
pub fn readable_secret(key: &str, path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.mode();
    let readers = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (true, true) => "its group and every other user",
        (true, false) => "its group",
        (false, true) => "every other user",
        (false, false) => return None,
    };
    Some(format!(
        "{key} {}: its mode {:04o} lets {readers} read the secret; chmod 600 it (or use a systemd credential)",
        path.display(),
        mode & 0o7777
    ))
}

/// The user billd runs as.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a file with this owner and mode is not trusted by a process running as `me`, if it is not.
fn refusal(regular: bool, owner: u32, mode: u32, me: u32) -> Option<String> {
    if !regular {
        return Some("it is not a regular file".into());
    }
    if owner != 0 && owner != me {
        return Some(format!(
            "it is owned by uid {owner}, neither root nor the user billd runs as (uid {me}), so another user could \
             have written it; chown it to root or uid {me}"
        ));
    }
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and every other user",
        (true, false) => "its group",
        (false, true) => "every other user",
        (false, false) => return None,
    };
    Some(format!("its mode {:04o} lets {writers} write it; chmod go-w it", mode & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found trying the config fuzz target's inputs: `database_password_file = "/proc/self/pagemap"` was read until
    /// the memory ran out.
    #[test]
    fn a_file_larger_than_any_config_or_secret_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_BYTES + 1).unwrap();
        let e = read(&path, "secret file").unwrap_err();
        assert!(e.contains("more than 64 MiB") && e.contains("huge"), "{e}");
        f.set_len(MAX_BYTES).unwrap();
        assert_eq!(read(&path, "secret file").unwrap().len() as u64, MAX_BYTES);
    }

    #[test]
    fn owner_and_mode_rules() {
        let me = 1000;
        assert_eq!(refusal(true, me, 0o100644, me), None);
        assert_eq!(refusal(true, 0, 0o100600, me), None);
        assert_eq!(refusal(true, 0, 0o100444, 0), None);
        let other = refusal(true, 1001, 0o100600, me).unwrap();
        assert!(other.contains("uid 1001") && other.contains("uid 1000"), "{other}");
        assert!(refusal(true, 1001, 0o100600, 0).is_some(), "root must not trust another user's file");
        assert!(refusal(true, me, 0o100664, me).unwrap().contains("0664 lets its group write"));
        assert!(refusal(true, me, 0o100646, me).unwrap().contains("every other user"));
        assert!(refusal(false, me, 0o010600, me).unwrap().contains("not a regular file"));
    }

    #[test]
    fn reads_an_own_file_and_refuses_a_group_writable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "text").unwrap();
        let set = |m| std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        set(0o644);
        assert_eq!(read(&path, "config file").unwrap(), "text");
        set(0o664);
        let e = read(&path, "config file").unwrap_err();
        assert!(e.contains("refusing the config file") && e.contains(&path.display().to_string()), "{e}");
    }
}
