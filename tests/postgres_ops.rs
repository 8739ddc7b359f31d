//! Issue 27: operating billd on a PostgreSQL book (a throwaway cluster the test starts: `tests/common/pg.rs`), with
//! the real binary and the sandbox: a tick beside a daemon, and what happens when the server ends the session that
//! held its lock.

mod common;
#[path = "common/pg.rs"]
mod pg;

use common::{MONTHLY, Setup, World, cards, sub, text, wait_for};
use std::process::{Command, Stdio};

/// The scheduler's lock on a PostgreSQL book is its session's: an outside review ended that session (a failover,
/// a restart, an idle timeout do the same) and a second `tick` charged beside the running daemon, which then took
/// the lock back without a word. The daemon now stops as soon as it finds its connection gone, saying why.
#[test]
fn a_daemon_whose_session_is_ended_stops_saying_it_lost_the_scheduler_lock() {
    let Some(db) = pg::database() else { return };
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let log = w.dir.path().join("run.log");
    let mut daemon = w
        .billd()
        .env("BILLD_BILLING__DATABASE", db.url())
        .args(["run", "--as-of", "2025-01-10T10:00:00+09:00", "--simulate"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let tick = || {
        w.billd()
            .env("BILLD_BILLING__DATABASE", db.url())
            .args(["tick", "--simulate", "--as-of", "2025-01-10T10:00:00+09:00"])
            .output()
            .unwrap()
    };
    wait_for("the daemon's first charge", || w.paid_for("c1").len() == 1);
    // Several daemons share a PostgreSQL book (issue 27): a tick beside the daemon runs, and charges nothing twice.
    let beside = tick();
    assert!(beside.status.success(), "a tick beside the daemon: {}", text(&beside));
    assert_eq!(w.paid_for("c1").len(), 1, "January charged once");

    let ended =
        db.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'billd' AND datname = current_database()");
    assert_ne!(ended, "0", "the daemon's sessions were found and ended");
    // The daemon looks at the book at once on a reload.
    let hup = Command::new("kill").args(["-HUP", &daemon.id().to_string()]).status().unwrap();
    assert!(hup.success());
    wait_for("the daemon to stop", || daemon.try_wait().unwrap().is_some());
    let status = daemon.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("scheduler.lost") && said.contains("lost"), "{said}");
    assert!(!said.contains("config.refused"), "not mistaken for a refused config: {said}");
    assert_eq!(w.paid_for("c1").len(), 1, "January charged once");
}

/// An outside review cut billd's connection between a transaction's last statement and its COMMIT: billd sent the
/// COMMIT on a new session, where the server answered "no transaction in progress", and took it as done: `cancel`
/// said "canceled", the book still said active, and the next period was charged. A connection lost in a
/// transaction is now an error, and what billd says is what the book holds.
#[test]
fn a_connection_lost_before_a_commit_is_an_error_never_a_commit_on_a_new_session() {
    let Some(db) = pg::database() else { return };
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let on_pg = |c: &mut Command| {
        c.env("BILLD_BILLING__DATABASE", db.url());
    };
    let mut tick = w.billd();
    on_pg(&mut tick);
    assert!(tick.args(["tick", "--simulate", "--as-of", "2025-01-10T10:00:00+09:00"]).status().unwrap().success());

    let gate = w.dir.path().join("gate");
    let reached = w.dir.path().join("gate.reached");
    let mut cancel = w.billd();
    on_pg(&mut cancel);
    let cancel = cancel
        .args(["cancel", "s1"])
        .env("BILLD_PAUSEPOINT", format!("pg_before_commit:{}", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the cancel to reach its COMMIT", || reached.exists());
    let ended =
        db.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'billd' AND datname = current_database()");
    assert_ne!(ended, "0");
    std::fs::write(&gate, b"").unwrap();
    let out = cancel.wait_with_output().unwrap();
    let status = db.sql("SELECT status FROM subscriptions WHERE id = 's1'");
    assert!(!out.status.success(), "a cancel never saved was reported done: {}; the book says {status}", text(&out));
    assert_eq!(status, "active", "{}", text(&out));
    assert!(text(&out).contains("rolled back") || text(&out).contains("not saved"), "{}", text(&out));

    let mut again = w.billd();
    on_pg(&mut again);
    let out = again.args(["cancel", "s1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.sql("SELECT status FROM subscriptions WHERE id = 's1'"), "canceled");
}

/// A lock held elsewhere (an operator's `LOCK TABLE` left open, said an outside review) stalled a pass for as long
/// as it was held; SQLite gives up after its busy timeout. On PostgreSQL a write now gives up the same way: the
/// command fails, saying so, and changes nothing.
#[test]
fn a_table_locked_elsewhere_fails_a_write_instead_of_stalling_it() {
    let Some(db) = pg::database() else { return };
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let billd = |args: &[&str]| w.billd().env("BILLD_BILLING__DATABASE", db.url()).args(args).output().unwrap();
    assert!(billd(&["tick", "--simulate", "--as-of", "2025-01-10T10:00:00+09:00"]).status.success());

    let mut holder = db
        .psql()
        .args(["-c", "BEGIN; LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the lock to be held", || {
        db.sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'subscriptions' AND l.mode = 'AccessExclusiveLock' AND l.granted") == "1"
    });
    let out = billd(&["cancel", "s1"]);
    db.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND datname = current_database() AND pid <> pg_backend_pid()");
    holder.wait().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("lock timeout"), "{}", text(&out));
    assert_eq!(db.sql("SELECT status FROM subscriptions WHERE id = 's1'"), "active");
}

/// Issue 27, one clock for all: the real instants a process records on a shared book (a charge's go, the instant
/// an unknown outcome is in doubt from) are the database server's clock, so that another server's quiet period is
/// never shortened by this one's skew. A `billd tick` whose wall clock is an hour behind (libfaketime; its boot
/// clock real) loses a charge's answer: the instant it records is the server's, not an hour early. (On the old
/// code, its own wall clock: an hour early, and a daemon on another server would have resent at once.)
#[test]
fn a_skewed_machine_records_real_instants_on_the_database_servers_clock() {
    let Some(db) = pg::database() else { return };
    let found = std::fs::read_dir("/usr/lib").ok().and_then(|dirs| {
        dirs.flatten().find_map(|d| {
            let p = d.path().join("faketime/libfaketimeMT.so.1");
            p.exists().then_some(p)
        })
    });
    let Some(lib) = found else {
        common::skip("libfaketime is not installed (apt-get install faketime)");
        return;
    };
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", &yesterday));
    let w = World::new(Setup { body: &body, timeout: "2s", postgres: Some(db.url()), ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    // The gateway charges 3 s after the request, answering only then: billd gives up on the answer at 2 s.
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("c1".into()),
        fault: billd_sandbox::Fault::ChargeLater { after: std::time::Duration::from_millis(3000) },
        times: Some(1),
    });
    let out = w
        .billd()
        .arg("tick")
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "-1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let server_now: i64 = db.sql("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").parse().unwrap();
    let recorded: i64 = db
        .sql("SELECT doubt_wall_ms FROM attempts WHERE status = 'unknown'")
        .parse()
        .unwrap_or_else(|_| panic!("no unknown attempt: {}", db.sql("SELECT status FROM attempts")));
    let behind = server_now - recorded;
    assert!(
        (0..60_000).contains(&behind),
        "the instant recorded is {behind} ms before the server's clock now (an hour: the skewed machine's clock)"
    );
}

/// An outside review (issue 27): billd's advisory locks were the database's, not the book's. Two books in one
/// database (two schemas, `options=-c search_path=…`) shared them: the second book's first daemon waited on the
/// first's daemon lock until it timed out, its later daemons never got the one-at-a-time jobs (no config sync), and
/// a subscription its config canceled was charged. Each book now locks under a key of its own.
#[test]
fn two_books_in_one_database_share_no_lock() {
    let Some(db) = pg::database() else { return };
    db.sql("CREATE SCHEMA book_a; CREATE SCHEMA book_b");
    let url = |schema: &str| format!("{}?options=-c%20search_path%3D{schema}", db.url());
    let body =
        format!("{MONTHLY}{}{}", sub("s1", "c1", "monthly", "2025-01-10"), sub("s2", "c2", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::APPROVE).unwrap();
    let (a, b) = (url("book_a"), url("book_b"));
    let on = |book: &str, args: &[&str]| {
        w.billd()
            .env("BILLD_BILLING__DATABASE", book)
            .env("BILLD_BILLING__MERCHANT_UID_PREFIX", if book == a { "a" } else { "b" })
            .args(args)
            .output()
            .unwrap()
    };
    assert!(on(&a, &["sync"]).status.success());
    let log = w.dir.path().join("a.log");
    let mut daemon = common::KillOnDrop(
        w.billd()
            .env("BILLD_BILLING__DATABASE", &a)
            .env("BILLD_BILLING__MERCHANT_UID_PREFIX", "a")
            .args(["run", "--as-of", "2025-01-10T10:00:00+09:00", "--simulate"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("book a's daemon to charge", || w.paid_for("c1").len() == 1 && w.paid_for("c2").len() == 1);
    // Book b, beside it: its own daemon 1 joins, does its own jobs (the sync cancels s2, as its config says).
    let canceled = body.replace(
        &sub("s2", "c2", "monthly", "2025-01-10"),
        &format!("{}status = \"canceled\"\n", sub("s2", "c2", "monthly", "2025-01-10")),
    );
    std::fs::write(&w.config, std::fs::read_to_string(&w.config).unwrap().replace(&body, &canceled)).unwrap();
    let tick = on(&b, &["tick", "--simulate", "--as-of", "2025-02-10T10:00:00+09:00"]);
    assert!(tick.status.success(), "book b's tick beside book a's daemon: {}", text(&tick));
    let status = on(&b, &["status", "--json"]);
    assert!(text(&status).contains("\"daemon\": 1"), "book b's first daemon: {}", text(&status));
    let listed = text(&on(&b, &["subscriptions"]));
    assert!(listed.contains("canceled"), "book b's config was not synced: {listed}");
    assert!(
        w.paid_for("c2").iter().all(|m| !m.starts_with("b-s2")),
        "book b charged what its config canceled: {:?}",
        w.paid_for("c2")
    );
    daemon.0.kill().unwrap();
}

/// An outside review (issue 27): a heartbeat waited behind the book's write lock, so one long writer (a large
/// `billd import`, 35 s a chunk on PostgreSQL) stopped every daemon (`lease.lost`); and the heartbeat shared the
/// engine's handle, so a write of the daemon's own waiting for that lock held it up too. A lease is renewed on a
/// handle of its own, under the daemons' own lock: a daemon with a 2 s lease, writing meanwhile, outlives the book's
/// write lock held for 8 s.
#[test]
fn a_long_writer_does_not_stop_the_daemons_heartbeats() {
    let Some(db) = pg::database() else { return };
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &body, postgres: Some(db.url()), ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let config = std::fs::read_to_string(&w.config).unwrap().replace("[billing]\n", "[billing]\nlease = \"2s\"\n");
    std::fs::write(&w.config, config).unwrap();
    let log = w.dir.path().join("run.log");
    let mut daemon = common::KillOnDrop(
        w.billd()
            .args(["run", "--as-of", "2025-01-10T10:00:00+09:00", "--simulate"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the daemon's first charge", || w.paid_for("c1").len() == 1);
    let key = db.sql("SELECT lock_key FROM schema_version");
    // The book's write lock (billd's key 1 under the book's key), held 8 s by another session; meanwhile the daemon
    // writes (a reload applies the config), waiting for it as long as its lock_timeout (5 s).
    let holder = db
        .psql()
        .args(["-At", "-c", &format!("SELECT pg_advisory_lock({key}, 1); SELECT pg_sleep(8)")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut holder = common::KillOnDrop(holder);
    wait_for("the write lock to be held", || {
        db.sql(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {key}::int::oid AND objid = 1 \
             AND granted"
        )) == "1"
    });
    let hup = Command::new("kill").args(["-HUP", &daemon.0.id().to_string()]).status().unwrap();
    assert!(hup.success());
    assert!(holder.0.wait().unwrap().success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon stopped while the write lock was held: {said}");
    assert!(!said.contains("lease.lost"), "{said}");
    assert!(said.contains("config.reload"), "the daemon's reload did not run meanwhile: {said}");
    daemon.0.kill().unwrap();
}
