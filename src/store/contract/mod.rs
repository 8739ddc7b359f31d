//! The storage contract's test suite (long: the macro that lists every case, which grows with each concern, and the
//! helpers the cases share): every guarantee the exactly-once protocol relies on, written against the traits only,
//! so that every adapter runs the same tests (`tests/store_contract.rs` runs them on SQLite with
//! [`store_contract_tests!`](crate::store_contract_tests); a PostgreSQL adapter instantiates the same macro).
//! Each test panics with what it found when a guarantee does not hold.

use crate::billing::calendar::{ChargeClock, Interval};
use crate::billing::dunning::{Decision, OnExhausted};
use crate::billing::model::{Source, Status, Subscription};
use crate::billing::quiet::RealInstant;
use crate::billing::status::merchant_uid_taken_reason;
use crate::billing::sync::{Change, SyncPlan};
use crate::store::StatusSet;
use crate::store::{
    Attempt, AttemptResult, Book, ChargeStatus, DueSubscription, Failure, Ledger, NewPeriod, OneTime, OneTimeCharge,
    OneTimeKind, PeriodState, Recorded, SafetyStop, Store, Views, ceil_second,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};

mod change_money;
mod changes;
mod daemons;
mod guards;
mod lifecycle;
mod notices;
mod one_time;
mod outbox;
mod refunds;
pub use change_money::*;
pub use changes::*;
pub use daemons::*;
pub use guards::*;
pub use lifecycle::*;
pub use notices::*;
pub use one_time::*;
pub use outbox::*;
pub use refunds::*;

/// How a suite test gets at a book.
pub trait Backend {
    type Store: Store;

    /// A handle on this backend's book, which starts empty. Each call is a new connection on the same book, as
    /// another process (or the same process after a crash) would have.
    fn open(&self) -> Self::Store;

    /// Several schedulers may share its book (PostgreSQL); `false`: one at a time (SQLite).
    const SHARED: bool = false;
}

