//! The storage contract's cases for issue 25, a subscription's life: what a subscription keeps beyond its plan
//! (its discount), as every way in writes it (helpers: the parent module).

use super::*;
use crate::billing::model::Pause;
use crate::billing::proration::Discount;
use crate::store::{Outbox, Refunds, Scope, StaleFound};

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
    s.sync_with(&clock, t0(), |_| Ok(plan(vec![Change::Insert(with("x", Some(pct)))]))).unwrap();
    let x = b.open().subscription("x").unwrap().unwrap();
    assert_eq!((x.discount, x.amount_of(0), x.amount_of(2)), (Some(pct), x.amount * 80 / 100, x.amount));
    // Updated by a sync: replaced, then removed.
    let off = Discount::Amount { amount: 100, periods: 1 };
    for d in [Some(off), None] {
        let before = b.open().subscription("x").unwrap().unwrap();
        let after = Subscription { discount: d, ..before.clone() };
        let what = vec!["discount".to_string()];
        let update = Change::Update { before: Box::new(before), after: Box::new(after), what };
        s.sync_with(&clock, t0(), |_| Ok(plan(vec![update]))).unwrap();
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

/// `billing.catch_up_window` (issue 25): [`Ledger::stale_due`] lists each billed subscription whose next period fell
/// due before the cutoff (no open period), paged by (due, id); [`Ledger::settle_stale`] records those periods skipped (with
/// their event) and advances the subscriptions, one period per subscription per call, durably, and never charges
/// them; periods due at or after the cutoff, open periods and subscriptions that do not bill are left alone.
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
    let skip = |s: &B::Store, limit: usize, after: Option<(DateTime<Utc>, &str)>| -> Vec<(String, u64)> {
        let due = s.stale_due(cutoff, None, after, limit).unwrap();
        let items: Vec<(NewPeriod, StaleFound)> = due
            .iter()
            .map(|d| (period(d), StaleFound::NotPaid { reason: "older than catch_up_window (31d)".into() }))
            .collect();
        let written = s.settle_stale(&items, now).unwrap();
        written.iter().map(|&i| (items[i].0.subscription_id.clone(), items[i].0.period)).collect()
    };
    assert_eq!(skip(&s, 10, None), [("a".into(), 1), ("b".into(), 1)]);
    assert_eq!(skip(&b.open(), 1, None), [("a".into(), 2)]);
    let after_a = Some((t0() + Duration::days(60), "a"));
    assert_eq!(skip(&b.open(), 10, after_a), [("b".into(), 2)], "paged by (due, id)");
    assert!(skip(&s, 10, None).is_empty(), "nothing more before the cutoff");
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

/// `billing.catch_up_window` after a restored backup (the review's finding): [`Ledger::settle_stale`] records a period
/// the gateway paid as paid, with one paid attempt under its imp_uid (refundable like any charge) and a `charge.paid`
/// event, in the same transaction; the others skipped. A period whose subscription moved since it was read (paused,
/// or settled by another handle) is left alone, not written.
pub fn stale_periods_the_gateway_paid_are_recorded_paid_and_the_others_skipped<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "moved"]);
    let now = t0() + Duration::days(100);
    let cutoff = now - Duration::days(31);
    let due = s.stale_due(cutoff, None, None, 10).unwrap();
    assert_eq!(due.iter().map(|d| d.sub.id.as_str()).collect::<Vec<_>>(), ["a", "b", "moved"]);
    let found = |id: &str| match id {
        "a" => StaleFound::Paid { imp_uid: "imp_found_a".into() },
        _ => StaleFound::NotPaid { reason: "older than catch_up_window (31d)".into() },
    };
    let items: Vec<(NewPeriod, StaleFound)> = due.iter().map(|d| (period(d), found(&d.sub.id))).collect();
    b.open().set_status("moved", Status::Suspended, t0() + Duration::days(99), "paused").unwrap();
    let before = b.open().outbox_events(&crate::store::OutboxFilter::default(), 1000).unwrap().len();
    assert_eq!(s.settle_stale(&items, now).unwrap(), [0, 1], "a subscription that moved was written");
    let reread = b.open();
    assert_eq!(story(&reread, "a"), [(0, PeriodState::Paid, vec![(1, ChargeStatus::Paid)])]);
    assert_eq!(story(&reread, "b"), [(0, PeriodState::Skipped, vec![])]);
    assert!(story(&reread, "moved").is_empty());
    let target = reread.refund_target("m-a-0").unwrap().expect("a charge");
    assert_eq!((target.imp_uid.as_deref(), target.amount), (Some("imp_found_a"), 9900), "refundable");
    let events = reread.outbox_events(&crate::store::OutboxFilter::default(), 1000).unwrap();
    let kinds: Vec<&str> = events[before..].iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"charge.paid") && kinds.contains(&"period.skipped"), "{kinds:?}");
    assert_eq!(reread.subscription("a").unwrap().unwrap().next_period, 1, "advanced");
    // Settled twice (another handle read the same rows): the second writes nothing.
    assert!(b.open().settle_stale(&items, now).unwrap().is_empty());
}

