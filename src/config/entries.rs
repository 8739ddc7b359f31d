//! The `[[plans]]` and `[[subscriptions]]` entries of `schedules.toml`: each checked, every problem named by its
//! key (`plans[0] (id "basic").amount`), with what is left to bill.

use super::raw::{RawPlan, RawSubscription};
use super::{BILLED_CURRENCY, Limits, Plan, SubscriptionSpec, parse_date, valid_id};
use crate::billing::calendar::Interval;
use crate::billing::terms::{Spelling, Written, WrittenDiscount, check};
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
        // The rule of `--name` (the order name the customer sees; every charge of the plan is sent with it).
        if let Some(why) = crate::text::order_name_refusal(&p.name) {
            errs.push(format!("{at}.name: {} {why}", quote(&p.name)));
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
        let date = |key: &str, t: &Option<String>, errs: &mut Vec<String>| {
            t.as_deref().and_then(|t| match parse_date(t) {
                Ok(d) => Some(d),
                Err(e) => {
                    errs.push(format!("{at}.{key}: {e}"));
                    None
                }
            })
        };
        let written = Written {
            trial_ends: date("trial_ends", &s.trial_ends, errs),
            periods: s.periods,
            end: date("end", &s.end, errs),
            cancel_at: date("cancel_at", &s.cancel_at, errs),
            amount: s.amount,
            discount: s.discount.map(|d| WrittenDiscount { percent: d.percent, amount: d.amount, periods: d.periods }),
        };
        // The rules `subscriptions add` checks its flags with, named as keys of this entry.
        let plan = plans.iter().find(|p| p.id == s.plan);
        let (own, problems) = check(plan, start, &written, limits.max_amount, Spelling::Toml);
        for (key, why) in problems {
            match Spelling::Toml.key(key) {
                "" => errs.push(format!("{at}: {why}")),
                k => errs.push(format!("{at}.{k}: {why}")),
            }
        }
        subs.push(SubscriptionSpec {
            id: s.id,
            customer_uid: s.customer_uid,
            plan: s.plan,
            start,
            canceled,
            catch_up,
            own,
        });
    }

    subs
}
