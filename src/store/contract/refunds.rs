//! The storage contract's cases for issue 24: refunds (intent first, never more than the charge, settled only by
//! what the gateway lists, refunds made outside billd recorded once); the shared helpers are in the parent module.

use super::*;
use crate::store::{NewRefund, RefundRefused, RefundSource, RefundStatus, Refunds, RefundsStale, SeenRefund};

/// A paid one-time charge of 10000 under `merchant_uid`.
fn paid_charge(s: &impl Store, merchant_uid: &str) {
    let c = OneTimeCharge {
        merchant_uid: merchant_uid.into(),
        kind: OneTimeKind::Card,
        customer_uid: None,
        subscription_id: None,
        name: "n".into(),
        amount: 10_000,
        currency: "KRW".into(),
        card_masked: "424242******4242".into(),
    };
    let (id, tries) = s.begin_one_time(&c, &real(t0()), t0(), TIMEOUT_MS, t0(), None).unwrap().unwrap();
    let imp = format!("imp_{merchant_uid}");
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some(&imp), None, t0()).unwrap());
}

fn refund(merchant_uid: &str, amount: Option<i64>) -> NewRefund {
    NewRefund { merchant_uid: merchant_uid.into(), amount, reason: "goodwill".into() }
}

/// Begins a refund at [`t0`] (its first look a minute later).
fn begin(s: &impl Refunds, r: &NewRefund) -> Result<crate::store::RefundRow, RefundRefused> {
    s.begin_refund(r, &real(t0()), t0(), TIMEOUT_MS, t0() + Duration::minutes(1)).unwrap()
}

/// An entry of a cancel history with billd's reason ([`refund`]'s).
fn seen(id: &str, amount: i64) -> SeenRefund {
    SeenRefund { id: id.into(), amount, at: Some(t0()), reason: "goodwill".into(), verbatim: true }
}

/// `begin_refund` decides inside its transaction: a charge that does not exist (in another case), is not paid, has
/// a refund in doubt, or has less left than asked is refused with nothing written; the intent is durable (another
/// handle sees it) and records what remained as its checksum; two handles at once never begin more than the charge.
pub fn refunds_begun_at_once_never_add_up_to_more_than_the_charge<B: Backend>(b: &B) {
    let (s1, s2) = (b.open(), b.open());
    paid_charge(&s1, "Order-1");
    assert_eq!(begin(&s1, &refund("order-1", None)), Err(RefundRefused::NoCharge), "the case as stored");
    add(&s1, &["a"]);
    let a = open_all(&s1, t0());
    assert_eq!(begin(&s1, &refund(&a[0].merchant_uid, None)), Err(RefundRefused::NotPaid(ChargeStatus::Pending)));
    let first = begin(&s1, &refund("Order-1", Some(6000))).expect("begun");
    assert_eq!((first.status, first.checksum, first.amount), (RefundStatus::Pending, Some(10_000), 6000));
    assert!(b.open().refund_target("Order-1").unwrap().unwrap().unresolved.is_some(), "not durable");
    // Another process at once: refused while the first is in doubt, whatever it asks.
    assert!(matches!(begin(&s2, &refund("Order-1", Some(4000))), Err(RefundRefused::Unresolved(_))));
    let p = seen("c1", 6000);
    let settled = s2.settle_refunds("Order-1", 10_000, std::slice::from_ref(&p), &real(t0()), t0()).unwrap();
    assert_eq!(settled.in_doubt.map(|r| r.status), Some(RefundStatus::Refunded));
    assert_eq!(
        begin(&s2, &refund("Order-1", Some(4001))),
        Err(RefundRefused::TooMuch { paid: 10_000, refunded: 6000, remaining: 4000 })
    );
    let rest = begin(&s2, &refund("Order-1", None)).expect("the rest");
    assert_eq!((rest.amount, rest.checksum), (4000, Some(4000)));
    let t = s1.refund_target("Order-1").unwrap().unwrap();
    assert_eq!((t.amount, t.refunded, t.unresolved.map(|r| r.id)), (10_000, 6000, Some(rest.id)));
}

