//! Issue 25, an outside review of plan changes (`billd subscriptions change`), against the real binary and the
//! sandbox: a refund never gives back what a change of interval took (F1); a cancel or a pause stops a change's
//! charge that has not left and says when one has, and one paid after never reopens billing (F2); a change paid
//! after a pause and resume or a cancel date never rewrites them (F3); a change killed before its charge never
//! freezes its subscription (F4); credit left at the end is refundable (F5); held credit pays a change first; a
//! discount is never stretched over a new interval.

mod common;

use billd_sandbox::{Endpoint, Fault, FaultRule};
use common::{Setup, World, cards, text, wait_for};
use std::process::Output;
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
id = "max"
name = "Max"
amount = 70000
interval = "1 month"

[[plans]]
id = "annual"
name = "Annual"
amount = 100000
interval = "1 year"
"#;

fn world_with(timeout: &str) -> World {
    let w = World::new(Setup { body: PLANS, timeout, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w
}

fn world() -> World {
    world_with("1s")
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

fn change(w: &World, plan: &str, as_of: &str) -> Output {
    billd(w, &["subscriptions", "change", "s1", "--plan", plan, "--now", "--as-of", as_of])
}

fn refund(w: &World, merchant_uid: &str, amount: Option<i64>) -> Output {
    let amount = amount.map(|a| a.to_string());
    let mut args = vec!["refund", merchant_uid, "--reason", "customer asked"];
    if let Some(a) = &amount {
        args.extend(["--amount", a.as_str()]);
    }
    billd(w, &args)
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

/// What was refunded at the gateway, in all.
fn refunded(w: &World) -> i64 {
    w.ledger().iter().map(|e| e.cancel_amount).sum()
}

fn show(w: &World) -> String {
    text(&billd(w, &["subscriptions", "show", "s1"]))
}

fn plan_of(w: &World) -> String {
    w.db().query_row("SELECT plan_id FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap()
}

/// s1's credit still held by its periods, and what its plan changes' credit released in all.
fn credit_on_periods_and_released(w: &World) -> (i64, i64) {
    w.db()
        .query_row(
            "SELECT (SELECT coalesce(sum(credit), 0) FROM periods WHERE subscription_id = 's1'),
                    (SELECT coalesce(sum(released), 0) FROM plan_changes WHERE subscription_id = 's1')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

fn credit(w: &World) -> i64 {
    w.db().query_row("SELECT credit FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap()
}

/// The gateway makes the next charge 1.5 s after its request, past the 1 s timeout: its outcome is unknown.
fn next_charge_in_doubt(w: &World) {
    w.sandbox.add_fault(FaultRule {
        customer_uid: None,
        fault: Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
}

/// Lets a charge in doubt land and its quiet period pass (real time, as billd counts it), then settles the change
/// to `plan` by its rerun, which looks its charge up (a pass at a billing instant in the past does not look at a
/// one-time charge before its real check time).
fn settle_by_rerun(w: &World, plan: &str) -> Output {
    w.wait_for_gateway_idle();
    w.wait_quiet();
    change(w, plan, HALFWAY)
}

// Halfway through January's period (2025-01-01T01:00Z to 2025-02-01T01:00Z, 31 days).
const HALFWAY: &str = "2025-01-16T13:00:00Z";

/// F1: a change of interval nets the old period's unused part into the new plan's first period (95 000 charged for a
/// year after 5 000 of January): January may then refund only the other 5 000, never the whole month; a yearly plan
/// changed to monthly at once put the whole year into the month and its credit: nothing of the year is refundable.
/// After a partial refund billd says truly what is left (0, not 10 000).
#[test]
fn a_refund_never_gives_back_what_a_change_of_interval_took() {
    let w = world();
    subscribed(&w, "basic");
    let out = change(&w, "annual", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(95_000, "paid".to_string())]);
    let all = refund(&w, "billd-s1-0", None);
    assert_eq!(all.status.code(), Some(1), "{}", text(&all));
    assert!(text(&all).contains("at most 5000 KRW"), "{}", text(&all));
    assert_eq!(refunded(&w), 0, "January refunded whole after half of it paid the year");
    let part = refund(&w, "billd-s1-0", Some(5000));
    assert_eq!(part.status.code(), Some(0), "{}", text(&part));

    let w = world();
    subscribed(&w, "annual");
    let out = change(&w, "basic", "2025-01-01T01:00:01Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let month = refund(&w, "billd-s1-0", Some(10_000));
    assert_eq!(month.status.code(), Some(1), "{}", text(&month));
    assert_eq!(refunded(&w), 0, "the year refunded while its money paid the new month and the credit");

    // The same interval: 10 000 of 30 000 credited, 20 000 refunded; nothing more can be, and billd says so.
    let w = world();
    subscribed(&w, "pro");
    assert_eq!(change(&w, "basic", HALFWAY).status.code(), Some(0));
    let part = refund(&w, "billd-s1-0", Some(20_000));
    assert_eq!(part.status.code(), Some(0), "{}", text(&part));
    assert!(text(&part).contains("; 0 KRW can still be refunded"), "{}", text(&part));
}

/// F2 (a): a cancel between the intent of a change's charge and its request withdraws the change: the request never
/// leaves, the command says so, the plan is unchanged. (b): a charge in doubt when the subscription is paused and
/// canceled: both say a charge already sent will be settled; found paid, the change does not apply to the canceled
/// subscription, and its amount is credited and, as the subscription has ended, refundable.
#[test]
fn a_cancel_stops_a_change_charge_not_sent_and_says_when_one_is() {
    let w = world();
    subscribed(&w, "basic");
    let gate = w.dir.path().join("gate");
    let child = w
        .billd()
        .args(["subscriptions", "change", "s1", "--plan", "annual", "--now", "--as-of", HALFWAY])
        .env("BILLD_PAUSEPOINT", format!("one_time_after_intent:{}", gate.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reached = w.dir.path().join("gate.reached");
    wait_for("the change's charge intent", || reached.exists());
    let cancel = billd(&w, &["cancel", "s1", "--as-of", HALFWAY]);
    std::fs::write(&gate, b"").unwrap();
    let changed = child.wait_with_output().unwrap();
    assert!(cancel.status.success(), "{}", text(&cancel));
    assert!(text(&cancel).contains("withdrawn"), "{}", text(&cancel));
    assert_ne!(changed.status.code(), Some(0), "{}", text(&changed));
    assert!(text(&changed).contains("not sent"), "{}", text(&changed));
    assert_eq!(agains(&w, "billd-s1-0-c1"), 0, "the change's charge left after the cancel");
    assert_eq!((plan_of(&w), w.status_of("s1")), ("basic".into(), "canceled".into()));

    let w = world();
    subscribed(&w, "basic");
    next_charge_in_doubt(&w);
    let out = change(&w, "annual", HALFWAY);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let pause = billd(&w, &["pause", "s1", "--as-of", "2025-01-16T13:10:00Z"]);
    assert!(text(&pause).contains("one charge already sent will be settled"), "{}", text(&pause));
    let cancel = billd(&w, &["cancel", "s1", "--as-of", "2025-01-16T13:10:00Z"]);
    let said = text(&cancel);
    assert!(said.contains("one charge already sent will be settled") && said.contains("plan change"), "{said}");
    let rerun = settle_by_rerun(&w, "annual");
    assert!(text(&rerun).contains("does not apply"), "{}", text(&rerun));
    w.tick("2025-01-17T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(95_000, "paid".to_string())]);
    assert_eq!((plan_of(&w), w.status_of("s1")), ("basic".into(), "canceled".into()), "applied to a canceled one");
    w.tick("2026-01-18T01:00:00Z");
    assert_eq!(w.paid_for("c1").len(), 2, "billed after the cancel: {:?}", w.paid_for("c1"));
    assert!(show(&w).contains("95000 KRW released"), "{}", show(&w));
    let back = refund(&w, "billd-s1-0-c1", None);
    assert_eq!(back.status.code(), Some(0), "{}", text(&back));
}

/// F3 (a): a change's charge in doubt, a pause and a resume three periods later meanwhile, then the charge is
/// found paid: the change does not rewind the calendar (the skipped periods stay skipped; May is charged once, here
/// by the credit the change's charge left). (b): a new interval in doubt, canceled at period end meanwhile: never a
/// year billed past the cancel date; the year's charge is credited, refundable once it ends.
#[test]
fn a_change_paid_late_never_rewrites_a_pause_or_a_cancel_date() {
    let w = world();
    subscribed(&w, "basic");
    next_charge_in_doubt(&w);
    assert_ne!(change(&w, "pro", HALFWAY).status.code(), Some(0));
    assert!(billd(&w, &["pause", "s1", "--as-of", "2025-01-17T01:00:00Z"]).status.success());
    let resume = billd(&w, &["resume", "s1", "--as-of", "2025-04-10T01:00:00Z"]);
    assert!(resume.status.success(), "{}", text(&resume));
    let rerun = settle_by_rerun(&w, "pro");
    assert!(text(&rerun).contains("found paid"), "{}", text(&rerun));
    w.tick("2025-04-10T03:00:00Z");
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(10_000, "paid".to_string())]);
    w.tick("2025-05-01T01:00:00Z");
    for skipped in ["billd-s1-1", "billd-s1-2", "billd-s1-3"] {
        assert_eq!(agains(&w, skipped), 0, "{skipped}, skipped by the resume, was charged");
    }
    assert_eq!(w.paid_for("c1").len(), 2, "{:?}", w.paid_for("c1"));
    assert_eq!((plan_of(&w), credit(&w)), ("basic".into(), 0), "May not paid by the change's credited charge");

    let w = world();
    subscribed(&w, "basic");
    next_charge_in_doubt(&w);
    assert_ne!(change(&w, "annual", HALFWAY).status.code(), Some(0));
    let end = billd(&w, &["cancel", "s1", "--at-period-end", "--as-of", "2025-01-17T01:00:00Z"]);
    assert!(end.status.success(), "{}", text(&end));
    let rerun = settle_by_rerun(&w, "annual");
    assert!(text(&rerun).contains("found paid"), "{}", text(&rerun));
    for day in ["2025-01-17T03:00:00Z", "2025-02-01T01:00:00Z", "2026-01-17T01:00:00Z", "2026-01-18T01:00:00Z"] {
        w.tick(day);
    }
    assert_eq!(w.paid_for("c1").len(), 2, "billed past the cancel date: {:?}", w.paid_for("c1"));
    assert_eq!(w.status_of("s1"), "canceled");
    assert!(refund(&w, "billd-s1-0-c1", None).status.success(), "the year's charge is not refundable");
}

/// F4: `subscriptions change` killed after recording its change, before its charge's intent (failpoint
/// `change_after_pending`): `upcoming` and `show` say what holds the subscription; a pass within the command's
/// grace leaves it held without making its next wake an instant already past (a daemon spun a core on it); the next
/// pass after the grace abandons it (nothing was sent) and billing goes on.
#[test]
fn a_change_killed_before_its_charge_never_freezes_its_subscription() {
    let w = world_with("5s");
    subscribed(&w, "basic");
    // Half a minute before February's charge is due (to a yearly plan: it owes nearly the year, so it is pending).
    let killed = w
        .billd()
        .args(["subscriptions", "change", "s1", "--plan", "annual", "--now", "--as-of", "2025-02-01T00:59:30Z"])
        .env("BILLD_FAILPOINT", "change_after_pending")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "{}", text(&killed));
    let up = text(&billd(&w, &["upcoming", "--as-of", "2025-02-01T01:00:30Z", "--days", "1"]));
    assert!(up.contains("held") && !up.contains("charged by the next pass"), "{up}");
    assert!(show(&w).contains("held     by its plan change to annual"), "{}", show(&w));
    // Within the grace (the command could still be running): held, and the next wake is not in the past.
    let tick = w.tick("2025-02-01T01:00:30Z");
    let log = text(&tick);
    let wake = log.split("next_wake=").nth(1).map(|s| s.split_whitespace().next().unwrap_or("").to_string());
    let wake = wake.unwrap_or_else(|| panic!("no next_wake in {log}"));
    assert!(wake == "none" || wake.as_str() > "2025-02-01T01:00:30", "next wake {wake} is past: {log}");
    assert_eq!(agains(&w, "billd-s1-1"), 0, "opened under a pending change");
    // After it: abandoned, said, February charged on the old plan.
    let tick = w.tick("2025-02-01T01:05:00Z");
    assert!(text(&tick).contains("plan_change_abandoned"), "{}", text(&tick));
    assert_eq!(payments(&w, "billd-s1-1"), [(10_000, "paid".to_string())]);
    assert_eq!(plan_of(&w), "basic");
    assert_eq!(agains(&w, "billd-s1-0-c1"), 0);
}

/// F5: a downgrade's credit outlives the subscription (a cancel at period end ends it with 19 355 left): released
/// when it ends, said, and refundable (billd refused it: at most 645).
#[test]
fn credit_left_when_a_subscription_ends_is_refundable() {
    let w = world();
    subscribed(&w, "pro");
    // One day into January (30 of 31 days left): 20 000 x 30/31 credited, rounded up.
    let out = change(&w, "basic", "2025-01-02T01:00:00Z");
    assert!(text(&out).contains("19355 KRW credited"), "{}", text(&out));
    assert!(billd(&w, &["cancel", "s1", "--at-period-end", "--as-of", "2025-01-02T02:00:00Z"]).status.success());
    let tick = w.tick("2025-02-01T01:00:00Z");
    assert_eq!(w.status_of("s1"), "canceled");
    assert!(text(&tick).contains("19355 of credit left"), "{}", text(&tick));
    assert!(show(&w).contains("19355 KRW released"), "{}", show(&w));
    let back = refund(&w, "billd-s1-0", Some(19_355));
    assert_eq!(back.status.code(), Some(0), "{}", text(&back));
    assert_eq!(refunded(&w), 19_355);
}

/// A `billd cancel` (now) of a subscription holding credit says what it released and how to refund it, as the
/// README promises of an end's output (it said only "canceled; it will never be charged again").
#[test]
fn a_cancel_says_the_credit_it_releases_and_how_to_refund_it() {
    let w = world();
    subscribed(&w, "pro");
    assert!(text(&change(&w, "basic", "2025-01-02T01:00:00Z")).contains("19355 KRW credited"));
    let out = billd(&w, &["cancel", "s1", "--as-of", "2025-01-03T01:00:00Z"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("canceled") && said.contains("19355 KRW"), "the credit released is not said: {said}");
    assert!(said.contains("refundable") && said.contains("billd refund"), "how to refund it is not said: {said}");
    assert_eq!(w.status_of("s1"), "canceled");
    assert_eq!(credit(&w), 0, "the credit is still held");
    // A second cancel releases nothing more ("already canceled").
    let again = billd(&w, &["cancel", "s1", "--as-of", "2025-01-03T02:00:00Z"]);
    assert!(!text(&again).contains("19355"), "{}", text(&again));
}

/// The credit a subscription holds pays a change's charge first: whole (nothing sent), or in part (the rest sent).
#[test]
fn a_change_charge_spends_the_credit_held_first() {
    let w = world();
    subscribed(&w, "pro");
    // Three quarters through January: 5 000 credited; an hour later, basic -> max owes 14 919: 9 919 charged.
    assert_eq!(change(&w, "basic", "2025-01-24T07:00:00Z").status.code(), Some(0));
    assert_eq!(credit(&w), 5_000);
    let out = change(&w, "max", "2025-01-24T08:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(9_919, "paid".to_string())]);
    assert_eq!((credit(&w), plan_of(&w)), (0, "max".into()));

    let w = world();
    subscribed(&w, "pro");
    // Halfway: 10 000 credited; at three quarters, back to pro owes 5 000: paid by the credit, nothing sent.
    assert_eq!(change(&w, "basic", HALFWAY).status.code(), Some(0));
    let out = change(&w, "pro", "2025-01-24T07:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(agains(&w, "billd-s1-0-c1"), 0, "charged while the credit held paid it");
    assert_eq!((credit(&w), plan_of(&w)), (5_000, "pro".into()));
}

/// A discount counts periods of the plan it was given for: a change to another interval while it still covers
/// periods would make them whole years at its price; refused until its entry ends it, then charged in full.
#[test]
fn a_discount_is_never_stretched_over_a_new_interval() {
    let entry = |plan: &str, periods: u32| {
        format!(
            "{PLANS}{}discount = {{ percent = 50, periods = {periods} }}\n",
            common::sub("s1", "c1", plan, "2025-01-01")
        )
    };
    let w = World::new(Setup { body: &entry("basic", 3), timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-0"), [(5_000, "paid".to_string())]);
    w.write_config(&Setup { body: &entry("annual", 3), timeout: "1s", ..Default::default() });
    let out = change(&w, "annual", HALFWAY);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("counts periods of the plan it was given for"), "{}", text(&out));
    assert_eq!(agains(&w, "billd-s1-0-c1"), 0);
    // Ended where it is (one period billed): the year is charged in full, less January's unused half (2 500).
    w.write_config(&Setup { body: &entry("annual", 1), timeout: "1s", ..Default::default() });
    let out = change(&w, "annual", HALFWAY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(payments(&w, "billd-s1-0-c1"), [(97_500, "paid".to_string())]);
}

/// Lookups review, 1: a change's charge whose answer was lost and which was refunded in full in i'mport's console
/// before billd recorded it collected nothing: the change is not applied (and nothing credited), by a rerun as by a
/// pass. It used to be taken as paid once lookups found refunded payments: the upgrade applied for free, or, after
/// a pause, its money was credited on top of the refund.
#[test]
fn a_change_charge_refunded_in_the_console_before_it_is_recorded_does_not_apply() {
    let w = world();
    subscribed(&w, "basic");
    next_charge_in_doubt(&w);
    let out = change(&w, "pro", HALFWAY);
    assert!(!out.status.success(), "{}", text(&out));
    let m = "billd-s1-0-c1";
    wait_for("the change's charge at the gateway", || !payments(&w, m).is_empty());
    let imp_uid = w.ledger().into_iter().find(|e| e.merchant_uid == m).unwrap().imp_uid;
    w.sandbox.refund_in_console(&imp_uid, None, "upgrade refunded by phone").unwrap();
    let rerun = settle_by_rerun(&w, "pro");
    assert!(!rerun.status.success(), "{}", text(&rerun));
    assert!(text(&rerun).contains("refunded in full"), "{}", text(&rerun));
    assert_eq!(plan_of(&w), "basic", "{}", text(&rerun));
    assert_eq!(credit(&w), 0);
    assert_eq!(agains(&w, m), 1);
    // February bills the old plan.
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(10000, "paid".to_string())]);
}

/// Lookups review, 2: a refund made in i'mport's console and not recorded yet (no notification, no `refunds
/// --sync`) was credited again by a change now: 6 000 of January given back by the merchant, then 3 097 of credit
/// for its unused part. The change looks the period's refunds up first, records them, and is refused.
#[test]
fn a_change_now_looks_the_periods_refunds_up_before_crediting() {
    let w = world();
    subscribed(&w, "pro");
    let imp_uid = w.ledger().into_iter().find(|e| e.merchant_uid == "billd-s1-0").unwrap().imp_uid;
    w.sandbox.refund_in_console(&imp_uid, Some(6000), "partial, by phone").unwrap();
    let out = change(&w, "basic", HALFWAY);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("has refunds"), "{}", text(&out));
    assert_eq!((plan_of(&w), credit(&w)), ("pro".to_string(), 0));
    let rows: i64 =
        w.db().query_row("SELECT count(*) FROM refunds WHERE source = 'external'", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1, "the console refund is recorded");
}

/// Lifecycle review, 1: credit a period took when it opened (a downgrade's), on a period then declined and still open
/// when the subscription is canceled by an operator: the credit stayed on the open period, neither spendable nor
/// refundable (`refund` counted it as the customer's already). It is given back and released with the end, and
/// refundable.
#[test]
fn credit_on_an_open_period_is_released_when_the_subscription_is_canceled() {
    let w = world();
    subscribed(&w, "pro");
    let out = change(&w, "basic", "2025-01-25T01:00:00Z");
    assert!(out.status.success(), "{}", text(&out));
    let credit_made = credit(&w);
    assert!(credit_made > 0 && credit_made < 10000, "{credit_made}");
    w.sandbox.register_customer("c1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(w.status_of("s1"), "past_due");
    assert_eq!(credit(&w), 0, "period 1 took the credit when it opened");
    let out = billd(&w, &["cancel", "s1", "--as-of", "2025-02-02T00:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out));
    let (on_periods, released) = credit_on_periods_and_released(&w);
    assert_eq!((on_periods, released), (0, credit_made), "the credit is lost on the open period");
    // Released, the credit is refundable from January's charge with the rest of it: all 30 000 (before, at most
    // 30 000 less the credit stuck on the open period).
    let all = refund(&w, "billd-s1-0", Some(30000));
    assert!(all.status.success(), "{}", text(&all));
    assert_eq!(refunded(&w), 30000);
}

/// Lifecycle review, 5 and 6: a subscription added by command with a discount. A change at period end to a plan of
/// the same interval was refused as if it changed the interval (and told to edit an entry it does not have); a change
/// to a plan the discount leaves nothing of was accepted and charged 1 won a period.
#[test]
fn a_discount_blocks_only_a_change_of_interval_and_never_leaves_a_one_won_price() {
    let plans = format!("{PLANS}\n[[plans]]\nid = \"mini\"\nname = \"Mini\"\namount = 1000\ninterval = \"1 month\"\n");
    let w = World::new(Setup { body: &plans, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let add = [
        "subscriptions",
        "add",
        "--id",
        "s1",
        "--customer-uid",
        "c1",
        "--plan",
        "pro",
        "--start",
        "2025-01-01",
        "--discount-amount",
        "2999",
        "--discount-periods",
        "3",
        "--as-of",
        "2025-01-01T00:00:00Z",
    ];
    let out = billd(&w, &add);
    assert!(out.status.success(), "{}", text(&out));
    w.tick("2025-01-01T01:00:00Z");
    let at_end = ["subscriptions", "change", "s1", "--plan", "basic", "--at-period-end", "--as-of", HALFWAY];
    let out = billd(&w, &at_end);
    assert!(out.status.success(), "a change of the same interval refused: {}", text(&out));
    for timing in ["--now", "--at-period-end"] {
        let out = billd(&w, &["subscriptions", "change", "s1", "--plan", "mini", timing, "--as-of", HALFWAY]);
        assert!(!out.status.success(), "{timing}: {}", text(&out));
        assert!(text(&out).contains("leaves nothing"), "{timing}: {}", text(&out));
    }
    let out = billd(&w, &["subscriptions", "change", "s1", "--plan", "annual", "--at-period-end", "--as-of", HALFWAY]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("in its entry"), "a subscription added by command has no entry: {}", text(&out));
}

/// Lifecycle review, 2 and 4: a period that fell due and is not charged yet (no pass since: billd down, or `tick`
/// from an hourly timer) is the period in force, owed at its plan. A change at period end repriced it (charged the
/// new plan's price for February), and a cancel at period end ended at an instant already past, so February was
/// never charged. Now the change is refused until a pass charges it, and the cancel ends with the period after it.
#[test]
fn a_period_due_and_not_charged_yet_is_neither_repriced_nor_dropped() {
    let w = world();
    subscribed(&w, "pro");
    // February fell due at 2025-02-01T01:00Z; no pass has run since.
    let change = ["subscriptions", "change", "s1", "--plan", "basic", "--at-period-end"];
    let out = billd(&w, &[&change[..], &["--as-of", "2025-02-01T01:30:00Z"]].concat());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not charged yet"), "{}", text(&out));
    assert_eq!(plan_of(&w), "pro");
    let out = billd(&w, &["cancel", "s1", "--at-period-end", "--as-of", "2025-02-03T00:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out));
    w.tick("2025-02-03T01:00:00Z");
    assert_eq!(payments(&w, "billd-s1-1"), [(30000, "paid".to_string())], "February dropped or repriced");
    assert_eq!(w.status_of("s1"), "canceling");
    w.tick("2025-03-01T01:00:00Z");
    assert!(payments(&w, "billd-s1-2").is_empty(), "charged past the cancel");
    assert_eq!(w.status_of("s1"), "canceled");
}

/// Money review 2, A2: canceled while the period holding a downgrade's credit had its charge in doubt (a 500), the
/// charge then settled as not made: the credit stayed on the open period for good. It is given back and released
/// when the charge is settled, refundable.
#[test]
fn credit_of_a_period_in_doubt_is_released_once_its_charge_settles_unpaid_after_a_cancel() {
    let w = world();
    subscribed(&w, "pro");
    assert!(change(&w, "basic", "2025-01-25T01:00:00Z").status.success());
    let credit_made = credit(&w);
    w.sandbox.add_fault(FaultRule { customer_uid: None, fault: Fault::Http500, times: Some(5) });
    w.tick("2025-02-01T01:00:00Z");
    assert_eq!(credit(&w), 0, "period 1 took the credit");
    let out = billd(&w, &["cancel", "s1", "--as-of", "2025-02-01T02:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out));
    w.wait_quiet();
    w.tick("2025-02-01T03:00:00Z");
    let (on_periods, released) = credit_on_periods_and_released(&w);
    assert_eq!((on_periods, released), (0, credit_made), "{}", show(&w));
    assert!(payments(&w, "billd-s1-1").iter().all(|(_, s)| s != "paid"));
}
