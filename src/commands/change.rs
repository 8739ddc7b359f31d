//! `billd subscriptions change ID --plan P (--at-period-end | --now)`: a plan change decided from the book, recorded
//! by `Changes::change_plan`; one made now settles the paid period pro rata (`billing::proration`), its charge under
//! the exactly-once protocol of one-time charges (`commands/one_time.rs`), its credit kept for the next periods.

use crate::app::{existing_store, gateway, load_config, runtime};
use crate::billing::calendar::Calendar;
use crate::billing::model::{Source, Subscription, change_merchant_uid, merchant_uid};
use crate::billing::proration::{Span, change_keeping_period, change_restarting_period, explain};
use crate::commands::charge_key::KeySender;
use crate::commands::one_time::{Ask, Done, charge};
use crate::commands::present::human;
use crate::config::Config;
use crate::engine::refunds::look_up_and_settle;
use crate::realtime::ProcessClock;
use crate::store::{Book, ChargeStatus, Store, Views};
use crate::store::{ChangeState, ChangeTiming, Changes, OneTimeKind, PeriodState, PlanChange, PlanChangeRow};
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::process::ExitCode;

/// What the subscription bills once changed to `plan`: the plan of the config, or, for a subscription from the
/// config file, its entry there (which must name `plan` already, so that a sync never undoes the change).
fn target(cfg: &Config, sub: &Subscription, plan: &str, timing: ChangeTiming) -> Result<Subscription> {
    let when = match timing {
        ChangeTiming::Now => "now",
        ChangeTiming::PeriodEnd => "at period end",
    };
    let file = cfg.file.display();
    if sub.source == Source::Config {
        // Its term is its entry's, as a sync counts it.
        let wanted = cfg.wanted_subscriptions().into_iter().find(|w| w.id == sub.id);
        return match wanted {
            Some(w) if w.plan_id == plan => {
                Ok(Subscription { discount: w.discount, last_period: w.last_period, ..with_plan(sub, &w) })
            }
            Some(w) => bail!(
                "subscription {} comes from {file}, whose entry names plan {}: its plan is the file's. Name plan {plan} \
                 on its entry first, then run this again to apply it {when} (a sync then agrees); nothing changed",
                sub.id,
                w.plan_id
            ),
            None => bail!("subscription {} comes from {file}, which no longer lists it; nothing changed", sub.id),
        };
    }
    let p = cfg.plan(plan).ok_or_else(|| anyhow!("no plan {plan:?} in {file}; nothing changed"))?;
    let mut to = sub.clone();
    (to.plan_id, to.plan_name, to.amount, to.currency, to.interval) =
        (p.id.clone(), p.name.clone(), p.amount, p.currency.clone(), p.interval);
    // The new plan's fixed term (counted from its first period), unless it has one of its own.
    to.last_period = crate::billing::terms::term_on_plan(sub.last_period, cfg.plan(&sub.plan_id), p);
    Ok(to)
}

/// `sub` with the plan, name, price, currency and interval of `w`.
fn with_plan(sub: &Subscription, w: &Subscription) -> Subscription {
    let mut to = sub.clone();
    (to.plan_id, to.plan_name, to.amount, to.currency, to.interval) =
        (w.plan_id.clone(), w.plan_name.clone(), w.amount, w.currency.clone(), w.interval);
    to
}

/// The changes scheduled at period end that the book's row bills from period `next` on, oldest first: those made
/// since the last change made now (which replaced any scheduled before it).
fn scheduled(changes: &[PlanChangeRow], next: u64) -> impl Iterator<Item = &PlanChangeRow> {
    let applied: Vec<&PlanChangeRow> = changes.iter().filter(|r| r.state == ChangeState::Applied).collect();
    let since = applied.iter().rposition(|r| r.change.timing == ChangeTiming::Now).map_or(0, |i| i + 1);
    applied
        .into_iter()
        .skip(since)
        .filter(move |r| r.change.timing == ChangeTiming::PeriodEnd && r.change.period == next)
}

