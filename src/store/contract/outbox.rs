//! The storage contract's cases for issue 26, the outbox: every change publishes its event in its own transaction,
//! events are deliverable in order per stream, and their delivery state (helpers: the parent module).

use super::*;
use crate::store::{Delivery, DeliveryAttempt, DeliveryState, Outbox, OutboxEvent, OutboxFilter, Replay};

fn all(s: &impl Store) -> Vec<OutboxEvent> {
    s.outbox_events(&OutboxFilter::default(), 1000).unwrap()
}

/// (type, sequence) of a subscription's events, in order.
fn of(s: &impl Store, id: &str) -> Vec<(String, u64)> {
    all(s).into_iter().filter(|e| e.subscription_id.as_deref() == Some(id)).map(|e| (e.kind, e.sequence)).collect()
}

fn kinds(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// A subscription created, charged, declined with a retry, paid, and given up publishes each change's event, in the
/// order of the changes and numbered from 1 per subscription, each with the charge or the subscription as the
/// change left it; a batch that fails publishes nothing.
pub fn every_change_publishes_its_event_in_its_transaction<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let claimed = open_all(&s, t0());
    let (a1, b1) = (&claimed[0], &claimed[1]);
    let retry_at = t0() + Duration::days(1);
    s.record(&[paid(a1), declined(b1, Decision::RetryAt(retry_at))], t0()).unwrap();
    // The same payment recorded again (another handle settled it too) publishes nothing more.
    s.record(&[paid(a1)], t0()).unwrap();
    let b2 = s.claim_due(retry_at, 10, i64::MAX, TIMEOUT_MS).unwrap();
    // A failing batch (b's second attempt declined, then the payment of an attempt not in the book) publishes
    // nothing.
    let mut ghost = paid(b1);
    ghost.attempt.id = 999_999;
    assert!(s.record(&[declined(&b2[0], Decision::RetryAt(retry_at)), ghost], retry_at).is_err());
    s.record(&[declined(&b2[0], Decision::Exhausted(OnExhausted::Suspend))], retry_at).unwrap();
    let other = b.open();
    assert_eq!(of(&other, "a"), kinds(&[("subscription.created", 1), ("charge.paid", 2)]));
    assert_eq!(
        of(&other, "b"),
        kinds(&[
            ("subscription.created", 1),
            ("charge.failed", 2),
            ("subscription.past_due", 3),
            ("charge.failed", 4),
            ("subscription.suspended", 5),
        ])
    );
    let events = all(&other);
    let find = |id: &str, n: u64| events.iter().find(|e| e.subscription_id.as_deref() == Some(id) && e.sequence == n);
    let paid_event = find("a", 2).unwrap();
    let charge = paid_event.snapshot.charge.as_ref().expect("a charge event carries its charge");
    assert_eq!((charge.status, charge.merchant_uid.as_str(), charge.amount), (ChargeStatus::Paid, "m-a-0", 9900));
    let retry = find("b", 2).unwrap();
    assert_eq!(retry.snapshot.charge.as_ref().unwrap().failure, Some(Failure::Declined));
    assert_eq!(retry.snapshot.extra.get("next_retry"), Some(&serde_json::json!(retry_at.to_rfc3339())));
    let past_due = find("b", 3).unwrap().snapshot.subscription.as_ref().expect("a subscription event").clone();
    assert_eq!(past_due.status, Status::PastDue);
    let last = find("b", 4).unwrap();
    assert_eq!(last.snapshot.extra.get("final_action"), Some(&serde_json::json!("suspend")));
    assert_eq!(find("b", 5).unwrap().snapshot.subscription.as_ref().unwrap().status, Status::Suspended);
    // Every id is unique, every event pending, due from its change.
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len());
    assert!(events.iter().all(|e| e.id.starts_with("evt_") && e.state == DeliveryState::Pending && e.attempts == 0));
    // An operator's status change and a resume publish theirs.
    other.set_status("a", Status::Suspended, retry_at, "paused by operator").unwrap();
    other
        .resume_with("a", retry_at, "resumed by operator", |sub, _| Ok((sub.next_period, Some(retry_at), Vec::new())))
        .unwrap();
    assert_eq!(of(&other, "a")[2..], kinds(&[("subscription.suspended", 3), ("subscription.resumed", 4)]));
}

