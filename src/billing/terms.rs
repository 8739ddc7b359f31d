//! A subscription's terms from its plan and its own keys (trial, first charge, fixed term, cancel date, price,
//! discount, first status), and their checks: one rule for `schedules.toml`, `subscriptions add`, `import` and
//! `subscriptions change`.

use crate::billing::calendar::{ChargeClock, Interval};
use crate::billing::model::{Source, Status, Subscription};
use crate::billing::proration::{BILLED_CURRENCY, Discount};
use chrono::{Days, NaiveDate};

/// A plan (`[[plans]]`), as the billing rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub amount: i64,
    pub currency: String,
    pub interval: Interval,
    /// Days of free trial before a new subscription's first charge (0: none).
    pub trial_days: u64,
    /// A fixed term: this many periods, then the subscription is completed (`None`: no end).
    pub periods: Option<u64>,
}

impl Plan {
    /// The last period of the plan's own fixed term, counted from a subscription's first period (`None`: no end).
    pub fn last_period(&self) -> Option<u64> {
        self.periods.map(|n| n.saturating_sub(1))
    }
}

/// What a subscription says of itself, checked ([`check`]): a `[[subscriptions]]` entry's keys, or the flags of
/// `subscriptions add`. `None`: its plan's (or none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Own {
    /// The day its trial ends (its first charge falls due then), instead of its plan's `trial`.
    pub trial_ends: Option<NaiveDate>,
    /// A fixed term of its own: this many periods (instead of its plan's), or the periods due up to `end`.
    pub periods: Option<u64>,
    pub end: Option<NaiveDate>,
    /// No period due on or after this local day is charged; it is canceled at its first instant.
    pub cancel_at: Option<NaiveDate>,
    /// Its own price, whatever its plan's.
    pub amount: Option<i64>,
    /// Less charged on its first periods.
    pub discount: Option<Discount>,
}

/// The same keys as written, before [`check`]: a date that did not parse is left out by the caller, which said so.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Written {
    pub trial_ends: Option<NaiveDate>,
    pub periods: Option<i64>,
    pub end: Option<NaiveDate>,
    pub cancel_at: Option<NaiveDate>,
    pub amount: Option<i64>,
    pub discount: Option<WrittenDiscount>,
}

/// A discount as written: `{ percent = 20, periods = 3 }`, `--discount-amount 1000 --discount-periods 3`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrittenDiscount {
    pub percent: Option<i64>,
    pub amount: Option<i64>,
    pub periods: Option<i64>,
}

/// A key a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    TrialEnds,
    Periods,
    End,
    /// `periods` and `end` together.
    Term,
    CancelAt,
    Amount,
    Discount,
    DiscountPercent,
    DiscountAmount,
    DiscountPeriods,
}

/// How keys are written where the problem is shown: in `schedules.toml` (`trial_ends`, `discount.periods`), or as
/// the flags of `subscriptions add` (`--trial-ends`, `--discount-periods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    Toml,
    Flags,
}

