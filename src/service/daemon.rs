//! `billd run`: the long-running scheduler loop, its wake-ups, its signals and what it tells systemd.

use crate::app;
use crate::clock::{BillingClock, Start};
use crate::config::Config;
use crate::engine::{ConfigRefused, Engine, PassReport};
use crate::service::notify;
use crate::store::Store;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{error, info, warn};

/// The longest the loop sleeps without looking at the database (covers wall-clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Pause after a pass that could not run (e.g. the database was locked or the disk full).
const ERROR_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause between two tries while the gateway refuses the credentials (the first is `ERROR_PAUSE`,
/// doubling).
const UNAUTHORIZED_MAX_PAUSE: Duration = Duration::from_secs(300);
/// Under simulated time, the least pause after a pass that left charges waiting for their quiet period: that wait is
/// real time, and their next look, counted on the wall clock, is behind the simulated instant (without it the loop
/// would look them up again at once, over and over).
const SIMULATED_WAIT_PAUSE: Duration = Duration::from_secs(1);

/// `billd run`; `start`: the billing clock (`--as-of`, `--simulate`, `--speed`), checked against the config as
/// `tick --as-of` is (a future instant only with `--simulate`, and `--simulate` only against this machine).
pub fn run(path: &Path, start: Start) -> Result<ExitCode> {
    let cfg = app::load_config(path)?;
    if start.from.is_some() || start.simulate {
        let from = start.from.unwrap_or_else(Utc::now);
        crate::commands::simulate::check_as_of(&cfg, from, Utc::now(), start.simulate)?;
    }
    let mut engine = app::engine(cfg)?;
    let clock = BillingClock::start(start);
    let rt = app::runtime()?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let metrics = engine.metrics();
        metrics.beat();

        // tokio-cron-scheduler is only a wake-up ("look at the database now"), on a UTC schedule.
        let wake = Arc::new(Notify::new());
        let sched = JobScheduler::new().await.context("cannot start the scheduler")?;
        let w = wake.clone();
        sched
            .add(Job::new_async("0 * * * * *", move |_, _| {
                let w = w.clone();
                Box::pin(async move { w.notify_one() })
            })?)
            .await?;
        sched.start().await?;

        // The watchdog is pinged only while the scheduler loop shows progress.
        let watchdog = notify::watchdog_interval();
        if let Some(interval) = watchdog {
            let m = metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval / 2);
                loop {
                    tick.tick().await;
                    if m.since_beat() < interval {
                        notify::watchdog();
                    } else {
                        warn!(event = "daemon.stalled", "the scheduler loop made no progress for {:?}", m.since_beat());
                    }
                }
            });
        }
        if let Some(addr) = engine.config().metrics_listen {
            // A port taken (by any local user) never stops billing: an ERROR line, STATUS, and a retry.
            let listener = crate::service::metrics::bind(addr, &metrics).await;
            let stale = watchdog.unwrap_or(MAX_SLEEP + Duration::from_secs(60)).max(Duration::from_secs(120));
            let health = crate::service::metrics::Health { stale_after: stale, clock };
            tokio::spawn(crate::service::metrics::listen(listener, addr, metrics.clone(), health, wake.clone()));
        }

        // The webhook delivery service: a thread of its own, at a lower CPU priority, on a handle of its own, never
        // in the way of a charge.
        let (hooks, hooks_rx) = watch::channel(Arc::new(engine.config().clone()));
        let kick = Arc::new(Notify::new());
        let store = app::open_store(engine.config())?;
        crate::service::webhooks::start(store, hooks_rx, metrics.clone(), clock, kick.clone())?;

        // i'mport's notifications: settled with the engine in force (replaced after a reload), off the loop.
        let notices = engine.config().notices_listen.map(|addr| {
            let (tx, rx) = tokio::sync::watch::channel(engine.clone());
            tokio::spawn(crate::service::notices::run(addr, rx, clock));
            tx
        });

        // Startup: migrations ran when the store opened; apply the config, then tell systemd. Nothing here waits on
        // the gateway: unresolved attempts are reconciled by the first pass, after READY, as its first step (it
        // opens and sends nothing new before every one of them is looked up and recorded), so a large backlog or a
        // slow gateway never holds READY past TimeoutStartSec.
        if let Err(e) = engine.sync_if_jobs(clock.now()).await {
            error!(event = "config.refused", "config.refused: not applied, nothing is charged: {e:#}");
        }
        let (config, database) = (engine.config().file.display(), engine.config().billing.database.display());
        match clock {
            BillingClock::Wall => {
                info!(event = "daemon.started", config = %config, database = %database, "daemon.started")
            }
            BillingClock::Simulated { from, speed, .. } => warn!(event = "daemon.started", config = %config,
                database = %database, simulated_from = %from.to_rfc3339(), speed,
                "daemon.started: SIMULATING time from {} at {speed}x real speed; every charge due on that clock is \
                 sent to {} for real (the quiet periods stay on the real clock)",
                from.to_rfc3339(), engine.config().gateway.base_url),
        }
        notify::ready(&status_line(&engine, &clock, None).await);

        let max_sleep = watchdog.map(|w| (w / 2).min(MAX_SLEEP)).unwrap_or(MAX_SLEEP);
        let mut refusals = 0u32;
        loop {
            metrics.beat();
            if let Some(tx) = &notices {
                tx.send_replace(engine.clone());
            }
            if engine.config_refused().is_some() {
                // Nothing is charged while the file on disk is refused: look at it again (fixed, or applied
                // meanwhile with `billd sync --force`).
                retry_config(&mut engine, path, &clock, &hooks).await;
            }
            let (pass_at, pass_started) = (clock.now(), std::time::Instant::now());
            let result = {
                // The pass runs on a handle of its own, so that a SIGHUP during it is applied at once (its sync
                // cancels and voids in the book, and the pass's senders, which check the book at the moment a
                // request leaves, send nothing for what it removed), not after the pass.
                let runner = engine.clone();
                let pass = runner.charge_due(pass_at);
                tokio::pin!(pass);
                loop {
                    tokio::select! {
                        r = &mut pass => break r,
                        _ = term.recv() => stop(&engine, "SIGTERM"),
                        _ = int.recv() => stop(&engine, "SIGINT"),
                        _ = hup.recv() => reload(&mut engine, path, &clock, &hooks).await,
                    }
                }
            };
            // The pass's events go out now, not at the delivery service's next look.
            kick.notify_one();
            let mut refused = None;
            metrics
                .config_refused
                .store(result.as_ref().is_err_and(|e| e.downcast_ref::<ConfigRefused>().is_some()), Ordering::Relaxed);
            let pause = match &result {
                Err(e) if e.downcast_ref::<ConfigRefused>().is_some() => {
                    error!(
                        event = "config.refused",
                        "config.refused: nothing is charged while {} is refused: \
                        {e:#}; fix it (`billd check`, then `systemctl reload billd`) or apply it with `billd sync \
                        --force`",
                        engine.config().file.display()
                    );
                    ERROR_PAUSE.min(max_sleep)
                }
                Err(e) if e.downcast_ref::<crate::engine::SafetyStopped>().is_some() => {
                    error!(event = "billing.stopped", "billing.stopped: {e:#}");
                    ERROR_PAUSE.min(max_sleep)
                }
                Err(e)
                    if e.downcast_ref::<crate::engine::Unauthorized>().is_some()
                        || e.downcast_ref::<crate::engine::MassRejected>().is_some() =>
                {
                    // A configuration error: logged by the engine (gateway.unauthorized, pass.mass_rejection); billd
                    // stays up, says so, and tries again, backing off to every 5 minutes.
                    let unauthorized = e.downcast_ref::<crate::engine::Unauthorized>().is_some();
                    metrics.unauthorized.store(unauthorized, std::sync::atomic::Ordering::Relaxed);
                    refusals = refusals.saturating_add(1);
                    let pause = (ERROR_PAUSE * 2u32.saturating_pow(refusals.min(8) - 1)).min(UNAUTHORIZED_MAX_PAUSE);
                    refused = Some(pause);
                    pause.min(max_sleep)
                }
                Ok(r) => {
                    metrics.unauthorized.store(false, std::sync::atomic::Ordering::Relaxed);
                    refusals = 0;
                    if r.sent + r.reconciled + r.skipped + r.found_paid > 0 {
                        r.log_done(pass_at, pass_started.elapsed());
                    }
                    let pause = r.next_wake.map(|t| clock.real_until(t)).unwrap_or(MAX_SLEEP).min(max_sleep);
                    if clock.simulated() && r.deferred > 0 { pause.max(SIMULATED_WAIT_PAUSE) } else { pause }
                }
                Err(e) => {
                    error!(event = "pass.error", "the pass could not run: {e:#}");
                    ERROR_PAUSE.min(max_sleep)
                }
            };
            if engine.stopping() {
                break;
            }
            match refused {
                _ if metrics.config_refused.load(Ordering::Relaxed) => notify::status(&format!(
                    "CONFIG REFUSED: {} was not applied; nothing is charged until it is fixed or applied with \
                     `billd sync --force`{}",
                    engine.config().file.display(),
                    notes(&engine, &clock)
                )),
                _ if metrics.safety_stop.load(Ordering::Relaxed) => notify::status(&format!(
                    "SAFETY STOP: limits.max_charges_per_pass tripped; nothing is charged until an operator raises the \
                     limit or runs `billd safety release`{}",
                    notes(&engine, &clock)
                )),
                Some(pause) if metrics.mass_rejection.load(Ordering::Relaxed) => notify::status(&format!(
                    "MASS REJECTION: the gateway rejected a mass of charges in the last pass (wrong account or keys?); \
                     they were withheld, no subscription changed; trying again in {} s{}",
                    pause.as_secs(),
                    notes(&engine, &clock)
                )),
                Some(pause) => notify::status(&format!(
                    "UNAUTHORIZED: the gateway refuses gateway.imp_key {:?} and its imp_secret; nothing is charged; \
                     trying again in {} s{}",
                    engine.config().gateway.imp_key,
                    pause.as_secs(),
                    notes(&engine, &clock)
                )),
                None => notify::status(&status_line(&engine, &clock, result.as_ref().ok()).await),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
                _ = term.recv() => { stop(&engine, "SIGTERM"); break }
                _ = int.recv() => { stop(&engine, "SIGINT"); break }
                _ = hup.recv() => reload(&mut engine, path, &clock, &hooks).await,
            }
        }
        let _ = sched.clone().shutdown().await;
        info!(event = "daemon.stopped", "daemon.stopped");
        Ok(ExitCode::SUCCESS)
    })
}

