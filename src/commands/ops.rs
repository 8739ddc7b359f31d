//! Operator commands on a live database: upcoming charges, pause, resume, cancel, retry, the safety stop.

use crate::app::{engine, load_config, runtime};
use crate::app::{existing_store, open_store};
use crate::billing::model::{Status, resume_plan};
use crate::commands::present::human;
use crate::store::{Book, ChargeStatus, Ledger, StatusSet, Store, Views, ceil_second};
use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use std::path::Path;
use std::process::ExitCode;

fn open(path: &Path) -> Result<(crate::config::Config, impl Store)> {
    let cfg = load_config(path)?;
    let store = existing_store(&cfg)?;
    Ok((cfg, store))
}

/// The instant an operator command acts at (`--as-of`, default now), checked like `tick`'s: a future one only with
/// `--simulate` against a sandbox on this machine.
pub type At = (chrono::DateTime<Utc>, bool);

fn open_at(path: &Path, (now, simulate): At) -> Result<(crate::config::Config, impl Store)> {
    let (cfg, store) = open(path)?;
    crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    Ok((cfg, store))
}

fn existing(store: &impl Store, id: &str) -> Result<crate::billing::model::Subscription> {
    store.subscription(id)?.ok_or_else(|| anyhow!("no subscription {id:?} in {}", store.location()))
}

/// For a refusal: how a subscription that dunning stopped bills again (empty for any other).
fn by_dunning(store: &impl Store, id: &str) -> Result<String> {
    Ok(match store.subscription_row(id)? {
        Some(r) if r.stopped_by_dunning => format!(
            " (by dunning): once its customer has a card that pays, `billd reactivate {id}` bills it again \
             (`--charge-now` charges its given-up period first)"
        ),
        _ => String::new(),
    })
}