/// A refund the gateway refused (`refund_refused`) frees its amount; one whose outcome is unknown
/// (`refund_unknown`) still counts as spent, and is listed for a look only from its check time.
pub fn a_refused_refund_frees_its_amount_and_an_unknown_one_does_not<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let r = begin(&s, &refund("m1", Some(3000))).unwrap();
    assert!(s.refund_refused(r.id, "checksum mismatch", t0()).unwrap());
    assert!(!s.refund_refused(r.id, "twice", t0()).unwrap(), "a settled refund changed again");
    let r = begin(&s, &refund("m1", Some(10_000))).expect("the whole charge is left");
    let check = t0() + Duration::minutes(5);
    assert!(s.refund_unknown(r.id, "no answer", &real(t0()), check, t0()).unwrap());
    assert!(s.unresolved_refunds(check - Duration::seconds(1), 10).unwrap().is_empty(), "looked at too early");
    assert_eq!(s.unresolved_refunds(check, 10).unwrap().iter().map(|x| x.id).collect::<Vec<_>>(), [r.id]);
    assert!(matches!(begin(&s, &refund("m1", Some(1))), Err(RefundRefused::Unresolved(_))));
    let listed = b.open().list_refunds(None).unwrap();
    let statuses: Vec<RefundStatus> = listed.iter().map(|x| x.status).collect();
    assert_eq!(statuses, [RefundStatus::Failed, RefundStatus::Unknown]);
}

/// `refund_go` lets a request leave only while its refund is pending: a look before its check time leaves it to its
/// command; once a pass took it over (unknown), nothing of it may be sent.
pub fn a_refund_taken_over_by_a_pass_may_not_leave<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let r = begin(&s, &refund("m1", None)).unwrap();
    assert!(s.refund_go(r.id, &real(t0())).unwrap());
    // Nothing at the gateway before its check time: left alone (its command may still be sending it).
    let settled = b.open().settle_refunds("m1", 10_000, &[], &real(t0()), t0()).unwrap();
    assert_eq!(settled.in_doubt.map(|r| r.status), Some(RefundStatus::Pending), "taken over from a live command");
    assert!(s.refund_go(r.id, &real(t0())).unwrap());
    // From its check time, a look that finds nothing makes it unknown (quiet from its look).
    let check = t0() + Duration::minutes(1);
    let settled = b.open().settle_refunds("m1", 10_000, &[], &real(check), check).unwrap();
    assert_eq!(settled.in_doubt.map(|r| r.status), Some(RefundStatus::Unknown));
    assert!(!s.refund_go(r.id, &real(t0())).unwrap(), "a refund taken over was let go");
}

/// `settle_refunds` takes a refund in doubt as made only if the gateway lists it at its checksum; fails it only once
/// its quiet period is over on the real clocks; records refunds made outside billd once, and only once its own
/// refund is no longer in doubt.
pub fn a_refund_in_doubt_is_settled_only_by_what_the_gateway_lists<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let r = begin(&s, &refund("m1", Some(2000))).unwrap();
    let later = t0() + Duration::seconds(2);
    assert!(s.refund_unknown(r.id, "no answer", &real(t0()), later, t0()).unwrap());
    // An outside refund of the same amount at another balance is not it, and is not recorded while billd's is in
    // doubt; the quiet period (10 s) is not over: still unknown.
    let console = |id: &str, amount| SeenRefund { reason: "console".into(), ..seen(id, amount) };
    let outside = [console("x1", 3000), console("x2", 2000)];
    let settled = s.settle_refunds("m1", 10_000, &outside, &real(later), later).unwrap();
    assert_eq!(settled.in_doubt.as_ref().map(|r| r.status), Some(RefundStatus::Unknown));
    assert!(settled.external.is_empty(), "{settled:?}");
    // The quiet period is over and it is still not listed: failed, and the outside refunds are recorded, once.
    let after = t0() + Duration::seconds(11);
    let settled = s.settle_refunds("m1", 10_000, &outside, &real(after), after).unwrap();
    assert_eq!(settled.in_doubt.map(|r| r.status), Some(RefundStatus::Failed));
    let ext: Vec<(i64, RefundSource)> = settled.external.iter().map(|r| (r.amount, r.source)).collect();
    assert_eq!(ext, [(3000, RefundSource::External), (2000, RefundSource::External)]);
    assert!(s.settle_refunds("m1", 10_000, &outside, &real(after), after).unwrap().external.is_empty(), "twice");
    // A refund begun against the balance billd now knows (5000) is found where the gateway made it.
    let r = begin(&s, &refund("m1", Some(2000))).unwrap();
    assert_eq!(r.checksum, Some(5000));
    let made = [console("x1", 3000), console("x2", 2000), seen("c3", 2000)];
    let settled = b.open().settle_refunds("m1", 10_000, &made, &real(after), after).unwrap();
    let done = settled.in_doubt.unwrap();
    assert_eq!((done.status, done.cancellation_id.as_deref()), (RefundStatus::Refunded, Some("c3")));
    assert_eq!(s.refund_target("m1").unwrap().unwrap().refunded, 7000);
    // A payment the gateway shows with another amount is not settled from.
    assert!(s.settle_refunds("m1", 9_999, &made, &real(after), after).is_err());
}