fn stop<S: Store>(engine: &Engine<S, app::PaymentGateway>, signal: &str) {
    if !engine.stopping() {
        info!(event = "daemon.stopping", signal, "daemon.stopping: finishing in-flight charges");
        notify::stopping("stopping: finishing in-flight charges");
        engine.stop();
    }
}

/// While the config is refused: reads the file on disk again and tries to apply it (quietly: the pass that follows
/// logs the refusal if it stands).
async fn retry_config<S: Store>(
    engine: &mut Engine<S, app::PaymentGateway>,
    path: &Path,
    clock: &BillingClock,
    hooks: &watch::Sender<Arc<Config>>,
) {
    if let Ok(new) = load_for_reload(path) {
        engine.set_config(new);
        hooks.send_replace(Arc::new(engine.config().clone()));
    }
    if engine.sync_if_jobs(clock.now()).await.is_ok_and(|plan| plan.is_some()) {
        info!(event = "config.applied", "config.applied: the config is applied again; charging resumes");
    }
}

/// The config on disk as the running daemon takes it (a reload, or a retry while the config is refused): valid, and
/// with a `[webhooks]` secret that can be read, as `billd check` requires (one that cannot would stop delivery).
fn load_for_reload(path: &Path) -> anyhow::Result<Config> {
    app::load_config(path).and_then(|new| match new.webhooks.as_ref().map(|h| h.secret.resolve()) {
        Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
        _ => Ok(new),
    })
}

