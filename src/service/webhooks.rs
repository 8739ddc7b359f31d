//! The webhook delivery service inside `billd run`: a task of its own, with its own handle on the book, that
//! delivers the outbox's events as they become deliverable, prunes old ones, and never holds up a charge.

use crate::clock::BillingClock;
use crate::config::Config;
use crate::engine::metrics::Metrics;
use crate::store::Store;
use crate::webhooks::deliver::{Deliverer, db, housekeep, refresh_gauges};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The longest the service sleeps without looking at the outbox: events written by other processes (a command's
/// cancel, a `billd refund`) are noticed within it.
const POLL: Duration = Duration::from_secs(5);
/// How often old events are pruned.
const HOUSEKEEPING: Duration = Duration::from_secs(3600);
/// Pause after an error (the database locked, say).
const ERROR_PAUSE: Duration = Duration::from_secs(30);
/// The shortest pause between two looks (never a busy loop, whatever the outbox holds).
const MIN_PAUSE: Duration = Duration::from_millis(250);

/// How much lower than the charging the delivery thread's CPU priority is (added to its nice value).
const NICER: i32 = 10;

/// Starts [`serve`] on a thread of its own, with a runtime of its own, at a lower CPU priority than the rest of
/// billd (its nice value [`NICER`] higher; the threads it starts for database calls inherit it): on a machine short
/// of CPU, charges go first and deliveries use what is left; on an idle one they go at full speed.
pub fn start<S: Store>(
    store: S,
    settings: watch::Receiver<Arc<Config>>,
    metrics: Arc<Metrics>,
    clock: BillingClock,
    kick: Arc<Notify>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("billd-webhooks".into()).spawn(move || {
        // On Linux the nice value is a thread's own (setpriority of "process" 0 is the calling thread); a failure
        // leaves it as it was.
        // SAFETY: nice(2) takes an integer and changes only the calling thread's priority; errno is this thread's
        // (cleared first: -1 is also a valid new nice value).
        let failed = unsafe {
            *libc::__errno_location() = 0;
            libc::nice(NICER) == -1 && *libc::__errno_location() != 0
        };
        if failed {
            tracing::warn!(
                event = "webhook.priority",
                "webhook.priority: could not lower the delivery thread's \
                priority: {}",
                std::io::Error::last_os_error()
            );
        }
        runtime.block_on(serve(store, settings, metrics, clock, kick))
    })?;
    Ok(())
}

/// Runs until the process ends: delivers what is deliverable on the billing clock, then sleeps until the next
/// event is due, `kick` is notified (a pass wrote events), or [`POLL`] passes. `settings` changes on a reload.
pub async fn serve<S: Store>(
    store: S,
    mut settings: watch::Receiver<Arc<Config>>,
    metrics: Arc<Metrics>,
    clock: BillingClock,
    kick: Arc<Notify>,
) {
    let store = Arc::new(Mutex::new(store));
    let mut last_housekeeping: Option<std::time::Instant> = None;
    let mut deliverer: Option<Deliverer> = None;
    let mut rebuild = true;
    loop {
        let now = clock.now();
        let mut pause = POLL;
        let round = async {
            if rebuild || deliverer.is_none() {
                let cfg = settings.borrow_and_update().clone();
                deliverer = Some(Deliverer::new(&cfg)?);
                rebuild = false;
            }
            let d = deliverer.as_ref().expect("built above");
            // On a book several daemons share, one of them delivers and keeps the outbox (issue 27).
            if !db(&store, |s| s.try_jobs(crate::store::Jobs::Deliveries)).await? {
                return anyhow::Ok(());
            }
            let off = d.settings.send.is_none();
            if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING) {
                housekeep(&store, &d.settings, now).await?;
                last_housekeeping = Some(std::time::Instant::now());
            }
            if off {
                // Webhooks off: nothing to deliver; the service wakes after each pass (which may have written
                // events: the gauges are read then), for housekeeping, or for a reload, never on a timer of a few
                // seconds (that cost an idle daemon a count of every event kept unsent).
                refresh_gauges(&store, &metrics, now).await?;
                pause = HOUSEKEEPING.saturating_sub(last_housekeeping.map_or(Duration::ZERO, |t| t.elapsed()));
                return anyhow::Ok(());
            }
            // A reload is taken at once, not after the backlog: the round stops sending when the settings change.
            let changed = settings.clone();
            d.deliver_due(&store, &metrics, || clock.now(), || changed.has_changed().unwrap_or(true)).await?;
            if let Some(next) = db(&store, |s| s.next_delivery()).await? {
                pause = pause.min(clock.real_until(next));
            }
            anyhow::Ok(())
        };
        if let Err(e) = round.await {
            tracing::error!(
                event = "webhook.error",
                "webhook.error: delivery could not run: {e:#}; trying again in {} s",
                ERROR_PAUSE.as_secs()
            );
            pause = ERROR_PAUSE;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause.max(MIN_PAUSE)) => {}
            _ = kick.notified() => {}
            changed = settings.changed() => match changed {
                Ok(()) => rebuild = true,
                // The daemon is ending.
                Err(_) => return,
            },
        }
    }
}