/// A scoped pass step (issue 25 review: a command charges one subscription): [`Ledger::open_and_claim_within`] claims
/// and opens only `scope.only`'s periods, and no period due before `scope.not_before`; the counts agree.
pub fn a_scoped_step_takes_one_subscription_and_no_period_before_its_bound<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let now = t0() + Duration::days(1);
    let one = Scope { only: Some("b".into()), not_before: None };
    assert_eq!(s.subscriptions_to_open_count_within(&one, now, i64::MAX).unwrap(), 1);
    assert_eq!(s.due_backlog_within(&one, now, i64::MAX).unwrap(), 1);
    let step = s.open_and_claim_within(&one, now, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap();
    assert_eq!(step.attempts.iter().map(|a| a.subscription_id.as_str()).collect::<Vec<_>>(), ["b"]);
    // Both due at t0; a bound after it opens neither.
    let bound = Scope { only: None, not_before: Some(t0() + Duration::seconds(1)) };
    assert_eq!(s.subscriptions_to_open_count_within(&bound, now, i64::MAX).unwrap(), 0);
    assert_eq!(s.due_backlog_within(&bound, now, i64::MAX).unwrap(), 0);
    assert!(s.open_and_claim_within(&bound, now, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap().attempts.is_empty());
    assert_eq!(s.open_and_claim(now, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap().attempts.len(), 1, "a");
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
/// its end has come; one that does not bill is left as it is. Paused past its end with `pause --until` that skips
/// what falls due (`c`), it is canceled at its end all the same, never resumed past it; paused with catch-up (`d`:
/// what it charges at resume is due before its end) it holds.
pub fn a_cancel_at_period_end_stops_opening_and_cancels_when_due<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "c", "d"]);
    let end = t0();
    s.pause("b", t0() - Duration::days(1), "paused", None).unwrap();
    for (id, catch_up) in [("c", false), ("d", true)] {
        s.cancel_at(id, end, t0() - Duration::days(2), "end").unwrap();
        let until = Some((end + Duration::days(10), catch_up));
        s.pause(id, t0() - Duration::days(1), "paused", until).unwrap();
    }
    assert_eq!(s.cancel_at("a", end, t0() - Duration::days(1), "end").unwrap(), Some(Status::Active));
    assert_eq!(s.cancel_at("b", end, t0(), "end").unwrap(), Some(Status::Suspended));
    assert_eq!((status(&s, "a"), status(&s, "b")), (Status::Canceling, Status::Suspended));
    assert_eq!(
        b.open().subscriptions_to_open_count(t0() + Duration::days(1), i64::MAX).unwrap(),
        0,
        "opened at its end"
    );
    assert!(s.end_canceling(end - Duration::seconds(1)).unwrap().is_empty(), "canceled before its end");
    let ends = ended(b.open().end_canceling(end).unwrap());
    assert_eq!(ends, [("a".into(), Status::Canceled), ("c".into(), Status::Canceled)]);
    assert_eq!(
        (status(&s, "a"), status(&s, "c"), status(&s, "d")),
        (Status::Canceled, Status::Canceled, Status::Suspended)
    );
    assert!(s.end_canceling(end + Duration::days(1)).unwrap().is_empty(), "canceled twice");
    assert_eq!(b.open().resumes_due(end + Duration::days(10)).unwrap(), [("d".to_string(), true)], "c resumes");
}

