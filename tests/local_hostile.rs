//! Issue 22, points 9, 10 and 12: a hostile local user. billd is never dumpable (its memory holds the imp_secret,
//! tokens and card data) and its unit forbids core dumps; it trusts no config or secret file that another user
//! could have written (a `./schedules.toml` planted in the working directory sent the real secret to the planter's
//! gateway); and it opens its database and side files never through a symlink, keeping them 0600.

mod common;

use common::{MONTHLY, Setup, World, cards, skip, sub, text};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

/// Another user, for files not billd's own (nobody).
const OTHER_UID: u32 = 65534;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn world() -> World {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-31")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w
}

const DUE: &str = "2025-01-31T10:00:00+09:00";

// ---- point 9: no core dumps -------------------------------------------------------------------------------------

/// A running billd is not dumpable: the kernel then gives its `/proc/PID` files to root whatever user it runs as.
/// Run as another user (nobody, through setpriv) when the test runs as root, so that the owner tells.
#[test]
fn a_running_billd_is_not_dumpable() {
    let bin = assert_cmd::cargo::cargo_bin("billd");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = if root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            skip("running as root and setpriv (util-linux) is missing, so billd cannot be run as another user");
            return;
        }
        // The binary where nobody can reach it (the build folder is under root's home).
        chmod(dir.path(), 0o755);
        let copy = dir.path().join("billd");
        if std::fs::hard_link(&bin, &copy).is_err() {
            std::fs::copy(&bin, &copy).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &OTHER_UID.to_string(), "--regid", &OTHER_UID.to_string(), "--clear-groups"]).arg(copy);
        c
    } else {
        Command::new(&bin)
    };
    let mut child = cmd
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .env_remove("BILLD_SANDBOX_IMP_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once it has printed its address it is well past main's first line.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let status = std::path::PathBuf::from(format!("/proc/{}/status", child.id()));
    let uid_line = std::fs::read_to_string(&status).unwrap().lines().find(|l| l.starts_with("Uid:")).map(String::from);
    let owner = std::fs::metadata(&status).unwrap().uid();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("API at http://"), "the sandbox did not start: {line}");
    let runs_as: u32 = uid_line.as_deref().and_then(|l| l.split_whitespace().nth(2)).unwrap().parse().unwrap();
    assert_ne!(runs_as, 0, "billd ran as root, so the owner of /proc/PID tells nothing: {uid_line:?}");
    assert_eq!(
        owner, 0,
        "/proc/PID/status of a billd running as uid {runs_as} is owned by uid {owner}: it is dumpable"
    );
}

#[test]
fn the_unit_forbids_core_dumps() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/billd.service")).unwrap();
    let service = unit.split("[Service]").nth(1).and_then(|s| s.split("\n[").next()).unwrap();
    assert!(service.lines().any(|l| l.trim() == "LimitCORE=0"), "no LimitCORE=0 in [Service]:\n{service}");
}

// ---- point 10: config and secret files only from trusted owners --------------------------------------------------

/// A file owned by another user, or `None` (reported as skipped) where the test cannot make one.
fn give_away(path: &Path) -> Option<()> {
    if !root() {
        skip("not root, so a file owned by another user cannot be made");
        return None;
    }
    std::os::unix::fs::chown(path, Some(OTHER_UID), None).unwrap();
    Some(())
}

fn assert_refused(out: &std::process::Output, file: &Path, why: &str) {
    let said = text(out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("refusing the") && said.contains(&file.display().to_string()), "{said}");
    assert!(said.contains(why), "no {why:?} in: {said}");
}

#[test]
fn a_config_file_others_can_write_is_refused_and_one_of_root_or_billd_is_read() {
    let w = world();
    chmod(&w.config, 0o644);
    let ok = w.billd().arg("check").output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    chmod(&w.config, 0o664);
    assert_refused(&w.billd().arg("check").output().unwrap(), &w.config, "0664 lets its group write");
    chmod(&w.config, 0o646);
    let out = w.billd().args(["tick", "--as-of", DUE]).output().unwrap();
    assert_refused(&out, &w.config, "every other user");
    assert!(w.requests().is_empty(), "a refused config still sent requests: {:?}", w.requests());
    chmod(&w.config, 0o644);
    if give_away(&w.config).is_none() {
        return;
    }
    assert_refused(&w.billd().arg("check").output().unwrap(), &w.config, &format!("owned by uid {OTHER_UID}"));
}