impl Spelling {
    /// `key` as written (empty for [`Key::Term`] in the file: the problem is the entry's).
    pub fn key(self, key: Key) -> &'static str {
        match (self, key) {
            (Spelling::Toml, Key::TrialEnds) => "trial_ends",
            (Spelling::Toml, Key::Periods) => "periods",
            (Spelling::Toml, Key::End) => "end",
            (Spelling::Toml, Key::Term) => "",
            (Spelling::Toml, Key::CancelAt) => "cancel_at",
            (Spelling::Toml, Key::Amount) => "amount",
            (Spelling::Toml, Key::Discount) => "discount",
            (Spelling::Toml, Key::DiscountPercent) => "discount.percent",
            (Spelling::Toml, Key::DiscountAmount) => "discount.amount",
            (Spelling::Toml, Key::DiscountPeriods) => "discount.periods",
            (Spelling::Flags, Key::TrialEnds) => "--trial-ends",
            (Spelling::Flags, Key::Periods) => "--periods",
            (Spelling::Flags, Key::End) => "--end",
            (Spelling::Flags, Key::Term) => "--periods/--end",
            (Spelling::Flags, Key::CancelAt) => "--cancel-at",
            (Spelling::Flags, Key::Amount) => "--amount",
            (Spelling::Flags, Key::Discount) => "--discount-percent/--discount-amount",
            (Spelling::Flags, Key::DiscountPercent) => "--discount-percent",
            (Spelling::Flags, Key::DiscountAmount) => "--discount-amount",
            (Spelling::Flags, Key::DiscountPeriods) => "--discount-periods",
        }
    }

    fn discount_example(self) -> &'static str {
        match self {
            Spelling::Toml => "{ percent = 20, periods = 3 } or { amount = 1000, periods = 3 }",
            Spelling::Flags => {
                "--discount-percent 20 --discount-periods 3, or --discount-amount 1000 --discount-periods 3"
            }
        }
    }
}

/// The most periods a fixed term (`periods`) may have.
pub const MAX_TERM: i64 = 100_000;
/// The most first periods a discount may apply to.
pub const MAX_DISCOUNT_PERIODS: i64 = 10_000;

/// Checks a subscription's own keys (`written`) against its `plan` (`None`: unknown, already reported) and its
/// `start`, with the rules the file and the command share: a fixed term of 1 to [`MAX_TERM`] periods or an `end` on
/// or after its first charge, not both; a trial that ends on or after its start; a price from 1 to `max_amount`; a
/// discount of exactly one of a percent (1 to 99) or an amount (at least 1), on 1 to [`MAX_DISCOUNT_PERIODS`] first
/// periods, that leaves something to charge. Returns what passed, and every problem with its key.
pub fn check(
    plan: Option<&Plan>,
    start: NaiveDate,
    written: &Written,
    max_amount: i64,
    spelling: Spelling,
) -> (Own, Vec<(Key, String)>) {
    let mut problems = Vec::new();
    let mut own = Own { cancel_at: written.cancel_at, ..Own::default() };
    if let Some(a) = written.amount {
        if a <= 0 {
            problems.push((Key::Amount, format!("{a} must be a positive whole number of {BILLED_CURRENCY}")));
        } else if a > max_amount {
            problems.push((
                Key::Amount,
                format!("{a} is above limits.max_amount ({max_amount}); raise the limit if this is intended"),
            ));
        } else {
            own.amount = Some(a);
        }
    }
    if let Some(d) = &written.discount {
        let price = written.amount.or(plan.map(|p| p.amount));
        match discount(d, price, spelling) {
            Ok(d) => own.discount = Some(d),
            Err(mut p) => problems.append(&mut p),
        }
    }
    own.trial_ends = written.trial_ends.filter(|d| {
        let ok = *d >= start;
        if !ok {
            problems.push((Key::TrialEnds, format!("{d} is before its start {start}")));
        }
        ok
    });
    own.periods = written.periods.and_then(|n| match n {
        n if (1..=MAX_TERM).contains(&n) => Some(n as u64),
        n => {
            problems.push((Key::Periods, format!("{n} must be 1 to {MAX_TERM} (a fixed term of that many periods)")));
            None
        }
    });
    if let Some(end) = written.end {
        // The first charge is at the start, or the end of a trial: a term must hold it.
        let first = first_charge(plan.map_or(0, |p| p.trial_days), start, own.trial_ends);
        if end < first {
            problems.push((Key::End, format!("{end} is before its first charge ({first})")));
        }
        own.end = Some(end);
    }
    if written.periods.is_some() && written.end.is_some() {
        let (p, e) = (spelling.key(Key::Periods), spelling.key(Key::End));
        problems.push((Key::Term, format!("give {p} or {e}, not both (both end its term)")));
    }
    (own, problems)
}

