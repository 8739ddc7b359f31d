//! The storage contract's cases for one-time charges: a key-in charge (`charge-once`) and a charge of a stored
//! billing key (`charge-key`, issue 24), each begun once, settled by its own send only, and never under a
//! merchant_uid held in another case (the shared helpers are in the parent module).

use super::*;
use crate::store::MerchantUidHolder;

/// A one-time charge's intent is begun once per merchant_uid; an outcome is recorded only by the send that is still
/// current (`tries`), a paid one is never replaced, and a payment found replaces a recorded failure (but a
/// mismatch, which is held).
pub fn a_one_time_charge_is_begun_once_and_settled_by_its_own_send_only<B: Backend>(b: &B) {
    let s = b.open();
    let c = OneTimeCharge {
        merchant_uid: "once-1".into(),
        kind: OneTimeKind::Card,
        customer_uid: None,
        subscription_id: None,
        name: "n".into(),
        amount: 100,
        currency: "KRW".into(),
        card_masked: "424242******4242".into(),
    };
    let check = t0() + Duration::minutes(5);
    let (id, tries) = s.begin_one_time(&c, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun");
    assert_eq!(s.begin_one_time(&c, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap(), None, "begun twice");
    let seen = b.open().one_time("once-1").unwrap().expect("durable");
    assert_eq!((seen.status, seen.tries, seen.check_at), (ChargeStatus::Pending, tries, Some(check)));
    assert!(s.unresolved_one_time(check - Duration::seconds(1), Duration::hours(1), 10).unwrap().is_empty());
    assert_eq!(s.unresolved_one_time(check, Duration::hours(1), 10).unwrap().len(), 1);
    // A rerun sends it again (tries moves on); the first send's late answer is then not recorded.
    let (_, tries2) = s.begin_one_time(&c, &real(t0()), t0(), TIMEOUT_MS, check, Some(tries)).unwrap().expect("resent");
    assert!(!s.finish_one_time(id, tries, ChargeStatus::Failed, Some(Failure::Abandoned), None, None, t0()).unwrap());
    assert!(s.finish_one_time(id, tries2, ChargeStatus::Paid, None, Some("imp_1"), None, t0()).unwrap());
    assert!(!s.finish_one_time(id, tries2, ChargeStatus::Failed, Some(Failure::Declined), None, None, t0()).unwrap());
    let done = s.one_time("once-1").unwrap().unwrap();
    assert_eq!((done.status, done.imp_uid.as_deref()), (ChargeStatus::Paid, Some("imp_1")));
    // A payment found replaces a recorded failure (not a mismatch): billd knows every payment it caused.
    let d = OneTimeCharge { merchant_uid: "once-2".into(), ..c.clone() };
    let (id2, t2) = s.begin_one_time(&d, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun");
    assert!(
        s.finish_one_time(id2, t2, ChargeStatus::Failed, Some(Failure::Declined), Some("imp_d"), None, t0()).unwrap()
    );
    assert!(s.finish_one_time(id2, t2, ChargeStatus::Paid, None, Some("imp_2"), None, t0()).unwrap(), "paid found");
    let found = b.open().one_time("once-2").unwrap().unwrap();
    assert_eq!((found.status, found.imp_uid.as_deref()), (ChargeStatus::Paid, Some("imp_2")));
    let e = OneTimeCharge { merchant_uid: "once-3".into(), ..c.clone() };
    let (id3, t3) = s.begin_one_time(&e, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun");
    assert!(
        s.finish_one_time(id3, t3, ChargeStatus::Failed, Some(Failure::Mismatch), None, Some("held"), t0()).unwrap()
    );
    assert!(
        !s.finish_one_time(id3, t3, ChargeStatus::Paid, None, Some("imp_3"), None, t0()).unwrap(),
        "a mismatch is held"
    );
    assert_eq!(
        s.begin_one_time(&c, &real(t0()), t0(), TIMEOUT_MS, check, Some(tries2)).unwrap(),
        None,
        "a paid one resent"
    );
}

/// A one-time charge of a billing key (`charge-key`) keeps its kind, its key and its subscription, is listed with
/// them (and under that subscription only). No one-time charge is begun under a
/// merchant_uid that a period or another one-time charge holds in another case (checked inside the transaction,
/// nothing written).
pub fn a_charge_of_a_billing_key_keeps_its_key_and_subscription_and_no_merchant_uid_is_taken_twice_in_any_case<
    B: Backend,
>(
    b: &B,
) {
    let s = b.open();
    add(&s, &["a", "b"]);
    open_all(&s, t0());
    let key = OneTimeCharge {
        merchant_uid: "addon-1".into(),
        kind: OneTimeKind::Key,
        customer_uid: Some("c-a".into()),
        subscription_id: Some("a".into()),
        name: "Add-on".into(),
        amount: 500,
        currency: "KRW".into(),
        card_masked: "424242******4242".into(),
    };
    let check = t0() + Duration::minutes(5);
    let (id, tries) = s.begin_one_time(&key, &real(t0()), t0(), TIMEOUT_MS, check, None).unwrap().expect("begun");
    let seen = b.open().one_time("addon-1").unwrap().expect("durable");
    assert_eq!(
        (seen.kind, seen.customer_uid.as_deref(), seen.subscription_id.as_deref(), seen.name.as_str()),
        (OneTimeKind::Key, Some("c-a"), Some("a"), "Add-on")
    );
    let pending = s.unresolved_one_time(check, Duration::hours(1), 10).unwrap();
    assert_eq!(
        pending.iter().map(|c| (c.kind, c.customer_uid.as_deref())).collect::<Vec<_>>(),
        [(OneTimeKind::Key, Some("c-a"))]
    );
    assert!(s.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_k"), None, t0()).unwrap());
    // Listed as a charge of a key, tied to "a": under "a", not under "b".
    let all = s.list_one_time(false, None, None).unwrap();
    assert_eq!(
        all.iter().map(|r| (r.one_time, r.subscription_id.as_deref())).collect::<Vec<_>>(),
        [(Some(OneTimeKind::Key), Some("a"))]
    );
    assert_eq!(s.list_one_time(false, None, Some("a")).unwrap().len(), 1);
    assert!(s.list_one_time(false, None, Some("b")).unwrap().is_empty());
    // Held without case: by the charge itself, and by a period (m-a-0 was opened above).
    let held = |m: &str| s.merchant_uid_holder(m).unwrap();
    assert!(matches!(held("ADDON-1"), Some(MerchantUidHolder::OneTime { merchant_uid, kind: OneTimeKind::Key })
        if merchant_uid == "addon-1"));
    assert!(matches!(held("M-A-0"), Some(MerchantUidHolder::Period { subscription_id, period: 0, .. })
        if subscription_id == "a"));
    assert_eq!(held("nobody-1"), None);
    for taken in ["ADDON-1", "M-B-0"] {
        let c = OneTimeCharge {
            merchant_uid: taken.into(),
            kind: OneTimeKind::Card,
            customer_uid: None,
            subscription_id: None,
            ..key.clone()
        };
        let refused = s.begin_one_time(&c, &real(t0()), t0(), TIMEOUT_MS, check, None);
        assert!(refused.is_err(), "{taken} begun though held in another case");
        assert_eq!(b.open().one_time(taken).unwrap(), None, "{taken}: written though refused");
    }
}