/// SIGHUP: reload and apply the config; an invalid file is refused and the running config stays in force.
async fn reload<S: Store>(
    engine: &mut Engine<S, app::PaymentGateway>,
    path: &Path,
    clock: &BillingClock,
    hooks: &watch::Sender<Arc<Config>>,
) {
    notify::reloading();
    match load_for_reload(path) {
        Ok(new) => {
            let old = engine.config();
            if new.gateway.base_url != old.gateway.base_url
                || new.gateway.imp_key != old.gateway.imp_key
                || new.gateway.concurrency != old.gateway.concurrency
                || new.gateway.timeout != old.gateway.timeout
                || new.gateway.rate_limit != old.gateway.rate_limit
                || new.billing.database != old.billing.database
                || new.metrics_listen != old.metrics_listen
                || new.notices_listen != old.notices_listen
            {
                warn!(
                    event = "config.reload",
                    "gateway, database, metrics or notices settings changed: restart billd to apply them"
                );
            }
            engine.set_config(new);
            // The delivery service takes the new [webhooks] (and billing time zone) at once.
            hooks.send_replace(Arc::new(engine.config().clone()));
            match engine.sync_if_jobs(clock.now()).await {
                Ok(Some(plan)) => {
                    info!(event = "config.reload", changes = plan.changes.len(), "config.reload: applied")
                }
                Ok(None) => info!(event = "config.reload", "config.reload: read; applied by the daemon doing the jobs"),
                Err(e) => error!(event = "config.reload", "config.reload: not applied: {e:#}"),
            }
        }
        Err(e) => {
            // One line per event (README): the config's problems are joined.
            let problems = e.to_string().replace("\n  ", "; ");
            error!(
                event = "config.reload",
                "config.reload: new config refused, the running one stays in force: {problems}"
            )
        }
    }
    notify::ready(&status_line(engine, clock, None).await);
}

