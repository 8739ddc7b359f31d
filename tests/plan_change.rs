//! Issue 25, plan changes: `billd subscriptions change ID --plan P (--at-period-end | --now)` against the real
//! binary and the sandbox: an upgrade now charges the difference once under its own merchant_uid, a downgrade now
//! credits it to the next periods (no zero charge sent), a change at period end charges nothing today, an interval
//! change now restarts the calendar, and a kill -9 in the middle of the change's charge leaves one charge.

mod common;

use billd_sandbox::{Endpoint, Fault, FaultRule};
use common::{Setup, World, cards, text, wait_for};
use std::process::{Output, Stdio};
use std::time::Duration;

const PLANS: &str = r#"
[[plans]]
id = "basic"
name = "Basic"
amount = 10000
interval = "1 month"

[[plans]]
id = "pro"
name = "Pro"
amount = 30000
interval = "1 month"

[[plans]]
id = "annual"
name = "Annual"
amount = 100000
interval = "1 year"
"#;

fn world() -> World {
    let w = World::new(Setup { body: PLANS, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w
}

fn billd(w: &World, args: &[&str]) -> Output {
    w.billd().args(args).output().unwrap()
}

/// `s1` on `plan`, from 2025-01-01 (10:00 KST = 01:00 UTC), its first period paid by a tick.
fn subscribed(w: &World, plan: &str) {
    let add = ["subscriptions", "add", "--id", "s1", "--customer-uid", "c1", "--plan", plan, "--start", "2025-01-01"];
    let out = billd(w, &[&add[..], &["--as-of", "2025-01-01T00:00:00Z"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    w.tick("2025-01-01T01:00:00Z");
    assert_eq!(w.paid_for("c1").len(), 1);
}

fn change(w: &World, plan: &str, when: &str, as_of: &str) -> Output {
    billd(w, &["subscriptions", "change", "s1", "--plan", plan, when, "--as-of", as_of])
}

/// Charge requests (`again`) for `merchant_uid`.
fn agains(w: &World, merchant_uid: &str) -> usize {
    w.requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Again && r.merchant_uid.as_deref() == Some(merchant_uid))
        .count()
}

/// (amount, status) of each payment at the gateway for `merchant_uid`.
fn payments(w: &World, merchant_uid: &str) -> Vec<(i64, String)> {
    w.ledger().into_iter().filter(|e| e.merchant_uid == merchant_uid).map(|e| (e.amount, e.status)).collect()
}

fn period_row(w: &World, period: i64) -> (String, i64, i64) {
    w.db()
        .query_row(
            "SELECT state, amount, credit FROM periods WHERE subscription_id = 's1' AND period = ?1",
            [period],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

fn credit(w: &World) -> i64 {
    w.db().query_row("SELECT credit FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap()
}

// Halfway through January's period (2025-01-01T01:00Z to 2025-02-01T01:00Z, 31 days).
const HALFWAY: &str = "2025-01-16T13:00:00Z";

#[test]
fn an_upgrade_now_charges_the_difference_once_and_the_next_period_bills_the_new_plan() {
    let w = world();
    subscribed(&w, "basic");
    let out = change(&w, "pro", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Half of (30000 - 10000), once, under its own merchant_uid.
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(10_000, "paid".to_string())]);
    assert!(text(&out).contains("plan changed to pro"), "{}", text(&out));
    // A rerun: the plan already is pro, nothing sent.
    let rerun = change(&w, "pro", "--now", "2025-01-17T00:00:00Z");
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert!(text(&rerun).contains("already is pro"), "{}", text(&rerun));
    assert_eq!(agains(&w, "billd-s1-0-c1"), 1);
    // `billd charges` lists it as a proration charge.
    let charges = billd(&w, &["charges"]);
    assert!(text(&charges).contains("proration") && text(&charges).contains("billd-s1-0-c1"), "{}", text(&charges));
    // `subscriptions show` lists the change and its charge.
    let show = text(&billd(&w, &["subscriptions", "show", "s1"]));
    assert!(
        show.contains("change   basic -> pro (now)") && show.contains("one-time proration billd-s1-0-c1"),
        "{show}"
    );
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(30_000, "paid".to_string())]);
}

#[test]
fn a_downgrade_now_credits_the_next_periods_and_never_sends_a_zero_charge() {
    let w = world();
    subscribed(&w, "pro");
    let out = change(&w, "basic", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("10000 KRW credited"), "{}", text(&out));
    assert_eq!(credit(&w), 10_000);
    let show = text(&billd(&w, &["subscriptions", "show", "s1"]));
    assert!(show.contains("credit   10000 KRW") && show.contains("10000 KRW credited"), "{show}");
    let before = w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count();
    assert_eq!(before, 1, "a downgrade sent a request");
    // February costs 10000: paid by the credit, nothing sent.
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(agains(&w, "billd-s1-1"), 0, "a period the credit covers was sent");
    assert_eq!(period_row(&w, 1), ("paid".into(), 10_000, 10_000));
    assert_eq!(credit(&w), 0);
    // March is charged in full.
    w.tick("2025-03-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-2"), [(10_000, "paid".to_string())]);
    assert!(w.ledger().iter().all(|e| e.amount > 0));
}

#[test]
fn a_partial_credit_lowers_the_next_charge() {
    let w = world();
    subscribed(&w, "pro");
    // Three quarters through January (23.25 days of 31): a quarter of 20000 left to the customer.
    let out = change(&w, "basic", "--now", "2025-01-24T07:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(credit(&w), 5_000);
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(5_000, "paid".to_string())]);
    assert_eq!(period_row(&w, 1), ("paid".into(), 10_000, 5_000));
    assert_eq!(credit(&w), 0);
}

#[test]
fn a_change_at_period_end_charges_nothing_today_and_the_next_period_bills_the_new_plan() {
    let w = world();
    subscribed(&w, "basic");
    let out = change(&w, "pro", "--at-period-end", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("nothing charged today"), "{}", text(&out));
    assert_eq!(w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count(), 1);
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(30_000, "paid".to_string())]);
}