/// Only each stream's first pending event is deliverable, once its time has come; a delivered or given-up event
/// makes the next one of its stream deliverable, a retry holds the stream until it is due. Recording an attempt of
/// an event no longer pending writes nothing, and the first body sent is kept.
pub fn events_are_deliverable_in_order_per_stream<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let claimed = open_all(&s, t0());
    s.record(&claimed.iter().map(paid).collect::<Vec<_>>(), t0()).unwrap();
    let heads = |at| -> Vec<(String, u64)> {
        let mut v: Vec<_> = b
            .open()
            .deliverable(at, 0, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.subscription_id.unwrap(), e.sequence))
            .collect();
        v.sort();
        v
    };
    let ids = |sub: &str| -> Vec<String> {
        all(&s).into_iter().filter(|e| e.subscription_id.as_deref() == Some(sub)).map(|e| e.id).collect()
    };
    assert!(heads(t0() - Duration::seconds(1)).is_empty(), "an event deliverable before its change");
    assert_eq!(heads(t0()), [("a".to_string(), 1), ("b".to_string(), 1)]);
    // Paged by position: after the first head, only the second.
    let first = s.deliverable(t0(), 0, 1).unwrap();
    let rest = s.deliverable(t0(), first[0].position, 10).unwrap();
    assert_eq!((first.len(), rest.len()), (1, 1));
    assert!(rest[0].position > first[0].position && rest[0].id != first[0].id);
    let (a, bb) = (ids("a"), ids("b"));
    assert!(s.delivery_attempted(&a[0], "first body", &Delivery::Delivered, t0()).unwrap());
    let later = t0() + Duration::seconds(5);
    assert!(s.delivery_attempted(&bb[0], "b body", &Delivery::RetryAt(later, "HTTP 500".into()), t0()).unwrap());
    assert_eq!(heads(t0()), [("a".to_string(), 2)], "b's second event went before its first");
    // The next wake is b's retry, not b's second event's own (past) instant: it waits behind its head.
    assert_eq!(b.open().next_delivery().unwrap(), Some(later));
    assert_eq!(heads(later), [("a".to_string(), 2), ("b".to_string(), 1)]);
    // Settled events are not attempted again; the first body stays.
    assert!(!s.delivery_attempted(&a[0], "other body", &Delivery::Delivered, later).unwrap());
    let first = b.open().outbox_event(&a[0]).unwrap().unwrap();
    assert_eq!((first.body.as_deref(), first.attempts, first.state), (Some("first body"), 1, DeliveryState::Delivered));
    assert!(s.delivery_attempted(&bb[0], "changed", &Delivery::GaveUp("HTTP 500".into()), later).unwrap());
    let gave_up = b.open().outbox_event(&bb[0]).unwrap().unwrap();
    assert_eq!(
        (gave_up.body.as_deref(), gave_up.attempts, gave_up.state, gave_up.last_error.as_deref()),
        (Some("b body"), 2, DeliveryState::Failed, Some("HTTP 500"))
    );
    assert_eq!(heads(later), [("a".to_string(), 2), ("b".to_string(), 2)], "a given-up event holds its stream");
    let failed = b.open().outbox_events(&OutboxFilter { failed_only: true, ..Default::default() }, 10).unwrap();
    assert_eq!(failed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [bb[0].as_str()]);
    let stats = b.open().outbox_stats().unwrap();
    assert_eq!((stats.pending, stats.oldest_pending), (2, Some(t0())));
    // The next retry: none is waiting (b's first was given up; a's second was never tried).
    assert_eq!(b.open().next_delivery().unwrap(), None);
}