/// One `#[test]` per contract test, each on a fresh backend made by `$make` (an expression giving a [`Backend`]).
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            an_intent_is_durable_before_open_and_claim_returns,
            an_intent_is_durable_before_claim_due_returns,
            claimed_attempts_are_not_claimed_again,
            a_period_never_has_two_paid_attempts,
            record_is_atomic_for_a_batch,
            unresolved_attempts_come_only_after_their_check_time_and_each_once_when_paged,
            a_check_time_is_never_rounded_earlier,
            a_paid_charge_makes_a_past_due_subscription_active,
            outcomes_never_undo_a_pause_or_a_cancel,
            exhaustion_applies_the_policy,
            a_withheld_rejection_leaves_the_period_open_and_the_status_alone,
            the_subscriptions_using_a_key_are_every_one_not_canceled_whatever_the_case,
            a_safety_stop_holds_across_handles_until_released,
            a_sync_with_another_clock_re_times_every_next_charge,
            an_operators_retry_ahead_of_the_schedule_counts_no_decline,
            a_subscription_keeps_its_terms_through_sync_and_manual_adds,
            stale_periods_are_skipped_and_never_charged,
            a_pause_with_an_end_is_listed_when_due_and_only_while_suspended,
            a_pause_with_an_end_wakes_the_scheduler_and_is_shown,
            what_dunning_suspended_is_neither_resumed_nor_paused_until_a_date,
            a_restart_with_nothing_left_to_bill_ends_at_once_and_a_cancel_date_stands,
            stale_periods_the_gateway_paid_are_recorded_paid_and_the_others_skipped,
            a_scoped_step_takes_one_subscription_and_no_period_before_its_bound,
            a_cancel_at_period_end_stops_opening_and_cancels_when_due,
            the_last_period_of_a_term_paid_completes_the_subscription,
            only_what_dunning_stopped_is_reactivated,
            a_taken_merchant_uid_suspends_its_subscription_and_the_page_goes_on,
            sync_applies_nothing_planned_from_a_stale_read,
            resume_decides_from_the_subscription_inside_its_transaction,
            a_one_time_charge_is_begun_once_and_settled_by_its_own_send_only,
            a_charge_of_a_billing_key_keeps_its_key_and_subscription_and_no_merchant_uid_is_taken_twice_in_any_case,
            release_removes_only_intents_never_sent,
            nothing_voided_by_a_cancel_or_a_pause_may_leave,
            of_two_handles_racing_a_resend_exactly_one_wins,
            the_scheduler_claim_is_exclusive_across_handles,
            a_live_daemons_attempt_is_left_alone_and_taken_over_once_its_lease_ends,
            a_daemon_whose_work_was_taken_over_writes_nothing_about_it,
            a_lapsed_lease_is_never_renewed_and_the_daemons_are_listed,
            the_whole_book_claim_excludes_every_scheduler,
            a_daemon_whose_process_is_gone_is_taken_over_at_once,
            each_kind_of_one_at_a_time_jobs_is_held_by_one_at_a_time,
            refunds_begun_at_once_never_add_up_to_more_than_the_charge,
            a_refused_refund_frees_its_amount_and_an_unknown_one_does_not,
            a_refund_taken_over_by_a_pass_may_not_leave,
            a_refund_in_doubt_is_settled_only_by_what_the_gateway_lists,
            paid_charges_are_paged_once_each,
            the_same_refund_is_not_begun_again,
            never_more_refunded_than_the_gateway_lists,
            every_change_publishes_its_event_in_its_transaction,
            events_are_deliverable_in_order_per_stream,
            attempts_recorded_together_are_each_recorded_as_if_alone,
            an_event_read_ahead_is_deliverable_only_while_it_still_is,
            replay_expiry_and_pruning_keep_the_outbox_straight,
            a_trial_ending_is_announced_once,
            a_plan_change_applies_once_from_a_fresh_read_and_its_credit_pays_the_next_periods,
            a_pending_change_holds_a_sync_and_credits_are_never_lost_or_refunded,
            a_change_charge_leaves_only_while_its_change_is_pending_and_its_subscription_bills,
            a_paid_change_applies_only_to_the_subscription_it_was_decided_from,
            a_change_never_begun_is_abandoned_and_never_holds_the_next_wake,
            credits_count_in_every_form_and_are_released_when_a_subscription_ends,
            credit_of_a_period_settled_unpaid_after_its_subscription_ended_is_released,
            no_period_opens_at_or_after_its_cancel_date_whatever_wrote_its_due_instant,
            a_failed_refund_the_gateway_made_late_is_billds_and_not_begun_again,
            a_refund_made_outside_billd_with_the_same_amount_and_reason_is_not_begun_again,
            a_reason_is_compared_exactly_and_only_as_the_gateway_gave_it,
            a_lookup_older_than_a_recorded_refund_records_nothing,
            a_notice_names_what_the_book_holds_under_its_merchant_uid,
            a_settlement_from_an_earlier_read_is_recorded_only_if_nothing_changed,
        );
    };
    (@each $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::store::contract::$name(&$make);
            }
        )+
    };
}

const TIMEOUT_MS: u64 = 5_000;

fn t0() -> DateTime<Utc> {
    "2025-01-01T01:00:00Z".parse().unwrap()
}

fn sub(id: &str) -> Subscription {
    Subscription {
        id: id.into(),
        customer_uid: format!("c-{id}"),
        plan_id: "p".into(),
        plan_name: "Plan".into(),
        amount: 9900,
        currency: "KRW".into(),
        interval: "1 month".parse::<Interval>().unwrap(),
        start_date: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        anchor_date: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        anchor_period: 0,
        next_period: 0,
        status: Status::Active,
        source: Source::Manual,
        skip: Vec::new(),
        discount: None,
        cancel_at: None,
        last_period: None,
    }
}

/// Adds subscriptions (by command) whose first period is due at [`t0`].
fn add(s: &impl Store, ids: &[&str]) {
    for id in ids {
        s.insert_manual(&sub(id), Some(t0()), t0()).unwrap();
    }
}