/// The attack of the issue: an unprivileged user plants `./schedules.toml` pointing `imp_secret_file` at the real
/// secret and `base_url` at their own gateway; root runs `billd customers show` in that folder. billd refuses the
/// planted file, and nothing reaches the planter's gateway.
#[test]
fn a_planted_schedules_toml_in_the_working_directory_is_refused() {
    let w = world();
    let real_secret = w.dir.path().join("real_secret");
    std::fs::write(&real_secret, "imp_sandbox_secret\n").unwrap();
    chmod(&real_secret, 0o600);
    let planted_dir = w.dir.path().join("home-of-mallory");
    std::fs::create_dir(&planted_dir).unwrap();
    let planted = planted_dir.join("schedules.toml");
    let text_of = std::fs::read_to_string(&w.config).unwrap().replace(
        "imp_key = \"imp_sandbox_key\"",
        &format!("imp_key = \"imp_sandbox_key\"\nimp_secret_file = {:?}", real_secret.display().to_string()),
    );
    std::fs::write(&planted, text_of).unwrap();
    if give_away(&planted).is_none() {
        return;
    }
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .current_dir(&planted_dir)
        .args(["customers", "show", "c1"])
        .env_remove("BILLD_CONFIG")
        .env_remove("BILLD_GATEWAY__IMP_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refusing the config file") && text(&out).contains("schedules.toml"), "{}", text(&out));
    assert!(w.requests().is_empty(), "the planted config reached its gateway: {:?}", w.requests());
}

#[test]
fn a_secret_file_others_can_write_is_refused() {
    let w = world();
    let secret = w.dir.path().join("imp_secret");
    std::fs::write(&secret, "imp_sandbox_secret\n").unwrap();
    let with_file = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("imp_key = \"imp_sandbox_key\"", "imp_key = \"imp_sandbox_key\"\nimp_secret_file = \"imp_secret\"");
    let without_file = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, with_file).unwrap();
    // The secret from a file only (gateway.imp_secret_file, or the systemd credential in `creds`).
    let creds = tempfile::tempdir().unwrap();
    let billd = |args: &[&str]| {
        w.billd()
            .env_remove("BILLD_GATEWAY__IMP_SECRET")
            .env("CREDENTIALS_DIRECTORY", creds.path())
            .args(args)
            .output()
            .unwrap()
    };
    chmod(&secret, 0o620);
    assert_refused(&billd(&["tick", "--as-of", DUE]), &secret, "0620 lets its group write");
    assert!(w.requests().is_empty(), "{:?}", w.requests());
    // The systemd credential is read the same way.
    std::fs::write(&w.config, without_file).unwrap();
    let credential = creds.path().join("imp_secret");
    std::fs::write(&credential, "imp_sandbox_secret").unwrap();
    chmod(&credential, 0o602);
    assert_refused(&billd(&["tick", "--as-of", DUE]), &credential, "every other user");
    assert!(w.requests().is_empty(), "{:?}", w.requests());
    // billd's own 0600 file is read, and billing goes on.
    chmod(&credential, 0o600);
    let out = billd(&["tick", "--as-of", DUE]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.paid_for("c1").len(), 1);
    if give_away(&credential).is_none() {
        return;
    }
    assert_refused(&billd(&["customers", "show", "c1"]), &credential, &format!("owned by uid {OTHER_UID}"));
}

// ---- point 12: the database never through a symlink, always 0600 ------------------------------------------------

