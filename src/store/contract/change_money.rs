//! The storage contract's cases for the money of plan changes (issue 25, an outside review): a change's charge
//! leaves only while its change is pending and its subscription bills, a paid one applies only to the subscription
//! it was decided from, one never begun is abandoned and never holds the next wake, credits count in every form in
//! the refund cap and are released when a subscription ends, held credit pays a change first, and no period opens at
//! or after a cancel date.

use super::changes::{paid_first, to_q};
use super::*;
use crate::store::{ChangeState, Changes, NewRefund, PlanChange, RefundRefused};

/// The charge (kind proration) of the change `to_q(id, amount)`.
fn proration(id: &str, amount: i64) -> OneTimeCharge {
    OneTimeCharge {
        merchant_uid: format!("m-{id}-0-c1"),
        kind: OneTimeKind::Proration,
        customer_uid: Some(format!("c-{id}")),
        subscription_id: Some(id.into()),
        name: "Q".into(),
        amount,
        currency: "KRW".into(),
        card_masked: "-".into(),
    }
}

/// Records `c` (pending) and begins its charge's intent: (one-time id, tries).
fn begun(s: &impl Store, c: &PlanChange) -> (i64, i64) {
    let row = s.change_plan(c, 0, c.at).unwrap().expect("recorded");
    assert_eq!(row.state, ChangeState::Pending);
    let charge = proration(&c.subscription_id, c.charge());
    let check = t0() + Duration::minutes(5);
    s.begin_one_time(&charge, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun")
}

fn state(s: &impl Store, id: &str) -> ChangeState {
    s.plan_changes(id).unwrap().last().expect("a change").state
}

fn refund(s: &impl Store, merchant_uid: &str, amount: i64) -> Result<crate::store::RefundRow, RefundRefused> {
    let r = NewRefund { merchant_uid: merchant_uid.into(), amount: Some(amount), reason: "r".into() };
    s.begin_refund(&r, &real(t0()), t0(), TIMEOUT_MS, t0() + Duration::minutes(1)).unwrap()
}

/// A change to a yearly plan (100 000) made halfway through `id`'s first month (9 900): it restarts the calendar,
/// opens period 1 paid, and owes the year less the month's unused half.
fn to_yearly(id: &str, year: i64) -> PlanChange {
    let owed = year - 4950;
    PlanChange {
        to_interval: "1 year".parse().unwrap(),
        to_amount: year,
        rate: None,
        owed,
        merchant_uid: (owed > 0).then(|| format!("m-{id}-0-c1")),
        next_period: 2,
        next_due_at: Some(t0() + Duration::days(380)),
        opens: Some((format!("m-{id}-1"), year)),
        anchor_date: NaiveDate::from_ymd_opt(2025, 1, 16).unwrap(),
        anchor_period: 1,
        ..to_q(id, 1)
    }
}

/// Issue 25 review F2: a cancel or a pause withdraws a change whose charge has not left (its go and its intent are
/// refused from then on: exactly one of the two wins) and says when one has left; a charge that had left and is then
/// found paid never applies the change to a subscription that stopped billing, and never reopens it: credited, and
/// released as refundable since the subscription has ended.
pub fn a_change_charge_leaves_only_while_its_change_is_pending_and_its_subscription_bills<B: Backend>(b: &B) {
    let s = b.open();
    paid_first(&s, &["a", "b", "c"]);
    // a: the intent is committed, then a cancel (another handle) before the go: withdrawn, the go refused.
    let (id, tries) = begun(&s, &to_q("a", 2500));
    let set = b.open().set_status("a", Status::Canceled, t0(), "canceled by operator").unwrap().unwrap();
    assert_eq!((set.changes_withdrawn, set.in_flight, set.change_charges), (1, 0, 0), "{set:?}");
    assert!(!s.one_time_go(id, tries, &real(t0())).unwrap(), "a withdrawn change's charge was allowed to leave");
    assert_eq!(state(&s, "a"), ChangeState::Failed);
    let again = s.begin_one_time(&proration("a", 2500), &real(t0()), t0(), TIMEOUT_MS, t0(), Some(tries));
    assert!(again.is_err(), "the intent of a withdrawn change's charge was begun again");
    // b: the go first, then a cancel: the charge is out (said), the change stays pending until settled.
    let (id, tries) = begun(&s, &to_q("b", 2500));
    assert!(s.one_time_go(id, tries, &real(t0())).unwrap());
    let set = b.open().set_status("b", Status::Canceled, t0(), "canceled by operator").unwrap().unwrap();
    assert_eq!((set.changes_withdrawn, set.in_flight, set.change_charges), (0, 1, 1), "{set:?}");
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_b"), None, t0()).unwrap());
    let after = b.open().subscription("b").unwrap().unwrap();
    assert_eq!((after.status, after.plan_id.as_str()), (Status::Canceled, "p"), "applied to a canceled subscription");
    assert_eq!(state(&s, "b"), ChangeState::Failed);
    assert_eq!((s.credit("b").unwrap(), s.plan_changes("b").unwrap()[0].released), (0, 2500), "not released");
    assert!(refund(&s, "m-b-0-c1", 2500).is_ok(), "the released charge is not refundable");
    // c: no intent yet when it is paused: withdrawn, and its intent refused.
    s.change_plan(&to_q("c", 2500), 0, t0()).unwrap().expect("recorded");
    let set = s.pause("c", t0(), "paused by operator", None).unwrap().unwrap();
    assert_eq!(set.changes_withdrawn, 1, "{set:?}");
    assert!(s.begin_one_time(&proration("c", 2500), &real(t0()), t0(), TIMEOUT_MS, t0(), None).is_err());
}

/// Issue 25 review F3: a change's charge found paid applies the change only to the subscription as it was decided
/// from, read inside the settling transaction: never over a pause and resume that moved its calendar (the settle
/// rewound it, and four periods were charged at once), never a new interval over a cancel date set meanwhile (a
/// year billed past it); a change that keeps the period applies to a subscription canceling at period end, its
/// calendar untouched.
pub fn a_paid_change_applies_only_to_the_subscription_it_was_decided_from<B: Backend>(b: &B) {
    let s = b.open();
    paid_first(&s, &["d", "e", "f"]);
    let end = t0() + Duration::days(31);
    // d: paused and resumed three periods later meanwhile.
    let (id, tries) = begun(&s, &to_q("d", 2500));
    assert!(s.one_time_go(id, tries, &real(t0())).unwrap());
    s.pause("d", t0() + Duration::days(16), "paused by operator", None).unwrap();
    let resumed = t0() + Duration::days(100);
    s.resume_with("d", resumed, "resumed", |_, _| Ok((4, Some(resumed + Duration::days(20)), Vec::new()))).unwrap();
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_d"), None, resumed).unwrap());
    let d = s.subscription("d").unwrap().unwrap();
    assert_eq!((d.plan_id.as_str(), d.next_period), ("p", 4), "applied over a pause and resume");
    assert_eq!((state(&s, "d"), s.credit("d").unwrap()), (ChangeState::Failed, 2500), "its charge not credited");
    // e: keeps the period; canceled at period end meanwhile: applied, its calendar as the cancel left it.
    let (id, tries) = begun(&s, &to_q("e", 2500));
    assert!(s.one_time_go(id, tries, &real(t0())).unwrap());
    s.cancel_at("e", end, t0() + Duration::days(16), "canceled at period end by operator").unwrap();
    let due = s.next_due_at("e").unwrap();
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_e"), None, t0()).unwrap());
    let e = s.subscription("e").unwrap().unwrap();
    assert_eq!((e.plan_id.as_str(), e.status, e.next_period), ("q", Status::Canceling, 1));
    assert_eq!(s.next_due_at("e").unwrap(), due, "a change that keeps the period wrote a calendar");
    // f: a new interval, canceled at period end meanwhile: not applied (a year past the cancel date), credited.
    let (id, tries) = begun(&s, &to_yearly("f", 100_000));
    assert!(s.one_time_go(id, tries, &real(t0())).unwrap());
    s.cancel_at("f", end, t0() + Duration::days(16), "canceled at period end by operator").unwrap();
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_f"), None, t0()).unwrap());
    let f = s.subscription("f").unwrap().unwrap();
    assert_eq!((f.plan_id.as_str(), f.next_period), ("p", 1), "a new interval applied over a cancel date");
    assert_eq!(s.credit("f").unwrap(), 95_050);
    assert_eq!(story(&s, "f").len(), 1, "the new interval's first period was recorded");
}

/// Issue 25 review F4: a change whose command died before its charge's intent holds its subscription (no period
/// opens) but never makes the next wake an instant the pass will do nothing at (a daemon spun a core on it); a pass
/// abandons it once its command is surely over (recorded long enough ago), exclusively with the intent: an intent
/// begun first keeps it, an abandoned one refuses the intent.
pub fn a_change_never_begun_is_abandoned_and_never_holds_the_next_wake<B: Backend>(b: &B) {
    let s = b.open();
    paid_first(&s, &["g", "h"]);
    let at = t0() + Duration::days(15);
    let due = t0() + Duration::days(30);
    s.change_plan(&to_q("g", 2500), 0, at).unwrap().expect("recorded");
    let (id, tries) = begun(&s, &to_q("h", 2500));
    assert!(s.one_time_go(id, tries, &real(t0())).unwrap());
    // Both held: a pass at their due instant opens nothing, and the next wake is not that instant (nor before it).
    assert!(open_all(&s, due + Duration::days(1)).is_empty(), "a period opened under a pending change");
    assert_eq!(s.next_wake().unwrap(), None, "a held subscription makes the next wake {:?}", s.next_wake());
    assert!(s.abandon_unbegun_changes(at - Duration::seconds(1), "x", due).unwrap().is_empty(), "abandoned early");
    let gone = b.open().abandon_unbegun_changes(at + Duration::minutes(5), "its command died", due).unwrap();
    assert_eq!(gone.iter().map(|r| r.change.subscription_id.as_str()).collect::<Vec<_>>(), ["g"], "h has its intent");
    assert_eq!((state(&s, "g"), state(&s, "h")), (ChangeState::Failed, ChangeState::Pending));
    let held: Vec<String> = s.pending_changes().unwrap().into_iter().map(|r| r.change.subscription_id).collect();
    assert_eq!(held, ["h"], "the pending changes (what holds a subscription)");
    let late = s.begin_one_time(&proration("g", 2500), &real(t0()), t0(), TIMEOUT_MS, t0(), None);
    assert!(late.is_err(), "the intent of an abandoned change was begun");
    assert_eq!(s.next_wake().unwrap(), Some(due), "g is free: its next period is due");
    assert_eq!(open_all(&s, due).iter().map(|a| a.subscription_id.as_str()).collect::<Vec<_>>(), ["g"]);
}

/// Issue 25 review F1, F5 and the held credit: the refund cap counts what a change of interval took from the old
/// period (its unused part, netted into the new one, with or without a charge), not only a credit left over, and
/// nothing is refunded while a change's charge is not settled (lifecycle review 3); the
/// credit a subscription holds when it ends is released, refundable; a credit held pays a change's charge first.
pub fn credits_count_in_every_form_and_are_released_when_a_subscription_ends<B: Backend>(b: &B) {
    let s = b.open();
    paid_first(&s, &["i", "j", "k", "l"]);
    // i: monthly 9900 -> yearly 100 000 halfway: 4950 of the month went into the year; the month refunds the rest.
    let (id, tries) = begun(&s, &to_yearly("i", 100_000));
    assert!(s.one_time_go(id, tries, &real(t0())).unwrap());
    // While the change's charge is not settled, what it credits of the month is not known: nothing is refunded.
    assert_eq!(refund(&s, "m-i-0", 100), Err(RefundRefused::ChangePending("m-i-0-c1".into())));
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_i"), None, t0()).unwrap());
    assert_eq!(state(&s, "i"), ChangeState::Applied);
    assert_eq!(refund(&s, "m-i-0", 9900), Err(RefundRefused::Credited { refundable: 4950, credited: 4950 }));
    assert!(refund(&s, "m-i-0-c1", 95_050).is_ok(), "the year's own charge is the new period's money");
    // j: monthly 9900 -> a 1000 plan of another interval: 4950 unused, 1000 of it pays the new period, 3950 credited.
    let row = s.change_plan(&to_yearly("j", 1000), 0, t0()).unwrap().expect("applied");
    assert_eq!((row.state, s.credit("j").unwrap()), (ChangeState::Applied, 3950));
    assert_eq!(refund(&s, "m-j-0", 9900), Err(RefundRefused::Credited { refundable: 4950, credited: 4950 }));
    // Canceled with that credit left: released, refundable (only the 1000 that paid the new period stays out).
    s.set_status("j", Status::Canceled, t0(), "canceled by operator").unwrap();
    assert_eq!((s.credit("j").unwrap(), s.plan_changes("j").unwrap()[0].released), (0, 3950));
    assert_eq!(refund(&s, "m-j-0", 9900), Err(RefundRefused::Credited { refundable: 8900, credited: 1000 }));
    assert!(refund(&s, "m-j-0", 8900).is_ok());
    // k: 5000 credited, then a change owing 7000 in the same period: the credit pays 5000, 2000 is charged.
    s.change_plan(&to_q("k", -5000), 0, t0()).unwrap().expect("applied");
    let up = PlanChange {
        from_plan_id: "q".into(),
        to_plan_id: "r".into(),
        owed: 7000,
        merchant_uid: Some("m-k-0-c2".into()),
        at: t0() + Duration::days(16),
        ..to_q("k", 1)
    };
    let row = s.change_plan(&up, 1, up.at).unwrap().expect("recorded");
    assert_eq!((row.state, row.change.credit_used, row.change.charge()), (ChangeState::Pending, 5000, 2000));
    assert_eq!(s.credit("k").unwrap(), 5000, "the credit is spent only when the change applies");
    // l: 5000 credited, then a change owing 3000: paid by the credit whole, applied at once, nothing to charge.
    s.change_plan(&to_q("l", -5000), 0, t0()).unwrap().expect("applied");
    let up = PlanChange { merchant_uid: Some("m-l-0-c2".into()), owed: 3000, ..up };
    let up = PlanChange { subscription_id: "l".into(), ..up };
    let row = s.change_plan(&up, 1, up.at).unwrap().expect("applied");
    assert_eq!(
        (row.state, row.change.credit_used, row.change.merchant_uid.as_deref()),
        (ChangeState::Applied, 3000, None)
    );
    assert_eq!((s.credit("l").unwrap(), s.subscription("l").unwrap().unwrap().plan_id.as_str()), (2000, "r"));
}

/// Issue 25 review F3: no period due at or after a subscription's cancel date opens, whatever wrote its due instant
/// (one rule for every query that opens, counts or waits: an outsider was billed a year past a cancel date), and
/// such a subscription is canceled when its cancel date comes.
pub fn no_period_opens_at_or_after_its_cancel_date_whatever_wrote_its_due_instant<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["m"]);
    s.cancel_at("m", t0() + Duration::days(40), t0(), "canceled at period end by operator").unwrap();
    // Periods 0 and 1 (due before the cancel date) open; the one after is due 60 days in, past it.
    for n in [0, 30] {
        let claimed = open_all(&s, t0() + Duration::days(n));
        assert_eq!(claimed.len(), 1, "day {n}");
        s.record(&[paid(&claimed[0])], t0() + Duration::days(n)).unwrap();
    }
    assert_eq!(s.next_due_at("m").unwrap(), Some(t0() + Duration::days(60)), "the test's due instant");
    let later = t0() + Duration::days(61);
    assert_eq!(s.subscriptions_to_open_count(later, i64::MAX).unwrap(), 0, "counted past its cancel date");
    assert_eq!(s.due_backlog(later, i64::MAX).unwrap(), 0);
    assert!(open_all(&s, later).is_empty(), "opened past its cancel date");
    assert_eq!(s.next_wake().unwrap(), None, "woken for a period that never opens");
    assert_eq!(ended(s.end_canceling(later).unwrap()), [("m".into(), Status::Canceled)]);
    assert_eq!(status(&s, "m"), Status::Canceled);
}

