//! Pure money rules of a subscription's life (issue 25): what a plan change made now charges or credits, how a
//! credit pays later periods, and what a discount leaves to charge. Amounts are whole currency units.

use chrono::{DateTime, Utc};

/// The one currency billd bills: amounts are whole won, sent to the gateway unchanged (i'mport takes `amount` in
/// the currency's own unit, and KRW has no minor unit). A currency with a minor unit (USD) is refused in the config.
pub const BILLED_CURRENCY: &str = "KRW";

/// A paid period: from its due instant to the next one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// What a change made now settles at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Charged now, as one charge with its own merchant_uid (always at least 1).
    Charge(i64),
    /// Owed to the customer: carried to the next periods' amounts (always at least 1).
    Credit(i64),
    /// Nothing is owed either way.
    Even,
}

impl Settlement {
    /// From a signed amount owed by the customer (negative: owed to them).
    fn of(owed: i64) -> Settlement {
        match owed {
            0 => Settlement::Even,
            n if n > 0 => Settlement::Charge(n),
            n => Settlement::Credit(-n),
        }
    }

    /// The amount owed by the customer (negative: owed to them).
    pub fn owed(self) -> i64 {
        match self {
            Settlement::Charge(n) => n,
            Settlement::Credit(n) => -n,
            Settlement::Even => 0,
        }
    }
}

/// `amount × part / whole` rounded toward the customer: down for what they pay (`owed > 0`), up for what they get
/// back. `whole > 0`; `0 <= part <= whole`.
fn share(amount: i64, part: i64, whole: i64) -> i64 {
    let exact = i128::from(amount) * i128::from(part);
    let whole = i128::from(whole);
    // Euclidean division rounds toward minus infinity, so a negative amount (owed to the customer) rounds up in
    // size: both ways, in the customer's favour.
    exact.div_euclid(whole) as i64
}

/// The seconds of `period` left at `at` (0 before the period's start is impossible: clamped into the period).
fn remaining(period: Span, at: DateTime<Utc>) -> (i64, i64) {
    let whole = (period.end - period.start).num_seconds().max(1);
    let left = (period.end - at).num_seconds().clamp(0, whole);
    (left, whole)
}

/// A change of plan made at `at` inside the paid `period`, keeping the period (same interval): the new plan takes
/// over the rest of it. The customer paid `old_amount` for the whole period; for what is left, they owe the
/// difference between the new plan's and the old plan's prices for that time, pro rata by seconds, rounded to the
/// unit in their favour (a charge down, a credit up).
pub fn change_keeping_period(old_amount: i64, new_amount: i64, period: Span, at: DateTime<Utc>) -> Settlement {
    let (left, whole) = remaining(period, at);
    Settlement::of(share(new_amount - old_amount, left, whole))
}

/// A change of plan made at `at` inside the paid `period` that starts a new period there (a change of interval:
/// the new anchor is the change's instant). The unused part of the old period is credited (rounded up), and the new
/// plan's first period is charged in full, less that credit.
pub fn change_restarting_period(old_amount: i64, new_amount: i64, period: Span, at: DateTime<Utc>) -> Settlement {
    let (left, whole) = remaining(period, at);
    let credit = -share(-old_amount, left, whole);
    Settlement::of(new_amount - credit)
}

/// A period's `amount` paid with the customer's `credit` first: (what is charged, the credit left). A credit that
/// covers the whole amount pays the period and nothing is sent (never a charge of 0).
pub fn apply_credit(amount: i64, credit: i64) -> (i64, i64) {
    let used = credit.clamp(0, amount.max(0));
    (amount - used, credit - used)
}

/// A plan change made now as it was decided, for [`paid_change_applies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided<'a> {
    /// Still pending (not failed, withdrawn or abandoned meanwhile).
    pub pending: bool,
    pub from_plan: &'a str,
    /// The subscription's next period when it was decided (the period after the one it settles).
    pub next_period: u64,
    /// A change of interval: it restarts the calendar at `at` and opens the new plan's first period.
    pub restarts: bool,
    /// The instant of the change.
    pub at: DateTime<Utc>,
    /// The credit it counts on to pay part of its charge.
    pub credit_used: i64,
}

/// A subscription as it is when its plan change's charge is found paid (read inside the settling transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsItIs<'a> {
    pub plan: &'a str,
    /// Its status bills (`Status::bills`).
    pub bills: bool,
    /// Its status is final: canceled or completed (`Status::is_final`).
    pub ended: bool,
    pub next_period: u64,
    pub cancel_at: Option<DateTime<Utc>>,
    pub last_period: Option<u64>,
    /// When it was last paused (suspended), if ever.
    pub paused_at: Option<DateTime<Utc>>,
    pub credit: i64,
}