/// `paid_charges` pages through every paid charge (periods and one-time) once, by merchant_uid.
pub fn paid_charges_are_paged_once_each<B: Backend>(b: &B) {
    let s = b.open();
    for m in ["m3", "m1", "m2"] {
        paid_charge(&s, m);
    }
    add(&s, &["a"]);
    let a = open_all(&s, t0());
    sent(&s, &a, t0());
    s.record(&[paid(&a[0])], t0()).unwrap();
    let mut seen_all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.paid_charges(None, after.as_deref(), 2).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.merchant_uid.clone());
        seen_all.extend(page.into_iter().map(|c| c.merchant_uid));
    }
    assert_eq!(seen_all, ["m-a-0", "m1", "m2", "m3"]);
    assert!(s.paid_charges(Some(t0() + Duration::days(1)), None, 10).unwrap().is_empty(), "--since");
}

/// Issue 24 review, R1: a refund is (merchant_uid, amount, reason): `begin_refund` does not begin one whose twin is
/// refunded or in doubt (it returns that refund, nothing written); a failed one, or another reason, is begun; the
/// rest (no amount) again once nothing remains is the refund of the rest made.
pub fn the_same_refund_is_not_begun_again<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let first = begin(&s, &refund("m1", Some(1000))).unwrap();
    let Err(RefundRefused::Made(twin)) = begin(&s, &refund("m1", Some(1000))) else { panic!("in doubt: begun again") };
    assert_eq!(twin.id, first.id);
    s.settle_refunds("m1", 10_000, &[seen("c1", 1000)], &real(t0()), t0()).unwrap();
    let Err(RefundRefused::Made(twin)) = begin(&b.open(), &refund("m1", Some(1000))) else { panic!("made: again") };
    assert_eq!((twin.id, twin.status), (first.id, RefundStatus::Refunded));
    let rows = s.list_refunds(None).unwrap().len();
    // Another reason: another refund.
    let other = NewRefund { reason: "goodwill, again".into(), ..refund("m1", Some(1000)) };
    let second = begin(&s, &other).expect("another reason");
    assert_eq!(s.list_refunds(None).unwrap().len(), rows + 1);
    // A failed one is no twin.
    assert!(s.refund_refused(second.id, "refused", t0()).unwrap());
    let again = begin(&s, &other).expect("a failed refund is begun again");
    assert!(s.refund_refused(again.id, "refused", t0()).unwrap());
    // The rest, twice.
    let rest = begin(&s, &refund("m1", None)).unwrap();
    assert_eq!(rest.amount, 9000);
    let h = [seen("c1", 1000), seen("c2", 9000)];
    s.settle_refunds("m1", 10_000, &h, &real(t0()), t0()).unwrap();
    let Err(RefundRefused::Made(twin)) = begin(&s, &refund("m1", None)) else { panic!("the rest made twice") };
    assert_eq!(twin.id, rest.id);
}

