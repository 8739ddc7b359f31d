//! `billd tick` (one pass at an instant) and `billd sync` (apply schedules.toml to the database).

use crate::app::open_store;
use crate::app::{engine, load_config, runtime};
use crate::store::Book;
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::process::ExitCode;

pub fn tick(path: &Path, now: DateTime<Utc>, simulate: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    // The webhook secret is read before anything is charged: a tick that exits 1 charged nothing.
    let deliverer = crate::webhooks::deliver::Deliverer::new(&cfg)?;
    let hooks = open_store(&cfg)?;
    let engine = engine(cfg)?;
    let started = std::time::Instant::now();
    let rt = runtime()?;
    let report = rt.block_on(engine.pass(now))?;
    report.log_done(now, started.elapsed());
    // Once at the end of each tick, after the book's scheduler lock is let go (a next tick, or a `retry`, is never
    // held up by a slow app): the events of the pass (and any others due), each tried at most once, for at most
    // twice webhooks.timeout; what is left waits for the next tick or the daemon.
    let metrics = engine.metrics();
    drop(engine);
    rt.block_on(deliverer.once(hooks, &metrics, now))?;
    Ok(ExitCode::SUCCESS)
}

/// `(now, simulate)`: the instant it applies the file at (`--as-of`), checked as `tick`'s is.
pub fn sync(path: &Path, dry_run: bool, force: bool, (now, simulate): crate::commands::ops::At) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    // A dry run writes and sends nothing: any instant may be looked at.
    if !dry_run {
        crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    }
    let store = open_store(&cfg)?;
    let today = cfg.billing.clock.local_date(now);
    let show = |plan: &crate::billing::sync::SyncPlan| {
        for w in &plan.warnings {
            crate::say!("warning: {w}");
        }
        for n in &plan.notes {
            crate::say!("note: {n}");
        }
        for r in &plan.refused {
            crate::say!("refused: {r}");
        }
        for c in &plan.changes {
            match c {
                crate::billing::sync::Change::Insert(s) => {
                    crate::say!("add     {} ({})", s.id, crate::billing::terms::describe(s, &cfg.billing.clock))
                }
                crate::billing::sync::Change::Update { after, what, .. } => {
                    crate::say!("update  {}: {}", after.id, what.join("; "))
                }
                crate::billing::sync::Change::Cancel { id, reason } => crate::say!("cancel  {id}: {reason}"),
            }
        }
    };
    // After the plan is applied: the re-timing the store did (or would do), whether there was anything at all, and
    // the subscriptions added by command or import that bill a plan at another price than the file's (a sync never
    // reprices them: grandfathered).
    let grandfathered = grandfathered(&cfg, &store)?;
    let after = |plan: &crate::billing::sync::SyncPlan| {
        if let Some(r) = &plan.retimed {
            crate::say!("update  {r}");
        }
        if plan.is_empty() {
            crate::say!("in sync: nothing to change");
        }
        for g in &grandfathered {
            crate::say!("note: {g}");
        }
    };
    if dry_run {
        let mut plan = cfg.sync_plan(&store.config_subscriptions()?, today);
        plan.retimed = store.book_clock()?.filter(|c| *c != cfg.billing.clock).map(|old| {
            let new = cfg.billing.clock;
            format!(
                "charge time {} {} -> {} {}: every next charge not yet claimed would be re-timed",
                old.charge_time.format("%H:%M"),
                old.timezone,
                new.charge_time.format("%H:%M"),
                new.timezone
            )
        });
        show(&plan);
        after(&plan);
        // What the next pass would skip, never charge (billing.catch_up_window).
        let window = cfg.billing.catch_up_window.map(crate::config::duration::format).unwrap_or_default();
        for (id, period, due) in crate::commands::upcoming::skipped_by_window(&cfg, &store, now)? {
            let due = crate::commands::present::human(due, cfg.billing.clock.timezone);
            crate::say!(
                "skip    {id} period {period} (due {due}): older than catch_up_window ({window}), never charged"
            );
        }
        // As `billd sync` would judge it: the mass-cancel guard (or any refusal) is said, and the dry run exits 1.
        let subs = store.config_subscriptions()?;
        if let Some(why) = crate::billing::sync::refusal(&plan, &subs, &cfg.file).filter(|_| !force) {
            eprintln!("refused: {why} (`billd sync` would apply nothing; --force applies it anyway)");
            return Ok(ExitCode::FAILURE);
        }
        if !plan.is_empty() {
            crate::say!("dry run: nothing changed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Planned and applied in one write transaction, from the rows as they are in it (a pass running meanwhile is
    // never overwritten with a stale read).
    let mut refused = false;
    let plan = store.sync_with(&cfg.billing.clock, now, |subs| {
        let plan = cfg.sync_plan(subs, today);
        if let Some(why) = crate::billing::sync::refusal(&plan, subs, &cfg.file).filter(|_| !force) {
            show(&plan);
            refused = true;
            bail!(why);
        }
        Ok(plan)
    });
    match plan {
        Ok(plan) => {
            // As applied: the store holds back the updates of subscriptions whose plan change is not settled.
            show(&plan);
            after(&plan);
            if !plan.changes.is_empty() {
                crate::say!("applied {} change(s)", plan.changes.len());
            }
        }
        Err(e) if refused => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// The plans whose price in the file differs from what subscriptions added by command or import are charged on them
/// (their price when added, or their own `--amount`), in words: a sync never reprices those (grandfathering).
fn grandfathered(cfg: &crate::config::Config, store: &impl crate::store::Views) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (plan, amount, n) in store.manual_prices()? {
        let Some(p) = cfg.plan(&plan).filter(|p| p.amount != amount) else { continue };
        let (s, are) = if n == 1 { ("", "is") } else { ("s", "are") };
        out.push(format!(
            "{n} subscription{s} added by command or import on plan {plan} {are} charged {amount} {}, not its price in \
             the file ({} {}): a sync never reprices them (they keep the price they were added with, or their own \
             --amount); `billd subscriptions change ID --plan P` moves one to plan P's price",
            p.currency, p.amount, p.currency
        ));
    }
    Ok(out)
}