/// An event read ahead is sent only if it is deliverable still: not once an earlier event of its stream is pending
/// again (a replay), nor once another handle tried it (its attempts changed) or it waits for a retry.
pub fn an_event_read_ahead_is_deliverable_only_while_it_still_is<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a"]);
    let claimed = open_all(&s, t0());
    s.record(&claimed.iter().map(paid).collect::<Vec<_>>(), t0()).unwrap();
    let events = all(&s);
    assert!(events.len() >= 2, "{events:?}");
    let (first, second) = (&events[0], &events[1]);
    assert!(s.still_deliverable(&first.id, 0, t0()).unwrap());
    assert!(!s.still_deliverable(&second.id, 0, t0()).unwrap(), "behind a pending event of its stream");
    assert!(!s.still_deliverable(&first.id, 0, t0() - Duration::seconds(1)).unwrap(), "before its instant");
    assert!(s.delivery_attempted(&first.id, "body", &Delivery::Delivered, t0()).unwrap());
    let page = s.deliverable(t0(), 0, 10).unwrap();
    assert_eq!(page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [second.id.as_str()]);
    assert!(b.open().still_deliverable(&second.id, 0, t0()).unwrap());
    // A replay of the first makes it pending again: the second, read ahead, waits for it.
    assert_eq!(b.open().replay(&Replay::Event(first.id.clone()), t0() + Duration::days(3), t0()).unwrap().len(), 1);
    assert!(!s.still_deliverable(&second.id, 0, t0()).unwrap(), "sent before the replayed event it follows");
    assert!(s.delivery_attempted(&first.id, "body", &Delivery::Delivered, t0()).unwrap());
    // Another handle tried it meanwhile: its attempts changed.
    let later = t0() + Duration::seconds(5);
    assert!(b.open().delivery_attempted(&second.id, "b", &Delivery::RetryAt(later, "HTTP 500".into()), t0()).unwrap());
    assert!(!s.still_deliverable(&second.id, 0, later).unwrap(), "tried by another handle since it was read");
    assert!(!s.still_deliverable(&second.id, 1, t0()).unwrap(), "before its retry");
    assert!(s.still_deliverable(&second.id, 1, later).unwrap());
}

/// Attempts recorded together are each recorded as if alone, in order, in one transaction: a delivered one makes
/// the next event of its stream deliverable, a retry holds its stream until it is due, one whose event is no longer
/// pending writes nothing (false), and an empty batch writes nothing.
pub fn attempts_recorded_together_are_each_recorded_as_if_alone<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "c"]);
    let claimed = open_all(&s, t0());
    s.record(&claimed.iter().map(paid).collect::<Vec<_>>(), t0()).unwrap();
    let ids = |sub: &str| -> Vec<String> {
        all(&s).into_iter().filter(|e| e.subscription_id.as_deref() == Some(sub)).map(|e| e.id).collect()
    };
    let (a, bb, c) = (ids("a"), ids("b"), ids("c"));
    assert!(s.delivery_attempted(&c[0], "c body", &Delivery::Delivered, t0()).unwrap());
    let later = t0() + Duration::seconds(5);
    let attempt = |id: &str, body: &str, outcome| DeliveryAttempt { id: id.into(), body: body.into(), outcome };
    let batch = [
        attempt(&a[0], "a body", Delivery::Delivered),
        attempt(&bb[0], "b body", Delivery::RetryAt(later, "HTTP 500".into())),
        attempt(&c[0], "c again", Delivery::Delivered),
    ];
    assert_eq!(s.deliveries_attempted(&batch, t0()).unwrap(), [true, true, false]);
    assert!(s.deliveries_attempted(&[], later).unwrap().is_empty());
    let other = b.open();
    let event = |id: &str| other.outbox_event(id).unwrap().unwrap();
    let (ea, eb, ec) = (event(&a[0]), event(&bb[0]), event(&c[0]));
    assert_eq!((ea.state, ea.attempts, ea.body.as_deref()), (DeliveryState::Delivered, 1, Some("a body")));
    assert_eq!(
        (eb.state, eb.attempts, eb.next_attempt_at, eb.last_error.as_deref()),
        (DeliveryState::Pending, 1, later, Some("HTTP 500"))
    );
    assert_eq!((ec.state, ec.attempts, ec.body.as_deref()), (DeliveryState::Delivered, 1, Some("c body")));
    let mut heads: Vec<(String, u64)> =
        other.deliverable(t0(), 0, 10).unwrap().into_iter().map(|e| (e.subscription_id.unwrap(), e.sequence)).collect();
    heads.sort();
    assert_eq!(heads, [("a".to_string(), 2), ("c".to_string(), 2)], "b's retry holds its stream");
    assert_eq!(other.next_delivery().unwrap(), Some(later));
}

