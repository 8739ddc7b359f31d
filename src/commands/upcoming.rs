//! `billd upcoming`: what will be charged when, from an instant (`--as-of`, default now): the backlog first (what
//! is overdue, and what `billing.catch_up_window` will skip), then day by day, with totals.

use crate::app::{listed_store, load_config};
use crate::billing::calendar::ChargeClock;
use crate::billing::model::{Pause, Status, Subscription, catch_up_cutoff, resume_plan};
use crate::billing::proration::apply_credit;
use crate::commands::present::{count, human};
use crate::store::{Changes, OpenPeriod, PeriodState, PeriodStory, Views, from_ts};
use crate::text::cell;
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

/// The longest window `upcoming --days` shows: ten years.
pub const MAX_UPCOMING_DAYS: u32 = 3660;

#[derive(serde::Serialize)]
struct Upcoming {
    /// When it is charged: its due instant, or `now` for one already due (RFC 3339, billing time zone).
    at: String,
    /// When it fell due (or its retry is set for).
    due_at: String,
    subscription: String,
    customer_uid: String,
    period: u64,
    amount: i64,
    currency: String,
    /// `due`, `overdue`, `retry`, `skipped` (older than `catch_up_window`: never charged), `not synced`,
    /// `paid by credit` (the subscription's credit pays it whole: nothing is charged, `amount` is 0), or `held` (a
    /// plan change of the subscription is pending: nothing opens until it is settled).
    kind: &'static str,
    /// What the subscription's credit pays of it (`amount` is what is charged after it).
    credit: i64,
    #[serde(skip)]
    due: DateTime<Utc>,
}

/// The charges of `sub` from its next period (due at `next_due`) until `until`, stepping over its pause windows;
/// `kind`: what to call them (default: skipped before `cutoff`, overdue before `now`, due after). Its `credit` pays
/// the periods that open first (as a pass spends it: `proration::apply_credit`); one it pays whole is `paid by
/// credit`.
fn charges_until(
    sub: &Subscription,
    next_due: Option<DateTime<Utc>>,
    (now, until, cutoff): (DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>),
    clock: &ChargeClock,
    (kind, mut credit): (Option<&'static str>, i64),
) -> Vec<Upcoming> {
    let cal = sub.calendar();
    let (mut p, mut due, mut out) = (sub.next_period, next_due, Vec::new());
    while let Some(t) = due.filter(|t| *t <= until) {
        let default = match t {
            t if cutoff.is_some_and(|c| t < c) => "skipped",
            t if t < now => "overdue",
            // The first charge of a subscription in its trial: when the trial ends.
            _ if p == 0 && sub.status == crate::billing::model::Status::Trialing => "trial ends",
            _ => "due",
        };
        let price = sub.amount_of(p);
        // A skipped period is never opened: the credit is not spent on it.
        let (amount, left) = if default == "skipped" { (price, credit) } else { apply_credit(price, credit) };
        let paid_by_credit = amount == 0 && kind.is_none();
        credit = left;
        out.push(Upcoming {
            at: t.max(now).with_timezone(&clock.timezone).to_rfc3339(),
            due_at: t.with_timezone(&clock.timezone).to_rfc3339(),
            subscription: sub.id.clone(),
            customer_uid: sub.customer_uid.clone(),
            period: p,
            amount,
            currency: sub.currency.clone(),
            kind: if paid_by_credit { PAID_BY_CREDIT } else { kind.unwrap_or(default) },
            credit: price - amount,
            due: t,
        });
        p = sub.following(p, |q| cal.due_at(clock, q).map(|t| t.timestamp()));
        due = sub.billed_due(clock, p);
    }
    out
}

/// A subscription paused until a date as it will be once its pause ends by itself (`pause --until`), as the pass at
/// that end restarts it ([`resume_plan`]: the periods due while paused skipped, unless the pause's `--catch-up`): the
/// pause's end, the subscription then, and its next due instant (`None`: nothing left to bill). `None` for a pause
/// without an end.
pub fn resumed(
    sub: &Subscription,
    pause: &Pause,
    clock: &ChargeClock,
) -> Option<(DateTime<Utc>, Subscription, Option<DateTime<Utc>>)> {
    let until = pause.until?;
    let (r, next_due, skip) = resume_plan(sub, pause, until, pause.catch_up, clock);
    Some((until, Subscription { next_period: r.next_period, skip, status: Status::Active, ..sub.clone() }, next_due))
}

/// A pause's end, the period charged first after it, and when (`None`: nothing left to bill).
pub type AfterPause = (DateTime<Utc>, u64, Option<DateTime<Utc>>);

/// For `subscriptions show`: a paused subscription's own end and its first charge after it (the period, and when:
/// at the end for an open period owed from before the pause, else its due instant; `None`: nothing left to bill).
pub fn after_pause(
    cfg: &crate::config::Config,
    store: &impl Views,
    sub: &Subscription,
    periods: &[PeriodStory],
) -> Result<Option<AfterPause>> {
    let Some(pause) = store.pause_of(&sub.id)? else { return Ok(None) };
    let Some((until, after, next_due)) = resumed(sub, &pause, &cfg.billing.clock) else { return Ok(None) };
    // An open period not in doubt nor held is charged when it resumes.
    let open = periods.iter().find(|p| {
        p.state == PeriodState::Open
            && p.attempts
                .last()
                .is_none_or(|a| !a.status.unresolved() && a.failure != Some(crate::store::Failure::Mismatch))
    });
    Ok(Some(match open {
        Some(p) => (until, p.period, Some(until)),
        None => (until, after.next_period, next_due),
    }))
}

/// The kind of a period the subscription's credit pays whole (no charge).
const PAID_BY_CREDIT: &str = "paid by credit";

/// The kind of a period of a subscription held by a pending plan change (nothing opens until it is settled).
const HELD: &str = "held";

/// Counts and sums per currency, in 128 bits (no sum of 64-bit amounts can overflow them): `2 charges, 19800 KRW`.
/// Periods paid by credit are not charges: left out.
fn totals<'a>(items: impl Iterator<Item = &'a Upcoming>, what: &str) -> String {
    let mut by: BTreeMap<&str, (usize, i128)> = BTreeMap::new();
    for i in items.filter(|i| i.kind != PAID_BY_CREDIT) {
        let t = by.entry(&i.currency).or_default();
        t.0 += 1;
        t.1 += i128::from(i.amount);
    }
    let all: Vec<String> = by.iter().map(|(c, (n, a))| format!("{}, {a} {c}", count(*n, what))).collect();
    all.join("; ")
}

