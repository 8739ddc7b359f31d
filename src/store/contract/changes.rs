//! The storage contract's cases for plan changes (issue 25): a change decided from a stale read is refused, one that
//! charges is applied only when its charge is paid (and fails with it), no period opens while it is pending, and a
//! credit pays the next periods with nothing lost (a whole period paid by credit, never a charge of 0).

use super::*;
use crate::store::{ChangeState, ChangeTiming, Changes, PlanChange};

/// A change of `id` (plan p, 9900, monthly, period 0 paid, period 1 next) to plan q at `t0 + 15 days`.
pub(super) fn to_q(id: &str, owed: i64) -> PlanChange {
    PlanChange {
        subscription_id: id.into(),
        timing: ChangeTiming::Now,
        at: t0() + Duration::days(15),
        period: 0,
        from_plan_id: "p".into(),
        from_amount: 9900,
        from_interval: "1 month".parse().unwrap(),
        to_plan_id: "q".into(),
        to_plan_name: "Q".into(),
        to_amount: 4900,
        to_interval: "1 month".parse().unwrap(),
        rate: Some(4900),
        owed,
        credit_used: 0,
        merchant_uid: (owed > 0).then(|| format!("m-{id}-0-c1")),
        anchor_date: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        anchor_period: 0,
        next_period: 1,
        next_due_at: None,
        opens: None,
        last_period: None,
    }
}

/// Subscriptions `ids` with period 0 paid.
pub(super) fn paid_first(s: &impl Store, ids: &[&str]) {
    add(s, ids);
    let claimed = open_all(s, t0());
    sent(s, &claimed, t0());
    let recorded: Vec<Recorded> = claimed.iter().map(paid).collect();
    s.record(&recorded, t0()).unwrap();
}