/// Whether a plan change whose charge is found paid still applies to its subscription as it is now: only the
/// subscription it was decided from. `Err(why)`: it does not (its paid charge is then the customer's, credited).
///
/// - a change no longer pending (withdrawn by a cancel or a pause, abandoned, failed) never applies;
/// - nor to a subscription that moved to another plan, no longer bills (paused, canceled, completed), whose
///   calendar moved (a period opened or skipped since: a pause and resume), or whose credit no longer pays the part
///   of the charge it was to pay;
/// - a change of interval restarts the calendar: never over a cancel date or a fixed term (it would bill past them),
///   nor after a pause since the change (it would undo what the pause and resume decided).
///
/// A change that keeps the period writes no calendar: it applies to a subscription canceling at period end, or
/// paused and resumed without a period skipped.
pub fn paid_change_applies(d: &Decided<'_>, s: &AsItIs<'_>) -> Result<(), &'static str> {
    if !d.pending {
        return Err(
            "the change was withdrawn (a cancel or a pause), abandoned or failed before its charge was found paid",
        );
    }
    if s.plan != d.from_plan {
        return Err("the subscription moved to another plan meanwhile");
    }
    if s.ended {
        return Err("the subscription ended (canceled or completed) before the change's charge was found paid");
    }
    if !s.bills {
        return Err("the subscription was paused before the change's charge was found paid");
    }
    if s.next_period != d.next_period {
        return Err("the subscription's calendar moved meanwhile (a period opened or was skipped: a pause and resume)");
    }
    if s.credit < d.credit_used {
        return Err("the credit that was to pay part of the change is no longer held");
    }
    if d.restarts && (s.cancel_at.is_some() || s.last_period.is_some()) {
        return Err("a new interval would bill past the subscription's cancel date or fixed term, set meanwhile");
    }
    if d.restarts && s.paused_at.is_some_and(|p| p >= d.at) {
        return Err("the subscription was paused since the change: a new interval would undo what its resume decided");
    }
    Ok(())
}

/// A discount on the first periods of a subscription (`discount = { percent = 20, periods = 3 }` or
/// `{ amount = 1000, periods = 3 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Discount {
    /// `percent` off (1 to 99), the price paid rounded down to the unit in the customer's favour.
    Percent { percent: u8, periods: u64 },
    /// `amount` units off.
    Amount { amount: i64, periods: u64 },
}

impl Discount {
    /// What the discount leaves of `amount` on a discounted period (`None`: nothing, or less than nothing).
    fn left(self, amount: i64) -> Option<i64> {
        let left = match self {
            Discount::Percent { percent, .. } => Some(share(amount, 100 - i64::from(percent.min(100)), 100)),
            Discount::Amount { amount: off, .. } => amount.checked_sub(off),
        };
        left.filter(|l| *l >= 1)
    }

    /// Whether it would leave nothing to charge of `amount` (a config error: a discount never reaches 0).
    pub fn leaves_nothing(self, amount: i64) -> bool {
        self.left(amount).is_none()
    }

    /// How many of the first periods it applies to.
    pub fn periods(self) -> u64 {
        match self {
            Discount::Percent { periods, .. } | Discount::Amount { periods, .. } => periods,
        }
    }

    /// What is charged of `amount` for the subscription's period number `period` (counted from 0): less on the
    /// first [`Discount::periods`], never below 1.
    pub fn apply(self, amount: i64, period: u64) -> i64 {
        if period >= self.periods() {
            return amount;
        }
        self.left(amount).unwrap_or(1.min(amount))
    }
}

impl std::fmt::Display for Discount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.periods();
        let s = if n == 1 { "" } else { "s" };
        match self {
            Discount::Percent { percent, .. } => write!(f, "{percent}% off the first {n} period{s}"),
            Discount::Amount { amount, .. } => {
                write!(f, "{amount} {} off the first {n} period{s}", BILLED_CURRENCY)
            }
        }
    }
}

