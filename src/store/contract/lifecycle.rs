//! The storage contract's cases for issue 25, a subscription's life: what a subscription keeps beyond its plan
//! (its discount), as every way in writes it (helpers: the parent module).

use super::*;
use crate::billing::proration::Discount;

/// A subscription keeps its discount as a sync inserts or updates it, and as a command adds it; what the next
/// period charges follows ([`Subscription::amount_of`]). A command's add ([`Book::insert_manual`]) keeps the terms it
/// is given: a trial (trialing, its calendar anchored at the trial's end), a fixed term and a cancel date; a status
/// that does not bill is refused, nothing written. [`Views::manual_prices`] counts what they are charged.
pub fn a_subscription_keeps_its_terms_through_sync_and_manual_adds<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let pct = Discount::Percent { percent: 20, periods: 2 };
    let with = |id: &str, d: Option<Discount>| Subscription { source: Source::Config, discount: d, ..sub(id) };
    let plan = |changes: Vec<Change>| SyncPlan { changes, ..Default::default() };
    s.sync_with(&clock, t0(), |_, _| Ok(plan(vec![Change::Insert(with("x", Some(pct)))]))).unwrap();
    let x = b.open().subscription("x").unwrap().unwrap();
    assert_eq!((x.discount, x.amount_of(0), x.amount_of(2)), (Some(pct), x.amount * 80 / 100, x.amount));
    // Updated by a sync: replaced, then removed.
    let off = Discount::Amount { amount: 100, periods: 1 };
    for d in [Some(off), None] {
        let before = b.open().subscription("x").unwrap().unwrap();
        let after = Subscription { discount: d, ..before.clone() };
        let what = vec!["discount".to_string()];
        let update = Change::Update { before: Box::new(before), after: Box::new(after), what };
        s.sync_with(&clock, t0(), |_, _| Ok(plan(vec![update]))).unwrap();
        assert_eq!(b.open().subscription("x").unwrap().unwrap().discount, d);
    }
    // Added by command.
    let manual = Subscription { discount: Some(off), ..sub("m") };
    s.insert_manual(&manual, Some(t0()), t0()).unwrap();
    assert_eq!(b.open().subscription("m").unwrap().unwrap().discount, Some(off));
    // With a trial, a term and a cancel date (an outsider's trial was charged on its signup day, its term forever).
    let trial_end = manual.start_date + chrono::Days::new(14);
    let cancel_at = Some(clock.due_at_midnight(trial_end + chrono::Days::new(90)));
    let terms = [
        Subscription { anchor_date: trial_end, status: Status::Trialing, last_period: Some(2), ..sub("t") },
        Subscription { status: Status::Canceling, cancel_at, ..sub("k") },
    ];
    for t in &terms {
        s.insert_manual(t, Some(clock.due_at(t.anchor_date)), t0()).unwrap();
        let got = b.open().subscription(&t.id).unwrap().unwrap();
        let kept = (got.anchor_date, got.status, got.last_period, got.cancel_at, got.source);
        assert_eq!(kept, (t.anchor_date, t.status, t.last_period, t.cancel_at, Source::Manual), "{}", t.id);
        assert_eq!(b.open().next_due_at(&t.id).unwrap(), Some(clock.due_at(t.anchor_date)));
    }
    assert!(s.insert_manual(&Subscription { status: Status::Canceled, ..sub("n") }, None, t0()).is_err());
    assert!(b.open().subscription("n").unwrap().is_none(), "a subscription added that never bills");
    // What they are charged, per plan and price ([`Views::manual_prices`]): the three added by command, which a
    // sync never reprices; the config's are not counted.
    assert_eq!(b.open().manual_prices().unwrap(), [("p".to_string(), 9900, 3)]);
    s.set_status("k", Status::Canceled, t0(), "operator").unwrap();
    assert_eq!(b.open().manual_prices().unwrap(), [("p".to_string(), 9900, 2)], "one that no longer bills counted");
}