/// A replay makes delivered or given-up events pending again, due now with a new deadline (a pending one is left
/// alone); expiring gives up events never attempted that are older than the cutoff; pruning deletes settled events
/// settled before its cutoff, and a subscription's numbering goes on after it.
pub fn replay_expiry_and_pruning_keep_the_outbox_straight<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let ev = all(&s);
    let (a, bb) = (&ev[0].id, &ev[1].id);
    s.delivery_attempted(a, "body", &Delivery::Delivered, t0()).unwrap();
    let now = t0() + Duration::days(10);
    let deadline = now + Duration::days(3);
    assert_eq!(s.replay(&Replay::Event(bb.clone()), deadline, now).unwrap(), Vec::<String>::new(), "pending");
    assert_eq!(s.replay(&Replay::Event(a.clone()), deadline, now).unwrap(), vec![a.clone()]);
    let again = b.open().outbox_event(a).unwrap().unwrap();
    assert_eq!(
        (again.state, again.attempts, again.next_attempt_at, again.give_up_at, again.body.as_deref()),
        (DeliveryState::Pending, 0, now, Some(deadline), Some("body"))
    );
    // b was never attempted: expired; a (replayed, pending, never attempted since, but created before the cutoff)
    // too: expiry is for events nobody sent.
    assert_eq!(s.expire_unsent(t0() + Duration::seconds(1), "webhooks are off", now).unwrap(), 2);
    assert_eq!(b.open().outbox_event(bb).unwrap().unwrap().state, DeliveryState::Failed);
    assert_eq!(s.replay(&Replay::Since(t0()), deadline, now).unwrap().len(), 2);
    for id in [a, bb] {
        s.delivery_attempted(id, "body", &Delivery::Delivered, now).unwrap();
    }
    assert_eq!(s.prune_outbox(now).unwrap(), 0, "pruned what was settled at the cutoff");
    assert_eq!(s.prune_outbox(now + Duration::seconds(1)).unwrap(), 2);
    assert!(all(&s).is_empty());
    s.set_status("a", Status::Suspended, now, "paused").unwrap();
    assert_eq!(of(&s, "a"), kinds(&[("subscription.suspended", 2)]), "a number reused after pruning");
}

/// `subscription.trial_ending` is published once per subscription, for trials ending after now and within the
/// horizon.
pub fn a_trial_ending_is_announced_once<B: Backend>(b: &B) {
    let s = b.open();
    let clock = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00".parse().unwrap() };
    // Trials ending (their first period due, at 10:00 in Seoul, as t0) 2 and 5 days from t0, and one a day before.
    let changes = [("soon", 2), ("later", 5), ("over", -1)]
        .into_iter()
        .map(|(id, days)| {
            let ends = (t0() + Duration::days(days)).date_naive();
            let t = Subscription { status: Status::Trialing, source: Source::Config, anchor_date: ends, ..sub(id) };
            Change::Insert(t)
        })
        .collect();
    s.sync_with(&clock, t0(), |_| Ok(SyncPlan { changes, ..Default::default() })).unwrap();
    let until = t0() + Duration::days(3);
    assert_eq!(s.announce_trials_ending(until, t0()).unwrap(), ["soon"]);
    assert!(b.open().announce_trials_ending(until, t0()).unwrap().is_empty(), "announced twice");
    assert_eq!(of(&s, "soon"), kinds(&[("subscription.created", 1), ("subscription.trial_ending", 2)]));
    let later = t0() + Duration::days(3);
    assert_eq!(s.announce_trials_ending(later + Duration::days(3), later).unwrap(), ["later"]);
}