/// The period a due subscription opens: merchant_uid `m-ID-PERIOD`, the next one due 30 days later.
fn period(d: &DueSubscription) -> NewPeriod {
    NewPeriod {
        subscription_id: d.sub.id.clone(),
        period: d.sub.next_period,
        due_at: d.next_due_at,
        merchant_uid: format!("m-{}-{}", d.sub.id, d.sub.next_period),
        customer_uid: d.sub.customer_uid.clone(),
        amount: d.sub.amount,
        currency: d.sub.currency.clone(),
        name: d.sub.plan_name.clone(),
        following_period: d.sub.next_period + 1,
        following_due_at: Some(d.next_due_at + Duration::days(30)),
        skip_ahead: Vec::new(),
    }
}

/// Opens and claims everything due at `now`.
fn open_all(s: &impl Store, now: DateTime<Utc>) -> Vec<Attempt> {
    s.open_and_claim(now, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap().attempts
}

fn outcome(a: &Attempt, result: AttemptResult, decision: Decision) -> Recorded {
    Recorded { attempt: a.clone(), result, decision, doubt: Some(real(t0())) }
}

/// A real instant for the tests' billing instant `t` (the wall and boot clocks read alike).
fn real(t: DateTime<Utc>) -> RealInstant {
    RealInstant { wall_ms: t.timestamp_millis(), boot: Some(("contract-boot".into(), t.timestamp_millis())) }
}

/// Lets the requests of claimed attempts leave (the "go" write at `now`); all of them must be allowed.
fn sent(s: &impl Store, attempts: &[Attempt], now: DateTime<Utc>) {
    let ids: Vec<i64> = attempts.iter().map(|a| a.id).collect();
    assert_eq!(s.begin_send(&ids, &real(now), now).unwrap(), ids, "the claimed attempts may be sent");
}

fn paid(a: &Attempt) -> Recorded {
    outcome(a, AttemptResult::Paid { imp_uid: format!("imp_{}_{}", a.subscription_id, a.attempt) }, Decision::Paid)
}

fn declined(a: &Attempt, decision: Decision) -> Recorded {
    outcome(a, AttemptResult::Declined { imp_uid: None, reason: "insufficient funds".into() }, decision)
}

fn status(s: &impl Store, id: &str) -> Status {
    s.subscription(id).unwrap().expect("the subscription").status
}

/// (subscription, status it moved to) of each status change.
fn ended(changes: Vec<crate::store::StatusChange>) -> Vec<(String, Status)> {
    changes.into_iter().map(|c| (c.subscription_id, c.to)).collect()
}

/// A period, its state, and (attempt, status) of each of its attempts.
type PeriodLine = (u64, PeriodState, Vec<(u32, ChargeStatus)>);

/// Every period of a subscription with its attempts, oldest first.
fn story(s: &impl Store, id: &str) -> Vec<PeriodLine> {
    let (periods, _) = s.subscription_story(id).unwrap();
    periods.iter().map(|p| (p.period, p.state, p.attempts.iter().map(|a| (a.attempt, a.status)).collect())).collect()
}

fn paid_attempts(s: &impl Store, id: &str) -> usize {
    story(s, id).iter().flat_map(|(_, _, a)| a.iter()).filter(|(_, st)| *st == ChargeStatus::Paid).count()
}

/// The intent (attempt row, pending) of a newly opened period is committed before `open_and_claim` returns: another
/// connection sees it.
pub fn an_intent_is_durable_before_open_and_claim_returns<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let claimed = open_all(&s, t0());
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let other = b.open();
    let seen = other.unresolved(t0(), 10).unwrap();
    assert_eq!(seen.len(), 1, "another connection does not see the intent: {seen:?}");
    let a = &seen[0];
    assert_eq!((a.merchant_uid.as_str(), a.attempt, a.status), ("m-a-0", 1, ChargeStatus::Pending));
    assert_eq!((a.id, a.timeout_ms), (claimed[0].id, Some(TIMEOUT_MS)), "the timeout it is sent with is recorded");
    drop(s);
    assert_eq!(b.open().unresolved(t0(), 10).unwrap().len(), 1, "lost when the first handle closed");
}