/// `billing.catch_up_window` (issue 25): [`Ledger::skip_stale`] records each billed subscription's next period due
/// before the cutoff as skipped, with its event, and advances the subscription, one period per subscription per
/// call, durably, and never charges it; periods due at or after the cutoff, open periods and subscriptions that do
/// not bill are left alone.
pub fn stale_periods_are_skipped_and_never_charged<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "open", "paused"]);
    // "open" has an open period (a retry waits): left alone; "paused" does not bill.
    s.open_and_claim(t0(), 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap();
    let claimed = s.claim_due(t0(), 100, i64::MAX, TIMEOUT_MS).unwrap();
    assert!(claimed.is_empty());
    let opened = s.unresolved(t0(), 100).unwrap();
    let retry_at = t0() + Duration::days(1);
    let recorded: Vec<Recorded> = opened
        .iter()
        .map(|a| if a.subscription_id == "open" { declined(a, Decision::RetryAt(retry_at)) } else { paid(a) })
        .collect();
    s.record(&recorded, t0()).unwrap();
    s.set_status("paused", Status::Suspended, t0(), "paused").unwrap();
    // 100 days later, with a 31-day window: "a" and "b" have periods 1 and 2 (due t0+30d, t0+60d) before the
    // cutoff (t0+69d), period 3 (t0+90d) after it.
    let now = t0() + Duration::days(100);
    let cutoff = now - Duration::days(31);
    let first = s.skip_stale(cutoff, now, 10, "older than catch_up_window (31d)", period).unwrap();
    assert_eq!(first.iter().map(|p| (p.subscription_id.as_str(), p.period)).collect::<Vec<_>>(), [("a", 1), ("b", 1)]);
    let second = b.open().skip_stale(cutoff, now, 1, "older than catch_up_window (31d)", period).unwrap();
    assert_eq!(second.iter().map(|p| (p.subscription_id.as_str(), p.period)).collect::<Vec<_>>(), [("a", 2)]);
    let third = b.open().skip_stale(cutoff, now, 10, "older than catch_up_window (31d)", period).unwrap();
    assert_eq!(third.iter().map(|p| (p.subscription_id.as_str(), p.period)).collect::<Vec<_>>(), [("b", 2)]);
    assert!(s.skip_stale(cutoff, now, 10, "again", period).unwrap().is_empty(), "nothing more before the cutoff");
    let reread = b.open();
    let states: Vec<(u64, PeriodState)> = story(&reread, "a").iter().map(|(p, st, _)| (*p, *st)).collect();
    assert_eq!(states, [(0, PeriodState::Paid), (1, PeriodState::Skipped), (2, PeriodState::Skipped)]);
    assert!(story(&reread, "a").iter().all(|(p, _, a)| *p == 0 || a.is_empty()), "a skipped period was charged");
    // The next period (due after the cutoff) is opened and charged as usual; the others were left alone.
    let next = reread.open_and_claim(now, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap().attempts;
    let mut got: Vec<(String, u64)> = next.iter().map(|a| (a.subscription_id.clone(), a.period)).collect();
    got.sort();
    assert_eq!(got, [("a".into(), 3), ("b".into(), 3), ("open".into(), 0)]);
    assert_eq!(story(&reread, "paused").len(), 1, "a subscription that does not bill skips nothing");
}

/// `pause --until` (issue 25): [`Book::pause`] suspends and keeps when the pause ends (and its catch-up), listed by
/// [`Book::resumes_due`] once due and only while suspended; a resume clears it, and so does any other status
/// change (a cancel); a pause without an end is never listed.
pub fn a_pause_with_an_end_is_listed_when_due_and_only_while_suspended<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "c"]);
    let end = t0() + Duration::days(10);
    s.pause("a", t0(), "paused", Some((end, true))).unwrap();
    s.pause("b", t0(), "paused", Some((end, false))).unwrap();
    s.pause("c", t0(), "paused", None).unwrap();
    assert_eq!(status(&s, "a"), Status::Suspended);
    assert!(b.open().resumes_due(end - Duration::seconds(1)).unwrap().is_empty(), "before its end");
    assert_eq!(b.open().resumes_due(end).unwrap(), [("a".to_string(), true), ("b".to_string(), false)]);
    s.set_status("b", Status::Canceled, t0(), "canceled").unwrap();
    s.resume_with("a", end, "resumed", |sub, _| Ok((sub.next_period, Some(end), Vec::new()))).unwrap();
    assert_eq!(status(&s, "a"), Status::Active);
    assert!(b.open().resumes_due(end + Duration::days(400)).unwrap().is_empty(), "resumed, canceled or no end");
}