/// A discount counts periods of the plan it was given for (issue 25 review): a change to another interval from
/// period `first` on would stretch what is left of it over periods of the new interval (two half-price years for
/// two half-price months). Refused while the discount `to` carries still covers a period from `first` on: its entry
/// must end it first (`periods = first`, or no discount), then the change is made.
fn discount_keeps_its_plan(
    cfg: &Config,
    sub: &Subscription,
    to: &Subscription,
    interval: crate::billing::calendar::Interval,
    first: u64,
) -> Result<()> {
    let Some(d) = to.discount.filter(|d| d.periods() > first) else { return Ok(()) };
    // A subscription of the file ends it in its entry; one added by command keeps it until its last period.
    let what_to_do = if sub.source == Source::Config {
        format!(
            "End it in its entry in {} first (periods = {first}, the periods already billed, or no discount), then \
             run this again",
            cfg.file.display()
        )
    } else {
        format!(
            "It ends with period {}: change the plan from then on (--at-period-end after period {} is billed), or \
             change to a plan of the same interval",
            d.periods() - 1,
            d.periods() - 1
        )
    };
    bail!(
        "subscription {}: its discount ({d}) counts periods of the plan it was given for (every {interval}); plan {} \
         bills every {}, so what is left of it would discount whole periods of that interval. {what_to_do}; nothing \
         changed",
        sub.id,
        to.plan_id,
        to.interval
    )
}