/// A fixed term (issue 25): a subscription keeps its last period through a sync, and when that period is paid it is
/// completed in the same transaction as the outcome (with its event); nothing moves a completed subscription.
pub fn the_last_period_of_a_term_paid_completes_the_subscription<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let term = Subscription { source: Source::Config, last_period: Some(0), ..sub("t") };
    s.sync_with(&clock, t0(), |_| Ok(SyncPlan { changes: vec![Change::Insert(term)], ..Default::default() })).unwrap();
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

/// `pause --until` (issue 25 review): [`Ledger::next_wake`] includes a pause's end (a daemon with only paused
/// subscriptions slept past it); the listings' row and [`Views::pause_of`] show it; [`Views::resuming_by`] lists
/// the subscription for `upcoming` until the window reaches its end.
pub fn a_pause_with_an_end_wakes_the_scheduler_and_is_shown<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let first = open_all(&s, t0());
    s.record(&[paid(&first[0])], t0()).unwrap();
    let (since, end) = (t0() + Duration::days(5), t0() + Duration::days(50));
    s.pause("a", since, "paused by operator", Some((end, true))).unwrap();
    let reread = b.open();
    assert_eq!(reread.next_wake().unwrap(), Some(end), "the pause's end is no wake");
    let row = reread.subscription_row("a").unwrap().expect("a row");
    assert_eq!((row.resume_at, row.stopped_by_dunning), (Some(end), false));
    assert_eq!(reread.pause_of("a").unwrap(), Some(Pause { since: Some(since), until: Some(end), catch_up: true }));
    assert!(reread.resuming_by(end - Duration::seconds(1)).unwrap().is_empty());
    let listed = reread.resuming_by(end).unwrap();
    assert_eq!(listed.iter().map(|(s, p, _)| (s.id.as_str(), p.until)).collect::<Vec<_>>(), [("a", Some(end))]);
    s.resume_with("a", end, "resumed", |sub, _| Ok((sub.next_period, Some(end + Duration::days(1)), Vec::new())))
        .unwrap();
    assert_eq!(b.open().next_wake().unwrap(), Some(end + Duration::days(1)));
    assert_eq!(b.open().pause_of("a").unwrap(), None, "not paused any more");
}

/// What dunning suspended is restarted by `reactivate` only (issue 25 review): [`Book::pause`] with an end and
/// [`Book::resume_with`] refuse it, nothing written (before, the pause's end reactivated it on that date, and a
/// resume dropped its given-up period for good); the listings' row says who stopped it; [`Views::stopped_by_dunning`]
/// finds it by its key in any case; a pause without an end changes nothing.
pub fn what_dunning_suspended_is_neither_resumed_nor_paused_until_a_date<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["d", "o"]);
    let first = open_all(&s, t0());
    let exhausted: Vec<Recorded> =
        first.iter().map(|a| declined(a, Decision::Exhausted(OnExhausted::Suspend))).collect();
    s.record(&exhausted, t0()).unwrap();
    s.set_status("o", Status::Active, t0(), "operator").unwrap();
    assert_eq!(status(&s, "d"), Status::Suspended);
    let later = t0() + Duration::days(10);
    assert!(s.pause("d", later, "paused", Some((later + Duration::days(5), false))).is_err());
    assert!(b.open().resumes_due(later + Duration::days(6)).unwrap().is_empty(), "its pause got an end");
    assert!(s.resume_with("d", later, "resumed", |sub, _| Ok((sub.next_period, None, Vec::new()))).is_err());
    assert_eq!(status(&b.open(), "d"), Status::Suspended);
    assert!(s.pause("d", later, "paused", None).unwrap().is_some(), "a plain pause: nothing to change");
    let reread = b.open();
    assert!(reread.subscription_row("d").unwrap().unwrap().stopped_by_dunning);
    assert!(!reread.subscription_row("o").unwrap().unwrap().stopped_by_dunning);
    assert_eq!(reread.stopped_by_dunning("C-D").unwrap(), [("d".to_string(), Status::Suspended)]);
    let (period, reopened) = s.reactivate("d", later, true, |sub| (sub.next_period, Some(later))).unwrap();
    assert_eq!((period, reopened, status(&b.open(), "d")), (1, Some(0), Status::Active));
    assert!(b.open().stopped_by_dunning("c-d").unwrap().is_empty());
}

