//! `billd run`: charges what falls due, exits 0 on SIGTERM, and holds the database lock.

mod common;

use common::{MONTHLY, Setup, World, cards, sub};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn run_charges_what_is_due_and_exits_0_on_sigterm() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", &yesterday.to_string()));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let mut child = w.billd().arg("run").stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_for("the due charge", Duration::from_secs(30), || w.paid_for("c1").len() == 1);

    // A second scheduler on the same database is refused at once.
    let second = w.billd().arg("run").output().unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use by another"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Listing commands keep working.
    let list = w.billd().arg("charges").output().unwrap();
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("billd-s1-0"));

    sigterm(&child);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "billd run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    w.assert_consistent();
}

/// Issue 15, point 10: with the default log level, `billd run` starts without the scheduler crate's own INFO lines
/// (`Uninited`, `Job creator created`): its first lines are billd's.
#[test]
fn run_starts_without_third_party_info_lines() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    let mut child = w.billd().arg("run").env_remove("BILLD_LOG").stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    wait_for("the daemon's start", Duration::from_secs(30), || {
        w.db().query_row("SELECT count(*) FROM subscriptions", [], |r| r.get::<_, i64>(0)).is_ok()
    });
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let text = reader.join().unwrap();
    assert!(text.contains("daemon.started"), "{text}");
    for chatter in ["Uninited", "Job creator created"] {
        assert!(!text.contains(chatter), "{chatter:?} in:\n{text}");
    }
}