fn line(time: &str, i: &Upcoming) {
    crate::say!(
        "    {time}  {:<20} {:<20} {:>10} {}  {}",
        cell(&i.subscription),
        cell(&i.customer_uid),
        i.amount,
        i.currency,
        i.kind
    );
}

/// The periods a pass at `now` would skip, never charge (`billing.catch_up_window`): (subscription, period, due).
pub fn skipped_by_window(
    cfg: &crate::config::Config,
    store: &impl Views,
    now: DateTime<Utc>,
) -> Result<Vec<(String, u64, DateTime<Utc>)>> {
    let Some(cutoff) = catch_up_cutoff(now, cfg.billing.catch_up_window) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (sub, next_due, _) in store.billing_subscriptions(cutoff)? {
        let stale = charges_until(&sub, next_due, (now, cutoff, Some(cutoff)), &cfg.billing.clock, (None, 0));
        out.extend(stale.into_iter().filter(|i| i.kind == "skipped").map(|i| (i.subscription, i.period, i.due)));
    }
    Ok(out)
}

/// What is charged from `now` to `days` days later.
pub fn upcoming(path: &Path, days: u32, now: DateTime<Utc>, json: bool) -> Result<ExitCode> {
    if days > MAX_UPCOMING_DAYS {
        bail!("--days {days} is too far ahead: at most {MAX_UPCOMING_DAYS} (ten years)");
    }
    let cfg = load_config(path)?;
    let store = listed_store(&cfg)?;
    let clock = &cfg.billing.clock;
    let until = now
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .ok_or_else(|| anyhow!("--days {days} goes past the end of the calendar"))?;
    let window = cfg.billing.catch_up_window;
    let span = (now, until, catch_up_cutoff(now, window));
    let mut items = Vec::new();
    // Subscriptions held by a pending plan change: nothing of theirs opens until it is settled (issue 25).
    let held: BTreeMap<String, String> = store
        .pending_changes()?
        .into_iter()
        .map(|r| (r.change.subscription_id.clone(), r.change.merchant_uid.unwrap_or_default()))
        .collect();
    for (sub, next_due, open) in store.billing_subscriptions(until)? {
        if held.contains_key(&sub.id) {
            let credit = store.credit(&sub.id)?;
            items.extend(charges_until(&sub, next_due, span, clock, (Some(HELD), credit)));
            continue;
        }
        if let Some(OpenPeriod { period, next_attempt_at: at, amount, currency }) = open {
            items.push(Upcoming {
                at: at.max(from_ts(now.timestamp())).with_timezone(&clock.timezone).to_rfc3339(),
                due_at: at.with_timezone(&clock.timezone).to_rfc3339(),
                subscription: sub.id.clone(),
                customer_uid: sub.customer_uid.clone(),
                period,
                amount,
                currency,
                kind: "retry",
                credit: 0,
                due: at,
            });
        }
        let credit = store.credit(&sub.id)?;
        items.extend(charges_until(&sub, next_due, span, clock, (None, credit)));
    }
    // Paused until a date: what it charges once it resumes by itself (its open period then, and the periods after).
    for (sub, pause, open) in store.resuming_by(until)? {
        let Some((end, after, next_due)) = resumed(&sub, &pause, clock) else { continue };
        if let Some(OpenPeriod { period, amount, currency, .. }) = open {
            items.push(Upcoming {
                at: end.max(now).with_timezone(&clock.timezone).to_rfc3339(),
                due_at: end.with_timezone(&clock.timezone).to_rfc3339(),
                subscription: sub.id.clone(),
                customer_uid: sub.customer_uid.clone(),
                period,
                amount,
                currency,
                kind: "retry",
                credit: 0,
                due: end,
            });
        }
        let credit = store.credit(&sub.id)?;
        items.extend(charges_until(&after, next_due, span, clock, (None, credit)));
    }
    // What the config will bill that the database has not seen yet: listed too, marked "not synced".
    let (added, note) = crate::commands::present::unsynced(&cfg, &store, now)?.unwrap_or_default();
    for sub in &added {
        // Only a period ever billed: a cancel date at or before the first charge leaves none.
        let first = sub.billed_due(clock, sub.next_period);
        items.extend(charges_until(sub, first, span, clock, (Some("not synced"), 0)));
    }
    items.sort_by(|a, b| a.due.cmp(&b.due).then(a.subscription.cmp(&b.subscription)));
    if json {
        crate::say!("{}", serde_json::to_string_pretty(&items)?);
        if !note.is_empty() {
            eprintln!("{note}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let zone = clock.timezone;
    // The backlog first: what is already due (charged by the next pass), then what the window skips.
    let (held_items, items): (Vec<&Upcoming>, Vec<&Upcoming>) = items.iter().partition(|i| i.kind == HELD);
    if !held_items.is_empty() {
        crate::say!(
            "held (a plan change is pending: nothing of these subscriptions opens until it is settled, by lookup or \
             by the next pass; see `billd subscriptions show ID`): {}",
            totals(held_items.iter().copied(), "charge")
        );
        for (id, uid) in &held {
            crate::say!("    {:<20} plan change charge {}", cell(id), cell(if uid.is_empty() { "-" } else { uid }));
        }
        for i in &held_items {
            line(&human(i.due, zone)[..16], i);
        }
    }
    let (skipped, charged): (Vec<&Upcoming>, Vec<&Upcoming>) = items.into_iter().partition(|i| i.kind == "skipped");
    let (overdue, ahead): (Vec<&Upcoming>, Vec<&Upcoming>) = charged.into_iter().partition(|i| i.due <= now);
    if !overdue.is_empty() {
        crate::say!(
            "overdue at {} (charged by the next pass, oldest first): {}",
            human(now, zone),
            totals(overdue.iter().copied(), "charge")
        );
        for i in &overdue {
            line(&human(i.due, zone)[..16], i);
        }
    }
    if !skipped.is_empty() {
        let w = crate::config::duration::format(window.unwrap_or_default());
        crate::say!(
            "skipped (due more than {w} before, billing.catch_up_window: never charged): {}",
            totals(skipped.iter().copied(), "period")
        );
        for i in &skipped {
            line(&human(i.due, zone)[..16], i);
        }
    }
    let mut by_day: BTreeMap<NaiveDate, Vec<&Upcoming>> = BTreeMap::new();
    for i in &ahead {
        by_day.entry(i.due.with_timezone(&zone).date_naive()).or_default().push(i);
    }
    for (day, list) in &by_day {
        // The times below are in the billing time zone: said once, in the day's heading.
        let total = totals(list.iter().copied(), "charge");
        crate::say!("{day} ({zone})  {}", if total.is_empty() { "nothing charged" } else { &total });
        for i in list {
            line(&i.due.with_timezone(&zone).format("%H:%M").to_string(), i);
        }
    }
    let all = totals(overdue.iter().chain(&ahead).copied(), "charge");
    crate::say!("next {days} days: {}", if all.is_empty() { "nothing to charge".to_string() } else { all });
    if !note.is_empty() {
        crate::say!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}