/// A restart that leaves nothing to bill (issue 25 review): a resume of a subscription whose term ran out while it
/// was paused completes it in the resume's transaction (and its cancel date passed: cancels it), a subscription with
/// a cancel date ahead is canceling again after a resume (not active), and a reactivation that would bill nothing is
/// refused, nothing written.
pub fn a_restart_with_nothing_left_to_bill_ends_at_once_and_a_cancel_date_stands<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let term = Subscription { source: Source::Config, last_period: Some(1), ..sub("t") };
    let k = Subscription { source: Source::Config, last_period: Some(0), ..sub("k") };
    let plan = SyncPlan { changes: vec![Change::Insert(term), Change::Insert(k)], ..Default::default() };
    s.sync_with(&clock, t0(), |_| Ok(plan)).unwrap();
    add(&s, &["c"]);
    let first = open_all(&s, t0());
    let outcomes: Vec<Recorded> = first
        .iter()
        .map(|a| if a.subscription_id == "k" { declined(a, Decision::Exhausted(OnExhausted::Cancel)) } else { paid(a) })
        .collect();
    s.record(&outcomes, t0()).unwrap();
    let end = t0() + Duration::days(60);
    s.cancel_at("c", end, t0(), "end").unwrap();
    for id in ["t", "c"] {
        s.pause(id, t0() + Duration::days(1), "paused", None).unwrap();
    }
    let now = t0() + Duration::days(2);
    // Its last period (1) fell due while it was paused: skipped, nothing is left.
    s.resume_with("t", now, "resumed", |sub, _| Ok((sub.next_period + 1, None, Vec::new()))).unwrap();
    assert_eq!(status(&b.open(), "t"), Status::Completed, "nothing left in its term");
    s.resume_with("c", now, "resumed", |sub, _| Ok((sub.next_period, Some(end - Duration::days(30)), Vec::new())))
        .unwrap();
    assert_eq!(status(&b.open(), "c"), Status::Canceling, "its cancel date stands");
    assert!(s.reactivate("k", now, false, |sub| (sub.next_period, None)).is_err(), "it would bill nothing");
    assert_eq!(status(&b.open(), "k"), Status::Canceled);
    assert!(s.reactivate("k", now, true, |sub| (sub.next_period, None)).is_ok(), "its given-up period is charged");
    assert_eq!(status(&b.open(), "k"), Status::Active);
}

/// `resume_with` decides from the subscription as it is inside its transaction, with the instant of the pause as
/// it was recorded (rounded up by the caller, never down by the store).
pub fn resume_decides_from_the_subscription_inside_its_transaction<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let paused_at = t0() + Duration::milliseconds(1500);
    s.set_status("a", Status::Suspended, ceil_second(paused_at), "paused by operator").unwrap();
    assert!(s.resume_with("nope", t0(), "resumed", |_, _| unreachable!()).is_err());
    let now = t0() + Duration::days(40);
    let (before, restart) = s
        .resume_with("a", now, "resumed", |sub, at| {
            assert_eq!(sub.status, Status::Suspended);
            assert_eq!(at.since, Some(ceil_second(paused_at)), "the pause instant moved");
            Ok((1, Some(now + Duration::days(1)), Vec::new()))
        })
        .unwrap();
    assert_eq!((before.status, restart), (Status::Suspended, 1));
    let after = s.subscription("a").unwrap().unwrap();
    assert_eq!((after.status, after.next_period), (Status::Active, 1));
    assert_eq!(s.next_due_at("a").unwrap(), Some(now + Duration::days(1)));
    // Not suspended any more: refused, nothing changes.
    assert!(s.resume_with("a", now, "resumed", |_, _| Ok((5, None, Vec::new()))).is_err());
    assert_eq!(s.subscription("a").unwrap().unwrap().next_period, 1);
}