/// The intent of a retry is committed before `claim_due` returns.
pub fn an_intent_is_durable_before_claim_due_returns<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let first = open_all(&s, t0());
    let retry_at = t0() + Duration::days(1);
    s.record(&[declined(&first[0], Decision::RetryAt(retry_at))], t0()).unwrap();
    assert!(s.claim_due(retry_at - Duration::seconds(1), 10, i64::MAX, TIMEOUT_MS).unwrap().is_empty(), "early");
    let retry = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    assert_eq!(retry.iter().map(|a| (a.attempt, a.declines, a.past_due)).collect::<Vec<_>>(), [(2, 1, true)]);
    let seen = b.open().unresolved(retry_at, 10).unwrap();
    assert_eq!(seen.iter().map(|a| (a.id, a.attempt)).collect::<Vec<_>>(), [(retry[0].id, 2)], "not durable");
}

/// A claimed period is not claimed again, by this handle or another, until its outcome is recorded.
pub fn claimed_attempts_are_not_claimed_again<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    assert_eq!(s.subscriptions_to_open_count(t0(), i64::MAX).unwrap(), 2);
    let claimed = open_all(&s, t0());
    assert_eq!(claimed.len(), 2);
    let later = t0() + Duration::hours(1);
    let again = s.open_and_claim(later, 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap();
    assert_eq!((again.opened, again.attempts.len()), (0, 0), "claimed twice: {:?}", again.attempts);
    let other = b.open();
    assert!(other.claim_due(later, 100, i64::MAX, TIMEOUT_MS).unwrap().is_empty(), "claimed again by another");
    assert_eq!(other.subscriptions_to_open_count(later, i64::MAX).unwrap(), 0);
    assert_eq!(other.due_backlog(later, i64::MAX).unwrap(), 0);
    // The same for a retry claimed by claim_due.
    let retry_at = t0() + Duration::days(1);
    s.record(&[declined(&claimed[0], Decision::RetryAt(retry_at))], t0()).unwrap();
    let retry = s.claim_due(retry_at, 100, i64::MAX, TIMEOUT_MS).unwrap();
    assert_eq!(retry.len(), 1);
    let again = other.claim_due(retry_at + Duration::hours(1), 100, i64::MAX, TIMEOUT_MS).unwrap();
    assert!(again.is_empty(), "a retry claimed twice: {again:?}");
    assert_eq!(s.due_backlog(retry_at, i64::MAX).unwrap(), 0);
}

/// Recording paid twice, or paying a second attempt of a paid period, never leaves two paid attempts.
pub fn a_period_never_has_two_paid_attempts<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let first = open_all(&s, t0());
    let retry_at = t0() + Duration::days(1);
    s.record(&[declined(&first[0], Decision::RetryAt(retry_at))], t0()).unwrap();
    let second = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    s.record(&[paid(&second[0])], retry_at).unwrap();
    let _ = s.record(&[paid(&second[0])], retry_at);
    // A late "paid" for the first attempt (say, a forged or confused answer): refused, never a second payment.
    let _ = s.record(&[paid(&first[0])], retry_at);
    assert_eq!(paid_attempts(&s, "a"), 1, "{:?}", story(&s, "a"));
    assert_eq!(story(&s, "a")[0].1, PeriodState::Paid);
}

/// `record` writes a batch whole or not at all: a batch whose second item cannot be recorded leaves the first
/// unrecorded.
pub fn record_is_atomic_for_a_batch<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let claimed = open_all(&s, t0());
    let (a, b_first) = (&claimed[0], &claimed[1]);
    assert_eq!((a.subscription_id.as_str(), b_first.subscription_id.as_str()), ("a", "b"));
    let retry_at = t0() + Duration::days(1);
    s.record(&[declined(b_first, Decision::RetryAt(retry_at))], t0()).unwrap();
    let b_second = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    s.record(&[paid(&b_second[0])], retry_at).unwrap();
    // a's payment, then a second payment of b's paid period, in one batch.
    let result = s.record(&[paid(a), paid(b_first)], retry_at);
    assert!(result.is_err(), "a second paid attempt of a period was recorded");
    assert_eq!(story(&s, "a"), [(0, PeriodState::Open, vec![(1, ChargeStatus::Pending)])], "half a batch recorded");
    let unresolved = b.open().unresolved(retry_at, 10).unwrap();
    assert_eq!(unresolved.iter().map(|u| u.id).collect::<Vec<_>>(), [a.id], "a's intent is still to be settled");
}