pub fn a_plan_change_applies_once_from_a_fresh_read_and_its_credit_pays_the_next_periods<B: Backend>(b: &B) {
    let s = b.open();
    paid_first(&s, &["a", "b", "e"]);
    // Decided from a stale read (one change seen that is not there): refused, nothing written.
    assert!(s.change_plan(&to_q("a", -2500), 1, t0()).unwrap().is_err());
    assert!(s.plan_changes("a").unwrap().is_empty());
    // A downgrade: applied at once, its credit kept (durably: another handle sees it), with the term it gives.
    let row = s.change_plan(&PlanChange { last_period: Some(Some(5)), ..to_q("a", -12_000) }, 0, t0());
    assert_eq!(row.unwrap().expect("applied").state, ChangeState::Applied);
    let other = b.open();
    assert_eq!(other.credit("a").unwrap(), 12_000);
    assert_eq!(other.subscription("a").unwrap().unwrap().last_period, Some(5), "the change's term not applied");
    // A change at period end to a term already over (its last period 0, period 1 next): nothing opens again, and
    // the subscription is completed.
    let over = PlanChange {
        timing: ChangeTiming::PeriodEnd,
        period: 1,
        rate: None,
        last_period: Some(Some(0)),
        ..to_q("e", 0)
    };
    s.change_plan(&over, 0, t0()).unwrap().expect("applied");
    assert_eq!(b.open().next_due_at("e").unwrap(), None, "a period past the term's end will open");
    assert_eq!(ended(s.end_canceling(t0() + Duration::days(1)).unwrap()), [("e".into(), Status::Completed)]);
    assert_eq!(status(&b.open(), "e"), Status::Completed);
    assert_eq!(
        (other.subscription("a").unwrap().unwrap().plan_id, other.subscription("a").unwrap().unwrap().amount),
        ("q".into(), 4900)
    );
    // The same change again (as read before it): refused.
    assert!(s.change_plan(&to_q("a", -12_000), 0, t0()).unwrap().is_err());
    // An upgrade's change is pending until its charge is paid: no period opens meanwhile.
    let up = s.change_plan(&to_q("b", 2500), 0, t0()).unwrap().expect("recorded");
    assert_eq!(up.state, ChangeState::Pending);
    assert_eq!(s.subscription("b").unwrap().unwrap().plan_id, "p", "applied before its charge was paid");
    let at = |n: i64| t0() + Duration::days(30 * n);
    assert!(s.change_plan(&to_q("b", 2500), 1, t0()).unwrap().is_err(), "two changes pending at once");
    // Period 1 (4900) and period 2 (4900) paid by the credit, nothing claimed; period 3 charged 9900 - 2 x 4900.
    for n in 1..=2 {
        let claimed = open_all(&s, at(n));
        assert!(claimed.iter().all(|a| a.subscription_id != "a"), "a period the credit covers was claimed");
        assert!(claimed.iter().all(|a| a.subscription_id != "b"), "a period opened under a pending change");
    }
    assert_eq!(s.credit("a").unwrap(), 12_000 - 2 * 4900);
    let third: Vec<Attempt> = open_all(&s, at(3)).into_iter().filter(|a| a.subscription_id == "a").collect();
    assert_eq!(third.iter().map(|a| a.amount).collect::<Vec<_>>(), [4900 - (12_000 - 2 * 4900)]);
    assert_eq!(s.credit("a").unwrap(), 0, "credit lost or counted twice");
    let lines = story(&s, "a");
    assert_eq!(lines.iter().filter(|(_, st, _)| *st == PeriodState::Paid).count(), 3, "{lines:?}");
    let charge = OneTimeCharge {
        merchant_uid: "m-b-0-c1".into(),
        kind: OneTimeKind::Proration,
        customer_uid: Some("c-b".into()),
        subscription_id: Some("b".into()),
        name: "Q".into(),
        amount: 2500,
        currency: "KRW".into(),
        card_masked: "-".into(),
    };
    let check = t0() + Duration::minutes(5);
    let (id, tries) = s.begin_one_time(&charge, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun");
    assert!(!s.abandon_plan_change("m-b-0-c1", "x", t0()).unwrap(), "abandoned with its intent committed");
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_b"), None, t0()).unwrap());
    let b_now = b.open().subscription("b").unwrap().unwrap();
    assert_eq!((b_now.plan_id.as_str(), b_now.amount), ("q", 4900), "paid, and the change not applied with it");
    assert_eq!(s.plan_changes("b").unwrap()[0].state, ChangeState::Applied);
}

/// Issue 25 review: a pending change is never stranded and a credit never lost or refunded. A sync leaves the
/// subscription of a pending change as it is (its update held, with a warning), so the change's paid charge still
/// applies it; a period given up by dunning gives back the credit it had taken, in the give-up's transaction; a
/// refund of a period's charge never takes what a change of that period credited.
pub fn a_pending_change_holds_a_sync_and_credits_are_never_lost_or_refunded<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let config = Subscription { source: Source::Config, ..sub("h") };
    let insert = SyncPlan { changes: vec![Change::Insert(config)], ..SyncPlan::default() };
    s.sync_with(&clock, t0(), |_| Ok(insert)).unwrap();
    paid_first(&s, &["g"]); // and h's first period, due at t0 too
    assert!(s.change_plan(&to_q("h", 2500), 0, t0()).unwrap().expect("recorded").state == ChangeState::Pending);
    // A sync planned to move h meanwhile: held, said, nothing of it applied.
    let held = s
        .sync_with(&clock, t0(), |subs| {
            let before = subs.iter().find(|x| x.id == "h").unwrap().clone();
            let after = Subscription { plan_id: "r".into(), amount: 1, ..before.clone() };
            let what = vec!["plan p -> r".into()];
            Ok(SyncPlan {
                changes: vec![Change::Update { before: Box::new(before), after: Box::new(after), what }],
                ..SyncPlan::default()
            })
        })
        .unwrap();
    assert!(held.changes.is_empty() && held.warnings.len() == 1, "{held:?}");
    assert_eq!(s.subscription("h").unwrap().unwrap().plan_id, "p", "a sync moved a subscription under its change");
    let charge = OneTimeCharge {
        merchant_uid: "m-h-0-c1".into(),
        kind: OneTimeKind::Proration,
        customer_uid: Some("c-h".into()),
        subscription_id: Some("h".into()),
        name: "Q".into(),
        amount: 2500,
        currency: "KRW".into(),
        card_masked: "-".into(),
    };
    let (id, tries) = s.begin_one_time(&charge, &real(t0()), t0(), TIMEOUT_MS, t0(), None).unwrap().expect("begun");
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_h"), None, t0()).unwrap());
    assert_eq!(s.plan_changes("h").unwrap()[0].state, ChangeState::Applied, "a paid change left pending");
    assert!(!s.settle_paid_change("m-h-0-c1", t0()).unwrap(), "a change not pending settled again");
    // g: 2000 credited; its next period (4900) takes it, is declined to the end and given up: the credit is back.
    s.change_plan(&to_q("g", -2000), 0, t0()).unwrap().expect("applied");
    let next: Vec<Attempt> =
        open_all(&s, t0() + Duration::days(30)).into_iter().filter(|a| a.subscription_id == "g").collect();
    assert_eq!((next[0].amount, s.credit("g").unwrap()), (2900, 0));
    s.record(&[declined(&next[0], Decision::Exhausted(OnExhausted::Skip))], t0() + Duration::days(30)).unwrap();
    assert_eq!(b.open().credit("g").unwrap(), 2000, "the credit of a period given up is lost");
    // g's first charge (9900) paid for the 2000 credited: at most 7900 of it is refunded.
    use crate::store::{NewRefund, RefundRefused, Refunds};
    let refund = |amount| NewRefund { merchant_uid: "m-g-0".into(), amount, reason: "r".into() };
    let begin = |r: &NewRefund| s.begin_refund(r, &real(t0()), t0(), TIMEOUT_MS, t0() + Duration::minutes(1)).unwrap();
    assert_eq!(begin(&refund(None)), Err(RefundRefused::Credited { refundable: 7900, credited: 2000 }));
    assert_eq!(begin(&refund(Some(7901))), Err(RefundRefused::Credited { refundable: 7900, credited: 2000 }));
    assert!(begin(&refund(Some(7900))).is_ok());
}
