//! The `[[plans]]` and `[[subscriptions]]` entries of `schedules.toml`: each checked, every problem named by its
//! key (`plans[0] (id "basic").amount`), with what is left to bill.

use super::raw::{RawDiscount, RawPlan, RawSubscription};
use super::{BILLED_CURRENCY, Limits, Plan, SubscriptionSpec, parse_date, valid_id};
use crate::billing::calendar::Interval;
use crate::billing::proration::Discount;
use crate::text::quote;
use chrono::NaiveDate;
use std::collections::HashSet;

/// The plans, checked against `limits`.
pub(super) fn plans(raw: Vec<RawPlan>, limits: &Limits, errs: &mut Vec<String>) -> Vec<Plan> {
    let mut plans = Vec::new();
    let mut plan_ids = HashSet::new();
    for (i, p) in raw.into_iter().enumerate() {
        let at = format!("plans[{i}] (id {})", quote(&p.id));
        if !valid_id(&p.id) {
            errs.push(format!("{at}.id: must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        if !plan_ids.insert(p.id.clone()) {
            errs.push(format!("{at}.id: duplicate plan id {}", quote(&p.id)));
        }
        let name_len = p.name.chars().count();
        if name_len == 0 || name_len > 40 {
            errs.push(format!(
                "{at}.name: {} is {name_len} characters; it is sent as the charge's name and must be 1-40",
                quote(&p.name)
            ));
        }
        if p.amount <= 0 {
            errs.push(format!("{at}.amount: {} must be a positive whole number of {}", p.amount, p.currency));
        } else if p.amount > limits.max_amount {
            errs.push(format!(
                "{at}.amount: {} is above limits.max_amount ({}); raise the limit if this is intended",
                p.amount, limits.max_amount
            ));
        }
        if p.currency.len() != 3 || !p.currency.chars().all(|c| c.is_ascii_uppercase()) {
            errs.push(format!("{at}.currency: {} is not a currency code like \"KRW\"", quote(&p.currency)));
        } else if p.currency != BILLED_CURRENCY {
            errs.push(format!(
                "{at}.currency: {} cannot be billed: amounts are whole units of the currency, sent to the gateway as \
                 they are, and billd bills {BILLED_CURRENCY} only (won have no minor unit; an amount in cents would be \
                 charged as that many dollars)",
                quote(&p.currency)
            ));
        }
        let interval = p.interval.parse::<Interval>().unwrap_or_else(|e| {
            errs.push(format!("{at}.interval: {e}"));
            Interval { count: 1, unit: crate::billing::calendar::Unit::Month }
        });
        let trial_days = match p.trial.as_deref().map(crate::config::duration::parse) {
            None => 0,
            Some(Ok(d)) if d.as_secs() % 86_400 == 0 && d.subsec_nanos() == 0 => d.as_secs() / 86_400,
            Some(Ok(_)) => {
                errs.push(format!("{at}.trial: a trial is whole days (\"14d\"; \"0d\" for none)"));
                0
            }
            Some(Err(e)) => {
                errs.push(format!("{at}.trial: {e}"));
                0
            }
        };
        let periods = match p.periods {
            None => None,
            Some(n) if (1..=100_000).contains(&n) => Some(n as u64),
            Some(n) => {
                errs.push(format!("{at}.periods: {n} must be 1 to 100000 (a fixed term of that many periods)"));
                None
            }
        };
        plans.push(Plan {
            id: p.id,
            name: p.name,
            amount: p.amount,
            currency: p.currency,
            interval,
            trial_days,
            periods,
        });
    }

    plans
}

/// The subscriptions, checked against the `plans` and `limits`.
pub(super) fn subscriptions(
    raw: Vec<RawSubscription>,
    plans: &[Plan],
    limits: &Limits,
    errs: &mut Vec<String>,
) -> Vec<SubscriptionSpec> {
    let plan_ids: HashSet<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    let mut subs = Vec::new();
    let mut sub_ids = HashSet::new();
    let mut sub_ids_nocase = std::collections::HashMap::new();
    for (i, s) in raw.into_iter().enumerate() {
        let at = format!("subscriptions[{i}] (id {})", quote(&s.id));
        if !valid_id(&s.id) {
            errs.push(format!("{at}.id: must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        if !sub_ids.insert(s.id.clone()) {
            errs.push(format!("{at}.id: duplicate subscription id {}", quote(&s.id)));
        } else if let Some(other) = sub_ids_nocase.insert(s.id.to_ascii_lowercase(), s.id.clone()) {
            errs.push(format!(
                "{at}.id: {} differs from subscription {} only by case (their merchant_uids would too, and the \
                 gateway may not tell them apart)",
                quote(&s.id),
                quote(&other)
            ));
        }
        if let Some(why) = crate::ids::refusal(&s.customer_uid, crate::ids::CUSTOMER_UID_MAX) {
            errs.push(format!("{at}.customer_uid: {why}"));
        }
        if !plan_ids.contains(s.plan.as_str()) {
            errs.push(format!("{at}.plan: unknown plan {} (no [[plans]] entry has that id)", quote(&s.plan)));
        }
        let start = parse_date(&s.start).unwrap_or_else(|e| {
            errs.push(format!("{at}.start: {e}"));
            NaiveDate::MIN
        });
        let canceled = match s.status.as_deref() {
            None | Some("active") => false,
            Some("canceled") | Some("cancelled") => true,
            Some(other) => {
                errs.push(format!("{at}.status: {} must be \"active\" or \"canceled\"", quote(other)));
                false
            }
        };
        let catch_up = s.catch_up;
        let plan_amount = plans.iter().find(|p| p.id == s.plan).map(|p| p.amount);
        if let Some(a) = s.amount {
            if a <= 0 {
                errs.push(format!("{at}.amount: {a} must be a positive whole number of {BILLED_CURRENCY}"));
            } else if a > limits.max_amount {
                errs.push(format!(
                    "{at}.amount: {a} is above limits.max_amount ({}); raise the limit if this is intended",
                    limits.max_amount
                ));
            }
        }
        let discount = s.discount.and_then(|d| discount(d, s.amount.or(plan_amount), &at, errs));
        let periods = match s.periods {
            None => None,
            Some(n) if (1..=100_000).contains(&n) => Some(n as u64),
            Some(n) => {
                errs.push(format!("{at}.periods: {n} must be 1 to 100000 (a fixed term of that many periods)"));
                None
            }
        };
        let end = s.end.as_deref().and_then(|t| match parse_date(t) {
            // The first charge is at the start, or the end of a trial: a term must hold it.
            Ok(d) => {
                let trial = plans.iter().find(|p| p.id == s.plan).map_or(0, |p| p.trial_days);
                let first = start.checked_add_days(chrono::Days::new(trial)).unwrap_or(start);
                if d < first {
                    errs.push(format!("{at}.end: {d} is before its first charge ({first})"));
                }
                Some(d)
            }
            Err(e) => {
                errs.push(format!("{at}.end: {e}"));
                None
            }
        });
        if periods.is_some() && end.is_some() {
            errs.push(format!("{at}: give periods or end, not both (both end its term)"));
        }
        let cancel_at = s.cancel_at.as_deref().and_then(|t| match parse_date(t) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(format!("{at}.cancel_at: {e}"));
                None
            }
        });
        let trial_ends = s.trial_ends.as_deref().and_then(|t| match parse_date(t) {
            Ok(d) if d >= start => Some(d),
            Ok(d) => {
                errs.push(format!("{at}.trial_ends: {d} is before its start {start}"));
                None
            }
            Err(e) => {
                errs.push(format!("{at}.trial_ends: {e}"));
                None
            }
        });
        subs.push(SubscriptionSpec {
            id: s.id,
            customer_uid: s.customer_uid,
            plan: s.plan,
            start,
            canceled,
            catch_up,
            amount: s.amount,
            discount,
            trial_ends,
            cancel_at,
            periods,
            end,
        });
    }

    subs
}

/// A subscription's `discount` (at `at`), checked against the amount it applies to (`None`: unknown, already
/// reported): exactly one of `percent` (1 to 99) and `amount` (at least 1), `periods` at least 1, and something left
/// to charge.
fn discount(d: RawDiscount, amount: Option<i64>, at: &str, errs: &mut Vec<String>) -> Option<Discount> {
    let before = errs.len();
    if !(1..=10_000).contains(&d.periods) {
        errs.push(format!("{at}.discount.periods: {} must be 1 to 10000 (the first periods it applies to)", d.periods));
    }
    let periods = d.periods.clamp(1, 10_000) as u64;
    let out = match (d.percent, d.amount) {
        (Some(p), None) if (1..=99).contains(&p) => Discount::Percent { percent: p as u8, periods },
        (Some(p), None) => {
            errs.push(format!("{at}.discount.percent: {p} must be 1 to 99"));
            return None;
        }
        (None, Some(a)) if a >= 1 => Discount::Amount { amount: a, periods },
        (None, Some(a)) => {
            errs.push(format!("{at}.discount.amount: {a} must be a positive whole number of {BILLED_CURRENCY}"));
            return None;
        }
        _ => {
            errs.push(format!(
                "{at}.discount: give exactly one of percent or amount, with periods: \
                 {{ percent = 20, periods = 3 }} or {{ amount = 1000, periods = 3 }}"
            ));
            return None;
        }
    };
    if let Some(amount) = amount.filter(|a| *a > 0)
        && out.leaves_nothing(amount)
    {
        errs.push(format!(
            "{at}.discount: {out} leaves nothing to charge of {amount} {BILLED_CURRENCY}; a discounted period is \
             charged at least 1"
        ));
    }
    (errs.len() == before).then_some(out)
}
