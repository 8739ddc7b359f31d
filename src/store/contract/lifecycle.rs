//! The storage contract's cases for issue 25, a subscription's life: what a subscription keeps beyond its plan
//! (its discount), as every way in writes it (helpers: the parent module).

use super::*;
use crate::billing::proration::Discount;

/// A subscription keeps its discount as a sync inserts or updates it, and as a command adds it; what the next
/// period charges follows ([`Subscription::amount_of`]).
pub fn a_subscription_keeps_its_discount_through_sync_and_manual_adds<B: Backend>(b: &B) {
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
}
