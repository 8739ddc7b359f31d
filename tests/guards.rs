//! Issue 21: a mistake never becomes money. Guards on every path that can charge a card, each with the rule it
//! enforces: a refused config charges nothing (`tick`, `run`, the commands that charge now), and the mass-cancel
//! guard counts only what a sync manages.

mod common;

use common::{MONTHLY, Setup, World, cards, sub, text, wait_for};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    assert!(text(&out).contains("refusing") && text(&out).contains("config refused, nothing"), "{}", text(&out));
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

/// Point 6: billd's own namespace guard was case-sensitive: `charge-once --merchant-uid BILLD-S1-3` was charged
/// where `billd-s1-3` is refused, although the gateway may not tell them apart.
#[test]
fn charge_once_refuses_billd_s_namespace_in_any_case() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    for id in ["billd-s1-3", "BILLD-S1-3", "Billd-x"] {
        let out = common::with_card(
            &w,
            &["charge-once", "--merchant-uid", id, "--amount", "5000", "--name", "Setup fee"],
            &common::card_json(cards::APPROVE),
        );
        assert!(!out.status.success(), "{id} was charged: {}", text(&out));
        assert!(text(&out).contains("are billd's own"), "{id}: {}", text(&out));
    }
    assert!(w.requests().is_empty(), "{:?}", w.requests());
}

/// Point 7: `tick --simulate --as-of 2036-12-01` against a real `base_url` sent 120 charges. `--simulate` now runs
/// only against a gateway on this machine (a loopback `base_url`, like `billd sandbox`).
#[test]
fn simulate_refuses_a_gateway_that_is_not_on_this_machine() {
    let w = world(&ten("2025-01-01"), "");
    let text_cfg = std::fs::read_to_string(&w.config).unwrap().replace(&w.sandbox.base_url(), "https://api.iamport.kr");
    std::fs::write(&w.config, text_cfg).unwrap();
    let out = w.billd().args(["tick", "--simulate", "--as-of", "2036-12-01T10:00:00+09:00"]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not a loopback address") && text(&out).contains("https://api.iamport.kr"),
        "{}",
        text(&out)
    );
    let rows: i64 = w.db().query_row("SELECT count(*) FROM attempts", [], |r| r.get(0)).unwrap_or(0);
    assert_eq!(rows, 0, "claimed charges for a refused simulation");
}

/// A review found that a SIGHUP whose file is refused, arriving during a busy pass of `billd run`, logged "nothing
/// is charged" while the pass went on sending twelve more charges, including those of subscriptions the refused
/// file removed. Once the refusal is logged, nothing more leaves (at most the requests already past their go).
#[test]
fn a_refused_reload_during_a_busy_pass_stops_it() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let twenty: String =
        (1..=20).map(|i| sub(&format!("s{i:02}"), &format!("c{i:02}"), "monthly", &yesterday)).collect();
    let w = World::new(Setup { body: &format!("{MONTHLY}{twenty}"), ..Default::default() });
    for i in 1..=20 {
        w.sandbox.register_customer(&format!("c{i:02}"), cards::APPROVE).unwrap();
    }
    assert!(w.billd().arg("sync").status().unwrap().success());
    let run = w
        .billd()
        .arg("run")
        .env("BILLD_GATEWAY__RATE_LIMIT", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the pass's first charge", || !w.requests().is_empty());
    // Half of them removed from the file: refused by the guard.
    let ten: String = (1..=10).map(|i| sub(&format!("s{i:02}"), &format!("c{i:02}"), "monthly", &yesterday)).collect();
    w.write_config(&Setup { body: &format!("{MONTHLY}{ten}"), ..Default::default() });
    assert!(std::process::Command::new("kill").args(["-HUP", &run.id().to_string()]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300)); // the reload is applied at once, the pass goes on
    let seen = w.requests().len();
    std::thread::sleep(Duration::from_millis(5000)); // at 2 requests a second, ten more would have left
    let after = w.requests().len() - seen;
    assert!(std::process::Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap().success());
    let out = run.wait_with_output().unwrap();
    let log = World::stderr(&out);
    assert!(log.contains("config.reload: not applied"), "{log}");
    // The senders' requests already past their go may still arrive (one per sender, and a slow reload's margin).
    assert!(after <= 5, "{after} requests after the refused reload: {:?}", w.requests());
    let removed: Vec<_> = w
        .requests()
        .into_iter()
        .skip(seen)
        .filter(|r| r.merchant_uid.as_deref().is_some_and(|m| (11..=20).any(|i| m == format!("billd-s{i:02}-0"))))
        .collect();
    assert!(removed.is_empty(), "charged what the refused file removed, after the refusal: {removed:?}");
}

/// Point 2: `start = "2025-01-06"` on a monthly plan passed `check` and the next pass sent 24 charges to one card;
/// `subscriptions add --start 2016-12-06` sent 121. One rule for every way a subscription enters: a start that would
/// make more than one period due at once is refused (not added, an ERROR names the entry and the key to set) unless
/// the entry says `catch_up = true` or the command `--catch-up`; `check` lists it. A subscription already in the
/// book is its history, not a problem.
#[test]
fn a_start_more_than_one_period_back_is_refused_unless_it_says_catch_up() {
    let year_ago = (chrono::Utc::now() - chrono::Duration::days(400)).date_naive().to_string();
    let w = world(&ten(&year_ago), "");
    let check = w.billd().arg("check").output().unwrap();
    assert!(text(&check).contains("catch_up = true") && text(&check).contains("\"s0\""), "{}", text(&check));
    let out = w.billd().arg("tick").output().unwrap();
    assert!(text(&out).contains("not added") && text(&out).contains("catch_up = true"), "{}", text(&out));
    assert!(w.requests().is_empty(), "a year of periods charged at once: {} requests", w.requests().len());
    let add = w
        .billd()
        .args(["subscriptions", "add", "--id", "m1", "--customer-uid", "c1", "--plan", "monthly", "--start", &year_ago])
        .output()
        .unwrap();
    assert!(!add.status.success() && text(&add).contains("--catch-up"), "{}", text(&add));
    assert!(w.requests().is_empty());
    // Said explicitly: charged, every period since, once each (s0 alone, as asked).
    let mut body = format!("{MONTHLY}{}", common::sub_catch_up("s0", "c0", "monthly", &year_ago));
    body += &ten(&year_ago)[sub("s0", "c0", "monthly", &year_ago).len()..];
    w.write_config(&Setup { body: &body, ..Default::default() });
    let out = w.billd().arg("tick").output().unwrap();
    let paid = w.paid_for("c0").len();
    assert!(paid >= 13, "s0 caught up: {paid} paid\n{}", text(&out));
    assert!(w.paid_for("c1").is_empty(), "s1 did not say catch_up");
}