/// Decides the change of `sub` to `to` at `now`, from the book as read (refusals before anything changes).
fn decide(
    cfg: &Config,
    store: &impl Store,
    sub: &Subscription,
    to: &Subscription,
    timing: ChangeTiming,
    changes: &[PlanChangeRow],
    now: DateTime<Utc>,
) -> Result<(PlanChange, String)> {
    let id = &sub.id;
    let (periods, _) = store.subscription_story(id)?;
    if let Some(p) = periods.iter().find(|p| p.state == PeriodState::Open) {
        bail!(
            "subscription {id} has period {} open and not paid (an attempt may be in flight): settle it first (`billd \
             retry {id}`, or let dunning run); nothing changed",
            p.period
        );
    }
    let mut c = PlanChange {
        subscription_id: id.clone(),
        timing,
        at: now,
        period: sub.next_period,
        from_plan_id: sub.plan_id.clone(),
        from_amount: sub.amount,
        from_interval: sub.interval, // `Now`: the interval of the period it settles (below)
        to_plan_id: to.plan_id.clone(),
        to_plan_name: to.plan_name.clone(),
        to_amount: to.amount,
        to_interval: to.interval,
        rate: None,
        owed: 0,
        credit_used: 0,
        merchant_uid: None,
        anchor_date: sub.anchor_date,
        anchor_period: sub.anchor_period,
        next_period: sub.next_period,
        next_due_at: None,
        opens: None,
        last_period: Some(to.last_period),
    };
    let clock = &cfg.billing.clock;
    let tz = clock.timezone;
    // A fixed term or a cancel date is counted in the periods of its interval: the subscription keeps it, now or at
    // period end (an outsider's at-period-end change billed a year past a cancel date, and recounted an end); so
    // does a subscription the new plan gives a term.
    let bounded = sub.cancel_at.is_some() || sub.last_period.is_some() || to.last_period.is_some();
    if to.interval != sub.interval && bounded {
        bail!(
            "subscription {id} has a fixed term or a cancel date (or plan {} gives it a term): it keeps its interval \
             ({}); nothing changed (cancel it and add a new subscription for the new plan)",
            to.plan_id,
            sub.interval
        );
    }
    // No period after the one in force is ever billed (its cancel date, or the end of its term): a change at period
    // end would apply to nothing (an outsider's was accepted and `show` then reported a plan that never bills), and
    // one made now would settle its last period.
    if sub.billed_due(clock, sub.next_period).is_none() {
        let why = match (sub.cancel_at, sub.last_period) {
            (Some(at), _) => {
                format!("it is canceling: no period is billed from {} on (its cancel date)", human(at, tz))
            }
            (None, Some(last)) => format!("period {last} is the last of its fixed term"),
            (None, None) => format!("period {} has no due date", sub.next_period),
        };
        match timing {
            ChangeTiming::PeriodEnd => bail!(
                "subscription {id}: {why}, so period {}, the first a change at period end would bill on plan {}, \
                 never opens; nothing changed",
                sub.next_period,
                to.plan_id
            ),
            ChangeTiming::Now => bail!(
                "subscription {id}: {why}, so the period in force is its last, and a change now is not made in a \
                 subscription's last period; nothing changed"
            ),
        }
    }
    if timing == ChangeTiming::PeriodEnd {
        // The next period fell due and is not charged yet (no pass since): it is the period in force, owed at its
        // plan; a change at period end would reprice it (an outsider's hourly timer charged the new price for it).
        if let Some(due) = sub.billed_due(clock, sub.next_period).filter(|d| *d <= now) {
            bail!(
                "subscription {id}: period {} fell due at {} and is not charged yet (no pass has run since): it is \
                 the period in force, owed at plan {}. Let a pass charge it (`billd tick`, or the daemon), then \
                 change at period end; nothing changed",
                sub.next_period,
                human(due, tz),
                sub.plan_id
            );
        }
        if to.interval != sub.interval {
            discount_keeps_its_plan(cfg, sub, to, sub.interval, sub.next_period)?;
        }
        // A new interval keeps the next due date and continues from it (as a sync's change of interval does).
        if to.interval != sub.interval
            && let Some(d) = sub.calendar().date_of(sub.next_period)
        {
            (c.anchor_date, c.anchor_period) = (d, sub.next_period);
        }
        return Ok((c, String::new()));
    }
    // Now: the paid period whose span holds `now` is settled; a trial has none.
    if sub.next_period == 0 {
        let first = sub.billed_due(clock, 0).map(|t| human(t, tz)).unwrap_or_else(|| "-".into());
        bail!(
            "subscription {id} is {} and has paid nothing yet (its first charge falls due at {first}): --now settles \
             a paid period; use --at-period-end (its first period then bills the new plan, at the same date); \
             nothing changed",
            sub.status
        );
    }
    let end = store.next_due_at(id)?;
    let last = periods.last().filter(|p| p.period + 1 == sub.next_period);
    let Some(paid) = last.filter(|p| p.state == PeriodState::Paid && p.due_at <= now && end.is_some_and(|e| now < e))
    else {
        bail!(
            "subscription {id} has no paid period covering {} (--now settles the current paid period); use \
             --at-period-end; nothing changed",
            human(now, cfg.billing.clock.timezone)
        );
    };
    let span = Span { start: paid.due_at, end: end.unwrap_or(now) };
    // The plan of the period being settled: the book's row already bills a change scheduled at period end (made
    // since the last change made now), so that period's interval is the first such change's `from`. A change made
    // now replaces any change scheduled at period end (the new plan is in force from now on).
    let in_force = scheduled(changes, sub.next_period).next().map_or(sub.interval, |r| r.change.from_interval);
    // The price in force for the rest of the period: the last change made now in it, or what it was opened at.
    let mut applied = changes.iter().rev().filter(|r| r.state == ChangeState::Applied);
    let rate = applied.find(|r| r.change.timing == ChangeTiming::Now && r.change.period == paid.period);
    let rate = rate.and_then(|r| r.change.rate).unwrap_or(paid.amount);
    (c.period, c.from_amount, c.from_interval) = (paid.period, rate, in_force);
    // A fixed term or a cancel date is counted in the periods of its interval: a restart now would bill past it (an
    // outsider was charged a year after a cancel date this way). Such a subscription changes interval at period end.
    if to.interval != in_force && (sub.cancel_at.is_some() || sub.last_period.is_some()) {
        bail!(
            "subscription {id} has a fixed term or a cancel date: its interval changes only at period end \
             (--at-period-end); nothing changed"
        );
    }
    if to.interval != in_force {
        discount_keeps_its_plan(cfg, sub, to, in_force, paid.period + 1)?;
    }
    let how;
    let settled = if to.interval == in_force {
        let new = to.amount_of(paid.period);
        c.rate = Some(new);
        how = explain(rate, new, span, now, false);
        change_keeping_period(rate, new, span, now)
    } else {
        // The new plan's first period starts now (period + 1) and runs to a date one interval after its anchor:
        // today's local date, or tomorrow's if today's charge time is past, so that it is never shorter than the
        // interval it is charged in full for (the hours until the next charge time are the customer's).
        let first = to.amount_of(paid.period + 1);
        let anchor = cfg.billing.clock.first_date_from(now);
        let cal = Calendar { anchor, anchor_period: paid.period + 1, interval: to.interval };
        (c.anchor_date, c.anchor_period, c.next_period) = (anchor, paid.period + 1, paid.period + 2);
        c.next_due_at = Some(
            cal.due_at(&cfg.billing.clock, paid.period + 2)
                .ok_or_else(|| anyhow!("subscription {id}: the new interval has no next due date; nothing changed"))?,
        );
        c.opens = Some((merchant_uid(&cfg.billing.merchant_uid_prefix, id, paid.period + 1), first));
        how = explain(rate, first, span, now, true);
        change_restarting_period(rate, first, span, now)
    };
    c.owed = settled.owed();
    if c.owed > 0 {
        if c.owed > cfg.limits.max_amount {
            bail!(
                "subscription {id}: the change would charge {} {} now, above limits.max_amount ({}); nothing changed",
                c.owed,
                sub.currency,
                cfg.limits.max_amount
            );
        }
        let n = changes.iter().filter(|r| r.change.period == paid.period && r.change.merchant_uid.is_some()).count();
        c.merchant_uid = Some(change_merchant_uid(&cfg.billing.merchant_uid_prefix, id, paid.period, n as u64 + 1));
    }
    Ok((c, format!("period {} ({} to {}): {how}", paid.period, human(span.start, tz), human(span.end, tz))))
}

