//! The storage contract's cases for issues 21 and 23: a rejection withheld in a mass rejection, the subscriptions of
//! a billing key, the safety stop, the charge clock in force and an operator's retry (helpers: the parent module).

use super::*;

/// A rejection withheld in a mass rejection closes its attempt as rejected but leaves its period open and due from
/// the recording instant, its declines uncounted, and its subscription's status unchanged (a past-due one stays past
/// due, an active one active); the next claim at or after that instant sends the same period again.
pub fn a_withheld_rejection_leaves_the_period_open_and_the_status_alone<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let claimed = open_all(&s, t0());
    let (a, b_first) = (&claimed[0], &claimed[1]);
    // b is past due: its first attempt was declined and its retry is claimed.
    let retry_at = t0() + Duration::days(1);
    s.record(&[declined(b_first, Decision::RetryAt(retry_at))], t0()).unwrap();
    let b_retry = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    sent(&s, std::slice::from_ref(a), t0());
    sent(&s, &b_retry, retry_at);
    let withheld =
        |x: &Attempt| outcome(x, AttemptResult::Withheld { reason: "mass rejection: code -1".into() }, Decision::Hold);
    s.record(&[withheld(a), withheld(&b_retry[0])], retry_at).unwrap();
    assert_eq!((status(&s, "a"), status(&s, "b")), (Status::Active, Status::PastDue));
    for (id, attempts) in
        [("a", vec![(1, ChargeStatus::Failed)]), ("b", vec![(1, ChargeStatus::Failed), (2, ChargeStatus::Failed)])]
    {
        let st = story(&s, id);
        assert_eq!(st.len(), 1, "{id}: {st:?}");
        assert_eq!((st[0].1, st[0].2.clone()), (PeriodState::Open, attempts), "{id}: {st:?}");
    }
    assert!(s.claim_due(retry_at - Duration::seconds(1), 10, i64::MAX, TIMEOUT_MS).unwrap().is_empty(), "early");
    let again = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    let mut got: Vec<(String, u32, u32)> =
        again.iter().map(|x| (x.subscription_id.clone(), x.attempt, x.declines)).collect();
    got.sort();
    assert_eq!(got, [("a".to_string(), 2, 0), ("b".to_string(), 3, 1)], "the same periods, declines uncounted");
}

