//! Storage faults: the database locked by another process, a read-only database file, a full disk (a file-size
//! limit, hit at many different points of a pass), a database from a newer schema version. Each time: a non-zero
//! exit with a clear error naming the database, no charge at the gateway without its intent committed first, and
//! nothing lost: once the fault is removed, one pass charges exactly what was due, once.

mod common;

use common::{MONTHLY, Setup, World, cards, skip, sub};
use std::collections::BTreeSet;
use std::process::{Command, Output};

const BEFORE: &str = "2024-12-31T10:00:00+09:00";
const DUE: &str = "2025-01-01T10:00:00+09:00";
const QUIET_OVER: &str = "2025-01-01T10:00:03+09:00";

fn world(n: usize) -> World {
    let mut body = MONTHLY.to_string();
    for i in 0..n {
        body += &sub(&format!("s{i:02}"), &format!("c{i:02}"), "monthly", "2025-01-01");
    }
    // A 1 s gateway timeout: the quiet period is 2 s of real time ([`World::wait_quiet`]).
    let w = World::new(Setup { body: &body, timeout: "1s", ..Default::default() });
    for i in 0..n {
        w.sandbox.register_customer(&format!("c{i:02}"), cards::APPROVE).unwrap();
    }
    // A first pass before anything is due creates the database and the subscriptions.
    w.tick(BEFORE);
    assert!(w.requests().is_empty());
    w
}

fn db_path(w: &World) -> String {
    w.dir.path().join("billd.sqlite3").display().to_string()
}

/// `billd tick --as-of DUE` run through a wrapper (`prefix` then the billd command line and environment).
fn tick_via(w: &World, prefix: &[&str]) -> Output {
    let mut inner = w.billd();
    inner.args(["tick", "--as-of", DUE]);
    let mut c = Command::new(prefix[0]);
    c.args(&prefix[1..]).arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

fn assert_refused(w: &World, out: &Output, why: &str) {
    let stderr = World::stderr(out);
    assert!(!out.status.success(), "the pass ran despite {why}: {stderr}");
    assert!(stderr.contains(&db_path(w)), "{why}: the error does not name the database: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every charge at the gateway has its intent row in the database.
fn assert_intents_first(w: &World) {
    let db = w.db();
    let mut st = db.prepare("SELECT merchant_uid FROM attempts").unwrap();
    let intents: BTreeSet<String> = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    for e in w.ledger() {
        assert!(intents.contains(&e.merchant_uid), "{} was charged without a committed intent", e.merchant_uid);
    }
}

/// After the fault, passes charge every due period exactly once: the first settles by lookup what the failed pass
/// sent and charges the rest; what that pass left pending with no record at the gateway is resent once the quiet
/// period (twice the 1 s gateway timeout, in real time) is over.
fn assert_nothing_lost(w: &World, n: usize) {
    w.tick(DUE);
    w.wait_quiet();
    w.tick(QUIET_OVER);
    let want: BTreeSet<String> = (0..n).map(|i| format!("billd-s{i:02}-0")).collect();
    let paid: BTreeSet<String> = w.paid_by_merchant_uid().into_keys().collect();
    assert_eq!(paid, want);
    let sent = w.sent_by_merchant_uid();
    assert_eq!(sent.keys().cloned().collect::<BTreeSet<_>>(), want, "requests for other merchant_uids");
    assert!(sent.values().all(|&k| k == 1), "one `again` per period: {sent:?}");
    w.assert_consistent();
}

#[test]
fn a_database_locked_by_another_process_sends_nothing() {
    let w = world(3);
    let holder = w.db();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = w.billd().args(["tick", "--as-of", DUE]).output().unwrap();
    assert_refused(&w, &out, "a locked database");
    assert!(World::stderr(&out).contains("database is locked"), "{}", World::stderr(&out));
    assert!(w.requests().is_empty(), "sent while the database could not record it: {:?}", w.requests());
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_nothing_lost(&w, 3);
}

#[test]
fn a_read_only_database_file_sends_nothing() {
    let w = world(3);
    let path = w.dir.path().join("billd.sqlite3");
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&path, perms.clone()).unwrap();
    // Root ignores file modes: run billd without the capability that lets it (CAP_DAC_OVERRIDE).
    let privileged = std::fs::OpenOptions::new().append(true).open(&path).is_ok();
    let out = if privileged {
        if Command::new("setpriv").arg("--version").output().is_err() {
            skip("running as root and setpriv (util-linux) is missing, so a read-only file cannot be simulated");
            return;
        }
        tick_via(&w, &["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"])
    } else {
        w.billd().args(["tick", "--as-of", DUE]).output().unwrap()
    };
    assert_refused(&w, &out, "a read-only database");
    assert!(
        World::stderr(&out).contains("readonly") || World::stderr(&out).contains("read-only"),
        "{}",
        World::stderr(&out)
    );
    assert!(w.requests().is_empty(), "{:?}", w.requests());
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&path, perms).unwrap();
    assert_nothing_lost(&w, 3);
}

/// A full disk, simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored so writes fail with EFBIG):
/// from 512 bytes up, so it strikes at the database open, at opening periods, at the intent commit and while
/// recording outcomes. Wherever it strikes, no charge goes out without its intent and recovery loses nothing.
#[test]
fn a_full_disk_at_any_point_of_a_pass_loses_nothing() {
    const N: usize = 40;
    let mut failed = 0;
    let mut charged_then_failed = 0;
    for blocks in [1, 64, 100, 108, 116, 124, 128, 160, 260, 4000] {
        let w = world(N);
        let script = format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$@\"");
        let out = tick_via(&w, &["sh", "-c", &script, "sh"]);
        let stderr = World::stderr(&out);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let at_gateway = w.ledger().len();
        println!(
            "limit {} KiB: exit {}, {at_gateway} charged; {}",
            blocks / 2,
            out.status,
            stderr.lines().last().unwrap_or("")
        );
        if !out.status.success() {
            failed += 1;
            assert_refused(&w, &out, "a full disk");
            if at_gateway > 0 {
                charged_then_failed += 1;
            }
        }
        assert_intents_first(&w);
        assert_nothing_lost(&w, N);
    }
    assert!(failed >= 3, "the file-size limit made only {failed} passes fail");
    println!("{failed} passes failed, {charged_then_failed} of them after charges had gone out");
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let w = world(2);
    w.db().pragma_update(None, "user_version", 99).unwrap();
    let out = w.billd().args(["tick", "--as-of", DUE]).output().unwrap();
    assert_refused(&w, &out, "a newer schema");
    assert!(
        World::stderr(&out).contains("schema version 99 is newer than this billd understands"),
        "{}",
        World::stderr(&out)
    );
    assert!(w.requests().is_empty());
    let listing = w.billd().arg("charges").output().unwrap();
    assert!(!listing.status.success(), "a listing command must not read a database it does not understand");
    w.db().pragma_update(None, "user_version", billd::store::SCHEMA_VERSION as i64).unwrap();
    assert_nothing_lost(&w, 2);
}

