//! `billd run`: the long-running scheduler loop, its wake-ups and its signals.

use crate::cli;
use anyhow::{Context, Result};
use chrono::Utc;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{error, info, warn};

/// The longest the loop sleeps without looking at the database (covers wall-clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Pause after a pass that could not run (e.g. the database was locked or the disk full).
const ERROR_PAUSE: Duration = Duration::from_secs(30);

pub fn run(path: &Path) -> Result<ExitCode> {
    let cfg = cli::load_config(path)?;
    let (mut engine, _lock) = cli::engine(cfg)?;
    let rt = cli::runtime()?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;

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

        if let Err(e) = engine.sync(Utc::now(), false).await {
            error!(event = "config.sync", "config not applied: {e:#}");
        }
        info!(event = "daemon.started", config = %engine.config().file.display(),
            database = %engine.config().billing.database.display(), "daemon.started");

        loop {
            let result = {
                let pass = engine.charge_due(Utc::now());
                tokio::pin!(pass);
                loop {
                tokio::select! {
                    r = &mut pass => break r,
                    _ = term.recv() => { info!(event = "daemon.stopping", "SIGTERM: finishing in-flight charges"); engine.stop() }
                    _ = int.recv() => { info!(event = "daemon.stopping", "SIGINT: finishing in-flight charges"); engine.stop() }
                }
                }
            };
            let pause = match result {
                Ok(r) => {
                    if r.sent + r.reconciled > 0 {
                        info!(event = "pass.done", reconciled = r.reconciled, opened = r.opened, sent = r.sent,
                            paid = r.paid, declined = r.declined, rejected = r.rejected, unresolved = r.unresolved,
                            "pass.done");
                    }
                    r.next_wake
                        .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                        .unwrap_or(MAX_SLEEP)
                        .min(MAX_SLEEP)
                }
                Err(e) => {
                    error!(event = "pass.error", "the pass could not run: {e:#}");
                    ERROR_PAUSE
                }
            };
            if engine.stopping() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match cli::load_config(path) {
                    Ok(new) => {
                        if new.gateway.base_url != engine.config().gateway.base_url
                            || new.gateway.imp_key != engine.config().gateway.imp_key
                            || new.billing.database != engine.config().billing.database
                        {
                            warn!(event = "config.reload", "gateway or database settings changed: restart billd to apply them");
                        }
                        engine.set_config(new);
                        match engine.sync(Utc::now(), false).await {
                            Ok(_) => info!(event = "config.reload", "config reloaded"),
                            Err(e) => error!(event = "config.reload", "config not applied: {e:#}"),
                        }
                    }
                    Err(e) => error!(event = "config.reload", "new config refused, the running one stays in force: {e}"),
                },
            }
        }
        let _ = sched.clone().shutdown().await;
        info!(event = "daemon.stopped", "daemon.stopped");
        Ok(ExitCode::SUCCESS)
    })
}