/// Money reviews 2 and 3: the credit a period took (from a downgrade), on a subscription ended while that period's
/// charge was in doubt, is given back and released when the charge settles unpaid: declined (`d`) or held as a
/// mismatch (`m`) alike, as an end after the settlement would have released it (it stayed on the period for good).
pub fn credit_of_a_period_settled_unpaid_after_its_subscription_ended_is_released<B: Backend>(b: &B) {
    let s = b.open();
    paid_first(&s, &["d", "m"]);
    for id in ["d", "m"] {
        s.change_plan(&to_q(id, -2000), 0, t0()).unwrap().expect("applied");
    }
    let due = s.next_due_at("d").unwrap().expect("a next period");
    let claimed = open_all(&s, due);
    assert_eq!(claimed.iter().map(|a| a.amount).collect::<Vec<_>>(), [2900, 2900], "the credit took 2000 of each");
    sent(&s, &claimed, due);
    for id in ["d", "m"] {
        s.set_status(id, Status::Canceled, due, "canceled by operator").unwrap();
    }
    let mismatch = AttemptResult::Mismatch { reason: "another amount".into() };
    let outcomes = [
        declined(&claimed[0], Decision::RetryAt(due + Duration::days(1))),
        outcome(&claimed[1], mismatch, Decision::Hold),
    ];
    s.record(&outcomes, due + Duration::minutes(5)).unwrap();
    for id in ["d", "m"] {
        let released: i64 = s.plan_changes(id).unwrap().iter().map(|r| r.released).sum();
        assert_eq!((s.credit(id).unwrap(), released), (0, 2000), "{id}: the credit is not released");
    }
}
