//! Issue 21: a mistake never becomes money. Guards on every path that can charge a card, each with the rule it
//! enforces: a refused config charges nothing (`tick`, `run`, the commands that charge now), and the mass-cancel
//! guard counts only what a sync manages.

mod common;

use common::{MONTHLY, Setup, World, cards, sub, text};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ten subscriptions s0..s9 starting `start` (customers c0..c9, cards that approve), with `extra` before them.
fn ten(start: &str) -> String {
    (0..10).map(|i| sub(&format!("s{i}"), &format!("c{i}"), "monthly", start)).collect()
}

/// The ten, but s0 canceled and s7..s9 removed: four cancels of ten, refused by the mass-cancel guard.
fn ten_with_four_cancels(start: &str) -> String {
    let mut body = String::new();
    for i in 0..7 {
        body += &sub(&format!("s{i}"), &format!("c{i}"), "monthly", start);
        if i == 0 {
            body += "status = \"canceled\"\n";
        }
    }
    body
}

fn world(body: &str, extra: &str) -> World {
    let w = World::new(Setup { body: &format!("{extra}{MONTHLY}{body}"), ..Default::default() });
    for i in 0..10 {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
    }
    w
}

/// Point 1: a config that cancels s0 and removes s7..s9 is refused as a whole; the pass used to go on charging
/// from the database (all ten, s0 included) and `tick` exited 0. Now it charges nothing and exits non-zero, until
/// the file is fixed or applied with `sync --force`.
#[test]
fn a_refused_config_charges_nothing_on_tick_until_it_is_applied() {
    let w = world(&ten("2025-01-01"), "");
    w.tick("2024-12-31T10:00:00+09:00"); // synced, nothing due yet
    w.write_config(&Setup { body: &format!("{MONTHLY}{}", ten_with_four_cancels("2025-01-01")), ..Default::default() });
    let out = w.billd().args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"]).output().unwrap();
    assert!(!out.status.success(), "tick exited 0 with a refused config: {}", text(&out));
    assert!(text(&out).contains("refusing") && text(&out).contains("nothing was charged"), "{}", text(&out));
    assert!(w.requests().is_empty(), "charged under a refused config: {:?}", w.requests());
    assert_eq!(w.status_of("s0"), "active", "nothing of the refused config applied");
    // Applied on purpose: then the pass charges what the config says, s1..s6.
    assert!(w.billd().args(["sync", "--force"]).status().unwrap().success());
    w.tick("2025-01-01T10:00:00+09:00");
    let paid: Vec<String> = w.paid_by_merchant_uid().into_keys().collect();
    assert_eq!(paid, (1..7).map(|i| format!("billd-s{i}-0")).collect::<Vec<_>>());
    w.assert_consistent();
}

/// Point 1 under `billd run`: it keeps running but sends nothing while the file on disk is refused, and says so on
/// `/healthz` (503), in a metric and in an ERROR line; a fixed file (and a reload) ends it.
#[test]
fn run_with_a_refused_config_sends_nothing_and_says_so_until_the_file_is_fixed() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let w = world(&ten(&yesterday), &metrics);
    assert!(w.billd().arg("sync").status().unwrap().success()); // the book has the ten; nothing charged yet
    let refused = format!("{metrics}{MONTHLY}{}", ten_with_four_cancels(&yesterday));
    w.write_config(&Setup { body: &refused, ..Default::default() });
    let run = w.billd().arg("run").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let health = {
        let start = Instant::now();
        loop {
            if let Some((503, t)) = common::http_get(port, "/healthz") {
                break t;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "/healthz never said 503");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(health.contains("config refused"), "{health}");
    let (_, m) = common::http_get(port, "/metrics").expect("metrics");
    assert!(m.contains("billd_config_refused 1"), "{m}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.requests().is_empty(), "charged under a refused config: {:?}", w.requests());
    // The file fixed (back to the ten) and reloaded: charging resumes, and health is ok again.
    w.write_config(&Setup { body: &format!("{metrics}{MONTHLY}{}", ten(&yesterday)), ..Default::default() });
    assert!(std::process::Command::new("kill").args(["-HUP", &run.id().to_string()]).status().unwrap().success());
    wait_for("the ten charges", || w.paid_by_merchant_uid().len() == 10);
    wait_for("/healthz ok", || common::http_get(port, "/healthz").is_some_and(|(c, _)| c == 200));
    assert!(std::process::Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap().success());
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = World::stderr(&out);
    assert!(log.contains("ERROR") && log.contains("config.refused"), "{log}");
    w.assert_consistent();
}

/// Point 9: `billd retry` ran a pass without applying schedules.toml: a subscription removed from the file was
/// charged again. Now every command that charges applies the config first, under the same guard.
#[test]
fn retry_applies_the_config_before_it_charges() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let body = format!("{MONTHLY}{}{}", sub("s1", "c1", "monthly", &yesterday), sub("s2", "c2", "monthly", &yesterday));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.register_customer("c2", cards::APPROVE).unwrap();
    let out = w.billd().arg("tick").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.status_of("s1"), "past_due");
    // s1 removed from the file (one cancel: allowed), then an operator's retry of it.
    w.write_config(&Setup {
        body: &format!("{MONTHLY}{}", sub("s2", "c2", "monthly", &yesterday)),
        ..Default::default()
    });
    let retry = w.billd().args(["retry", "s1"]).output().unwrap();
    assert_eq!(w.sent("billd-s1-0"), 1, "retried although the config removed it: {}", text(&retry));
    assert_eq!(w.status_of("s1"), "canceled", "{}", text(&retry));
}

/// Point 10: three config subscriptions and thirty imported ones; emptying the file's subscriptions canceled all
/// three without `--force` (3 is not more than 10% of 33). The guard compares what the sync would cancel with what
/// the sync manages: the config's own billed subscriptions.
#[test]
fn the_mass_cancel_guard_counts_only_what_the_sync_manages() {
    let three: String = (0..3).map(|i| sub(&format!("s{i}"), &format!("c{i}"), "monthly", "2030-01-01")).collect();
    let w = World::new(Setup { body: &format!("{MONTHLY}{three}"), ..Default::default() });
    assert!(w.billd().arg("sync").status().unwrap().success());
    let csv = w.dir.path().join("import.csv");
    let rows: String = (0..30).map(|i| format!("imp{i},ci{i},monthly,2030-01-01\n")).collect();
    std::fs::write(&csv, format!("id,customer_uid,plan,start\n{rows}")).unwrap();
    let imported = w.billd().arg("import").arg(&csv).output().unwrap();
    assert!(imported.status.success(), "{}", text(&imported));
    w.write_config(&Setup { body: MONTHLY, ..Default::default() });
    let out = w.billd().arg("sync").output().unwrap();
    assert!(!out.status.success(), "emptying the file canceled its three subscriptions: {}", text(&out));
    assert!(text(&out).contains("3 of the 3 billed subscriptions it manages"), "{}", text(&out));
    for i in 0..3 {
        assert_eq!(w.status_of(&format!("s{i}")), "active");
    }
}