/// Unknown attempts come back only once their check time has come; pending ones at once; paging by key returns each
/// once.
pub fn unresolved_attempts_come_only_after_their_check_time_and_each_once_when_paged<B: Backend>(b: &B) {
    let s = b.open();
    let ids = ["a", "b", "c", "d", "e"];
    add(&s, &ids);
    let claimed = open_all(&s, t0());
    assert_eq!(claimed.len(), 5);
    let check = t0() + Duration::minutes(10);
    let unknown =
        |a: &Attempt| outcome(a, AttemptResult::Unresolved { reason: "timeout".into() }, Decision::CheckAt(check));
    // Four unknown until `check`; e stays pending (as a process that died left it).
    s.record(&claimed[..4].iter().map(unknown).collect::<Vec<_>>(), t0()).unwrap();
    let before = s.unresolved(check - Duration::seconds(1), 100).unwrap();
    assert_eq!(before.iter().map(|a| a.subscription_id.as_str()).collect::<Vec<_>>(), ["e"], "looked at early");
    assert_eq!(s.unresolved_count().unwrap(), 5);
    let mut seen = Vec::new();
    let mut after: Option<(String, u64)> = None;
    loop {
        let page = s.unresolved_after(check, after.as_ref().map(|(s, p)| (s.as_str(), *p)), 2).unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.subscription_id.clone(), last.period));
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|a| (a.subscription_id, a.status)));
    }
    let expected: Vec<(String, ChargeStatus)> = ids
        .iter()
        .map(|id| (id.to_string(), if *id == "e" { ChargeStatus::Pending } else { ChargeStatus::Unknown }))
        .collect();
    assert_eq!(seen, expected, "each unresolved attempt once, in key order");
    assert_eq!(s.next_wake().unwrap(), Some(check.min(t0() + Duration::days(30))));
}

/// A check time with a fraction of a second is kept rounded up (RELIABILITY §13), never down.
pub fn a_check_time_is_never_rounded_earlier<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let claimed = open_all(&s, t0());
    let check = t0() + Duration::seconds(70) + Duration::milliseconds(300);
    let r = outcome(&claimed[0], AttemptResult::Unresolved { reason: "timeout".into() }, Decision::CheckAt(check));
    s.record(&[r], t0()).unwrap();
    let whole = t0() + Duration::seconds(70);
    assert!(s.unresolved(whole, 10).unwrap().is_empty(), "looked at before its check time");
    assert_eq!(s.unresolved(whole + Duration::seconds(1), 10).unwrap().len(), 1);
    let (periods, _) = s.subscription_story("a").unwrap();
    assert_eq!(periods[0].attempts[0].check_at, Some(ceil_second(check)));
}

/// A paid charge makes a past-due subscription active again.
pub fn a_paid_charge_makes_a_past_due_subscription_active<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let first = open_all(&s, t0());
    let retry_at = t0() + Duration::days(1);
    let changes = s.record(&[declined(&first[0], Decision::RetryAt(retry_at))], t0()).unwrap();
    assert_eq!(status(&s, "a"), Status::PastDue);
    assert_eq!(changes.iter().map(|c| (c.from, c.to)).collect::<Vec<_>>(), [(Status::Active, Status::PastDue)]);
    let retry = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    let changes = s.record(&[paid(&retry[0])], retry_at).unwrap();
    assert_eq!(status(&s, "a"), Status::Active);
    assert_eq!(changes.iter().map(|c| (c.from, c.to)).collect::<Vec<_>>(), [(Status::PastDue, Status::Active)]);
}

