//! The throwaway PostgreSQL of the tests (tests/common/pg.rs): distinct empty databases on one cluster of this
//! process, run by an unprivileged user, and nothing of it left once the test binary has exited, panicked or been
//! killed.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a user's tables in the current database number (0 in a fresh one).
const USER_RELATIONS: &str = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'";

#[test]
fn two_databases_are_distinct_and_empty_on_one_cluster() {
    let Some(a) = pg::database() else { return };
    let Some(b) = pg::database() else { return };
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    assert_eq!(a.cluster().port(), b.cluster().port(), "one cluster per process");
    for db in [&a, &b] {
        assert!(db.url().starts_with("postgres://postgres@127.0.0.1:"), "{}", db.url());
        assert_eq!(db.sql("SELECT current_database()"), db.name(), "{} leads to its own database", db.url());
        assert_eq!(db.sql(USER_RELATIONS), "0", "{} is empty", db.name());
    }
    a.sql("CREATE TABLE book (id int PRIMARY KEY, note text); INSERT INTO book VALUES (1, 'only in a')");
    assert_eq!(a.sql("SELECT note FROM book"), "only in a");
    assert_eq!(a.sql("SELECT to_regclass('public.book') IS NOT NULL"), "t");
    assert_eq!(b.sql("SELECT to_regclass('public.book') IS NULL"), "t", "a's table is not in b");
    assert_eq!(b.sql(USER_RELATIONS), "0");
    // A third one is empty too (made from template0, not from a database a test wrote in).
    let Some(c) = pg::database() else { return };
    assert_eq!(c.sql(USER_RELATIONS), "0");
}

