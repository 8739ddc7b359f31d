//! `billd run`: the long-running scheduler loop, its wake-ups, its signals and what it tells systemd.

use crate::app;
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
use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{error, info, warn};

/// The longest the loop sleeps without looking at the database (covers wall-clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Pause after a pass that could not run (e.g. the database was locked or the disk full).
const ERROR_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause between two tries while the gateway refuses the credentials (the first is `ERROR_PAUSE`,
/// doubling).
const UNAUTHORIZED_MAX_PAUSE: Duration = Duration::from_secs(300);

pub fn run(path: &Path) -> Result<ExitCode> {
    let cfg = app::load_config(path)?;
    let mut engine = app::engine(cfg)?;
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
            tokio::spawn(crate::service::metrics::listen(listener, addr, metrics.clone(), stale, wake.clone()));
        }

        // Startup: migrations ran when the store opened; apply the config, then tell systemd. Nothing here waits on
        // the gateway: unresolved attempts are reconciled by the first pass, after READY, as its first step (it
        // opens and sends nothing new before every one of them is looked up and recorded), so a large backlog or a
        // slow gateway never holds READY past TimeoutStartSec.
        if let Err(e) = engine.sync(Utc::now(), false).await {
            error!(event = "config.refused", "config.refused: not applied, nothing is charged: {e:#}");
        }
        info!(event = "daemon.started", config = %engine.config().file.display(),
            database = %engine.config().billing.database.display(), "daemon.started");
        notify::ready(&status_line(&engine, None).await);

        let max_sleep = watchdog.map(|w| (w / 2).min(MAX_SLEEP)).unwrap_or(MAX_SLEEP);
        let mut refusals = 0u32;
        loop {
            metrics.beat();
            if engine.config_refused().is_some() {
                // Nothing is charged while the file on disk is refused: look at it again (fixed, or applied
                // meanwhile with `billd sync --force`).
                retry_config(&mut engine, path).await;
            }
            let (pass_at, pass_started) = (Utc::now(), std::time::Instant::now());
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
                        _ = hup.recv() => reload(&mut engine, path).await,
                    }
                }
            };
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
                    if r.sent + r.reconciled + r.skipped > 0 {
                        r.log_done(pass_at, pass_started.elapsed());
                    }
                    r.next_wake
                        .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                        .unwrap_or(MAX_SLEEP)
                        .min(max_sleep)
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
                    listener_note(&engine)
                )),
                _ if metrics.safety_stop.load(Ordering::Relaxed) => notify::status(&format!(
                    "SAFETY STOP: limits.max_charges_per_pass tripped; nothing is charged until an operator raises the \
                     limit or runs `billd safety release`{}",
                    listener_note(&engine)
                )),
                Some(pause) if metrics.mass_rejection.load(Ordering::Relaxed) => notify::status(&format!(
                    "MASS REJECTION: the gateway rejected a mass of charges in the last pass (wrong account or keys?); \
                     they were withheld, no subscription changed; trying again in {} s{}",
                    pause.as_secs(),
                    listener_note(&engine)
                )),
                Some(pause) => notify::status(&format!(
                    "UNAUTHORIZED: the gateway refuses gateway.imp_key {:?} and its imp_secret; nothing is charged; \
                     trying again in {} s{}",
                    engine.config().gateway.imp_key,
                    pause.as_secs(),
                    listener_note(&engine)
                )),
                None => notify::status(&status_line(&engine, result.as_ref().ok()).await),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
                _ = term.recv() => { stop(&engine, "SIGTERM"); break }
                _ = int.recv() => { stop(&engine, "SIGINT"); break }
                _ = hup.recv() => reload(&mut engine, path).await,
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
async fn retry_config<S: Store>(engine: &mut Engine<S, app::PaymentGateway>, path: &Path) {
    if let Ok(new) = app::load_config(path) {
        engine.set_config(new);
    }
    if engine.sync(Utc::now(), false).await.is_ok() {
        info!(event = "config.applied", "config.applied: the config is applied again; charging resumes");
    }
}

/// SIGHUP: reload and apply the config; an invalid file is refused and the running config stays in force.
async fn reload<S: Store>(engine: &mut Engine<S, app::PaymentGateway>, path: &Path) {
    notify::reloading();
    match app::load_config(path) {
        Ok(new) => {
            let old = engine.config();
            if new.gateway.base_url != old.gateway.base_url
                || new.gateway.imp_key != old.gateway.imp_key
                || new.gateway.concurrency != old.gateway.concurrency
                || new.gateway.timeout != old.gateway.timeout
                || new.gateway.rate_limit != old.gateway.rate_limit
                || new.billing.database != old.billing.database
                || new.metrics_listen != old.metrics_listen
            {
                warn!(
                    event = "config.reload",
                    "gateway, database or metrics settings changed: restart billd to apply them"
                );
            }
            engine.set_config(new);
            match engine.sync(Utc::now(), false).await {
                Ok(plan) => info!(event = "config.reload", changes = plan.changes.len(), "config.reload: applied"),
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
    notify::ready(&status_line(engine, None).await);
}

/// One line for `systemctl status`: what is due, in flight and failed.
async fn status_line<S: Store>(engine: &Engine<S, app::PaymentGateway>, report: Option<&PassReport>) -> String {
    let now = Utc::now();
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
                listener_note(engine)
            )
        }
        Err(e) => format!("database error: {e:#}{}", listener_note(engine)),
    }
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