/// An operator's pause or cancel made while an attempt is out is never undone by its outcome.
pub fn outcomes_never_undo_a_pause_or_a_cancel<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["paused", "canceled"]);
    let first = open_all(&s, t0());
    let retry_at = t0() + Duration::days(1);
    s.record(&first.iter().map(|a| declined(a, Decision::RetryAt(retry_at))).collect::<Vec<_>>(), t0()).unwrap();
    let retries = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    assert!(retries.iter().all(|a| a.past_due), "{retries:?}");
    sent(&s, &retries, retry_at);
    // While the retries are out, an operator pauses one and cancels the other.
    s.set_status("paused", Status::Suspended, retry_at, "paused by operator").unwrap();
    s.set_status("canceled", Status::Canceled, retry_at, "canceled by operator").unwrap();
    let (p, c) =
        if retries[0].subscription_id == "paused" { (&retries[0], &retries[1]) } else { (&retries[1], &retries[0]) };
    let changes = s.record(&[paid(p), declined(c, Decision::Exhausted(OnExhausted::Suspend))], retry_at).unwrap();
    assert_eq!(changes, [], "an outcome changed an operator's decision");
    assert_eq!((status(&s, "paused"), status(&s, "canceled")), (Status::Suspended, Status::Canceled));
    assert_eq!(paid_attempts(&s, "paused"), 1, "the payment itself is recorded");
    // Canceled is final, even for an operator.
    assert_eq!(
        s.set_status("canceled", Status::Active, retry_at, "x").unwrap().map(|x| x.before),
        Some(Status::Canceled)
    );
    assert_eq!(status(&s, "canceled"), Status::Canceled);
}

/// A given-up period applies the policy's action to a subscription that bills, with the reason.
pub fn exhaustion_applies_the_policy<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["cancel", "suspend", "skip"]);
    let claimed = open_all(&s, t0());
    let action = |a: &Attempt| match a.subscription_id.as_str() {
        "cancel" => OnExhausted::Cancel,
        "suspend" => OnExhausted::Suspend,
        _ => OnExhausted::Skip,
    };
    let batch: Vec<Recorded> = claimed
        .iter()
        .map(|a| match a.subscription_id.as_str() {
            "cancel" => {
                outcome(a, AttemptResult::Rejected { reason: "code 1: no key".into() }, Decision::Exhausted(action(a)))
            }
            _ => declined(a, Decision::Exhausted(action(a))),
        })
        .collect();
    s.record(&batch, t0()).unwrap();
    assert_eq!(
        (status(&s, "cancel"), status(&s, "suspend"), status(&s, "skip")),
        (Status::Canceled, Status::Suspended, Status::Active)
    );
    for id in ["cancel", "suspend", "skip"] {
        assert_eq!(story(&s, id)[0].1, PeriodState::GivenUp, "{id}");
    }
    let rows = s.list_subscriptions(None).unwrap();
    let why = |id: &str| rows.iter().find(|r| r.id == id).and_then(|r| r.why.clone());
    assert_eq!(why("cancel").as_deref(), Some("rejected: code 1: no key"));
    assert_eq!(why("suspend").as_deref(), Some("retries exhausted (last decline: insufficient funds)"));
    let failed = s.list_charges(true, None, None, 0).unwrap();
    assert_eq!(failed.iter().filter(|(_, r)| r.failure == Some(Failure::Rejected)).count(), 1);
}

/// A period whose merchant_uid is taken (here by a one-time charge) is not opened: its subscription is suspended
/// with the reason, and the rest of the page is opened and claimed.
pub fn a_taken_merchant_uid_suspends_its_subscription_and_the_page_goes_on<B: Backend>(b: &B) {
    let s = b.open();
    let key_in = OneTimeCharge {
        merchant_uid: "m-a-0".into(),
        kind: OneTimeKind::Card,
        customer_uid: None,
        subscription_id: None,
        name: "n".into(),
        amount: 100,
        currency: "KRW".into(),
        card_masked: "424242******4242".into(),
    };
    s.begin_one_time(&key_in, &real(t0()), t0(), TIMEOUT_MS, t0(), None).unwrap().expect("begun");
    add(&s, &["a", "b"]);
    let step = s.open_and_claim(t0(), 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap();
    assert_eq!(step.attempts.iter().map(|a| a.merchant_uid.as_str()).collect::<Vec<_>>(), ["m-b-0"]);
    assert_eq!(step.opened, 1);
    let reason = merchant_uid_taken_reason("m-a-0", 0, "a one-time charge");
    assert_eq!(
        step.refused.iter().map(|r| (r.subscription_id.as_str(), &r.reason)).collect::<Vec<_>>(),
        [("a", &reason)]
    );
    assert_eq!(status(&s, "a"), Status::Suspended);
    assert!(story(&s, "a").is_empty(), "a period was opened under a taken merchant_uid");
    let rows = s.list_subscriptions(Some(Status::Suspended)).unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.id.as_str(), r.why.as_deref())).collect::<Vec<_>>(),
        [("a", Some(reason.as_str()))]
    );
    // Nothing more to open: the suspended subscription is not retried page after page.
    assert_eq!(s.subscriptions_to_open_count(t0(), i64::MAX).unwrap(), 0);
}