/// A discount as written, checked against the price it applies to (`None`: unknown, already reported).
fn discount(d: &WrittenDiscount, price: Option<i64>, spelling: Spelling) -> Result<Discount, Vec<(Key, String)>> {
    let mut problems = Vec::new();
    let periods = match d.periods {
        Some(n) if (1..=MAX_DISCOUNT_PERIODS).contains(&n) => n as u64,
        Some(n) => {
            problems.push((
                Key::DiscountPeriods,
                format!("{n} must be 1 to {MAX_DISCOUNT_PERIODS} (the first periods it applies to)"),
            ));
            1
        }
        None => {
            problems.push((
                Key::DiscountPeriods,
                format!("missing: how many first periods it applies to ({})", spelling.discount_example()),
            ));
            1
        }
    };
    let out = match (d.percent, d.amount) {
        (Some(p), None) if (1..=99).contains(&p) => Discount::Percent { percent: p as u8, periods },
        (Some(p), None) => {
            problems.push((Key::DiscountPercent, format!("{p} must be 1 to 99")));
            return Err(problems);
        }
        (None, Some(a)) if a >= 1 => Discount::Amount { amount: a, periods },
        (None, Some(a)) => {
            problems.push((Key::DiscountAmount, format!("{a} must be a positive whole number of {BILLED_CURRENCY}")));
            return Err(problems);
        }
        _ => {
            let (p, a) = (spelling.key(Key::DiscountPercent), spelling.key(Key::DiscountAmount));
            let (p, a) = (p.trim_start_matches("discount."), a.trim_start_matches("discount."));
            let with = spelling.key(Key::DiscountPeriods).trim_start_matches("discount.");
            problems.push((
                Key::Discount,
                format!("give exactly one of {p} or {a}, with {with}: {}", spelling.discount_example()),
            ));
            return Err(problems);
        }
    };
    if let Some(price) = price.filter(|a| *a > 0)
        && out.leaves_nothing(price)
    {
        problems.push((
            Key::Discount,
            format!(
                "{out} leaves nothing to charge of {price} {BILLED_CURRENCY}; a discounted period is charged at least 1"
            ),
        ));
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The day a subscription's first charge falls due (the anchor of its calendar): the end of its own trial, else its
/// `start` plus its plan's trial (`trial_days`).
pub fn first_charge(trial_days: u64, start: NaiveDate, trial_ends: Option<NaiveDate>) -> NaiveDate {
    trial_ends.unwrap_or_else(|| start.checked_add_days(Days::new(trial_days)).unwrap_or(start))
}

/// The last period of a fixed term (`None`: no end), counted from the first period (due on `first`): its own
/// `periods` or `end` (the last period due on or before that day), else its plan's `periods`.
pub fn last_period(plan: &Plan, own: &Own, first: NaiveDate) -> Option<u64> {
    if let Some(end) = own.end {
        let interval = plan.interval;
        return Some((0..).take_while(|p| interval.nth_date(first, *p).is_some_and(|d| d <= end)).last().unwrap_or(0));
    }
    own.periods.or(plan.periods).map(|n| n.saturating_sub(1))
}

/// Subscription `id` of billing key `customer_uid`, signed up on `start` on `plan` with its own terms `own`, as the
/// billing rules see it before its first period opens: its first charge (the anchor) when its trial ends, its term,
/// its cancel date (the first instant of that day in `clock`'s zone), its price and discount, and its status:
/// `canceling` with a cancel date, else `trialing` when its first charge falls after its start, else `active`.
pub fn subscription(
    (id, customer_uid): (&str, &str),
    plan: &Plan,
    start: NaiveDate,
    own: &Own,
    source: Source,
    clock: &ChargeClock,
) -> Subscription {
    let first = first_charge(plan.trial_days, start, own.trial_ends);
    let cancel_at = own.cancel_at.map(|d| clock.due_at_midnight(d));
    let status = match (cancel_at.is_some(), first > start) {
        (true, _) => Status::Canceling,
        (false, true) => Status::Trialing,
        (false, false) => Status::Active,
    };
    Subscription {
        id: id.to_owned(),
        customer_uid: customer_uid.to_owned(),
        plan_id: plan.id.clone(),
        plan_name: plan.name.clone(),
        amount: own.amount.unwrap_or(plan.amount),
        currency: plan.currency.clone(),
        interval: plan.interval,
        start_date: start,
        anchor_date: first,
        anchor_period: 0,
        next_period: 0,
        status,
        source,
        skip: Vec::new(),
        discount: own.discount,
        cancel_at,
        last_period: last_period(plan, own, first),
    }
}

/// The fixed term of a subscription in the book (its last period `have`) once it bills plan `to` instead of `from`
/// (`None`: a plan the config no longer has). A term is counted from the subscription's first period, in its interval.
/// A term of its own (one that is not `from`'s) is kept; otherwise it takes `to`'s (or none). A subscription of the
/// config file takes its entry's instead, as a sync does.
pub fn term_on_plan(have: Option<u64>, from: Option<&Plan>, to: &Plan) -> Option<u64> {
    match have {
        Some(_) if from.is_none_or(|f| f.last_period() != have) => have,
        _ => to.last_period(),
    }
}

/// What a fixed term ending at period `last` leaves when billing is at period `from` (`None`: no term, or periods
/// left to bill): none, so the subscription completes once nothing is left to settle (as a term shortened in the
/// file does). Said by `subscriptions change` and a sync alike.
pub fn term_over(last: Option<u64>, from: u64) -> Option<String> {
    let last = last.filter(|l| *l < from)?;
    let n = last + 1;
    Some(format!(
        "its term is {n} period{} counted from its first charge, so no period after period {last} is billed: it \
         completes at the next pass",
        if n == 1 { "" } else { "s" }
    ))
}

/// A subscription about to be added, in words (`billd sync`'s `add` line, the log, `subscriptions add`): its price and interval, plan and
/// start, and what else bounds what it is charged: a trial and its end (the first charge), a fixed term and its last
/// period's date, a cancel date (one at or before its first charge: nothing is ever charged), a discount.
pub fn describe(s: &Subscription, clock: &crate::billing::calendar::ChargeClock) -> String {
    let mut out = format!("{} {} {}, plan {}, start {}", s.amount, s.currency, s.interval, s.plan_id, s.start_date);
    if s.anchor_date != s.start_date {
        out += &format!(", trial until {} (its first charge then)", s.anchor_date);
    }
    if let Some(last) = s.last_period {
        let n = last + 1;
        let date = s.calendar().date_of(last).map(|d| format!(", the last due {d}")).unwrap_or_default();
        out += &format!(", a term of {n} period{}{date}", if n == 1 { "" } else { "s" });
    }
    if s.cancel_at.is_some() {
        let date = cancel_date(s.cancel_at, clock.timezone);
        out += &match s.billed_due(clock, s.next_period) {
            None => format!(", cancel_at {date} (at or before its first charge: nothing is ever charged)"),
            Some(_) => format!(", cancel_at {date}"),
        };
    }
    if let Some(d) = s.discount {
        out += &format!(", {d}");
    }
    out
}

/// A cancel date as the file writes it: the local day (in `tz`) whose first instant it is (`none`), so that
/// `cancel_at = "2025-03-03"` reads `2025-03-03`, not the UTC instant `2025-03-02T15:00:00+00:00`.
pub fn cancel_date(t: Option<chrono::DateTime<chrono::Utc>>, tz: chrono_tz::Tz) -> String {
    t.map_or("none".to_string(), |t| {
        let local = t.with_timezone(&tz);
        if local.time() == chrono::NaiveTime::MIN { local.date_naive().to_string() } else { local.to_rfc3339() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(trial_days: u64, periods: Option<u64>) -> Plan {
        Plan {
            id: "p".into(),
            name: "P".into(),
            amount: 10_000,
            currency: "KRW".into(),
            interval: "1 month".parse().unwrap(),
            trial_days,
            periods,
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn clock() -> ChargeClock {
        ChargeClock {
            timezone: chrono_tz::Asia::Seoul,
            charge_time: chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
        }
    }

    #[test]
    fn a_plans_trial_and_term_make_the_first_charge_and_the_last_period() {
        let s =
            subscription(("s", "c"), &plan(14, Some(3)), day("2025-03-01"), &Own::default(), Source::Manual, &clock());
        assert_eq!((s.anchor_date, s.last_period, s.status), (day("2025-03-15"), Some(2), Status::Trialing));
        let own = Own { trial_ends: Some(day("2025-03-01")), periods: Some(6), ..Own::default() };
        let s = subscription(("s", "c"), &plan(14, Some(3)), day("2025-03-01"), &own, Source::Manual, &clock());
        assert_eq!((s.anchor_date, s.last_period, s.status), (day("2025-03-01"), Some(5), Status::Active));
        let own = Own { cancel_at: Some(day("2025-03-10")), ..Own::default() };
        let s = subscription(("s", "c"), &plan(14, None), day("2025-03-01"), &own, Source::Manual, &clock());
        assert_eq!(s.status, Status::Canceling);
        assert!(s.billed_due(&clock(), 0).is_none(), "canceled before its first charge");
    }

    #[test]
    fn the_file_and_the_flags_are_checked_by_one_rule() {
        let written = Written {
            trial_ends: Some(day("2025-02-01")),
            periods: Some(0),
            end: Some(day("2025-03-05")),
            amount: Some(0),
            discount: Some(WrittenDiscount { percent: Some(20), amount: Some(5), periods: Some(3) }),
            ..Written::default()
        };
        let (_, toml) = check(Some(&plan(14, None)), day("2025-03-01"), &written, 1_000_000, Spelling::Toml);
        let (_, flags) = check(Some(&plan(14, None)), day("2025-03-01"), &written, 1_000_000, Spelling::Flags);
        let keys: Vec<Key> = toml.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [Key::Amount, Key::Discount, Key::TrialEnds, Key::Periods, Key::End, Key::Term]);
        assert_eq!(keys, flags.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        assert!(toml[5].1.contains("give periods or end"), "{toml:?}");
        assert!(flags[5].1.contains("give --periods or --end"), "{flags:?}");
        assert!(flags[1].1.contains("--discount-percent or --discount-amount, with --discount-periods"), "{flags:?}");
        let leaves = Written {
            discount: Some(WrittenDiscount { amount: Some(10_000), periods: Some(1), ..WrittenDiscount::default() }),
            ..Written::default()
        };
        let (own, p) = check(Some(&plan(0, None)), day("2025-03-01"), &leaves, 1_000_000, Spelling::Flags);
        assert!(own.discount.is_none() && p[0].1.contains("leaves nothing"), "{p:?}");
    }

    #[test]
    fn a_term_of_its_own_survives_a_change_of_plan_and_the_plans_follows_the_plan() {
        let (three, two, none) = (plan(0, Some(3)), plan(0, Some(2)), plan(0, None));
        assert_eq!(term_on_plan(None, Some(&none), &two), Some(1));
        assert_eq!(term_on_plan(Some(2), Some(&three), &two), Some(1), "the plan's term follows the plan");
        assert_eq!(term_on_plan(Some(2), Some(&three), &none), None);
        assert_eq!(term_on_plan(Some(5), Some(&three), &two), Some(5), "its own term is kept");
        assert_eq!(term_on_plan(Some(5), None, &two), Some(5));
        assert!(term_over(Some(1), 1).is_none());
        assert!(term_over(Some(1), 2).is_some_and(|w| w.contains("2 periods")));
    }
}