/// How a change made now at `at` inside the paid `period` comes to what it settles, in words (said by `subscriptions
/// change`): the part of the period left, and, keeping the period, the difference of the prices for it; restarting
/// it (`restart`), the unused part of the old price credited and the new plan's first period charged. The same
/// arithmetic as [`change_keeping_period`] and [`change_restarting_period`].
pub fn explain(old_amount: i64, new_amount: i64, period: Span, at: DateTime<Utc>, restart: bool) -> String {
    let (left, whole) = remaining(period, at);
    let part = format!("{} of the period's {} are left", length(left), length(whole));
    let c = BILLED_CURRENCY;
    if restart {
        let credit = -share(-old_amount, left, whole);
        let owed = Settlement::of(new_amount - credit).owed();
        format!(
            "{part}: its unused part {old_amount} x {left}/{whole} s = {credit} {c} (rounded up) is credited, the new \
             plan's first period is {new_amount} {c}: {new_amount} - {credit} = {owed} {c}"
        )
    } else {
        let owed = share(new_amount - old_amount, left, whole);
        let rounded = if owed >= 0 { "rounded down" } else { "rounded up, as a credit" };
        format!(
            "{part}: (new price {new_amount} - price in force {old_amount}) x {left}/{whole} s = {owed} {c} ({rounded})"
        )
    }
}

