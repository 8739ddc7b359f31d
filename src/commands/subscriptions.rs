//! `billd subscriptions` (long: the listing, `show`'s whole story and `add` with the terms its flags give, one command
//! group): the listing (what happens next for each), `subscriptions show ID` (one subscription's whole
//! story: plan, status and why, every period with each attempt, what happens next, when) and `subscriptions add`.

use crate::app::{gateway, listed_store, load_config, open_store, runtime};
use crate::billing::model::{Source, Status, Subscription};
use crate::commands::customers::{
    card, check_customer_uid, issue_key, key_at_gateway, moved, refuse_replacing_unasked, shown,
};
use crate::commands::present::{cut, human, rfc3339};
use crate::shapes::{next_charge, next_look, retries_left, subscription_json};
use crate::store::{Book, ChargeStatus, Failure, PeriodState, PeriodStory, Store, Views};
use crate::text::cell;
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// `now`: the day the config's unsynced subscriptions are judged on (`--as-of`).
pub fn list(path: &Path, status: Option<Status>, json: bool, now: DateTime<Utc>) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let store = listed_store(&cfg)?;
    let rows = store.list_subscriptions(status)?;
    let tz = cfg.billing.clock.timezone;
    let retries = cfg.dunning.retry_after.len();
    // The config's subscriptions the database has not seen yet are listed too, marked "not synced" (they will be
    // active once applied).
    let unsynced = crate::commands::present::unsynced(&cfg, &store, now)?;
    let (added, note) = unsynced.unwrap_or_default();
    let added: Vec<_> = added.into_iter().filter(|_| matches!(status, None | Some(Status::Active))).collect();
    // Its first charge, if it is ever billed (a cancel date at or before it leaves none).
    let first_due = |s: &Subscription| s.billed_due(&cfg.billing.clock, 0);
    if json {
        let mut rows: Vec<Value> = rows.iter().map(|r| subscription_json(r, retries, tz)).collect();
        rows.extend(added.iter().map(|s| {
            json!({
                "id": s.id, "customer_uid": s.customer_uid, "plan": s.plan_id, "amount": s.amount,
                "currency": s.currency, "interval": s.interval.to_string(), "status": "not_synced",
                // The same shape as a synced subscription's (a script reads next_charge.kind either way).
                "next_charge": first_due(s).map(|t| json!({ "at": rfc3339(t, tz), "kind": "charge" })),
                "source": "config", "retries_left": retries, "paid_periods": 0, "why": null,
            })
        }));
        crate::say!("{}", serde_json::to_string_pretty(&rows)?);
        if !note.is_empty() {
            eprintln!("{note}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!(
        "{:<20} {:<14} {:<14} {:>12} {:<9} {:<30} {:>12} {:>4}  WHY",
        "ID",
        "CUSTOMER",
        "PLAN",
        "AMOUNT",
        "STATUS",
        "NEXT CHARGE",
        "RETRIES LEFT",
        "PAID"
    );
    for r in &rows {
        let (at, kind) = next_charge(r);
        let next = at.map(|t| format!("{} {kind}", human(t, tz))).unwrap_or_else(|| "-".into());
        crate::say!(
            "{:<20} {:<14} {:<14} {:>12} {:<9} {:<30} {:>12} {:>4}  {}",
            cell(&r.id),
            cell(&r.customer_uid),
            cell(&r.plan),
            cell(&format!("{} {}", r.amount, r.currency)),
            r.status,
            next,
            retries_left(r, retries).map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            r.paid_periods,
            cell(&cut(&why_of(r, tz), 60))
        );
    }
    for s in &added {
        let next = first_due(s).map(|t| format!("{} charge", human(t, tz))).unwrap_or_else(|| "-".into());
        crate::say!(
            "{:<20} {:<14} {:<14} {:>12} {:<9} {:<30} {:>12} {:>4}  {}",
            s.id,
            s.customer_uid,
            s.plan_id,
            format!("{} {}", s.amount, s.currency),
            "not synced",
            next,
            retries,
            0,
            ""
        );
    }
    if !note.is_empty() {
        crate::say!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The WHY column: why it stopped, and when a paused one resumes by itself or a canceling one ends.
fn why_of(r: &crate::store::SubscriptionRow, tz: chrono_tz::Tz) -> String {
    let why = r.why.clone().unwrap_or_default();
    match (r.resume_at, r.cancel_at) {
        (Some(t), _) => format!("resumes {} (pause --until); {why}", human(t, tz)),
        (None, Some(t)) if r.status.bills() => format!("ends {} (cancel at period end)", human(t, tz)),
        _ => why,
    }
}

/// What billd does next for a subscription, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    /// `charge`, `retry`, `look_up`, `held`, `none`.
    pub action: &'static str,
    pub at: Option<DateTime<Utc>>,
    pub text: String,
}

/// The next step for `sub` given its periods (oldest first), its next due instant and whether dunning stopped it
/// (then `billd reactivate` restarts it, never `resume`).
pub fn next_action(
    sub: &Subscription,
    periods: &[PeriodStory],
    next_due_at: Option<DateTime<Utc>>,
    by_dunning: bool,
) -> Next {
    let none = |text: String| Next { action: "none", at: None, text };
    // A charge already at the gateway is settled by lookup whatever the status (a cancel or a pause promised it).
    let in_doubt = periods
        .iter()
        .filter(|p| p.state == PeriodState::Open)
        .find_map(|p| p.attempts.last().filter(|a| a.status.unresolved()).map(|a| (p, a)));
    if let Some((open, a)) = in_doubt.filter(|_| !sub.status.bills()) {
        let after = match sub.status {
            _ if by_dunning => format!("then nothing until `billd reactivate {} [--charge-now]`", sub.id),
            s if s.is_final() => format!("then nothing: {s}"),
            _ => format!("then nothing until `billd resume {}`", sub.id),
        };
        return Next {
            action: "look_up",
            at: next_look(a.check_at, a.doubt.as_ref()),
            text: format!("look up {} (a charge already sent; settled, not repeated), {after}", open.merchant_uid),
        };
    }
    let reactivate = |what: &str| {
        format!(
            "none: {what} by dunning; once its customer has a card that pays, `billd reactivate {0}` bills it again \
             (`billd reactivate {0} --charge-now` charges its given-up period first)",
            sub.id
        )
    };
    match sub.status {
        Status::Canceled if by_dunning => return none(reactivate("canceled")),
        Status::Suspended if by_dunning => return none(reactivate("suspended")),
        Status::Canceled => return none("none: canceled, never charged again".into()),
        Status::Completed => return none("none: its term is over (completed)".into()),
        Status::Suspended => return none(format!("none until `billd resume {}`", sub.id)),
        Status::Trialing | Status::Active | Status::PastDue | Status::Canceling => {}
    }
    if let Some(open) = periods.iter().find(|p| p.state == PeriodState::Open) {
        let last = open.attempts.last();
        if let Some(a) = last.filter(|a| a.status.unresolved()) {
            return Next {
                action: "look_up",
                at: next_look(a.check_at, a.doubt.as_ref()),
                text: format!(
                    "look up {} (outcome unknown; resent only if the gateway has no record)",
                    open.merchant_uid
                ),
            };
        }
        if let Some(at) = open.next_attempt_at {
            let kind = if open.attempts.is_empty() { "charge" } else { "retry" };
            return Next {
                action: kind,
                at: Some(at),
                text: format!("{kind} period {} ({})", open.period, open.merchant_uid),
            };
        }
        if last.is_some_and(|a| a.failure == Some(Failure::Mismatch)) {
            return Next {
                action: "held",
                at: None,
                text: format!(
                    "held for an operator: period {} ({}) — see its attempt below; cancel the other payment at the \
                     gateway, then `billd retry {}`",
                    open.period, open.merchant_uid, sub.id
                ),
            };
        }
        return none(format!("period {} is open with nothing scheduled", open.period));
    }
    match next_due_at {
        Some(at) => Next { action: "charge", at: Some(at), text: format!("charge period {}", sub.next_period) },
        None => none("no further period".into()),
    }
}

/// A charge's outcome in words, for `subscriptions show`.
fn outcome(status: ChargeStatus, failure: Option<Failure>, imp_uid: Option<&str>, reason: Option<&str>) -> String {
    match (failure, imp_uid, reason) {
        (Some(f), _, Some(r)) => format!("{status} ({f}): {r}"),
        (None, Some(imp), _) => format!("{status} (imp_uid {imp})"),
        (None, None, Some(r)) => format!("{status}: {r}"),
        _ => status.to_string(),
    }
}

/// What paid a period that no charge of its own paid (no attempt), for `subscriptions show`: the first period of a
/// plan change made now to a new interval is paid by the change (its charge `…-cN`, or the old period's unused
/// part), and one a credit covers whole is paid by the credit. `None`: its attempts say it.
fn paid_by(p: &PeriodStory, changes: &[crate::store::PlanChangeRow]) -> Option<String> {
    if p.state != PeriodState::Paid || !p.attempts.is_empty() {
        return None;
    }
    let change = changes.iter().find(|r| r.change.opens.as_ref().is_some_and(|(uid, _)| *uid == p.merchant_uid));
    Some(match change.map(|r| &r.change) {
        Some(c) => match &c.merchant_uid {
            Some(m) => format!(
                "paid by the change to plan {} (its charge {m}: the first period, less the unused part of period {}); \
                 no payment has merchant_uid {}",
                c.to_plan_id, c.period, p.merchant_uid
            ),
            None => format!(
                "paid by the change to plan {} (the unused part of period {} covered it); nothing was charged",
                c.to_plan_id, c.period
            ),
        },
        None => "paid by credit (from a plan change); nothing was charged".into(),
    })
}

pub fn show(path: &Path, id: &str, as_json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let store = listed_store(&cfg)?;
    let Some(sub) = store.subscription(id)? else {
        // In the config but not in the book yet: say how to apply it.
        if cfg.subscriptions.iter().any(|s| s.id == id) {
            bail!(
                "subscription {id:?} is in {} but not in the database yet (not synced): `billd sync` applies the \
                 file (the running billd does at its next pass)",
                cfg.file.display()
            );
        }
        bail!("no subscription {id:?} in {}", store.location());
    };
    let next_due_at = store.next_due_at(id)?;
    let (periods, why) = store.subscription_story(id)?;
    let row = store.subscription_row(id)?;
    let by_dunning = row.as_ref().is_some_and(|r| r.stopped_by_dunning);
    let mut next = next_action(&sub, &periods, next_due_at, by_dunning);
    let tz = cfg.billing.clock.timezone;
    // A pause with an end: it resumes by itself then, and what it charges first after it.
    let after_pause = crate::commands::upcoming::after_pause(&cfg, &store, &sub, &periods)?;
    if let Some((until, _, _)) = after_pause.filter(|_| next.action == "none") {
        let text = "resume by itself (pause --until; an operator's `billd resume` before then resumes it sooner)";
        next = Next { action: "resume", at: Some(until), text: text.into() };
    }
    let then = after_pause.and_then(|(_, p, t)| Some((p, t?)));
    let cancel_at = row.as_ref().and_then(|r| r.cancel_at).filter(|_| !sub.status.is_final());
    let why = why.filter(|_| matches!(sub.status, Status::Canceled | Status::Completed | Status::Suspended));
    // One-time charges of its billing key tied to it (`charge-key --subscription`).
    let extra = store.list_one_time(false, None, Some(id))?;
    // Its plan changes and the credit they left (issue 25).
    let (changes, credit) =
        (crate::store::Changes::plan_changes(&store, id)?, crate::store::Changes::credit(&store, id)?);
    // Credit left when it ended: released, refundable (issue 25); a pending change holds it.
    let released: i64 = changes.iter().map(|r| r.released).sum();
    let held = changes.iter().find(|r| r.state == crate::store::ChangeState::Pending).map(|r| held_by(&store, r));
    let held = held.transpose()?;
    if as_json {
        let periods: Vec<_> = periods
            .iter()
            .map(|p| {
                json!({
                    "period": p.period, "due_at": rfc3339(p.due_at, tz), "merchant_uid": p.merchant_uid,
                    "amount": p.amount, "currency": p.currency, "state": p.state.as_str(), "declines": p.declines,
                    "next_attempt_at": p.next_attempt_at.map(|t| rfc3339(t, tz)),
                    "paid_by": paid_by(p, &changes),
                    "attempts": p.attempts.iter().map(|a| json!({
                        "attempt": a.attempt, "status": a.status.as_str(), "failure": a.failure.map(Failure::as_str), "imp_uid": a.imp_uid,
                        "reason": a.fail_reason, "made_at": rfc3339(a.created_at, tz),
                        "updated_at": rfc3339(a.updated_at, tz), "check_at": next_look(a.check_at, a.doubt.as_ref()).map(|t| rfc3339(t, tz)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = json!({
            "id": sub.id, "customer_uid": sub.customer_uid, "plan": sub.plan_id, "plan_name": sub.plan_name,
            "amount": sub.amount, "currency": sub.currency, "interval": sub.interval.to_string(),
            "discount": sub.discount, "start": sub.start_date.to_string(), "source": sub.source.as_str(),
            "status": sub.status.as_str(),
            "why": why, "next": { "action": next.action, "at": next.at.map(|t| rfc3339(t, tz)), "what": next.text },
            "after_pause": then.map(|(p, t)| json!({ "period": p, "at": rfc3339(t, tz) })),
            "resume_at": after_pause.map(|(t, _, _)| rfc3339(t, tz)),
            "cancel_at": cancel_at.map(|t| rfc3339(t, tz)),
            "stopped_by": by_dunning.then_some("dunning"),
            "periods": periods,
            "credit": credit,
            "credit_released": released,
            "held": held,
            "plan_changes": changes.iter().map(|r| json!({
                "timing": r.change.timing.as_str(), "at": rfc3339(r.change.at, tz), "period": r.change.period,
                "from": r.change.from_plan_id, "to": r.change.to_plan_id, "owed": r.change.owed,
                "credit_used": r.change.credit_used, "charged": r.change.charge(), "released": r.released,
                "merchant_uid": r.change.merchant_uid, "state": r.state.as_str(),
            })).collect::<Vec<_>>(),
            "one_time_charges": extra.iter().map(|c| json!({
                "kind": c.one_time.map(|k| k.as_str()),
                "merchant_uid": c.merchant_uid, "customer_uid": c.customer_uid, "amount": c.amount,
                "currency": c.currency, "status": c.status.as_str(), "failure": c.failure.map(Failure::as_str),
                "imp_uid": c.imp_uid, "reason": c.fail_reason, "tries": c.attempt,
                "made_at": rfc3339(c.created_at, tz), "updated_at": rfc3339(c.updated_at, tz),
            })).collect::<Vec<_>>(),
        });
        crate::say!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    // What the book holds is shown escaped ([`cell`]): a row planted with a terminal escape is shown, not obeyed.
    crate::say!("subscription {} (customer_uid {})", cell(&sub.id), cell(&sub.customer_uid));
    crate::say!(
        "  plan     {} ({:?}): {} {} every {}, from {} (source {})",
        cell(&sub.plan_id),
        sub.plan_name,
        sub.amount,
        sub.currency,
        sub.interval,
        sub.start_date,
        sub.source.as_str()
    );
    if let Some(d) = sub.discount {
        let next = sub.amount_of(sub.next_period);
        crate::say!("  discount {d} (period {} charges {next} {})", sub.next_period, sub.currency);
    }
    match &why {
        Some(w) => crate::say!("  status   {} ({})", sub.status, cell(w)),
        None => crate::say!("  status   {}", sub.status),
    }
    match next.at {
        Some(at) => crate::say!("  next     {} at {}", next.text, human(at, tz)),
        None => crate::say!("  next     {}", next.text),
    }
    if let Some(h) = &held {
        crate::say!("  held     {}", cell(h));
    }
    if let Some((p, t)) = then {
        crate::say!("  then     charge period {p} at {}", human(t, tz));
    }
    if let Some(t) = cancel_at {
        crate::say!("  ends     {}: no period due then or later is charged (cancel at period end)", human(t, tz));
    }
    if periods.is_empty() {
        crate::say!("  periods  none opened yet");
    }
    for p in &periods {
        crate::say!(
            "  period {:<4} due {}  {} {}  {}  {}",
            p.period,
            human(p.due_at, tz),
            p.amount,
            p.currency,
            p.state,
            cell(&p.merchant_uid)
        );
        if let Some(by) = paid_by(p, &changes) {
            crate::say!("      {}", cell(&by));
        }
        for a in &p.attempts {
            let outcome = outcome(a.status, a.failure, a.imp_uid.as_deref(), a.fail_reason.as_deref());
            crate::say!("      attempt {:<2} made {}  {}", a.attempt, human(a.created_at, tz), cell(&outcome));
        }
    }
    if credit > 0 {
        crate::say!("  credit   {credit} {} (taken off the next periods' charges)", sub.currency);
    }
    if released > 0 {
        crate::say!(
            "  credit   {released} {} released when it ended: the customer's, refundable from the charges of the \
             periods whose changes credited it (`billd refund MERCHANT_UID --amount N`)",
            sub.currency
        );
    }
    for r in &changes {
        let c = &r.change;
        let used = match c.credit_used {
            0 => String::new(),
            n => format!(", {n} {} of it paid by credit", sub.currency),
        };
        let settled = match (c.owed, c.charge()) {
            (0, _) => "nothing owed".to_string(),
            (n, _) if n < 0 => format!("{} {} credited", -n, sub.currency),
            (n, 0) => format!("{n} {} owed, paid by credit", sub.currency),
            (n, m) => format!(
                "{n} {cur} owed, {m} {cur} charged as {}{used}",
                cell(c.merchant_uid.as_deref().unwrap_or("-")),
                cur = sub.currency
            ),
        };
        // A failed change whose charge was paid anyway did not apply: its charge was credited (issue 25).
        let paid = extra.iter().any(|x| {
            Some(x.merchant_uid.as_str()) == c.merchant_uid.as_deref() && x.status == crate::store::ChargeStatus::Paid
        });
        let state = match r.state {
            crate::store::ChangeState::Failed if paid => "not applied (its paid charge was credited)".to_string(),
            s => s.to_string(),
        };
        crate::say!(
            "  change   {} -> {} ({}) at {}, period {}: {settled}  {state}",
            cell(&c.from_plan_id),
            cell(&c.to_plan_id),
            c.timing,
            human(c.at, tz),
            c.period,
        );
    }
    for c in &extra {
        let outcome = outcome(c.status, c.failure, c.imp_uid.as_deref(), c.fail_reason.as_deref());
        let kind = if c.one_time == Some(crate::store::OneTimeKind::Proration) { "proration" } else { "charge-key" };
        crate::say!(
            "  one-time {kind} {}  made {}  {} {}  key {}  {}",
            cell(&c.merchant_uid),
            human(c.created_at, tz),
            c.amount,
            cell(&c.currency),
            cell(&c.customer_uid),
            cell(&outcome)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What holds a subscription whose plan change `r` is pending (no period of it opens meanwhile), in words.
fn held_by(store: &impl crate::store::OneTime, r: &crate::store::PlanChangeRow) -> Result<String> {
    let uid = r.change.merchant_uid.as_deref().unwrap_or("-");
    let charge = match store.one_time(uid)? {
        None => {
            "its charge was never begun (its command stopped): the next pass abandons it, nothing was sent".to_string()
        }
        Some(c) => format!(
            "its charge is {}: settled by lookup (a rerun of the change, or a pass), never sent again blindly",
            c.status.as_str()
        ),
    };
    Ok(format!("by its plan change to {} ({uid}): {charge}; no period opens until it is settled", r.change.to_plan_id))
}

/// The flags of `subscriptions add` that set a subscription's own terms, as given (the keys of a config entry).
#[derive(Debug, Clone, Default)]
pub struct TermFlags {
    pub trial_ends: Option<String>,
    pub periods: Option<i64>,
    pub end: Option<String>,
    pub cancel_at: Option<String>,
    pub amount: Option<i64>,
    pub discount_percent: Option<i64>,
    pub discount_amount: Option<i64>,
    pub discount_periods: Option<i64>,
}

/// Subscription `id` of key `customer_uid` starting `start` on `plan`, with the terms its flags give (`terms`),
/// checked by the rules of a config entry's keys, each problem naming its flag (all of them, nothing added).
fn with_terms(
    ids: (&str, &str),
    plan: &crate::config::Plan,
    start: chrono::NaiveDate,
    terms: &TermFlags,
    max_amount: i64,
    clock: &crate::billing::calendar::ChargeClock,
) -> Result<Subscription> {
    use crate::billing::terms::{Spelling, Written, WrittenDiscount, check, subscription};
    let mut problems = Vec::new();
    let mut date = |flag: &str, t: &Option<String>| {
        t.as_deref().and_then(|t| match crate::config::parse_date(t) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("{flag}: {e}"));
                None
            }
        })
    };
    let (trial_ends, end, cancel_at) =
        (date("--trial-ends", &terms.trial_ends), date("--end", &terms.end), date("--cancel-at", &terms.cancel_at));
    let discount =
        (terms.discount_percent.is_some() || terms.discount_amount.is_some() || terms.discount_periods.is_some())
            .then_some(WrittenDiscount {
                percent: terms.discount_percent,
                amount: terms.discount_amount,
                periods: terms.discount_periods,
            });
    let written = Written { trial_ends, periods: terms.periods, end, cancel_at, amount: terms.amount, discount };
    let (own, found) = check(Some(plan), start, &written, max_amount, Spelling::Flags);
    problems.extend(found.into_iter().map(|(key, why)| format!("{}: {why}", Spelling::Flags.key(key))));
    if !problems.is_empty() {
        bail!("{}; nothing was added", problems.join("; "));
    }
    Ok(subscription(ids, plan, start, &own, Source::Manual, clock))
}

/// `billd subscriptions add`: a subscription kept in the database only, optionally with its card registered and
/// its first period charged at once (under the same exactly-once rules as scheduled charges).
/// What `subscriptions add` is told to do besides adding.
pub struct AddOptions {
    pub register_card: bool,
    /// With `register_card`: replace the card of an existing key.
    pub replace_key: bool,
    pub charge_now: bool,
    /// A start more than one period back is meant (every period since is charged).
    pub catch_up: bool,
    /// The instant it is added at (`--as-of`, checked as `tick`'s is): today's date and the charge's instant.
    pub at: crate::commands::ops::At,
}

pub fn add(
    path: &Path,
    id: &str,
    customer_uid: &str,
    plan: &str,
    (start, terms): (Option<&str>, &TermFlags),
    AddOptions { register_card, replace_key, charge_now, catch_up, at: (now, simulate) }: AddOptions,
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    let today = cfg.billing.clock.local_date(now);
    check_customer_uid(customer_uid)?;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("--id must be 1-64 characters of letters, digits, '-', '_' or '.'");
    }
    let plan = cfg
        .plan(plan)
        .ok_or_else(|| anyhow!("unknown plan {plan:?} (no [[plans]] entry in {})", cfg.file.display()))?;
    if cfg.subscriptions.iter().any(|s| s.id == id) {
        bail!("subscription {id:?} is defined in {}; pick another id", cfg.file.display());
    }
    let start = match start {
        Some(s) => crate::config::parse_date(s).map_err(|e| anyhow!("--start: {e}"))?,
        None => today,
    };
    // Its trial, term, cancel date, price and discount: a config entry's rules (and its plan's trial and term).
    let sub = with_terms((id, customer_uid), plan, start, terms, cfg.limits.max_amount, &cfg.billing.clock)?;
    // Judged from its first charge (its start, or its trial's end), as a config entry's is.
    if let Some(why) = crate::billing::sync::backdated(plan.interval, sub.anchor_date, today).filter(|_| !catch_up) {
        bail!(
            "--start: {why}; nothing was added. Set --start to the next due date, or pass --catch-up to charge them all"
        );
    }
    if charge_now && sub.anchor_date > start {
        bail!(
            "--charge-now: subscription {id} is in its trial until {} (its first charge falls due then); nothing was \
             added. Drop --charge-now, or give --trial-ends {start} for no trial",
            sub.anchor_date
        );
    }
    let store = open_store(&cfg)?;
    if store.subscription(id)?.is_some() {
        bail!("subscription {id:?} already exists");
    }
    // Everything that would refuse the subscription is asked before a key is issued or a charge is made.
    crate::commands::ops::refuse_another_clock(&cfg, &store)?;
    if let (_, Some(other)) = store.import_lookup(id)? {
        bail!(
            "subscription {id:?} differs from subscription {other:?} only by case; pick another id (merchant_uids \
             that differ only by case may be one order at the gateway); nothing was added"
        );
    }
    if charge_now {
        crate::commands::ops::refuse_if_billing_stopped(&cfg, &store)?;
    }
    // The billing key must be at the gateway before the subscription exists (a typo would make a subscription that
    // is rejected, and ended, at its first charge): asked first, and nothing is created when it is not there.
    let g = gateway(&cfg)?;
    let rt = runtime()?;
    let existing = rt.block_on(key_at_gateway(&g, customer_uid)).map_err(|e| e.context("nothing was added"))?;
    if register_card {
        refuse_replacing_unasked(&cfg, &store, customer_uid, existing.as_ref(), replace_key)?;
        let card = card(&cfg)?;
        let key = rt.block_on(issue_key(&g, customer_uid, &card, None, None))?;
        let detail = json!({ "customer_uid": customer_uid, "card": shown(&key.card), "replaced": existing.is_some() });
        crate::store::Events::log_event(&store, "customer.registered", None, detail, Utc::now())?;
        crate::say!("{}", moved(&cfg, &store, customer_uid, existing.as_ref(), shown(&key.card))?);
    } else if existing.is_none() {
        bail!(
            "no billing key {customer_uid:?} at the gateway: register the card first (`billd customers register \
             {customer_uid}`, or --register-card here); nothing was added"
        );
    }
    drop((rt, store));
    // None: never billed (a cancel date at or before its first charge).
    let first_due = sub.billed_due(&cfg.billing.clock, 0);
    // --charge-now makes the first period due at once; later periods keep the start date's anchor.
    let due = if charge_now { first_due.map(|t| t.min(now)) } else { first_due };
    open_store(&cfg)?.insert_manual(&sub, due, now)?;
    let tz = cfg.billing.clock.timezone;
    crate::say!(
        "subscription {id} added ({}): {}, first due {}",
        sub.status,
        crate::billing::terms::describe(&sub, &cfg.billing.clock),
        due.map(|t| human(t, tz)).unwrap_or_else(|| "never (nothing is charged)".into())
    );
    if !charge_now {
        return Ok(ExitCode::SUCCESS);
    }
    use crate::commands::ops::ChargedNow;
    match crate::commands::ops::charge_due_now(&cfg, id, now)? {
        ChargedNow::Attempt(r) if r.status == ChargeStatus::Paid => {
            crate::say!("first charge paid: {} (imp_uid {})", r.merchant_uid, r.imp_uid.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        ChargedNow::Attempt(r) => {
            eprintln!("first charge {}: {} {}", r.merchant_uid, r.status, r.fail_reason.unwrap_or_default());
            Ok(ExitCode::FAILURE)
        }
        ChargedNow::NoAttempt => bail!("the first charge was not attempted"),
        ChargedNow::LeftToDaemon => {
            crate::say!("the running billd charges the first period within a minute");
            Ok(ExitCode::SUCCESS)
        }
    }
}