#[test]
fn a_symlink_at_the_database_path_is_refused_and_nothing_is_created_where_it_points() {
    let w = world();
    let db = w.dir.path().join("billd.sqlite3");
    let elsewhere = w.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.join("book.sqlite3");
    std::os::unix::fs::symlink(&target, &db).unwrap();
    let out = w.billd().args(["tick", "--as-of", DUE]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is a symlink") && text(&out).contains(&db.display().to_string()), "{}", text(&out));
    assert!(!target.exists(), "a database was created where the dangling symlink points");
    // A symlink to an existing file, readable by others: refused too, and the file is left as it was.
    std::fs::write(&target, b"").unwrap();
    chmod(&target, 0o644);
    let out = w.billd().arg("subscriptions").output().unwrap();
    assert!(!out.status.success() && text(&out).contains("is a symlink"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
    assert!(w.requests().is_empty(), "{:?}", w.requests());
}

#[test]
fn a_symlink_at_a_side_file_is_refused_and_an_open_database_is_0600() {
    let w = world();
    let db = w.dir.path().join("billd.sqlite3");
    // A database left readable by others (copied in, made by hand): narrowed to 0600 when billd opens it.
    std::fs::write(&db, b"").unwrap();
    chmod(&db, 0o644);
    let out = w.billd().args(["tick", "--as-of", DUE]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.paid_for("c1").len(), 1);
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o600, "the database stayed readable by others");
    // A dangling symlink planted as the write-ahead log.
    let wal = w.dir.path().join("billd.sqlite3-wal");
    let _ = std::fs::remove_file(&wal);
    let target = w.dir.path().join("stolen-wal");
    std::os::unix::fs::symlink(&target, &wal).unwrap();
    let out = w.billd().arg("subscriptions").output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is a symlink") && text(&out).contains("billd.sqlite3-wal"), "{}", text(&out));
    assert!(!target.exists(), "a log was created where the symlink points");
}

/// Issue 22, point 14 (its second half): every field of every log line is escaped, whatever its origin. A config
/// kept in a folder whose name holds a newline and a forged `charge.paid` line used to split the log lines that
/// quote the file (the sync's refusal here), forging a line; now a line stays one line.
#[test]
fn no_field_of_a_log_line_can_forge_another_line() {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2020-01-01")),
        ..Default::default()
    });
    let forged = "2026-01-01T00:00:00.000Z  INFO charge.paid event=\"charge.paid\" subscription=FORGED";
    let dir = w.dir.path().join(format!("x\n{forged}\u{1b}[2J"));
    std::fs::create_dir(&dir).unwrap();
    let config = dir.join("schedules.toml");
    std::fs::copy(&w.config, &config).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .arg("--config")
        .arg(&config)
        .args(["tick", "--as-of", "2020-03-01T10:00:00+09:00"])
        .env("BILLD_GATEWAY__IMP_SECRET", "imp_sandbox_secret")
        .env("BILLD_LOG", "info")
        .env_remove("BILLD_CONFIG")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("FORGED"), "the path was not logged at all, the test proves nothing: {log}");
    for line in log.lines() {
        assert!(!line.starts_with("2026-01-01T00:00:00.000Z"), "a forged line: {log}");
        assert!(!line.contains('\u{1b}'), "a terminal escape reached the log: {log:?}");
    }
}

/// A review of issue 22: a database another user pre-created in a folder everyone can write (`/tmp`) was used as
/// the book, so that user could plant subscriptions and read or change the book. The database's folder must be
/// writable by billd's user only, and the book must belong to billd's user, root, or the folder's owner.
#[test]
fn a_book_in_a_shared_folder_or_of_another_user_is_refused() {
    let w = world();
    let shared = w.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let body = format!("database = \"{}\"\n", shared.join("billd.sqlite3").display());
    let text_now = std::fs::read_to_string(&w.config).unwrap().replace("database = \"billd.sqlite3\"\n", &body);
    std::fs::write(&w.config, &text_now).unwrap();
    let out = w.billd().arg("subscriptions").output().unwrap();
    assert!(!out.status.success() && text(&out).contains("can be written by other users"), "{}", text(&out));
    assert!(!shared.join("billd.sqlite3").exists(), "a book was created in the shared folder");
    // A private folder, but a book that belongs to another user.
    chmod(&shared, 0o700);
    std::fs::write(shared.join("billd.sqlite3"), b"").unwrap();
    if give_away(&shared.join("billd.sqlite3")).is_none() {
        return;
    }
    let out = w.billd().arg("subscriptions").output().unwrap();
    assert!(!out.status.success() && text(&out).contains("belongs to uid"), "{}", text(&out));
}