/// A length of time in whole days, hours and minutes (`22d 3h 5m`; `0m` for less than a minute).
fn length(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let parts: Vec<String> =
        [(d, "d"), (h, "h"), (m, "m")].iter().filter(|(n, _)| *n > 0).map(|(n, u)| format!("{n}{u}")).collect();
    if parts.is_empty() { "0m".into() } else { parts.join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn january() -> Span {
        Span { start: t("2025-01-01T00:00:00Z"), end: t("2025-02-01T00:00:00Z") }
    }

    #[test]
    fn an_upgrade_halfway_charges_half_the_difference() {
        let half = t("2025-01-16T12:00:00Z");
        assert_eq!(change_keeping_period(10_000, 30_000, january(), half), Settlement::Charge(10_000));
        assert_eq!(change_keeping_period(30_000, 10_000, january(), half), Settlement::Credit(10_000));
        assert_eq!(change_keeping_period(10_000, 10_000, january(), half), Settlement::Even);
        // At the period's end nothing is left to settle; at its start, the whole difference.
        assert_eq!(change_keeping_period(10_000, 30_000, january(), january().end), Settlement::Even);
        assert_eq!(change_keeping_period(10_000, 30_000, january(), january().start), Settlement::Charge(20_000));
    }

    #[test]
    fn rounding_is_in_the_customers_favour() {
        // 1 unit of difference over a third of the period: 0.33 charged as 0, credited as 1.
        let span = Span { start: t("2025-01-01T00:00:00Z"), end: t("2025-01-01T00:00:03Z") };
        let at = t("2025-01-01T00:00:02Z");
        assert_eq!(change_keeping_period(100, 101, span, at), Settlement::Even);
        assert_eq!(change_keeping_period(101, 100, span, at), Settlement::Credit(1));
    }

    #[test]
    fn a_new_interval_credits_the_unused_part_against_the_new_first_period() {
        let half = t("2025-01-16T12:00:00Z");
        // Monthly 10 000 to yearly 100 000 halfway: 5 000 credited, 95 000 charged.
        assert_eq!(change_restarting_period(10_000, 100_000, january(), half), Settlement::Charge(95_000));
        // Yearly 100 000 to monthly 1 000 right at the start: 99 000 left to the customer.
        let year = Span { start: t("2025-01-01T00:00:00Z"), end: t("2026-01-01T00:00:00Z") };
        assert_eq!(change_restarting_period(100_000, 1_000, year, year.start), Settlement::Credit(99_000));
    }

    #[test]
    fn the_words_of_a_change_say_the_amount_it_settles() {
        let at = t("2025-01-11T00:00:00Z");
        let keep = explain(10_000, 20_000, january(), at, false);
        assert!(keep.ends_with("= 6774 KRW (rounded down)"), "{keep}");
        assert_eq!(change_keeping_period(10_000, 20_000, january(), at).owed(), 6774);
        let restart = explain(10_000, 99_000, january(), at, true);
        assert_eq!(change_restarting_period(10_000, 99_000, january(), at).owed(), 99_000 - 6775);
        assert!(
            restart.contains("= 6775 KRW (rounded up)") && restart.ends_with("99000 - 6775 = 92225 KRW"),
            "{restart}"
        );
        assert!(restart.starts_with("21d of the period's 31d are left"), "{restart}");
    }

    #[test]
    fn a_credit_pays_periods_before_any_charge() {
        assert_eq!(apply_credit(9_900, 0), (9_900, 0));
        assert_eq!(apply_credit(9_900, 1_000), (8_900, 0));
        assert_eq!(apply_credit(9_900, 9_900), (0, 0));
        assert_eq!(apply_credit(9_900, 25_000), (0, 15_100));
    }

    #[test]
    fn discounts_apply_to_the_first_periods_and_never_reach_zero() {
        let p = Discount::Percent { percent: 20, periods: 3 };
        assert_eq!((p.apply(9_900, 0), p.apply(9_900, 2), p.apply(9_900, 3)), (7_920, 7_920, 9_900));
        // 33% of 100: 67 paid (rounded down in the customer's favour, never a fraction).
        assert_eq!(Discount::Percent { percent: 33, periods: 1 }.apply(100, 0), 67);
        let a = Discount::Amount { amount: 1_000, periods: 1 };
        assert_eq!((a.apply(9_900, 0), a.apply(9_900, 1)), (8_900, 9_900));
        // One that would leave nothing is a config error; if it came to that, 1 is charged, never 0 or less.
        let all = Discount::Amount { amount: 9_900, periods: 1 };
        assert!(all.leaves_nothing(9_900) && !a.leaves_nothing(9_900));
        assert_eq!(all.apply(9_900, 0), 1);
        assert!(Discount::Percent { percent: 99, periods: 1 }.leaves_nothing(1), "nothing left to charge");
        assert!(Discount::Amount { amount: i64::MIN, periods: 1 }.leaves_nothing(i64::MAX), "no overflow");
        assert_eq!(p.to_string(), "20% off the first 3 periods");
        // Kept as JSON in the book, each kind by its fields.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"amount":1000,"periods":1}"#);
        assert_eq!(serde_json::from_str::<Discount>(&json).unwrap(), a);
        assert_eq!(serde_json::from_str::<Discount>(r#"{"percent":20,"periods":3}"#).unwrap(), p);
    }

    #[test]
    fn a_paid_change_applies_only_to_the_subscription_it_was_decided_from() {
        let at = t("2025-01-16T13:00:00Z");
        let d = Decided { pending: true, from_plan: "a", next_period: 1, restarts: false, at, credit_used: 0 };
        let s = AsItIs {
            plan: "a",
            bills: true,
            ended: false,
            next_period: 1,
            cancel_at: None,
            last_period: None,
            paused_at: None,
            credit: 0,
        };
        assert_eq!(paid_change_applies(&d, &s), Ok(()));
        let no = |d: Decided<'_>, s: AsItIs<'_>| paid_change_applies(&d, &s).is_err();
        assert!(no(Decided { pending: false, ..d }, s), "a withdrawn change applied");
        assert!(no(d, AsItIs { plan: "b", ..s }), "applied over another plan");
        // Canceled or completed; suspended.
        for (bills, ended) in [(false, true), (false, false)] {
            assert!(no(d, AsItIs { bills, ended, ..s }), "applied to a subscription that does not bill");
        }
        assert!(no(d, AsItIs { next_period: 4, ..s }), "applied over a pause and resume that skipped periods");
        assert!(no(Decided { credit_used: 100, ..d }, AsItIs { credit: 99, ..s }), "applied without its credit");
        // Keeping the period: a cancel at period end or a short pause writes nothing it would undo.
        let later = Some(t("2025-02-01T00:00:00Z"));
        assert_eq!(paid_change_applies(&d, &AsItIs { cancel_at: later, ..s }), Ok(()), "canceling at period end");
        assert_eq!(paid_change_applies(&d, &AsItIs { paused_at: later, ..s }), Ok(()));
        // A new interval: never over a cancel date, a term, or a pause since the change.
        let restart = Decided { restarts: true, ..d };
        assert!(no(restart, AsItIs { cancel_at: later, ..s }));
        assert!(no(restart, AsItIs { last_period: Some(3), ..s }));
        assert!(no(restart, AsItIs { paused_at: later, ..s }));
        assert_eq!(paid_change_applies(&restart, &AsItIs { paused_at: Some(t("2025-01-02T00:00:00Z")), ..s }), Ok(()));
    }

    proptest! {
        /// Over any sequence of changes inside one paid period, the customer pays (first charge, plus every
        /// change's charge, less every credit) no more than the sum of the prices for the time each plan was in
        /// force, and less by under one unit per change: nothing is charged twice and no credit is lost.
        #[test]
        fn the_customer_pays_each_plan_for_its_time(
            first in 1i64..10_000_000,
            changes in proptest::collection::vec((1i64..10_000_000, 0i64..1_000), 0..8),
            length in 1i64..40_000_000,
        ) {
            let start = t("2025-01-01T00:00:00Z");
            let span = Span { start, end: start + chrono::Duration::seconds(length) };
            // Change instants in order, inside the period.
            let mut cuts: Vec<i64> = changes.iter().map(|(_, c)| c * length / 1_000).collect();
            cuts.sort();
            let (mut paid, mut price, mut exact) = (i128::from(first), first, 0i128);
            let mut from = 0i64;
            for ((amount, _), cut) in changes.iter().zip(&cuts) {
                let at = start + chrono::Duration::seconds(*cut);
                paid += i128::from(change_keeping_period(price, *amount, span, at).owed());
                exact += i128::from(price) * i128::from(cut - from);
                (price, from) = (*amount, *cut);
            }
            exact += i128::from(price) * i128::from(length - from);
            // paid ≤ exact / length, and paid > exact / length - changes.
            let l = i128::from(length);
            prop_assert!(paid * l <= exact, "paid {paid} more than {}", exact / l);
            prop_assert!((paid + changes.len() as i128) * l >= exact, "paid {paid}, far less than {}", exact / l);
        }

        /// Issue 25 review (L2): over random plans of several intervals, change instants and sequences of changes
        /// (the same interval keeps the period; another one restarts it at the change, anchored as
        /// `subscriptions change` anchors it: `ChargeClock::first_date_from`), the customer never pays more than
        /// each plan's price for the time it was in force (a price per interval, so per second of its period, or of
        /// a whole interval for a restarted first period that runs longer); and the credits the changes leave pay
        /// the next periods with nothing lost.
        #[test]
        fn the_customer_never_pays_more_than_each_plan_for_its_time_across_intervals(
            first in (1i64..5_000_000, 0usize..4),
            changes in proptest::collection::vec((1i64..5_000_000, 0usize..4, 0i64..1_000), 1..8),
            start_minute in 0i64..(366 * 24 * 60),
        ) {
            use crate::billing::calendar::{ChargeClock, Interval};
            let intervals: Vec<Interval> =
                ["1 month", "1 year", "1 week", "10 days"].iter().map(|i| i.parse().unwrap()).collect();
            let clock = ChargeClock {
                timezone: chrono_tz::Asia::Seoul,
                charge_time: chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
            };
            // The first period, from a charge time.
            let at0 = t("2025-01-01T00:00:00Z") + chrono::Duration::minutes(start_minute);
            let anchor = clock.first_date_from(at0);
            let mut interval = intervals[first.1];
            let mut span = Span { start: clock.due_at(anchor), end: clock.due_at(interval.nth_date(anchor, 1).unwrap()) };
            // Per second, what the plan in force costs: its price over its period (or over a whole interval).
            let (mut price, mut per) = (first.0, (span.end - span.start).num_seconds() as f64);
            let (mut paid, mut exact, mut from, mut credit) = (first.0 as f64, 0f64, span.start, 0i64);
            for (amount, which, cut) in &changes {
                let at = span.start + chrono::Duration::seconds((span.end - span.start).num_seconds() * cut / 1_000);
                let at = at.max(from);
                exact += price as f64 * (at - from).num_seconds() as f64 / per;
                let owed = if intervals[*which] == interval {
                    change_keeping_period(price, *amount, span, at).owed()
                } else {
                    let owed = change_restarting_period(price, *amount, span, at).owed();
                    interval = intervals[*which];
                    let anchor = clock.first_date_from(at);
                    let next = clock.due_at(interval.nth_date(anchor, 1).unwrap());
                    prop_assert!(clock.due_at(anchor) >= at, "anchored before the change");
                    per = (next - clock.due_at(anchor)).num_seconds() as f64;
                    span = Span { start: at, end: next };
                    owed
                };
                paid += owed as f64;
                credit += (-owed).max(0);
                (price, from) = (*amount, at);
            }
            exact += price as f64 * (span.end - from).num_seconds() as f64 / per;
            prop_assert!(paid <= exact + 1e-6 * exact.max(1.0), "paid {paid}, more than {exact}");
            // The credit pays the next periods of the plan in force: nothing lost, nothing counted twice.
            let (mut left, mut charged) = (credit, 0i64);
            for _ in 0..12 {
                let (c, rest) = apply_credit(price, left);
                prop_assert!(c >= 0 && rest >= 0);
                (charged, left) = (charged + c, rest);
            }
            prop_assert_eq!(charged + (credit - left), 12 * price);
        }

        /// A credit is never lost nor counted twice: what periods are charged plus the credit left is what they
        /// cost, and no charge is negative.
        #[test]
        fn credits_are_never_lost(credit in 0i64..1_000_000_000, amounts in proptest::collection::vec(1i64..10_000_000, 1..20)) {
            let mut left = credit;
            let mut charged = 0i64;
            for a in &amounts {
                let (c, rest) = apply_credit(*a, left);
                prop_assert!(c >= 0 && rest >= 0 && c <= *a);
                charged += c;
                left = rest;
            }
            prop_assert_eq!(charged + (credit - left), amounts.iter().sum::<i64>());
        }
    }
}
