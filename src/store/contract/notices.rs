//! The storage contract's cases for i'mport's notifications (issue 26): what a merchant_uid names in the book, and a settlement from an earlier read recorded only if nothing changed since (the shared helpers are in the parent module).

use super::*;
use crate::store::{NoticeTarget, Notices, Outbox};

/// `notice_target` says what the book holds under a merchant_uid, exactly as stored: a period's unresolved attempt
/// (as a pass reads it), its paid attempt with the payment's imp_uid, its failed one; a one-time charge likewise;
/// nothing for a merchant_uid no charge has (another case included).
pub fn a_notice_names_what_the_book_holds_under_its_merchant_uid<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b", "c"]);
    let claimed = open_all(&s, t0());
    let target = |m: &str| b.open().notice_target(m).unwrap();
    let (a, bb, c) = (&claimed[0], &claimed[1], &claimed[2]);
    match target("m-a-0") {
        NoticeTarget::Attempt(x) => assert_eq!((x.id, x.status, x.tries), (a.id, ChargeStatus::Pending, 0)),
        other => panic!("a pending attempt: {other:?}"),
    }
    let check = t0() + Duration::minutes(10);
    let unknown = outcome(a, AttemptResult::Unresolved { reason: "timeout".into() }, Decision::CheckAt(check));
    s.record(&[unknown, paid(bb), declined(c, Decision::RetryAt(t0() + Duration::days(1)))], t0()).unwrap();
    match target("m-a-0") {
        // Whatever its check time: a notification may come at any time.
        NoticeTarget::Attempt(x) => {
            assert_eq!((x.id, x.status, x.tries, x.merchant_uid.as_str()), (a.id, ChargeStatus::Unknown, 1, "m-a-0"))
        }
        other => panic!("an unknown attempt: {other:?}"),
    }
    assert!(matches!(target("m-b-0"), NoticeTarget::Paid { imp_uid } if imp_uid == "imp_b_1"), "{:?}", target("m-b-0"));
    assert!(matches!(target("m-c-0"), NoticeTarget::Settled(ChargeStatus::Failed)), "{:?}", target("m-c-0"));
    assert!(matches!(target("M-A-0"), NoticeTarget::Unknown), "compared exactly: {:?}", target("M-A-0"));
    assert!(matches!(target("nobody"), NoticeTarget::Unknown));
    // A one-time charge: unresolved, then paid.
    let once = OneTimeCharge {
        merchant_uid: "once-1".into(),
        kind: OneTimeKind::Key,
        customer_uid: Some("c-x".into()),
        subscription_id: None,
        name: "n".into(),
        amount: 100,
        currency: "KRW".into(),
        card_masked: "-".into(),
    };
    let (id, tries) = s.begin_one_time(&once, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun");
    match target("once-1") {
        NoticeTarget::OneTime(x) => assert_eq!((x.id, x.tries, x.pending, x.amount), (id, tries, true, 100)),
        other => panic!("an unresolved one-time charge: {other:?}"),
    }
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_once"), None, t0()).unwrap());
    assert!(matches!(target("once-1"), NoticeTarget::Paid { imp_uid } if imp_uid == "imp_once"));
}

/// `record_unchanged` records as `record` does, only if the attempt is still as it was read: never twice, and never
/// over a pass's resend (or any other change) made since the read.
pub fn a_settlement_from_an_earlier_read_is_recorded_only_if_nothing_changed<B: Backend>(b: &B) {
    let s = b.open();
    add(&s, &["a", "b"]);
    let claimed = open_all(&s, t0());
    sent(&s, &claimed, t0());
    let check = t0() + Duration::minutes(10);
    let unknown =
        |a: &Attempt| outcome(a, AttemptResult::Unresolved { reason: "lost".into() }, Decision::CheckAt(check));
    s.record(&claimed.iter().map(unknown).collect::<Vec<_>>(), t0()).unwrap();
    let read = |m: &str| match b.open().notice_target(m).unwrap() {
        NoticeTarget::Attempt(x) => x,
        other => panic!("{m}: {other:?}"),
    };
    let (a, bb) = (read("m-a-0"), read("m-b-0"));
    // a: recorded once from the read, with its public event; the same read again records and publishes nothing.
    let published = |s: &B::Store| {
        let all = s.outbox_events(&crate::store::OutboxFilter::default(), 1000).unwrap();
        all.into_iter().filter(|e| e.subscription_id.as_deref() == Some("a") && e.kind == "charge.paid").count()
    };
    assert_eq!(b.open().record_unchanged(&paid(&a), t0()).unwrap(), Some(vec![]), "not recorded");
    assert_eq!(story(&s, "a"), [(0, PeriodState::Paid, vec![(1, ChargeStatus::Paid)])]);
    assert_eq!(published(&b.open()), 1, "recorded without its event");
    assert_eq!(s.record_unchanged(&paid(&a), t0()).unwrap(), None, "recorded twice");
    assert_eq!(s.record_unchanged(&declined(&a, Decision::RetryAt(check)), t0()).unwrap(), None);
    assert_eq!(story(&s, "a"), [(0, PeriodState::Paid, vec![(1, ChargeStatus::Paid)])], "a paid attempt changed");
    assert_eq!(published(&s), 1, "published twice");
    // b: a pass resends it after the read; the stale read records nothing over the resend in flight.
    assert!(s.mark_resending(&bb, &real(check), check, TIMEOUT_MS).unwrap(), "the resend");
    assert_eq!(s.record_unchanged(&paid(&bb), check).unwrap(), None, "recorded over a resend");
    assert_eq!(s.record_unchanged(&declined(&bb, Decision::RetryAt(check)), check).unwrap(), None);
    assert_eq!(story(&s, "b"), [(0, PeriodState::Open, vec![(1, ChargeStatus::Pending)])]);
    // A fresh read of it is recorded, by record's rules (a decline makes the subscription past due).
    let now_read = read("m-b-0");
    let changes = s.record_unchanged(&declined(&now_read, Decision::RetryAt(check + Duration::days(1))), check);
    let changes = changes.unwrap().expect("recorded from a fresh read");
    assert_eq!(changes.iter().map(|c| (c.from, c.to)).collect::<Vec<_>>(), [(Status::Active, Status::PastDue)]);
}
