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

[[plans]]
id = "annual2"
name = "Annual 2"
amount = 200000
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
    // Listed with its subscription, never as a one-time charge (README: `--one-time` lists only those, both kinds).
    let one_time = text(&billd(&w, &["charges", "--one-time"]));
    assert!(!one_time.contains("billd-s1-0-c1") && !one_time.contains("proration"), "{one_time}");
    let json: serde_json::Value =
        serde_json::from_slice(&billd(&w, &["charges", "--one-time", "--json"]).stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(0), "{json}");
    let its_own = text(&billd(&w, &["charges", "--subscription", "s1"]));
    assert!(its_own.contains("proration") && its_own.contains("billd-s1-0-c1"), "{its_own}");
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
    // The next charge: a year after the first charge time at or after the change (22:00 KST on 2025-01-16, after
    // the 10:00 charge time: 2025-01-17), so the first period is never shorter than a year.
    let due: i64 = w.db().query_row("SELECT next_due_at FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
    assert_eq!(chrono::DateTime::from_timestamp(due, 0).unwrap().to_rfc3339(), "2026-01-17T01:00:00+00:00");
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

fn next_due(w: &World) -> String {
    let due: i64 = w.db().query_row("SELECT next_due_at FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
    chrono::DateTime::from_timestamp(due, 0).unwrap().to_rfc3339()
}

fn plan_of(w: &World) -> String {
    w.db().query_row("SELECT plan_id FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap()
}

fn pending_changes(w: &World) -> i64 {
    w.db().query_row("SELECT count(*) FROM plan_changes WHERE state = 'pending'", [], |r| r.get(0)).unwrap()
}

/// Issue 25 review F1: a change made now after a change of interval scheduled at period end settles the period in
/// force (monthly basic), not the scheduled plan's interval: monthly -> (at period end) yearly -> (now) another
/// yearly restarts the calendar now and charges the new year less January's unused half, and the scheduled change
/// is replaced by the one made now.
#[test]
fn a_change_now_after_a_scheduled_change_of_interval_settles_the_period_in_force() {
    let w = world();
    subscribed(&w, "basic");
    let out = change(&w, "annual", "--at-period-end", "2025-01-10T00:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = change(&w, "annual2", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("replaces the change to annual"), "{}", text(&out));
    // 200000 for the new year, less half of January's 10000 (not half of 190000 over the rest of January).
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(195_000, "paid".to_string())]);
    assert_eq!(period_row(&w, 1).0, "paid", "the new plan's first period starts now");
    assert_eq!(plan_of(&w), "annual2");
    assert!(next_due(&w).starts_with("2026-01-1"), "{}", next_due(&w));
    // February and the scheduled change's first due date bill nothing: the year is paid.
    w.tick("2025-02-01T01:00:00Z");
    w.tick("2025-03-01T01:00:00Z");
    assert_eq!(w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count(), 2);
}

/// The mirror: yearly -> (at period end) monthly -> (now) another monthly restarts now and credits the year's
/// unused part (not the difference of the monthly prices over the rest of the year), so the next month is paid by
/// the credit, not nothing billed until next January.
#[test]
fn a_change_now_after_a_scheduled_change_to_monthly_credits_the_rest_of_the_year() {
    let w = world();
    subscribed(&w, "annual");
    let out = change(&w, "basic", "--at-period-end", "2025-01-10T00:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = change(&w, "pro", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // 100000 for 365 days, 349.5 of them unused (rounded up) = 95754; less pro's first month (30000).
    assert_eq!(credit(&w), 95_754 - 30_000);
    assert_eq!(plan_of(&w), "pro");
    assert!(next_due(&w).starts_with("2025-02-1"), "{}", next_due(&w));
    // The next month falls due in February and is paid by the credit (no request).
    w.tick("2025-02-18T01:00:00Z");
    assert_eq!(period_row(&w, 2), ("paid".into(), 30_000, 30_000));
    assert_eq!(credit(&w), 95_754 - 60_000);
}

/// Issue 25 review L1: a change back-dated before the last change of the period is refused, nothing changed.
#[test]
fn a_change_before_the_last_change_of_the_period_is_refused() {
    let w = world();
    subscribed(&w, "basic");
    let out = change(&w, "pro", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let back = change(&w, "basic", "--now", "2025-01-10T00:00:00Z");
    assert_eq!(back.status.code(), Some(1), "{}", text(&back));
    assert!(text(&back).contains("before the last change"), "{}", text(&back));
    assert_eq!(plan_of(&w), "pro");
    assert_eq!(credit(&w), 0);
}

/// Issue 25 review L2: an interval change made after the day's charge time restarts from the next charge time, so
/// its first period is never shorter than the interval it is charged in full for.
#[test]
fn an_interval_change_after_charge_time_never_makes_a_short_full_price_period() {
    let w = world();
    subscribed(&w, "basic");
    // 23:59 KST on 2025-01-16, after the 10:00 charge time.
    let out = change(&w, "annual", "--now", "2025-01-16T14:59:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let start = chrono::DateTime::parse_from_rfc3339("2025-01-16T14:59:00Z").unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(&next_due(&w)).unwrap();
    let year = chrono::DateTime::parse_from_rfc3339("2026-01-16T01:00:00Z").unwrap()
        - chrono::DateTime::parse_from_rfc3339("2025-01-16T01:00:00Z").unwrap();
    assert!(next - start >= year, "a first period of {} for a full year's price", next - start);
    assert_eq!(next_due(&w), "2026-01-17T01:00:00+00:00");
}

/// Issue 25 review F2: a sync while a change's charge is in flight leaves the subscription alone (the change
/// settles, then billing goes on): the charge's lost answer is found paid by the change's rerun, the change
/// applies, and the next period opens and bills the new plan.
#[test]
fn a_sync_while_a_change_is_in_flight_never_blocks_billing() {
    let w = World::new(Setup {
        body: &format!("{PLANS}{}", common::sub("s1", "c1", "basic", "2025-01-01")),
        timeout: "1s",
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-01T01:00:00Z");
    assert_eq!(w.paid_for("c1").len(), 1);
    // The file names the new plan first (a subscription from the file bills the file's plan).
    w.write_config(&Setup {
        body: &format!("{PLANS}{}", common::sub("s1", "c1", "pro", "2025-01-01")),
        timeout: "1s",
        ..Default::default()
    });
    w.sandbox.add_fault(FaultRule {
        customer_uid: None,
        fault: Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
    let out = change(&w, "pro", "--now", HALFWAY);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(pending_changes(&w), 1);
    // A sync (and a tick's sync) meanwhile: the subscription is left to the change.
    let sync = billd(&w, &["sync", "--as-of", "2025-01-17T00:00:00Z"]);
    assert!(sync.status.success(), "{}", text(&sync));
    assert!(text(&sync).contains("not settled"), "{}", text(&sync));
    assert_eq!(plan_of(&w), "basic");
    w.wait_for_gateway_idle();
    w.wait_quiet();
    // Its rerun finds the charge paid by lookup: the change applies (the sync's update was the same plan).
    let rerun = change(&w, "pro", "--now", HALFWAY);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(pending_changes(&w), 0);
    assert_eq!(plan_of(&w), "pro");
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(10_000, "paid".to_string())]);
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(30_000, "paid".to_string())]);
}

/// The same with a tick (whose sync runs while the answer is lost), and the change settled by its rerun.
#[test]
fn a_tick_while_a_change_is_in_flight_never_blocks_billing() {
    let w = World::new(Setup {
        body: &format!("{PLANS}{}", common::sub("s1", "c1", "basic", "2025-01-01")),
        timeout: "1s",
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-01T01:00:00Z");
    w.write_config(&Setup {
        body: &format!("{PLANS}{}", common::sub("s1", "c1", "pro", "2025-01-01")),
        timeout: "1s",
        ..Default::default()
    });
    w.sandbox.add_fault(FaultRule {
        customer_uid: None,
        fault: Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
    let out = change(&w, "pro", "--now", HALFWAY);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    w.tick("2025-01-17T00:00:00Z");
    w.wait_for_gateway_idle();
    w.wait_quiet();
    let rerun = change(&w, "pro", "--now", HALFWAY);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(pending_changes(&w), 0);
    assert_eq!(plan_of(&w), "pro");
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(30_000, "paid".to_string())]);
    assert_eq!(agains(&w, "billd-s1-0-c1"), 1);
}

/// Issue 25 review F3: a period partly paid by credit that dunning gives up gives its credit back to the
/// subscription, with an event.
#[test]
fn a_period_given_up_by_dunning_gives_its_credit_back() {
    let w = world();
    subscribed(&w, "pro");
    let out = change(&w, "basic", "--now", "2025-01-24T07:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(credit(&w), 5_000);
    w.sandbox.register_customer("c1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(period_row(&w, 1), ("open".into(), 10_000, 5_000));
    assert_eq!(credit(&w), 0);
    for day in ["2025-02-02T01:00:00Z", "2025-02-04T01:00:00Z", "2025-02-08T01:00:00Z"] {
        w.tick(day);
    }
    assert_eq!(period_row(&w, 1), ("given_up".into(), 10_000, 0));
    // Given back, then (dunning canceled it: it ended) released, refundable: never lost.
    let released: i64 = w
        .db()
        .query_row("SELECT sum(released) FROM plan_changes WHERE subscription_id = 's1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!((credit(&w), released), (0, 5_000), "the credit spent on a period given up is lost");
    let n: i64 = w
        .db()
        .query_row("SELECT count(*) FROM events WHERE kind = 'period.credit_returned'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

/// Issue 25 review F4: a charge whose period produced a credit cannot be refunded beyond what was not credited
/// (the credit is the customer's money already).
#[test]
fn a_refund_never_takes_back_what_was_credited() {
    let w = world();
    subscribed(&w, "pro");
    // Halfway: 10000 of January's 30000 credited.
    let out = change(&w, "basic", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(credit(&w), 10_000);
    let all = billd(&w, &["refund", "billd-s1-0", "--reason", "customer asked"]);
    assert_eq!(all.status.code(), Some(1), "{}", text(&all));
    assert!(text(&all).contains("credited"), "{}", text(&all));
    let refunded = w.requests().iter().filter(|r| r.endpoint == Endpoint::Cancel).count();
    assert_eq!(refunded, 0, "a refund was sent");
    let part = billd(&w, &["refund", "billd-s1-0", "--amount", "20000", "--reason", "customer asked"]);
    assert_eq!(part.status.code(), Some(0), "{}", text(&part));
}

/// Issue 25 review L3: `billd upcoming` shows what is charged after the credit, and a period the credit pays whole
/// as `paid by credit`, out of the total.
#[test]
fn upcoming_shows_the_amounts_after_credit() {
    let w = world();
    subscribed(&w, "pro");
    // 10000 credited: February (basic, 10000) is paid by it whole, March charged in full.
    let out = change(&w, "basic", "--now", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let up = billd(&w, &["upcoming", "--days", "60", "--as-of", "2025-01-20T00:00:00Z"]);
    let t = text(&up);
    assert!(up.status.success(), "{t}");
    assert!(t.contains("paid by credit"), "{t}");
    assert!(t.contains("next 60 days: 1 charge, 10000 KRW"), "{t}");
    // A partial credit: the charge after it.
    let w = world();
    subscribed(&w, "pro");
    let out = change(&w, "basic", "--now", "2025-01-24T07:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let up = billd(&w, &["upcoming", "--days", "60", "--as-of", "2025-01-25T00:00:00Z", "--json"]);
    let items: Vec<serde_json::Value> = serde_json::from_slice(&up.stdout).unwrap();
    let amounts: Vec<i64> = items.iter().map(|i| i["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [5_000, 10_000], "{items:?}");
}

/// A third review's findings (each reproduced): a period already refunded was credited again by a downgrade made
/// now (10 000 back and 4 843 of credit on 10 000 paid); an interval change made now on a subscription canceled at
/// period end restarted the calendar past its cancel date, and a year was charged after it.
#[test]
fn a_change_now_never_credits_a_refunded_period_nor_bills_past_a_cancel_date() {
    let w = world();
    subscribed(&w, "pro");
    let refund = billd(&w, &["refund", "billd-s1-0", "--amount", "1000", "--reason", "goodwill"]);
    assert!(refund.status.success(), "{}", text(&refund));
    let out = change(&w, "basic", "--now", "2025-01-16T12:00:00+09:00");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("has refunds"), "{}", text(&out));
    let credit: i64 = w.db().query_row("SELECT credit FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
    assert_eq!(credit, 0, "a refunded period credited");
    // Canceled at period end, then an interval change now: refused (it changes at period end, past its end).
    let end = billd(&w, &["cancel", "s1", "--at-period-end", "--as-of", "2025-01-17T00:00:00+09:00"]);
    assert!(end.status.success(), "{}", text(&end));
    let out = change(&w, "annual", "--now", "2025-01-17T12:00:00+09:00");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("fixed term or a cancel date") || said.contains("no paid period covering"), "{said}");
    w.tick("2025-02-01T10:00:00+09:00");
    w.tick("2026-01-17T10:00:00+09:00");
    assert_eq!(w.paid_for("c1").len(), 1, "charged after its cancel date");
    assert_eq!(w.status_of("s1"), "canceled");
}

/// A fourth review's findings: refunding an upgrade's own charge, then downgrading now, credited the refunded money;
/// an interval change at period end on a subscription with a cancel date billed a year past it.
#[test]
fn a_refunded_upgrade_is_not_credited_and_a_cancel_date_keeps_its_interval_at_period_end() {
    let w = world();
    subscribed(&w, "basic");
    let up = change(&w, "pro", "--now", "2025-01-16T12:00:00+09:00");
    assert!(up.status.success(), "{}", text(&up));
    let refund = billd(&w, &["refund", "billd-s1-0-c1", "--reason", "goodwill"]);
    assert!(refund.status.success(), "{}", text(&refund));
    let down = change(&w, "basic", "--now", "2025-01-16T13:00:00+09:00");
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    assert!(text(&down).contains("has refunds"), "{}", text(&down));
    let credit: i64 = w.db().query_row("SELECT credit FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
    assert_eq!(credit, 0, "a refunded upgrade credited");
    let end = billd(&w, &["cancel", "s1", "--at-period-end", "--as-of", "2025-01-17T00:00:00+09:00"]);
    assert!(end.status.success(), "{}", text(&end));
    let yearly = change(&w, "annual", "--at-period-end", "2025-01-17T12:00:00+09:00");
    assert_eq!(yearly.status.code(), Some(1), "{}", text(&yearly));
    assert!(text(&yearly).contains("keeps its interval"), "{}", text(&yearly));
}