/// A billd command run through `sh -c 'umask MASK; exec …'`, with the world's environment.
fn with_umask(w: &World, mask: &str, args: &[&str]) -> Command {
    let mut inner = w.billd();
    inner.args(args);
    let mut c = Command::new("sh");
    c.args(["-c", &format!("umask {mask} && exec \"$@\""), "sh"]).arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The database (customers, amounts, card masks), its `-wal` and `-shm` are created 0600 whatever the umask: under
/// umask 022 they used to be 0644, readable by every user of the machine. (The scheduler lock is taken on the
/// database file itself: there is no side file.)
#[test]
fn database_files_are_created_private_whatever_the_umask() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s0", "c0", "monthly", &yesterday)),
        ..Default::default()
    });
    w.sandbox.register_customer("c0", cards::APPROVE).unwrap();
    // The daemon, while it runs: all four files exist.
    let mut child = with_umask(&w, "022", &["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    while w.paid_for("c0").is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "the daemon charged nothing");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let db = w.dir.path().join("billd.sqlite3");
    let files: Vec<std::path::PathBuf> =
        ["", "-wal", "-shm"].iter().map(|s| db.with_file_name(format!("billd.sqlite3{s}"))).collect();
    let modes: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.file_name().unwrap().to_string_lossy().into_owned(), format!("{:o}", mode(f))))
        .collect();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    for (name, m) in &modes {
        assert_eq!(m, "600", "{name} under umask 022: {modes:?}");
    }
    // The most permissive umask, with a one-shot pass on a new database.
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    let out = with_umask(&w, "000", &["tick", "--as-of", DUE]).output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    assert!(!w.dir.path().join("billd.sqlite3.lock").exists(), "no side lock file");
    let m = mode(&w.dir.path().join("billd.sqlite3"));
    assert_eq!(m, 0o600, "billd.sqlite3 is {m:o} under umask 000");
}
