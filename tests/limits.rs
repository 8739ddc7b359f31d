//! Safety rails: `limits.max_charges_per_pass` and `limits.max_amount`. Beyond them billd refuses, logs why, and
//! charges nothing of the offending batch (unresolved attempts are still reconciled); raising the limit lets the
//! held charges go out, once.

mod common;

use billd_sandbox::{Fault, FaultRule};
// Entries here replay history or catch up on purpose: `catch_up = true` (issue 21, 2).
use common::{MONTHLY, Setup, World, cards, sub_catch_up as sub};
use std::time::{Duration, Instant};

const JAN1: &str = "2025-01-01T10:00:00+09:00";

fn subs(ids: std::ops::Range<usize>, start: &str) -> String {
    ids.map(|i| sub(&format!("s{i}"), &format!("c{i}"), "monthly", start)).collect()
}

/// The config body: `[limits]` (after the harness's `[dunning]`, before the array tables), plans, subscriptions.
fn with_limits(limits: &str, body: &str) -> String {
    format!("\n[limits]\n{limits}\n{MONTHLY}{body}")
}

/// A 1 s gateway timeout: a resend waits a real quiet period of 2 s ([`World::wait_quiet`]).
fn setup(body: &str) -> Setup<'_> {
    Setup { body, timeout: "1s", ..Default::default() }
}

fn world(limits: &str, body: &str, customers: usize) -> World {
    let text = with_limits(limits, body);
    let w = World::new(setup(&text));
    for i in 0..customers {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
    }
    w
}

fn rewrite(w: &World, limits: &str, body: &str) {
    let text = with_limits(limits, body);
    w.write_config(&setup(&text));
}

fn tick_raw(w: &World, as_of: &str) -> std::process::Output {
    w.billd().args(["tick", "--as-of", as_of]).output().unwrap()
}

#[test]
fn more_due_than_max_charges_per_pass_charges_none_of_them() {
    let body = subs(0..5, "2025-01-01");
    let w = world("max_charges_per_pass = 3", &body, 5);
    let out = tick_raw(&w, JAN1);
    let stderr = World::stderr(&out);
    assert!(!out.status.success(), "the pass must fail loudly: {stderr}");
    assert!(stderr.contains("pass.refused"), "{stderr}");
    assert!(stderr.contains("limits.max_charges_per_pass: 5 charges are due"), "{stderr}");
    assert!(stderr.contains("schedules.toml"), "the error names the config file: {stderr}");
    assert!(w.ledger().is_empty(), "nothing of the batch may be charged: {:?}", w.ledger());
    let attempts: i64 = w.db().query_row("SELECT count(*) FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(attempts, 0, "no intent was even claimed");
    // Raising the limit lets exactly the held charges go out.
    rewrite(&w, "max_charges_per_pass = 5", &body);
    w.tick(JAN1);
    assert_eq!(w.paid_by_merchant_uid().len(), 5);
    assert_eq!(w.ledger().len(), 5);
    w.assert_consistent();
}

#[test]
fn a_refused_pass_still_reconciles_unresolved_attempts() {
    let two = subs(0..2, "2025-01-01");
    let w = world("max_charges_per_pass = 3", &two, 6);
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c0".into()), fault: Fault::Http500, times: Some(1) });
    w.tick(JAN1);
    assert_eq!(w.paid_for("c1"), ["billd-s1-0"]);
    assert!(w.paid_for("c0").is_empty(), "c0's charge is unresolved (HTTP 500)");
    // Four more subscriptions fall due on Jan 2: above the limit of 3.
    let six = format!("{two}{}", subs(2..6, "2025-01-02"));
    rewrite(&w, "max_charges_per_pass = 3", &six);
    w.wait_quiet();
    let out = tick_raw(&w, "2025-01-02T10:00:00+09:00");
    let stderr = World::stderr(&out);
    assert!(!out.status.success() && stderr.contains("4 charges are due"), "{stderr}");
    assert_eq!(w.paid_for("c0"), ["billd-s0-0"], "the unresolved attempt was reconciled (resent) all the same");
    for i in 2..6 {
        assert!(w.attempts_for(&format!("c{i}")).is_empty(), "c{i} charged despite the refusal");
    }
    w.assert_consistent();
}

#[test]
fn catch_up_never_sends_more_than_the_limit_in_one_pass() {
    // Two subscriptions three months behind: six periods to catch up, at most four per pass.
    let body = subs(0..2, "2025-01-01");
    let w = world("max_charges_per_pass = 4", &body, 2);
    let out = tick_raw(&w, "2025-03-01T10:00:00+09:00");
    let first = w.ledger().len();
    assert!(first <= 4, "{first} charges in one pass");
    assert!(!out.status.success(), "{}", World::stderr(&out));
    // Billing stays stopped until an operator confirms (issue 21, point 8); then the rest goes out.
    assert!(!tick_raw(&w, "2025-03-01T10:00:00+09:00").status.success());
    assert_eq!(w.ledger().len(), first, "sent again before an operator confirmed");
    assert!(w.billd().args(["safety", "release"]).status().unwrap().success());
    w.tick("2025-03-01T10:00:00+09:00");
    assert_eq!(w.paid_by_merchant_uid().len(), 6);
    w.assert_consistent();
}

/// Inserts a subscription the way a command would (source `manual`), with a typo'd amount.
fn insert_manual(w: &World, id: &str, customer: &str, amount: i64) {
    let due = chrono::DateTime::parse_from_rfc3339(JAN1).unwrap().timestamp();
    w.db()
        .execute(
            "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
               anchor_date, anchor_period, next_period, next_due_at, status, source, created_at, updated_at)
             VALUES (?1, ?2, 'monthly', 'Monthly plan', ?3, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 0, ?4,
               'active', 'manual', ?4, ?4)",
            rusqlite::params![id, customer, amount, due],
        )
        .unwrap();
}