#[test]
fn an_interval_change_now_restarts_the_calendar_from_the_change() {
    let w = world();
    subscribed(&w, "basic");
    let out = change(&w, "annual", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Half of January's 10000 unused: 100000 - 5000.
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(95_000, "paid".to_string())]);
    assert_eq!(period_row(&w, 1).0, "paid", "the new plan's first period is paid by the change");
    // The next charge: a year after the change's local date (2025-01-16 KST), at charge_time.
    let due: i64 = w.db().query_row("SELECT next_due_at FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
    assert_eq!(chrono::DateTime::from_timestamp(due, 0).unwrap().to_rfc3339(), "2026-01-16T01:00:00+00:00");
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count(), 2, "February was charged");
}

#[test]
fn refusals_change_nothing() {
    let w = world();
    subscribed(&w, "basic");
    for (args, says) in
        [(["nope", "--plan", "pro", "--now"], "no subscription"), (["s1", "--plan", "gold", "--now"], "no plan")]
    {
        let out = billd(&w, &[&["subscriptions", "change"][..], &args[..], &["--as-of", HALFWAY]].concat());
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    let same = change(&w, "basic", "--now", HALFWAY);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    assert!(text(&same).contains("already is basic"), "{}", text(&same));
    // No paid period covers an instant after the period's end (February not opened yet).
    let late = change(&w, "pro", "--now", "2025-02-02T00:00:00Z");
    assert_eq!(late.status.code(), Some(1), "{}", text(&late));
    assert!(text(&late).contains("no paid period covering"), "{}", text(&late));
    let paused = billd(&w, &["pause", "s1", "--as-of", HALFWAY]);
    assert!(paused.status.success(), "{}", text(&paused));
    let out = change(&w, "pro", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not bill"), "{}", text(&out));
    let n: i64 = w.db().query_row("SELECT count(*) FROM plan_changes", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    assert_eq!(w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count(), 1);
}

/// kill -9 while the change's charge is at the gateway: a rerun at once sends nothing (its outcome is unknown, the
/// time to rerun said); after the quiet period a pass's lookup settles it and applies the change: one charge.
#[test]
fn a_change_killed_mid_charge_is_charged_exactly_once() {
    let w = world();
    // Started yesterday (KST), so that its first period covers the real now and a tick at the real time
    // charges nothing else.
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Seoul).date_naive();
    let start = (today - chrono::Days::new(1)).to_string();
    let add = ["subscriptions", "add", "--id", "s1", "--customer-uid", "c1", "--plan", "basic", "--start", &start];
    let out = billd(&w, &[&add[..], &["--charge-now"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.paid_for("c1").len(), 1);
    w.sandbox.add_fault(FaultRule {
        customer_uid: None,
        fault: Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
    let args = ["subscriptions", "change", "s1", "--plan", "pro", "--now"];
    let mut child = w.billd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the change's charge at the gateway", || agains(&w, "billd-s1-0-c1") == 1);
    child.kill().unwrap(); // SIGKILL
    let killed = child.wait_with_output().unwrap();
    assert!(!killed.status.success(), "it finished before the kill: {}", text(&killed));
    let plan = || -> String {
        w.db().query_row("SELECT plan_id FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(plan(), "basic", "applied before its charge was settled");
    let rerun = billd(&w, &args);
    assert_eq!(rerun.status.code(), Some(1), "{}", text(&rerun));
    assert!(text(&rerun).contains("do not retry before"), "{}", text(&rerun));
    assert_eq!(agains(&w, "billd-s1-0-c1"), 1, "resent before the quiet period");
    w.wait_for_gateway_idle();
    w.wait_quiet();
    w.tick(&(chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339());
    w.wait_quiet();
    let last = billd(&w, &args);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last));
    assert_eq!(agains(&w, "billd-s1-0-c1"), 1, "charged twice");
    assert_eq!(plan(), "pro");
    let paid: Vec<_> = payments(&w, "billd-s1-0-c1");
    assert_eq!(paid.len(), 1, "{paid:?}");
}