/// One line for `systemctl status`: what is due, in flight and failed (and the simulated instant, if simulating).
async fn status_line<S: Store>(
    engine: &Engine<S, app::PaymentGateway>,
    clock: &BillingClock,
    report: Option<&PassReport>,
) -> String {
    let now = clock.now();
    let tz = engine.config().billing.clock.timezone;
    let midnight = engine.config().billing.clock.due_at_midnight(engine.config().billing.clock.local_date(now));
    let max_amount = engine.config().limits.max_amount;
    let counts = engine
        .db(move |s| Ok((s.due_backlog(now, max_amount)?, s.failed_since(midnight)?, s.unresolved_count()?)))
        .await;
    let in_flight = engine.metrics().in_flight.load(std::sync::atomic::Ordering::Relaxed);
    match counts {
        Ok((due, failed, unresolved)) => {
            engine.metrics().due_backlog.store(due, std::sync::atomic::Ordering::Relaxed);
            let next = report
                .and_then(|r| r.next_wake)
                .map(|t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
                .unwrap_or_else(|| "-".into());
            format!(
                "due now {due}, in flight {in_flight}, failed today {failed}, unresolved {unresolved}; next wake \
                 {next}{}",
                notes(engine, clock)
            )
        }
        Err(e) => format!("database error: {e:#}{}", notes(engine, clock)),
    }
}

/// The end of every STATUS line: the simulated instant, if simulating, and whether the metrics listener is down.
fn notes<S: Store>(engine: &Engine<S, app::PaymentGateway>, clock: &BillingClock) -> String {
    let sim = clock.describe(engine.config().billing.clock.timezone);
    format!("{}{}", if sim.is_empty() { String::new() } else { format!("; {sim}") }, listener_note(engine))
}

/// The end of the STATUS line while `[metrics] listen` cannot be bound (empty otherwise).
fn listener_note<S: Store>(engine: &Engine<S, app::PaymentGateway>) -> String {
    match engine.config().metrics_listen {
        Some(addr) if engine.metrics().listener_down.load(Ordering::Relaxed) => format!(
            "; METRICS DOWN: cannot bind metrics.listen {addr} (billing goes on; trying again every {} s)",
            crate::service::metrics::BIND_RETRY.as_secs()
        ),
        _ => String::new(),
    }
}