/// Before a change now credits or charges what is left of period `period`: the refunds the gateway lists for the
/// period's paid charges (its own, and the subscription's plan-change charges) are recorded, as `billd refunds
/// --sync` records them, so that a refund made in i'mport's console and not recorded yet is never credited again
/// (the store refuses a change now in a period with refunds). A lookup that fails refuses the change.
fn record_gateway_refunds(cfg: &Config, store: &impl Store, id: &str, period: u64, now: DateTime<Utc>) -> Result<()> {
    let own = store.list_charges(false, None, Some(id), 0)?.into_iter().map(|(_, r)| r).filter(|r| r.period == period);
    let changes = store.list_one_time(false, None, Some(id))?;
    let changes = changes.into_iter().filter(|r| r.one_time == Some(OneTimeKind::Proration));
    let paid: Vec<(String, String)> = own
        .chain(changes)
        .filter(|r| r.status == ChargeStatus::Paid)
        .filter_map(|r| r.imp_uid.map(|imp| (r.merchant_uid, imp)))
        .collect();
    if paid.is_empty() {
        return Ok(());
    }
    let (g, rt) = (gateway(cfg)?, runtime()?);
    for (m, imp) in paid {
        if let Err(e) = rt.block_on(look_up_and_settle(store, &g, &ProcessClock, &m, &imp, now))? {
            bail!(
                "subscription {id}: a change now settles what was paid for period {period}, and the refunds of its \
                 charge {m} could not be checked at the gateway ({e}); nothing changed (run it again)"
            );
        }
    }
    Ok(())
}