/// `subscriptions_using` lists every subscription of a billing key that is not canceled (active, past due,
/// suspended: each may charge it again), comparing keys without case, with its own key; and one whose open period
/// still charges the key although the subscription moved to another; nothing of another key.
pub fn the_subscriptions_using_a_key_are_every_one_not_canceled_whatever_the_case<B: Backend>(b: &B) {
    let s = b.open();
    for (id, customer) in [("a", "cust-1"), ("b", "CUST-1"), ("c", "cust-1"), ("d", "cust-1"), ("e", "cust-2")] {
        s.insert_manual(&Subscription { customer_uid: customer.into(), ..sub(id) }, Some(t0()), t0()).unwrap();
    }
    s.set_status("c", Status::Canceled, t0(), "test").unwrap();
    s.set_status("d", Status::Suspended, t0(), "test").unwrap();
    let row = |id: &str, st: Status, c: &str| (id.to_string(), st, c.to_string());
    assert_eq!(
        s.subscriptions_using("Cust-1").unwrap(),
        [row("a", Status::Active, "cust-1"), row("b", Status::Active, "CUST-1"), row("d", Status::Suspended, "cust-1")]
    );
    assert!(s.subscriptions_using("cust-3").unwrap().is_empty());
    // f, from the config: its period opens with cust-4 and is declined (its retry will charge cust-4); then the
    // config moves it to cust-5. Its open period still charges cust-4.
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let f = Subscription { source: Source::Config, customer_uid: "cust-4".into(), ..sub("f") };
    let insert =
        SyncPlan { changes: vec![Change::Insert(f)], warnings: vec![], notes: vec![], refused: vec![], retimed: None };
    s.sync_with(&clock, t0(), |_| Ok(insert)).unwrap();
    let later = t0() + Duration::days(400);
    let claimed = s.open_and_claim(later, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap().attempts;
    let f_attempt = claimed.iter().find(|a| a.subscription_id == "f").expect("f's attempt");
    sent(&s, std::slice::from_ref(f_attempt), later);
    s.record(&[declined(f_attempt, Decision::RetryAt(later + Duration::days(1)))], later).unwrap();
    let before = s.subscription("f").unwrap().unwrap();
    let after = Subscription { customer_uid: "cust-5".into(), ..before.clone() };
    let what = vec!["customer_uid".into()];
    let update = SyncPlan {
        changes: vec![Change::Update { before: Box::new(before), after: Box::new(after), what }],
        warnings: vec![],
        notes: vec![],
        refused: vec![],
        retimed: None,
    };
    s.sync_with(&clock, later, |_| Ok(update)).unwrap();
    assert_eq!(s.subscriptions_using("cust-4").unwrap(), [row("f", Status::PastDue, "cust-5")]);
    assert_eq!(s.subscriptions_using("cust-5").unwrap(), [row("f", Status::PastDue, "cust-5")]);
}

/// A safety stop is seen by every handle (another process) and kept until lifted; a second stop keeps the first
/// reason while it is not released, and replaces a released one; a release marks it (once), and a lift removes it
/// (with `only_released`, only a released one).
pub fn a_safety_stop_holds_across_handles_until_released<B: Backend>(b: &B) {
    let s = b.open();
    assert_eq!(s.safety_stop().unwrap(), None);
    let stop = SafetyStop { reason: "120 due, above 20".into(), max_charges_per_pass: 20, at: t0(), released: false };
    s.stop_billing(&stop).unwrap();
    let later =
        SafetyStop { reason: "later".into(), max_charges_per_pass: 30, at: t0() + Duration::hours(1), released: false };
    s.stop_billing(&later).unwrap();
    let other = b.open();
    assert_eq!(other.safety_stop().unwrap(), Some(stop.clone()), "not seen by another handle, or not the first");
    drop(s);
    assert!(!other.lift_safety_stop("pass done", true, t0()).unwrap(), "lifted a stop that was not released");
    assert_eq!(other.release_billing("operator", t0()).unwrap(), Some(stop.clone()));
    let released = SafetyStop { released: true, ..stop.clone() };
    assert_eq!(b.open().safety_stop().unwrap(), Some(released.clone()));
    assert_eq!(other.release_billing("operator", t0()).unwrap(), Some(released), "a second release changes nothing");
    // Tripped again after the release: the new stop replaces the released one.
    other.stop_billing(&later).unwrap();
    assert_eq!(b.open().safety_stop().unwrap(), Some(later.clone()));
    other.release_billing("operator", t0()).unwrap();
    assert!(other.lift_safety_stop("pass done", true, t0()).unwrap());
    assert_eq!(b.open().safety_stop().unwrap(), None);
    other.stop_billing(&stop).unwrap();
    assert!(other.lift_safety_stop("limit raised", false, t0()).unwrap());
    assert_eq!(b.open().safety_stop().unwrap(), None);
    assert_eq!(other.release_billing("operator", t0()).unwrap(), None);
}

/// The first sync records the charge clock in force; a sync with another clock (even with nothing else to change)
/// re-times the next due instant of every subscription that is not canceled, says so in `retimed`, and records the
/// new clock; a sync with the same clock re-times nothing.
pub fn a_sync_with_another_clock_re_times_every_next_charge<B: Backend>(b: &B) {
    let s = b.open();
    let at = |h: u32, m: u32| ChargeClock {
        timezone: chrono_tz::Asia::Seoul,
        charge_time: chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap(),
    };
    let empty = || SyncPlan { changes: vec![], warnings: vec![], notes: vec![], refused: vec![], retimed: None };
    assert_eq!(s.book_clock().unwrap(), None);
    let x = Subscription { source: Source::Config, ..sub("x") };
    let insert = SyncPlan { changes: vec![Change::Insert(x)], ..empty() };
    s.sync_with(&at(9, 30), t0(), |_| Ok(insert)).unwrap();
    assert_eq!(s.book_clock().unwrap(), Some(at(9, 30)));
    add(&s, &["y", "z"]);
    s.set_status("z", Status::Canceled, t0(), "test").unwrap();
    let z_before = s.next_due_at("z").unwrap();
    assert!(s.sync_with(&at(9, 30), t0(), |_| Ok(empty())).unwrap().retimed.is_none());
    let plan = s.sync_with(&at(11, 0), t0(), |_| Ok(empty())).unwrap();
    assert!(plan.retimed.is_some() && !plan.is_empty(), "{plan:?}");
    let other = b.open();
    assert_eq!(other.book_clock().unwrap(), Some(at(11, 0)));
    for id in ["x", "y"] {
        let due = other.next_due_at(id).unwrap().expect("a next due instant");
        assert_eq!(due.with_timezone(&chrono_tz::Asia::Seoul).format("%H:%M").to_string(), "11:00", "{id}");
    }
    assert_eq!(other.next_due_at("z").unwrap(), z_before, "a canceled subscription was re-timed");
}

/// An operator's retry ahead of the scheduled retry (issue 23, point 4): [`Ledger::retry_now`] makes the period due
/// now (never later than it was) and the attempt claimed before the scheduled instant carries it (a second
/// `retry_now` before the claim keeps the same one), decided when it is claimed, not when it is settled; a decline
/// recorded with [`Decision::BackToSchedule`] counts no decline, and the next attempt is the scheduled one, which
/// carries nothing.
pub fn an_operators_retry_ahead_of_the_schedule_counts_no_decline<B: Backend>(b: &B) {
    let claim = |at: DateTime<Utc>| -> Vec<(u32, u32, Option<DateTime<Utc>>)> {
        let got = b.open().claim_due(at, 10, i64::MAX, TIMEOUT_MS).unwrap();
        got.iter().map(|a| (a.attempt, a.declines, a.ahead_of)).collect()
    };
    let s = b.open();
    add(&s, &["a"]);
    let first = open_all(&s, t0());
    let scheduled = t0() + Duration::days(1);
    s.record(&[declined(&first[0], Decision::RetryAt(scheduled))], t0()).unwrap();
    let (early, later) = (t0() + Duration::hours(8), t0() + Duration::hours(9));
    assert!(s.retry_now("a", early).unwrap());
    assert!(s.retry_now("a", later).unwrap(), "a second retry before the first was made");
    assert_eq!(claim(later), [(2, 1, Some(scheduled))]);
    // Its answer is lost and settled only after the scheduled instant: it is still the operator's extra attempt.
    let settled = scheduled + Duration::hours(1);
    let extra = s.unresolved(later, 10).unwrap();
    let check = outcome(&extra[0], AttemptResult::Unresolved { reason: "timeout".into() }, Decision::CheckAt(settled));
    s.record(&[check], later).unwrap();
    let extra = s.unresolved(settled, 10).unwrap();
    assert_eq!(extra.iter().map(|a| a.ahead_of).collect::<Vec<_>>(), [Some(scheduled)], "decided when claimed");
    s.record(&[declined(&extra[0], Decision::BackToSchedule(settled))], settled).unwrap();
    assert_eq!(claim(settled), [(3, 1, None)], "the scheduled retry, uncounted before it");
    // A retry at or after the scheduled instant is that retry: it carries nothing.
    let third = s.unresolved(settled, 10).unwrap();
    let next = settled + Duration::days(2);
    s.record(&[declined(&third[0], Decision::RetryAt(next))], settled).unwrap();
    // A retry when the next attempt is already due leaves it as it is (never later), so a retry at an earlier
    // instant afterwards (a past --as-of) still finds the scheduled one.
    assert!(s.retry_now("a", next + Duration::hours(2)).unwrap());
    assert!(s.retry_now("a", next - Duration::hours(2)).unwrap());
    assert_eq!(claim(next - Duration::hours(2)), [(4, 2, Some(next))]);
}