#[test]
fn an_amount_above_max_amount_from_the_database_is_never_sent() {
    let body = subs(0..2, "2025-01-01");
    let w = world("max_amount = 1000000", &body, 3);
    w.tick("2024-12-31T10:00:00+09:00"); // creates the database
    insert_manual(&w, "typo", "c2", 99_000_000);
    let out = w.tick(JAN1);
    let stderr = World::stderr(&out);
    let line = stderr.lines().find(|l| l.contains("charge.refused")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("typo") && line.contains("99000000") && line.contains("limits.max_amount"), "{line}");
    assert!(w.attempts_for("c2").is_empty(), "the typo'd amount reached the gateway");
    assert_eq!(w.paid_by_merchant_uid().len(), 2, "the rest of the book is charged as usual");
    let opened: i64 =
        w.db().query_row("SELECT count(*) FROM periods WHERE subscription_id = 'typo'", [], |r| r.get(0)).unwrap();
    assert_eq!(opened, 0, "the period is held before it opens, so fixing the amount fixes the charge");
    // Again the next day: still refused, still logged, nothing sent.
    let stderr = World::stderr(&w.tick("2025-01-02T10:00:00+09:00"));
    assert!(stderr.contains("charge.refused"), "{stderr}");
    assert!(w.attempts_for("c2").is_empty());
    // The operator fixes the amount: it goes out once, at the fixed amount.
    w.db().execute("UPDATE subscriptions SET amount = 9900 WHERE id = 'typo'", []).unwrap();
    w.tick("2025-01-02T10:00:00+09:00");
    let c2 = w.attempts_for("c2");
    assert_eq!(c2.len(), 1);
    assert_eq!((c2[0].amount, c2[0].status.as_str()), (9900, "paid"));
    w.assert_consistent();
}

#[test]
fn an_open_period_above_a_raised_limit_goes_out_once_the_limit_allows_it() {
    let body = subs(0..1, "2025-01-01");
    let w = world("max_amount = 1000000", &body, 0);
    w.sandbox.register_customer("c0", &cards::decline_first(1)).unwrap();
    w.tick(JAN1); // declined: the period stays open, retry tomorrow
    assert_eq!(w.status_of("s0"), "past_due");
    w.db().execute("UPDATE periods SET amount = 5000000 WHERE subscription_id = 's0'", []).unwrap();
    let stderr = World::stderr(&w.tick("2025-01-02T10:00:00+09:00"));
    assert!(stderr.contains("charge.refused") && stderr.contains("5000000"), "{stderr}");
    assert_eq!(w.attempts_for("c0").len(), 1, "the retry above the limit was not sent");
    rewrite(&w, "max_amount = 5000000", &body);
    w.tick("2025-01-02T10:00:00+09:00");
    let c0 = w.attempts_for("c0");
    assert_eq!(c0.len(), 2);
    assert_eq!((c0[1].amount, c0[1].status.as_str()), (5_000_000, "paid"));
    w.assert_consistent();
}

