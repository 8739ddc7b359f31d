//! A refused credential is a configuration error, not an unknown charge (issue 15, point 2): `tick` stops before
//! anything is claimed or sent and exits 1 with one `gateway.unauthorized` line; `run` stays up, answers 503 on
//! `/healthz` and tries again; `check --online` asks the gateway.

mod common;

use common::{MONTHLY, Setup, World, cards, sub};
use std::process::Stdio;
use std::time::{Duration, Instant};

const WRONG: &str = "not-the-secret-7c41";

fn world(extra: &str) -> World {
    let body = format!(
        "{extra}{MONTHLY}{}{}{}",
        sub("s1", "c1", "monthly", "2025-01-01"),
        sub("s2", "c2", "monthly", "2025-01-01"),
        sub("s3", "c3", "monthly", "2025-01-01")
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    for c in ["c1", "c2", "c3"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w
}

#[test]
fn a_refused_credential_stops_tick_before_anything_is_claimed_or_sent() {
    let w = world("");
    let out = w
        .billd()
        .args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"])
        .env("BILLD_GATEWAY__IMP_SECRET", WRONG)
        .output()
        .unwrap();
    let stderr = World::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("gateway.unauthorized")).count(), 1, "{stderr}");
    assert!(stderr.contains("imp_sandbox_key"), "the line names gateway.imp_key: {stderr}");
    assert!(!stderr.contains(WRONG), "the secret was logged: {stderr}");
    assert!(!stderr.contains("charge.unknown"), "{stderr}");
    assert!(w.ledger().is_empty());
    let attempts: i64 = w.db().query_row("SELECT count(*) FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(attempts, 0, "nothing is claimed");
    // With the right secret, the next tick charges all three.
    w.tick("2025-01-01T10:00:00+09:00");
    assert_eq!(w.paid_by_merchant_uid().len(), 3);
}

#[test]
fn check_online_asks_the_gateway_whether_it_accepts_the_credentials() {
    let w = world("");
    let bad = w.billd().args(["check", "--online"]).env("BILLD_GATEWAY__IMP_SECRET", WRONG).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&bad.stdout), String::from_utf8_lossy(&bad.stderr));
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains("gateway.imp_key") && text.contains("refuses"), "{text}");
    assert!(!text.contains(WRONG), "{text}");
    let good = w.billd().args(["check", "--online"]).output().unwrap();
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}");
    assert!(text.contains("accepts"), "{text}");
}

#[test]
fn the_daemon_with_a_refused_credential_stays_up_and_says_so_on_healthz() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let w = world(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut child = w
        .billd()
        .arg("run")
        .env("BILLD_GATEWAY__IMP_SECRET", WRONG)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let get = |path: &str| common::http_get(port, path);
    let start = Instant::now();
    let health = loop {
        if let Some((503, t)) = get("/healthz") {
            break t;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "/healthz never said 503");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.contains("unauthorized"), "{health}");
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    assert!(w.ledger().is_empty());
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("gateway.unauthorized"), "{stderr}");
    assert!(!stderr.contains(WRONG), "{stderr}");
}