/// `until`: the local date it resumes by itself (at its first instant), and whether the periods that fell due while
/// paused are then charged (`--catch-up`).
pub fn pause(path: &Path, id: &str, until: Option<(&str, bool)>, at: At) -> Result<ExitCode> {
    let (cfg, store) = open_at(path, at)?;
    let sub = existing(&store, id)?;
    let clock = cfg.billing.clock;
    let until = until
        .map(|(date, catch_up)| -> Result<_> {
            let d = crate::config::parse_date(date).map_err(|e| anyhow!("--until: {e}"))?;
            let resume_at = clock.due_at_midnight(d);
            if resume_at <= at.0 {
                bail!("--until {d} is not after now ({}): nothing changed", human(at.0, clock.timezone));
            }
            Ok((resume_at, catch_up))
        })
        .transpose()?;
    let then = |(t, catch_up): (chrono::DateTime<Utc>, bool)| {
        let what =
            if catch_up { "the periods due meanwhile charged then" } else { "the periods due meanwhile skipped" };
        match sub.cancel_at.filter(|c| *c < t && !catch_up) {
            // The store ends such a pause at its cancel date (`end_in`): it never resumes.
            Some(c) => format!(
                "its cancel date {} comes first: it is canceled then and never resumes ({what})",
                human(c, clock.timezone)
            ),
            None => format!("it resumes by itself at {} ({what})", human(t, clock.timezone)),
        }
    };
    let by_dunning = store.subscription_row(id)?.is_some_and(|r| r.stopped_by_dunning);
    match sub.status {
        s if s.is_final() => bail!("subscription {id:?} is {s}; it cannot be paused"),
        Status::Suspended if until.is_none() && by_dunning => crate::say!(
            "{id}: already suspended (by dunning); nothing changed. `billd reactivate {id}` restarts it once its \
             customer has a card that pays"
        ),
        Status::Suspended if until.is_none() => crate::say!("{id}: already suspended; nothing changed"),
        _ => {
            // Rounded up: the pause is never recorded before it happened (a period due in that very second is
            // owed, not skipped, at resume).
            let set = store.pause(id, ceil_second(at.0), "paused by operator", until)?;
            let end = until.map(then).unwrap_or_else(|| format!("nothing is charged until `billd resume {id}`"));
            crate::say!("{id}: suspended; {}", promise(set, &end));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `billd safety`: whether a safety rail stopped billing, and why; `release`: the operator's confirmation that lifts
/// it (the next pass may send up to `limits.max_charges_per_pass` again).
pub fn safety(path: &Path, release: bool) -> Result<ExitCode> {
    let (cfg, store) = open(path)?;
    let max = cfg.limits.max_charges_per_pass;
    let stop =
        if release { store.release_billing("released by operator", Utc::now())? } else { store.safety_stop()? };
    let since = |s: &crate::store::SafetyStop| crate::commands::present::human(s.at, cfg.billing.clock.timezone);
    let why = |s: &crate::store::SafetyStop| crate::text::quote(&s.reason);
    match (stop, release) {
        (None, false) => crate::say!("billing runs: no safety stop (limits.max_charges_per_pass = {max})"),
        (None, true) => crate::say!("billing runs: there was no safety stop; nothing changed"),
        (Some(s), false) if s.lifted_by(max) => {
            crate::say!(
                "billing was stopped at {} ({}); limits.max_charges_per_pass is now {max} in {}, above the {} that \
                 tripped: the next pass lifts the stop",
                since(&s),
                why(&s),
                cfg.file.display(),
                s.max_charges_per_pass
            )
        }
        (Some(s), false) if s.released => {
            crate::say!(
                "billing was stopped at {} ({}); an operator released it: the next pass may send up to {max} charges",
                since(&s),
                why(&s)
            )
        }
        (Some(s), false) => {
            crate::say!("billing is STOPPED since {}: {}", since(&s), why(&s));
            crate::say!(
                "nothing is charged until an operator acts: raise limits.max_charges_per_pass in {} above {}, or \
                 confirm with `billd safety release` (the next pass then sends up to {max} charges, and stops again \
                 if more is due)",
                cfg.file.display(),
                s.max_charges_per_pass
            );
            // A script can tell: stopped is not "billing runs".
            return Ok(ExitCode::FAILURE);
        }
        (Some(s), true) => {
            crate::say!("released the safety stop of {} ({})", since(&s), why(&s));
            crate::say!(
                "the next pass sends up to limits.max_charges_per_pass ({max}) of what is due, then stops again if \
                 more is due; a running billd starts within 30 s (or at once with `systemctl reload billd`)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Before a command stamps due times with the config's clock (`resume`, `subscriptions add`, `import`): refused when
/// `billing.timezone` or `charge_time` in the config differ from the clock in force in the database (the one of the
/// last sync), so that a command never re-times a charge with a config other than the one in force.
pub fn refuse_another_clock(cfg: &crate::config::Config, store: &impl Book) -> Result<()> {
    match store.book_clock()? {
        Some(c) if c != cfg.billing.clock => bail!(
            "{}: billing.timezone and charge_time ({} {}) differ from those in force in the database ({} {}, from \
             the last sync); apply the file first with `billd sync` (which re-times every next charge), or use the \
             config in force; nothing was changed",
            cfg.file.display(),
            cfg.billing.clock.charge_time.format("%H:%M"),
            cfg.billing.clock.timezone,
            c.charge_time.format("%H:%M"),
            c.timezone
        ),
        _ => Ok(()),
    }
}

/// Before a command that charges changes anything (`retry` moves a retry to now, `subscriptions add --charge-now`
/// creates a subscription): refused while a safety stop stands that the config in force does not lift, as the pass
/// it would run would be.
pub fn refuse_if_billing_stopped(cfg: &crate::config::Config, store: &impl Book) -> Result<()> {
    match store.safety_stop()? {
        Some(stop) if !stop.released && !stop.lifted_by(cfg.limits.max_charges_per_pass) => {
            let (file, tz) = (cfg.file.display().to_string(), cfg.billing.clock.timezone);
            Err(crate::engine::SafetyStopped { stop, file, tz }.into())
        }
        _ => Ok(()),
    }
}

pub fn cancel(path: &Path, id: &str, at_period_end: bool, at: At) -> Result<ExitCode> {
    let (cfg, store) = open_at(path, at)?;
    let sub = existing(&store, id)?;
    if at_period_end && !sub.status.is_final() {
        // The end of the period in force: the first instant of the next period's day (nothing due that day or later
        // is charged, whatever a later charge_time says: an outsider moved it earlier and the period was charged).
        let Some(next) = store.next_due_at(id)? else {
            bail!(
                "subscription {id:?} has no next period: nothing more is charged; `billd cancel {id}` cancels it now"
            );
        };
        if !sub.status.bills() {
            bail!("subscription {id:?} is {}; cancel it now with `billd cancel {id}`", sub.status);
        }
        // The file is the source of a config subscription: a sync would undo a cancel_at set here.
        if sub.source == crate::billing::model::Source::Config {
            bail!(
                "subscription {id:?} comes from {}: set `cancel_at = \"YYYY-MM-DD\"` in its entry (the next sync \
                 applies it); nothing changed",
                cfg.file.display()
            );
        }
        let clock = cfg.billing.clock;
        // A period that fell due and is not charged yet (no pass since: billd down, an hourly timer) is owed: the
        // period in force is the last one due, and it ends with the first due after now (an outsider's cancel ended
        // at an instant already past, and the owed period was never charged).
        let (mut period, mut ends) = (sub.next_period, next);
        while ends <= at.0 {
            period += 1;
            match sub.calendar().due_at(&clock, period) {
                Some(t) => ends = t,
                None => bail!("subscription {id:?} has no due date after period {}; nothing changed", period - 1),
            }
        }
        let owed = period - sub.next_period;
        let day = clock.local_date(ends);
        let end = clock.due_at_midnight(day);
        store.cancel_at(id, end, at.0, "canceled at period end by operator")?;
        if owed > 0 {
            crate::say!(
                "{id}: {owed} period(s) from period {} (due {}) fell due and are not charged yet: they are charged \
                 as usual",
                sub.next_period,
                human(next, clock.timezone)
            );
        }
        crate::say!(
            "{id}: canceling; billed until the end of its period in force, {} (that next charge is not made): no \
             period due on {day} or later is charged, and it is canceled from {}",
            human(ends, clock.timezone),
            human(end, clock.timezone)
        );
        let pending = crate::store::Changes::plan_changes(&store, id)?;
        if let Some(r) = pending.iter().find(|r| r.state == crate::store::ChangeState::Pending) {
            crate::say!(
                "{id}: its plan change to {} is not settled yet: if its charge is paid, a change of interval does \
                 not apply (its charge is credited, refundable once it is canceled); one that keeps the period does",
                r.change.to_plan_id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if sub.status.is_final() {
        crate::say!("{id}: already {}", sub.status);
    } else {
        let set = store.set_status(id, Status::Canceled, at.0, "canceled by operator")?;
        // The credit it held, as the cancel released it (credits are never lost).
        let released = match set.map_or(0, |s| s.credit_released) {
            0 => String::new(),
            n => format!(
                "; its credit of {n} {} is released: the customer's, refundable from the charges of the periods whose \
                 changes credited it (`billd refund MERCHANT_UID --amount N`; `billd subscriptions show {id}` lists \
                 them)",
                sub.currency
            ),
        };
        crate::say!("{id}: canceled; {} (history kept){released}", promise(set, "it will never be charged again"));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a pause or a cancel can promise, once committed: nothing more is sent, except that a charge whose request
/// had already left is settled (by lookup), never repeated.
fn promise(set: Option<StatusSet>, nothing_more: &str) -> String {
    let set = set.unwrap_or(StatusSet {
        before: Status::Canceled,
        voided: 0,
        in_flight: 0,
        change_charges: 0,
        changes_withdrawn: 0,
        credit_released: 0,
    });
    let withdrawn = match set.voided {
        0 => String::new(),
        1 => " (one charge claimed by a pass was withdrawn before it was sent)".into(),
        n => format!(" ({n} charges claimed by a pass were withdrawn before they were sent)"),
    };
    let withdrawn = match set.changes_withdrawn {
        0 => withdrawn,
        _ => format!(
            "{withdrawn} (a plan change whose charge had not been sent was withdrawn: its charge is never sent, the \
             plan stays as it was)"
        ),
    };
    // A plan change's charge already sent (issue 25): settled by lookup too; if paid, the change does not apply.
    let change = match set.change_charges {
        0 => "",
        _ => {
            " (a plan change's charge among them: if it is paid, the change does not apply and the amount is \
               credited to the subscription, refundable once it has ended; see `billd subscriptions show`)"
        }
    };
    match set.in_flight {
        0 => format!("{nothing_more}{withdrawn}"),
        1 => format!(
            "one charge already sent will be settled, not repeated{change}; beyond it, {nothing_more}{withdrawn}"
        ),
        n => format!(
            "{n} charges already sent will be settled, not repeated{change}; beyond them, {nothing_more}{withdrawn}"
        ),
    }
}

pub fn resume(path: &Path, id: &str, catch_up: bool, at: At) -> Result<ExitCode> {
    let (cfg, store) = open_at(path, at)?;
    match existing(&store, id)?.status {
        s if s.is_final() => bail!("subscription {id:?} is {s}; it cannot be resumed{}", by_dunning(&store, id)?),
        Status::Suspended => refuse_another_clock(&cfg, &store)?,
        s => {
            crate::say!("{id}: not suspended ({s}); nothing changed");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let now = at.0;
    let clock = cfg.billing.clock;
    // Where billing restarts is decided from the subscription and its pause as they are inside the write
    // transaction: only periods that fell due while it was paused (until its own end, if that came) are skipped
    // (unless --catch-up), never one that fell due before.
    let mut plan = None;
    let (sub, _) = store.resume_with(id, now, "resumed by operator", |sub, pause| {
        let (r, next_due, skip) = resume_plan(sub, pause, now, catch_up, &clock);
        plan = Some((r, pause.ended_by(now).then_some(pause.until).flatten()));
        Ok((r.next_period, next_due, skip))
    })?;
    let (r, ended) = plan.expect("the restart was decided");
    let local = |t| human(t, clock.timezone);
    let mut said = format!("{id}: resumed");
    if let Some(t) = ended {
        said += &format!(" (its pause ended by itself at {})", local(t));
    }
    if r.skipped > 0 {
        said +=
            &format!("; {} period(s) that fell due while paused are not charged (--catch-up charges them)", r.skipped);
    }
    if r.owed > 0 {
        said += &format!("; {} that fell due before the pause will be", r.owed);
    }
    // What it is now (decided in the resume's transaction): a subscription with nothing left to bill ended there.
    let after = existing(&store, id)?;
    let end = after.cancel_at.map(local).unwrap_or_default();
    match after.status {
        Status::Completed => said += "; its term is over, nothing is left to bill: completed",
        Status::Canceled => said += &format!("; its cancel date ({end}) has passed, nothing is left to bill: canceled"),
        status => {
            match sub.billed_due(&clock, r.next_period) {
                Some(t) => said += &format!("; next charge {}", local(t)),
                None => said += "; no further charge",
            }
            if status == Status::Canceling {
                said += &format!("; canceling: no period due from {end} on is charged, and it is canceled then");
            }
        }
    }
    crate::say!("{said}");
    Ok(ExitCode::SUCCESS)
}

/// `billd reactivate`: a subscription dunning stopped bills again; with `charge_now`, its given-up period is charged
/// now (exit 0 only if paid, as for `retry`).
/// What an operator should know when `id` has a charge in doubt (an attempt whose answer was never recorded: a
/// pass or command killed while it was out), as a tail for a refusal; empty when none is.
fn in_doubt(store: &impl Store, id: &str) -> Result<String> {
    let (periods, _) = store.subscription_story(id)?;
    let doubtful = periods.iter().find(|p| p.attempts.iter().any(|a| a.status.unresolved()));
    Ok(doubtful.map_or_else(String::new, |p| {
        format!(
            "; its period {} charge {} is in doubt (its answer was not recorded): the next pass (`billd tick`, or the \
             running billd) looks it up and settles it, never charging it twice (`billd subscriptions show {id}`)",
            p.period, p.merchant_uid
        )
    }))
}

pub fn reactivate(path: &Path, id: &str, charge_now: bool, at: At) -> Result<ExitCode> {
    let (cfg, store) = open_at(path, at)?;
    existing(&store, id)?;
    refuse_another_clock(&cfg, &store)?;
    if charge_now {
        refuse_if_billing_stopped(&cfg, &store)?;
    }
    let (now, clock) = (at.0, cfg.billing.clock);
    // The periods it does not charge: from its next one to where billing continues (decided inside the transaction,
    // from the subscription as it is there).
    let mut passed = Vec::new();
    let reactivated = store.reactivate(id, now, charge_now, |sub| {
        let (period, due) = crate::billing::model::reactivation_period(sub, now, &clock);
        passed = (sub.next_period..period).filter_map(|p| Some((p, sub.billed_due(&clock, p)?))).collect();
        (period, due)
    });
    let (period, reopened) = match reactivated {
        Ok(r) => r,
        Err(e) => bail!("{e:#}{}", in_doubt(&store, id)?),
    };
    let local = |t| human(t, clock.timezone);
    let after = existing(&store, id)?;
    let next = match store.next_due_at(id)? {
        Some(t) => format!("period {period} ({})", local(t)),
        None => "no further period (nothing is left to bill after it)".to_string(),
    };
    let mut said = format!("{id}: reactivated; billing continues with {next}");
    if !passed.is_empty() {
        let list: Vec<String> = passed.iter().map(|(p, t)| format!("period {p} ({})", local(*t))).collect();
        said += &format!("; not charged, as it fell due while it was stopped: {}", list.join(", "));
    }
    if !charge_now {
        said += "; the period whose retries ran out is not charged either (--charge-now charges it)";
    }
    if after.status == Status::Canceling {
        let end = after.cancel_at.map(local).unwrap_or_default();
        said += &format!("; canceling: no period due from {end} on is charged");
    }
    crate::say!("{said}");
    let Some(p) = reopened.filter(|_| charge_now) else {
        if charge_now {
            crate::say!("{id}: no period was given up; nothing to charge now");
        }
        return Ok(ExitCode::SUCCESS);
    };
    drop(store);
    match charge_due_now(&cfg, id, now)? {
        ChargedNow::Attempt(r) if r.status == ChargeStatus::Paid => {
            crate::say!("{id}: period {p} ({}) paid", r.merchant_uid);
            Ok(ExitCode::SUCCESS)
        }
        ChargedNow::Attempt(r) => {
            eprintln!(
                "{id}: period {p} ({}): {}{}",
                r.merchant_uid,
                r.status,
                r.fail_reason.map(|f| format!(" ({f})")).unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
        ChargedNow::NoAttempt => {
            eprintln!("{id}: period {p} was not charged (see `billd subscriptions show {id}`)");
            Ok(ExitCode::FAILURE)
        }
        ChargedNow::LeftToDaemon => {
            crate::say!("{id}: period {p} is due now; the running billd charges it");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn retry(path: &Path, id: &str, at: At) -> Result<ExitCode> {
    let (cfg, store) = open_at(path, at)?;
    let sub = existing(&store, id)?;
    if !sub.status.bills() {
        match by_dunning(&store, id)? {
            hint if hint.is_empty() => bail!("subscription {id:?} is {}; resume it first", sub.status),
            hint => bail!("subscription {id:?} is {}{hint}", sub.status),
        }
    }
    if let Some((period, merchant_uid, why)) = store.held_period(id)? {
        bail!(
            "{id}: period {period} is held: {why}. i'mport never pays a merchant_uid twice, not even after a refund, \
             so billd cannot charge {merchant_uid} again; settle it with whoever made that payment (see `billd \
             subscriptions show {id}`)"
        );
    }
    refuse_if_billing_stopped(&cfg, &store)?;
    let now = at.0;
    if !store.retry_now(id, now)? {
        if sub.status == Status::Active {
            bail!(
                "subscription {id:?} is active, not past due: no unpaid period to retry (a retry charges a past-due \
                 subscription's open period now){}",
                in_doubt(&store, id)?
            );
        }
        bail!("subscription {id:?} has no unpaid period waiting for a retry (an attempt may be in flight)");
    }
    drop(store);
    // Like `subscriptions add --charge-now`: exit 0 only when the retried charge is paid (or handed to the daemon).
    // The retry is asked for: if the pass cannot make it now, it stays due, and a later pass makes it.
    let charged = charge_due_now(&cfg, id, now).with_context(|| {
        format!("{id}: the retry was not made now; it stays due, and the next pass (the running billd, or `billd tick`) makes it")
    })?;
    match charged {
        ChargedNow::Attempt(r) => {
            let line = format!(
                "{id}: attempt {} of period {} ({}): {}{}",
                r.attempt,
                r.period,
                r.merchant_uid,
                r.status,
                r.fail_reason.map(|f| format!(" ({f})")).unwrap_or_default()
            );
            if r.status == ChargeStatus::Paid {
                crate::say!("{line}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{line}");
                Ok(ExitCode::FAILURE)
            }
        }
        ChargedNow::NoAttempt => bail!("{id}: the retry was not attempted"),
        ChargedNow::LeftToDaemon => {
            crate::say!("{id}: retry scheduled; the running billd charges it within a minute");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What [`charge_due_now`] did for a subscription.
pub enum ChargedNow {
    /// Its latest attempt, as recorded after the pass.
    Attempt(Box<crate::store::ChargeRow>),
    /// The pass ran and the subscription has no attempt.
    NoAttempt,
    /// A running daemon holds the lock: it charges it within a minute.
    LeftToDaemon,
}

/// Runs a pass now for what is due of subscription `id` only (operator `retry`, `reactivate --charge-now`,
/// `subscriptions add --charge-now`; the config is applied first, as by every pass) and returns what became of it.
pub fn charge_due_now(cfg: &crate::config::Config, id: &str, now: chrono::DateTime<Utc>) -> Result<ChargedNow> {
    match engine(cfg.clone()) {
        Ok(engine) => {
            // This subscription only: every other one due is left to the next pass (`run`, `tick`).
            let engine = engine.only(id);
            // The config in force is applied first, under the same guard as a pass (a refused config charges
            // nothing).
            runtime()?.block_on(engine.pass(now))?;
            let store = open_store(cfg)?;
            let last = store.list_charges(false, None, Some(id), 0)?.into_iter().last().map(|(_, r)| r);
            Ok(last.map_or(ChargedNow::NoAttempt, |r| ChargedNow::Attempt(Box::new(r))))
        }
        Err(e) if format!("{e:#}").contains("in use by another") => {
            // The running billd charges nothing while the config is refused: say so rather than promise a charge.
            let store = open_store(cfg)?;
            let subs = store.config_subscriptions()?;
            let plan = cfg.sync_plan(&subs, cfg.billing.clock.local_date(now));
            if let Some(why) = crate::billing::sync::refusal(&plan, &subs, &cfg.file) {
                bail!("{why}; the running billd charges nothing until then");
            }
            Ok(ChargedNow::LeftToDaemon)
        }
        Err(e) => Err(e),
    }
}