/// Issue 24 review, R3, R6, R7: `settle_refunds` never records more refunded than the gateway lists (an answer that
/// would, nothing recorded, an error naming the charge); an external refund's time is the gateway's only between
/// the charge and a day ahead; an entry at the checksum of billd's refund in doubt with another reason is not it.
pub fn never_more_refunded_than_the_gateway_lists<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let far = SeenRefund { at: Some(t0() + Duration::days(3650)), reason: "console".into(), ..seen("x1", 3000) };
    let got = s.settle_refunds("m1", 10_000, std::slice::from_ref(&far), &real(t0()), t0()).unwrap();
    assert_eq!(got.external.iter().map(|r| r.created_at).collect::<Vec<_>>(), [t0()], "a time from the future");
    // The same refund under another name (its id stripped, say): it would make 6000 of 3000 listed.
    let renamed = SeenRefund { id: "#0".into(), ..far.clone() };
    let err = s.settle_refunds("m1", 10_000, &[renamed], &real(t0()), t0()).unwrap_err();
    assert!(format!("{err:#}").contains("m1"), "{err:#}");
    assert_eq!(s.refund_target("m1").unwrap().unwrap().refunded, 3000);
    assert_eq!(s.list_refunds(None).unwrap().len(), 1, "recorded from an answer that lists less");
    // billd's refund of 2000 in doubt (sent against 7000, never made); a console refund of 2000 at that balance.
    let r = begin(&s, &refund("m1", Some(2000))).unwrap();
    assert_eq!(r.checksum, Some(7000));
    let console = SeenRefund { reason: "operator".into(), ..seen("x2", 2000) };
    let later = t0() + Duration::minutes(2);
    let got = s.settle_refunds("m1", 10_000, &[far, console], &real(later), later).unwrap();
    assert_ne!(got.in_doubt.map(|r| r.status), Some(RefundStatus::Refunded), "the console's refund taken as billd's");
}

/// Issue 24, second review, F1: billd's refund settled as failed (not listed after its quiet period) that the
/// gateway makes after all (a cancel held on its way) is billd's: the entry of its amount and reason at its
/// checksum's place makes its row refunded (not an external one), once; the same refund is then not begun again. An
/// entry of that amount and reason at another place is not it.
pub fn a_failed_refund_the_gateway_made_late_is_billds_and_not_begun_again<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let r = begin(&s, &refund("m1", Some(2000))).unwrap();
    assert!(s.refund_unknown(r.id, "no answer", &real(t0()), t0(), t0()).unwrap());
    let after = t0() + Duration::seconds(11);
    let settled = s.settle_refunds("m1", 10_000, &[], &real(after), after).unwrap();
    assert_eq!(settled.in_doubt.map(|r| r.status), Some(RefundStatus::Failed));
    // The cancel lands: the entry at balance 10000 (nothing before it) of 2000, "goodwill".
    let landed = [seen("c1", 2000)];
    let settled = b.open().settle_refunds("m1", 10_000, &landed, &real(after), after).unwrap();
    let late: Vec<(i64, RefundStatus, RefundSource, Option<&str>)> =
        settled.late.iter().map(|r| (r.id, r.status, r.source, r.cancellation_id.as_deref())).collect();
    assert_eq!(late, [(r.id, RefundStatus::Refunded, RefundSource::Billd, Some("c1"))]);
    assert!(settled.external.is_empty(), "billd's late refund recorded as external: {settled:?}");
    assert_eq!(s.settle_refunds("m1", 10_000, &landed, &real(after), after).unwrap(), Default::default(), "twice");
    assert_eq!(s.refund_target("m1").unwrap().unwrap().refunded, 2000);
    let Err(RefundRefused::Made(twin)) = begin(&s, &refund("m1", Some(2000))) else { panic!("begun again") };
    assert_eq!(twin.id, r.id);
    // Another refund of 1000, sent against 8000, refused; an entry of 1000 "goodwill" at balance 10000 (before c1)
    // is not it.
    let other = begin(&s, &refund("m1", Some(1000))).unwrap();
    assert_eq!(other.checksum, Some(8000));
    assert!(s.refund_refused(other.id, "refused", after).unwrap());
    let elsewhere = [seen("x0", 1000), seen("c1", 2000)];
    let settled = s.settle_refunds("m1", 10_000, &elsewhere, &real(after), after).unwrap();
    assert!(settled.late.is_empty(), "an entry at another balance taken as billd's: {settled:?}");
    assert_eq!(settled.external.iter().map(|r| r.amount).collect::<Vec<_>>(), [1000]);
}