/// Cancel at period end (issue 25): [`Book::cancel_at`] makes a subscription that bills canceling, with no period
/// due at or after its end opening (a next period due then never opens), and [`Book::end_canceling`] cancels it once
/// its end has come; one that does not bill is left as it is.
pub fn a_cancel_at_period_end_stops_opening_and_cancels_when_due<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let end = t0();
    s.pause("b", t0() - Duration::days(1), "paused", None).unwrap();
    assert_eq!(s.cancel_at("a", end, t0() - Duration::days(1), "end").unwrap(), Some(Status::Active));
    assert_eq!(s.cancel_at("b", end, t0(), "end").unwrap(), Some(Status::Suspended));
    assert_eq!((status(&s, "a"), status(&s, "b")), (Status::Canceling, Status::Suspended));
    assert_eq!(
        b.open().subscriptions_to_open_count(t0() + Duration::days(1), i64::MAX).unwrap(),
        0,
        "opened at its end"
    );
    assert!(s.end_canceling(end - Duration::seconds(1)).unwrap().is_empty(), "canceled before its end");
    assert_eq!(b.open().end_canceling(end).unwrap(), ["a".to_string()]);
    assert_eq!(status(&s, "a"), Status::Canceled);
    assert!(s.end_canceling(end + Duration::days(1)).unwrap().is_empty(), "canceled twice");
}

/// A fixed term (issue 25): a subscription keeps its last period through a sync, and when that period is paid it is
/// completed in the same transaction as the outcome (with its event); nothing moves a completed subscription.
pub fn the_last_period_of_a_term_paid_completes_the_subscription<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let term = Subscription { source: Source::Config, last_period: Some(0), ..sub("t") };
    s.sync_with(&clock, t0(), |_, _| Ok(SyncPlan { changes: vec![Change::Insert(term)], ..Default::default() }))
        .unwrap();
    assert_eq!(b.open().subscription("t").unwrap().unwrap().last_period, Some(0));
    let first = s.open_and_claim(t0(), 10, 10, i64::MAX, TIMEOUT_MS, period).unwrap().attempts;
    assert_eq!(first.iter().map(|a| a.ends_term).collect::<Vec<_>>(), [true]);
    let changes = s.record(&[paid(&first[0])], t0()).unwrap();
    assert_eq!(status(&b.open(), "t"), Status::Completed);
    assert_eq!(changes.iter().map(|c| c.to).collect::<Vec<_>>(), [Status::Completed]);
    s.set_status("t", Status::Active, t0(), "operator").unwrap();
    assert_eq!(status(&s, "t"), Status::Completed, "a completed subscription moved");
}

/// `billd reactivate` (issue 25): [`Book::reactivate`] restarts only what dunning stopped (an operator's cancel is
/// refused, nothing written), at the period `restart` names, and with `charge_now` reopens the last period given up,
/// due now.
pub fn only_what_dunning_stopped_is_reactivated<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["d", "o"]);
    let first = open_all(&s, t0());
    let exhausted: Vec<Recorded> =
        first.iter().map(|a| declined(a, Decision::Exhausted(OnExhausted::Cancel))).collect();
    s.record(&exhausted[..1], t0()).unwrap();
    s.set_status("o", Status::Canceled, t0(), "operator").unwrap();
    assert!(s.reactivate("o", t0(), false, |sub| (sub.next_period, None)).is_err(), "an operator's cancel");
    assert_eq!(status(&s, "o"), Status::Canceled);
    let later = t0() + Duration::days(40);
    let (period, reopened) = s.reactivate("d", later, true, |_| (2, Some(later + Duration::days(20)))).unwrap();
    assert_eq!((period, reopened), (2, Some(0)));
    assert_eq!(status(&b.open(), "d"), Status::Active);
    let again = b.open().claim_due(later, 10, i64::MAX, TIMEOUT_MS).unwrap();
    assert_eq!(again.iter().map(|a| (a.subscription_id.as_str(), a.period)).collect::<Vec<_>>(), [("d", 0)]);
    assert!(s.reactivate("d", later, false, |sub| (sub.next_period, None)).is_err(), "active: not reactivated");
}