/// `sync_with` plans from the rows inside its transaction, and applies nothing of a plan made from a stale read.
pub fn sync_applies_nothing_planned_from_a_stale_read<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    let config = |id: &str| Subscription { source: Source::Config, ..sub(id) };
    let inserts = SyncPlan {
        changes: vec![Change::Insert(config("x")), Change::Insert(config("y"))],
        warnings: vec![],
        notes: vec![],
        refused: vec![],
        retimed: None,
    };
    s.sync_with(&clock, t0(), |subs| {
        assert_eq!(subs.len(), 0);
        Ok(inserts)
    })
    .unwrap();
    let stale = s.config_subscriptions().unwrap();
    // Another process opens x's first period meanwhile (its next period moves on).
    let other = b.open();
    other.open_and_claim(t0() + Duration::days(400), 100, 100, i64::MAX, TIMEOUT_MS, period).unwrap();
    let plan = |subs: &[Subscription]| {
        let fresh = subs.iter().find(|x| x.id == "x").unwrap();
        assert_eq!(fresh.next_period, 1, "the closure got a stale row");
        // A plan made from the stale read regardless: cancel y, then update x from its old state.
        let before = stale.iter().find(|x| x.id == "x").unwrap().clone();
        let after = Subscription { amount: 1, ..before.clone() };
        Ok(SyncPlan {
            changes: vec![
                Change::Cancel { id: "y".into(), reason: "gone from the file".into() },
                Change::Update { before: Box::new(before), after: Box::new(after), what: vec!["amount".into()] },
            ],
            warnings: vec![],
            notes: vec![],
            refused: vec![],
            retimed: None,
        })
    };
    assert!(s.sync_with(&clock, t0(), plan).is_err(), "an update planned from a stale row was applied");
    assert_eq!(status(&s, "y"), Status::Active, "part of a refused plan was applied");
    assert_eq!(s.subscription("x").unwrap().unwrap().amount, 9900);
}

/// `release` removes intents that were never sent and makes their periods due again; it leaves others alone.
pub fn release_removes_only_intents_never_sent<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let claimed = open_all(&s, t0());
    // b's request went out and came back unknown (tries 1): not releasable.
    let check = t0() + Duration::minutes(1);
    let unknown =
        outcome(&claimed[1], AttemptResult::Unresolved { reason: "timeout".into() }, Decision::CheckAt(check));
    s.record(&[unknown], t0()).unwrap();
    s.release(&[claimed[0].id, claimed[1].id], t0()).unwrap();
    assert_eq!(story(&s, "a"), [(0, PeriodState::Open, vec![])], "a's unsent intent is still there");
    assert_eq!(story(&s, "b"), [(0, PeriodState::Open, vec![(1, ChargeStatus::Unknown)])]);
    let again = s.claim_due(t0(), 10, i64::MAX, TIMEOUT_MS).unwrap();
    assert_eq!(again.iter().map(|a| (a.subscription_id.as_str(), a.attempt)).collect::<Vec<_>>(), [("a", 1)]);
}