/// F1: the "same refund" rule sees a refund the gateway lists whatever its source: one made outside billd of the
/// same amount and reason is not begun again (another reason is).
pub fn a_refund_made_outside_billd_with_the_same_amount_and_reason_is_not_begun_again<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let got = s.settle_refunds("m1", 10_000, &[seen("x1", 1000)], &real(t0()), t0()).unwrap();
    let ext = got.external[0].clone();
    assert_eq!(ext.source, RefundSource::External);
    let Err(RefundRefused::Made(twin)) = begin(&s, &refund("m1", Some(1000))) else { panic!("sent again") };
    assert_eq!(twin.id, ext.id);
    let other = NewRefund { reason: "another".into(), ..refund("m1", Some(1000)) };
    assert!(begin(&s, &other).is_ok(), "another reason is another refund");
}

/// F2: billd's reason is compared exactly with an entry's, and only with a reason the gateway gave unchanged: an
/// entry whose reason differs only in digits (as the client lists it, cleaned) or was cleaned to billd's very text
/// is not billd's refund in doubt.
pub fn a_reason_is_compared_exactly_and_only_as_the_gateway_gave_it<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    let mine = NewRefund { reason: "goodwill, ticket 20241107".into(), ..refund("m1", Some(2000)) };
    let r = begin(&s, &mine).unwrap();
    let listed = crate::gateway::redact::Redactor::default().clean_to("goodwill, ticket 20241199", 200);
    let console = SeenRefund { reason: listed, verbatim: false, ..seen("x1", 2000) };
    let later = t0() + Duration::minutes(2);
    let got = s.settle_refunds("m1", 10_000, &[console], &real(later), later).unwrap();
    assert_ne!(got.in_doubt.map(|r| r.status), Some(RefundStatus::Refunded), "another ticket taken as billd's");
    // "good\u{200b}will" in the console, cleaned to "goodwill": not billd's "goodwill" either.
    let b2 = b.open();
    paid_charge(&b2, "m2");
    let r2 = begin(&b2, &refund("m2", Some(2000))).unwrap();
    let cleaned = SeenRefund { verbatim: false, ..seen("x2", 2000) };
    let got = b2.settle_refunds("m2", 10_000, &[cleaned], &real(later), later).unwrap();
    assert_eq!(got.in_doubt.map(|r| (r.id, r.status == RefundStatus::Refunded)), Some((r2.id, false)));
    assert!(r.id != r2.id);
}

/// Lesser: a lookup older than a refund another process recorded since (its cancellation id is not listed) is an
/// error of its own ([`RefundsStale`]): nothing is recorded from it.
pub fn a_lookup_older_than_a_recorded_refund_records_nothing<B: Backend>(b: &B) {
    let s = b.open();
    paid_charge(&s, "m1");
    begin(&s, &refund("m1", Some(4000))).unwrap();
    s.settle_refunds("m1", 10_000, &[seen("c1", 4000)], &real(t0()), t0()).unwrap();
    let rows = s.list_refunds(None).unwrap();
    let err = s.settle_refunds("m1", 10_000, &[], &real(t0()), t0()).unwrap_err();
    let stale = err.downcast_ref::<RefundsStale>().expect("a stale lookup told apart");
    assert_eq!((stale.merchant_uid.as_str(), stale.cancellation_id.as_str()), ("m1", "c1"));
    assert_eq!(s.list_refunds(None).unwrap(), rows, "recorded from a stale lookup");
}