/// Charges a pending change's difference under the one-time protocol (a rerun settles it by lookup first, and
/// never sends before its quiet period); its outcome applies or fails the change (`finish_one_time`).
fn settle<S: Store>(
    cfg: &Config,
    store: &S,
    sub: &Subscription,
    row: &PlanChangeRow,
    now: DateTime<Utc>,
) -> Result<ExitCode> {
    let c = &row.change;
    let merchant_uid = c.merchant_uid.as_deref().unwrap_or_default();
    let (g, rt) = (gateway(cfg)?, runtime()?);
    let ask = Ask {
        command: "subscriptions change",
        kind: OneTimeKind::Proration,
        merchant_uid,
        amount: c.charge(),
        name: &c.to_plan_name,
        customer_uid: Some(&sub.customer_uid),
        subscription_id: Some(&sub.id),
        made_at: Some(c.at),
        clock: crate::clock::BillingClock::command(Some(now)),
    };
    let mut sender =
        KeySender { cfg, g: &g, store, rt: &rt, customer_uid: &sub.customer_uid, despite_safety_stop: false };
    let done = match charge(cfg, store, &g, &rt, &ask, &mut sender) {
        Ok(done) => done,
        Err(e) => {
            // Refused before its intent (no key, a safety stop): nothing was sent, and the plan stays as it was.
            if store.one_time(merchant_uid)?.is_none()
                && store.abandon_plan_change(merchant_uid, &format!("{e:#}"), Utc::now())?
            {
                return Err(e.context(format!("{}: the plan is unchanged ({})", sub.id, sub.plan_id)));
            }
            return Err(e);
        }
    };
    if matches!(done, Done::Paid { .. }) {
        // Paid, and still pending: left so by an older billd (a sync moved the subscription before its charge was
        // found paid); settled now as a paid charge settles a change.
        store.settle_paid_change(merchant_uid, Utc::now())?;
    }
    let state = store.plan_changes(&sub.id)?.into_iter().find(|r| r.id == row.id).map(|r| r.state);
    match (done, state) {
        (Done::Paid { .. }, Some(ChangeState::Applied)) => {
            let used = match c.credit_used {
                0 => String::new(),
                n => format!(" (and {n} {} of its credit)", sub.currency),
            };
            crate::say!(
                "{}: plan changed to {} now; {} {} charged ({merchant_uid}){used}",
                sub.id,
                c.to_plan_id,
                c.charge(),
                sub.currency
            );
            Ok(ExitCode::SUCCESS)
        }
        (Done::Paid { .. }, Some(ChangeState::Failed)) => {
            let now = store.subscription(&sub.id)?;
            eprintln!(
                "{}: the change's charge {merchant_uid} was found paid, but the subscription changed meanwhile (it is \
                 {}, plan {}): the change does not apply, and its {} {} are credited to the subscription{} (`billd \
                 subscriptions show {}` says why)",
                sub.id,
                now.as_ref().map(|s| s.status.to_string()).unwrap_or_default(),
                now.as_ref().map(|s| s.plan_id.clone()).unwrap_or_default(),
                c.charge(),
                sub.currency,
                if now.is_some_and(|s| s.status.is_final()) { ", refundable as it has ended" } else { "" },
                sub.id
            );
            Ok(ExitCode::FAILURE)
        }
        (Done::Paid { .. }, _) => {
            eprintln!(
                "{}: the change's charge {merchant_uid} is paid but the change is not in force (see `billd subscriptions show {}`)",
                sub.id, sub.id
            );
            Ok(ExitCode::FAILURE)
        }
        (Done::NotPaid, Some(ChangeState::Failed)) => {
            eprintln!("{}: the change's charge was not paid; the plan is unchanged ({})", sub.id, c.from_plan_id);
            Ok(ExitCode::FAILURE)
        }
        (Done::NotPaid, _) => {
            eprintln!(
                "{}: the change to {} takes effect once its charge {merchant_uid} is settled (rerun this command, or a \
                 pass settles it); no period opens meanwhile",
                sub.id, c.to_plan_id
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The fixed term `to` has once changed, in words: how many periods (counted from its first charge), and its last
/// period's due date, or that it has none; and that none is left from period `from` on, if so.
fn term_words(to: &Subscription, from: u64, clock: &crate::billing::calendar::ChargeClock) -> String {
    let Some(last) = to.last_period else {
        return "no fixed term on the new plan: billed until canceled".into();
    };
    let n = last + 1;
    let due = to.calendar().due_at(clock, last).map(|t| human(t, clock.timezone)).unwrap_or_else(|| "-".into());
    let over = crate::billing::terms::term_over(Some(last), from).map(|w| format!(" ({w})")).unwrap_or_default();
    format!(
        "its fixed term is {n} period{} counted from its first charge (plan {}): the last is period {last}, due \
         {due}{over}",
        if n == 1 { "" } else { "s" },
        to.plan_id
    )
}

pub fn change(
    path: &Path,
    id: &str,
    plan: &str,
    timing: ChangeTiming,
    (now, simulate): (DateTime<Utc>, bool),
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    let store = existing_store(&cfg)?;
    let sub = store.subscription(id)?.ok_or_else(|| anyhow!("no subscription {id:?} in {}", store.location()))?;
    let changes = store.plan_changes(id)?;
    // A change whose charge is not settled: a rerun settles it (never another change over it).
    if let Some(row) = changes.iter().find(|r| r.state == ChangeState::Pending) {
        if row.change.to_plan_id != plan || row.change.timing != timing {
            bail!(
                "subscription {id} has a change to plan {} ({}) whose charge is not settled: rerun `billd subscriptions \
                 change {id} --plan {} --now` to settle it first; nothing changed",
                row.change.to_plan_id,
                row.change.merchant_uid.as_deref().unwrap_or("-"),
                row.change.to_plan_id
            );
        }
        return settle(&cfg, &store, &sub, row, now);
    }
    if sub.plan_id == plan {
        crate::say!("{id}: the plan already is {plan}; nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    if !sub.status.bills() {
        bail!("subscription {id} is {}: it does not bill; nothing changed", sub.status);
    }
    let to = target(&cfg, &sub, plan, timing)?;
    // The subscription's own discount on the new plan's price: one that would leave nothing is refused here, as
    // `subscriptions add` and the config refuse it (it was charged 1 won a period).
    // The first period the new price is charged for: the rest of the paid period (now), or the next one.
    let first = match timing {
        ChangeTiming::Now => sub.next_period.saturating_sub(1),
        ChangeTiming::PeriodEnd => sub.next_period,
    };
    if let Some(d) = to.discount.filter(|d| d.leaves_nothing(to.amount) && first < d.periods()) {
        bail!(
            "subscription {id}: its discount ({d}) leaves nothing to charge of plan {plan}'s {} {}; a discounted period \
             is charged at least 1. Nothing changed",
            to.amount,
            to.currency
        );
    }
    if to.currency != sub.currency {
        bail!("plan {plan} bills in {}, subscription {id} in {}; nothing changed", to.currency, sub.currency);
    }
    let (c, how) = decide(&cfg, &store, &sub, &to, timing, &changes, now)?;
    if timing == ChangeTiming::Now {
        record_gateway_refunds(&cfg, &store, id, c.period, now)?;
    }
    let row = store.change_plan(&c, changes.len(), now)?.map_err(|why| anyhow!("{why}; nothing changed"))?;
    if timing == ChangeTiming::Now
        && let Some(r) = scheduled(&changes, sub.next_period).last()
    {
        crate::say!(
            "{id}: once in force, this change replaces the change to {} scheduled at period end",
            r.change.to_plan_id
        );
    }
    if !how.is_empty() {
        crate::say!("{id}: {how}");
    }
    let term = (to.last_period != sub.last_period).then(|| term_words(&to, c.next_period, &cfg.billing.clock));
    crate::failpoint::failpoint("change_after_pending");
    if row.state == ChangeState::Pending {
        if let Some(t) = &term {
            crate::say!("{id}: once in force, {t}");
        }
        return settle(&cfg, &store, &sub, &row, now);
    }
    let cur = &sub.currency;
    if row.change.credit_used > 0 {
        crate::say!(
            "{id}: plan changed to {plan} now; {} {cur} owed, paid by its credit (credit {} {cur} left); nothing \
             charged",
            row.change.credit_used,
            store.credit(id)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    match (timing, c.owed) {
        (ChangeTiming::PeriodEnd, _) => {
            let due = store.next_due_at(id)?.map(|t| human(t, cfg.billing.clock.timezone)).unwrap_or("-".into());
            crate::say!(
                "{id}: plan changes to {plan} ({} {cur} every {}) from period {} (due {due}); nothing charged today",
                to.amount,
                to.interval,
                c.period
            );
        }
        (_, owed) if owed < 0 => crate::say!(
            "{id}: plan changed to {plan} now; {} {cur} credited (credit {} {cur}), taken off the next periods",
            -owed,
            store.credit(id)?
        ),
        _ => crate::say!("{id}: plan changed to {plan} now; nothing owed either way"),
    }
    if let Some(t) = &term {
        crate::say!("{id}: {t}");
    }
    Ok(ExitCode::SUCCESS)
}