/// A cancel or a pause voids, in its own transaction, the claimed attempts whose requests have not left, and says
/// how many it voided and how many are already at the gateway; the "go" write then refuses the voided ones (and
/// those of a subscription that no longer bills), so nothing of theirs may leave. Either the cancel or the go wins,
/// never both.
pub fn nothing_voided_by_a_cancel_or_a_pause_may_leave<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "c"]);
    let claimed = open_all(&s, t0());
    let id = |sub: &str| claimed.iter().find(|a| a.subscription_id == sub).expect("claimed").id;
    // b's request leaves first; then a is canceled and b paused (from another handle, as `billd cancel` would).
    sent(&s, &claimed[1..2], t0());
    let other = b.open();
    let set = |voided, in_flight| StatusSet {
        before: Status::Active,
        voided,
        in_flight,
        change_charges: 0,
        changes_withdrawn: 0,
        credit_released: 0,
    };
    let canceled = other.set_status("a", Status::Canceled, t0(), "canceled by operator").unwrap();
    assert_eq!(canceled, Some(set(1, 0)), "a's unsent claim");
    let paused = other.set_status("b", Status::Suspended, t0(), "paused by operator").unwrap();
    assert_eq!(paused, Some(set(0, 1)), "b's request had left");
    // The pass's go write for a and c: only c may leave.
    let allowed = s.begin_send(&[id("a"), id("c")], &real(t0()), t0()).unwrap();
    assert_eq!(allowed, [id("c")], "a canceled subscription's claimed charge was allowed to leave");
    assert_eq!(story(&s, "a"), [(0, PeriodState::Open, vec![])], "a's voided intent is gone, history kept");
    // A second go write for c (already sent) refuses it: nothing leaves twice either.
    assert_eq!(s.begin_send(&[id("c")], &real(t0()), t0()).unwrap(), Vec::<i64>::new(), "sent twice");
    // b, at the gateway, is settled by its outcome as usual.
    s.record(&[paid(&claimed[1])], t0()).unwrap();
    assert_eq!(paid_attempts(&s, "b"), 1);
    assert_eq!(status(&s, "b"), Status::Suspended, "an outcome never undoes the pause");
}

/// Two processes read the same unresolved attempt (the same page) and both find it missing at the gateway: the
/// resend is a compare and set on its status and tries, so exactly one of them may resend it; a third that read it
/// before that resend may not either.
pub fn of_two_handles_racing_a_resend_exactly_one_wins<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let claimed = open_all(&s, t0());
    sent(&s, &claimed, t0());
    let check = t0() + Duration::minutes(1);
    let lost = outcome(&claimed[0], AttemptResult::Unresolved { reason: "timeout".into() }, Decision::CheckAt(check));
    s.record(&[lost], t0()).unwrap();
    let (one, two) = (b.open(), b.open());
    let read_one = one.unresolved_after(check, None, 10).unwrap();
    let read_two = two.unresolved_after(check, None, 10).unwrap();
    assert_eq!((read_one.len(), read_two.len()), (1, 1), "both read the unresolved attempt");
    let at = real(check);
    let won_one = one.mark_resending(&read_one[0], &at, check, TIMEOUT_MS).unwrap();
    let won_two = two.mark_resending(&read_two[0], &at, check, TIMEOUT_MS).unwrap();
    assert!(won_one ^ won_two, "both or neither may resend: {won_one} {won_two}");
    assert!(!s.mark_resending(&read_one[0], &at, check, TIMEOUT_MS).unwrap(), "a stale read resent it again");
}

/// A book with one scheduler (SQLite) refuses a second while one handle holds the claim, with an error naming the
/// book; once the holder is dropped (or its process dies), another may take it. A book several daemons share
/// (PostgreSQL) lets both claim.
pub fn the_scheduler_claim_is_exclusive_across_handles<B: Backend>(b: &B) {
    let mut first = b.open();
    first.claim_scheduler().expect("the first scheduler");
    let mut second = b.open();
    if !B::SHARED {
        let err = second.claim_scheduler().expect_err("a second scheduler on the same book");
        assert!(format!("{err:#}").contains(&second.location()), "the error does not name the book: {err:#}");
        drop(first);
    }
    second.claim_scheduler().expect("the claim is free once its holder is gone, or shared");
}