#[test]
fn the_daemon_holding_a_charge_back_does_not_spin() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let body = sub("s0", "c0", "monthly", &yesterday);
    let w = world("max_amount = 1000000", &body, 2);
    w.tick(&(chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339());
    let due = (chrono::Utc::now() - chrono::Duration::hours(1)).timestamp();
    insert_manual(&w, "typo", "c1", 99_000_000);
    w.db().execute("UPDATE subscriptions SET next_due_at = ?1 WHERE id = 'typo'", [due]).unwrap();
    let log = w.dir.path().join("run.log");
    let mut child = w.billd().arg("run").stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let start = Instant::now();
    while w.paid_for("c0").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "s0 was not charged");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let refusals = text.lines().filter(|l| l.contains("charge.refused")).count();
    assert!((1..=4).contains(&refusals), "{refusals} charge.refused lines in ~2s: the loop spins or never logs");
    assert!(w.attempts_for("c1").is_empty());
}

/// One subscription far behind: its catch-up rounds send one charge each, and they add up against the limit.
#[test]
fn catch_up_rounds_of_one_subscription_add_up_to_the_limit() {
    let w = world("max_charges_per_pass = 3", &subs(0..1, "2025-01-01"), 1);
    let out = tick_raw(&w, "2026-01-01T10:00:00+09:00");
    assert_eq!(w.ledger().len(), 3, "{}", World::stderr(&out));
    assert!(!out.status.success() && World::stderr(&out).contains("pass.refused"), "{}", World::stderr(&out));
}

/// Resends count too: a pass that resends three unresolved charges has sent three, and a limit of 3 holds back a
/// fourth that falls due in the same pass.
#[test]
fn resends_count_against_max_charges_per_pass() {
    let three = subs(0..3, "2025-01-01");
    let w = world("max_charges_per_pass = 3", &three, 4);
    for i in 0..3 {
        w.sandbox.add_fault(FaultRule { customer_uid: Some(format!("c{i}")), fault: Fault::Http500, times: Some(1) });
    }
    w.tick(JAN1);
    assert!(w.ledger().is_empty(), "HTTP 500 before charging: nothing charged, three charges unresolved");
    let four = format!("{three}{}", subs(3..4, "2025-01-02"));
    rewrite(&w, "max_charges_per_pass = 3", &four);
    w.wait_quiet();
    let out = tick_raw(&w, "2025-01-02T10:00:00+09:00");
    let stderr = World::stderr(&out);
    assert_eq!(w.ledger().len(), 3, "three resends, and no fourth charge in the same pass: {stderr}");
    assert!(w.attempts_for("c3").is_empty(), "a fourth charge in a pass limited to 3: {stderr}");
    assert!(!out.status.success() && stderr.contains("pass.refused"), "{stderr}");
    assert!(w.billd().args(["safety", "release"]).status().unwrap().success());
    w.tick("2025-01-02T10:00:00+09:00");
    assert_eq!(w.paid_by_merchant_uid().len(), 4);
    w.assert_consistent();
}

/// `tick --as-of` far in the future would charge, for real, every period due until then (a monthly subscription at
/// 9999-12-31: some 95,000 charges). It is refused without `--simulate`, before anything is sent; with it, a warning
/// names the gateway, and the per-pass limit still holds.
#[test]
fn a_future_as_of_is_refused_unless_simulate() {
    let w = world("max_charges_per_pass = 5", &subs(0..1, "2025-01-01"), 1);
    let out = tick_raw(&w, "9999-12-31T23:59:59Z");
    let stderr = World::stderr(&out);
    assert!(w.ledger().is_empty(), "{} charges sent for a pass in 9999: {stderr}", w.ledger().len());
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--simulate") && stderr.contains(&w.sandbox.base_url()), "{stderr}");
    assert!(stderr.contains("for real"), "the error says why: {stderr}");
    let out = w.billd().args(["tick", "--simulate", "--as-of", "2099-12-31T10:00:00+09:00"]).output().unwrap();
    let stderr = World::stderr(&out);
    let warning = stderr.lines().find(|l| l.contains("tick.simulate")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.contains(&w.sandbox.base_url()), "{warning}");
    assert_eq!(w.ledger().len(), 5, "the limit holds across catch-up rounds: {stderr}");
    // A minute of clock skew needs no flag.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc3339();
    assert!(tick_raw(&w, &soon).status.code() != Some(2));
    assert!(!World::stderr(&tick_raw(&w, &soon)).contains("--simulate"));
}