#[test]
fn the_cluster_is_its_own_and_runs_unprivileged() {
    let Some(db) = pg::database() else { return };
    let cluster = db.cluster();
    let data = cluster.data_dir();
    let root = unsafe { libc::geteuid() } == 0;
    let expected = if root { pg::nobody().unwrap().0 } else { unsafe { libc::geteuid() } };
    assert_eq!(cluster.uid(), expected);
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), expected, "owner of {}", data.display());
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
    assert_eq!(proc_uid(cluster.pid()), Some(expected), "the postmaster's uid");
    if root {
        assert_ne!(expected, 0, "as root, the cluster runs as nobody");
    }
    // The server we talk to is the one in our private directory, set up for throwaway use.
    assert_eq!(db.sql("SHOW data_directory"), data.display().to_string());
    assert_eq!(db.sql("SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(db.sql("SHOW port"), cluster.port().to_string());
    assert_eq!(db.sql("SHOW unix_socket_directories"), cluster.dir().join("sock").display().to_string());
    assert_eq!(db.sql("SHOW fsync"), "off");
    assert_eq!(db.sql("SHOW synchronous_commit"), "off");
    assert_eq!(db.sql("SHOW full_page_writes"), "off");
    assert_eq!(db.sql("SHOW TimeZone"), "UTC");
    assert_eq!(db.sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"), "t");
    let parent = cluster.dir().parent().unwrap();
    assert!(parent == Path::new("/dev/shm") || parent == std::env::temp_dir(), "{}", cluster.dir().display());
}

#[test]
fn nothing_remains_after_the_test_binary_exits() {
    let Some(_) = pg::database() else { return };
    let (status, seen) = child("exit", false);
    assert!(status.success(), "the child test passed");
    assert_gone(&seen, Duration::ZERO);
}

#[test]
fn nothing_remains_after_a_test_panicked() {
    let Some(_) = pg::database() else { return };
    let (status, seen) = child("panic", false);
    assert_eq!(status.code(), Some(101), "the child test failed");
    assert_gone(&seen, Duration::ZERO);
}

#[test]
fn nothing_remains_after_the_test_binary_is_killed() {
    let Some(_) = pg::database() else { return };
    // SIGKILL runs no exit hook: the watchdog sees its pipe close and stops the cluster on its own.
    let (status, seen) = child("hang", true);
    assert!(!status.success());
    assert_gone(&seen, Duration::from_secs(30));
}

/// Prints how long `database()` takes: the first of this process (it starts the cluster) and the next ones.
#[test]
fn timings() {
    let t0 = Instant::now();
    let Some(first) = pg::database() else { return };
    let first_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut next = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let db = pg::database().unwrap();
        next.push(format!("{:.0}", t.elapsed().as_secs_f64() * 1000.0));
        assert_eq!(db.sql("SELECT 1"), "1");
    }
    let c = first.cluster();
    println!(
        "pg harness: {}; this test's first database(): {first_ms:.0} ms (cluster start-up {:.0} ms, template {}); \
         next ones: {} ms",
        c.version(),
        c.started_in().as_secs_f64() * 1000.0,
        if c.template_was_cached() { "copied from the cache" } else { "built by initdb" },
        next.join(", ")
    );
}

/// Run by the tests above in a child process of this test binary (`BILLD_PG_HARNESS_CHILD`: exit, panic or hang):
/// starts a cluster, prints its postmaster's pid, its processes and its directory, then ends that way.
#[test]
#[ignore = "a child process of the nothing_remains_* tests"]
fn child_with_a_cluster() {
    let Ok(mode) = std::env::var("BILLD_PG_HARNESS_CHILD") else { return };
    let db = pg::database().expect("PostgreSQL (the parent test found it)");
    assert_eq!(db.sql("SELECT 1"), "1");
    let c = db.cluster();
    let pid = c.pid();
    // The postmaster and its long-lived background processes (not a backend, which may still be on its way out
    // after psql left, nor an autovacuum worker, which comes and goes).
    let background = ["checkpointer", "background writer", "walwriter", "launcher"];
    let mut pids: Vec<u32> =
        children_of(pid).into_iter().filter(|p| background.iter().any(|b| cmdline(*p).contains(b))).collect();
    assert!(pids.len() >= 3, "the postmaster has its background processes: {pids:?}");
    pids.push(pid);
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("CLUSTER {} {}", pids.join(","), c.dir().display());
    match mode.as_str() {
        "panic" => panic!("a test panics while the cluster runs"),
        "hang" => std::thread::sleep(Duration::from_secs(600)),
        _ => {}
    }
}

/// What a child saw of its cluster: its processes and its private directory.
struct Seen {
    pids: Vec<u32>,
    dir: PathBuf,
}

/// Runs `child_with_a_cluster` in a child test binary (SIGKILLed once it printed its cluster when `kill`).
fn child(mode: &str, kill: bool) -> (std::process::ExitStatus, Seen) {
    let c = Command::new(std::env::current_exe().unwrap())
        .args(["child_with_a_cluster", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("BILLD_PG_HARNESS_CHILD", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed if this test fails before it has waited for the child (a `hang` child would sleep on).
    let mut c = common::KillOnDrop(c);
    let mut seen = None;
    let mut out = String::new();
    for line in BufReader::new(c.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        out += &line;
        out.push('\n');
        // libtest prints `test child_with_a_cluster ... ` before it on the same line.
        if let Some((_, rest)) = line.split_once("CLUSTER ") {
            let (pids, dir) = rest.split_once(' ').unwrap();
            seen = Some(Seen { pids: pids.split(',').map(|p| p.parse().unwrap()).collect(), dir: dir.into() });
            for pid in &seen.as_ref().unwrap().pids {
                assert!(running(*pid), "pid {pid} runs while the child does");
            }
            if kill {
                c.0.kill().unwrap();
                break;
            }
        }
    }
    let status = c.0.wait().unwrap();
    (status, seen.unwrap_or_else(|| panic!("the child printed no CLUSTER line:\n{out}")))
}

/// Waits at most `grace` until none of the cluster's processes runs and its directory is gone.
fn assert_gone(seen: &Seen, grace: Duration) {
    let t0 = Instant::now();
    loop {
        let left: Vec<u32> = seen.pids.iter().copied().filter(|p| running(*p)).collect();
        let dir_left = seen.dir.exists();
        if left.is_empty() && !dir_left {
            return;
        }
        let stats: Vec<String> =
            left.iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default()).collect();
        assert!(
            t0.elapsed() <= grace,
            "after the child exited: postgres processes still run ({stats:?}), directory {} {}",
            seen.dir.display(),
            if dir_left { "still exists" } else { "removed" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a postgres process runs under this pid (an exited one not yet reaped, a zombie, does not count).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let comm = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(c, _)| c);
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    comm == Some("postgres") && !matches!(state, Some('Z' | 'X'))
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}
