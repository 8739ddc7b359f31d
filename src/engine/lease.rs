//! This process's membership of a shared book: joined with a lease, renewed by a heartbeat thread, left on exit;
//! and the one rule of when a charge request may still leave under it.

use super::Engine;
use crate::gateway::Gateway;
use crate::realtime::{ProcessClock, steady_ms};
use crate::store::{DaemonInfo, Store};
use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tracing::{error, info, warn};

/// A daemon's lease as this process knows it.
pub struct Lease {
    /// The daemon's id in the book.
    pub id: i64,
    /// `billing.lease`.
    length: Duration,
    /// This machine's steady clock ([`steady_ms`]) right before the last renewal that succeeded was asked for: the
    /// lease runs at least `length` from then, on the database's clock.
    renewed: AtomicI64,
    /// This process holds the book's one-at-a-time billing jobs (as of its last pass).
    pub jobs: AtomicBool,
    /// The book's clock is the database server's (PostgreSQL), read again at each renewal
    /// ([`crate::realtime::anchor`]); `false`: this machine's (SQLite).
    shared: bool,
}

impl Lease {
    /// A renewal asked for at `asked` (steady ms) succeeded.
    fn renewed(&self, asked: i64) {
        self.renewed.fetch_max(asked, Ordering::SeqCst);
    }

    fn half_ms(&self) -> i64 {
        (self.length.as_millis() / 2).min(i64::MAX as u128) as i64
    }

    /// Whether a request asked to leave at `asked` (steady ms, before its go was written) may still leave now: the
    /// lease has at least half its length left as this process last renewed it (so a daemon that has not renewed
    /// for half a lease sends nothing, long before another may take its work over), and at most half a lease and
    /// at most `timeout` passed since it was asked (so a request never leaves late after its go: its quiet period,
    /// counted from the go, covers it). One rule, at the one place every request passes
    /// ([`Engine::send_as`]'s go, and the gate).
    pub fn may_send(&self, asked: i64, timeout: Duration) -> bool {
        let now = steady_ms();
        let late = (timeout.as_millis().min(i64::MAX as u128) as i64).min(self.half_ms());
        now.saturating_sub(self.renewed.load(Ordering::SeqCst)) < self.half_ms() && now.saturating_sub(asked) <= late
    }
}

/// Membership: the heartbeat thread runs while it lives; dropped (the last engine of the process gone), it stops
/// the thread and leaves the book.
pub(super) struct Member<S: Store> {
    store: Arc<Mutex<S>>,
    pub(super) lease: Arc<Lease>,
    /// Dropped to stop the heartbeat thread.
    stop: Option<mpsc::Sender<()>>,
}

impl<S: Store> Drop for Member<S> {
    fn drop(&mut self) {
        self.stop.take();
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        match store.leave("left: its process ended") {
            Ok(()) => info!(event = "daemon.left", daemon = self.lease.id, "daemon.left: left the book"),
            Err(e) => warn!(
                event = "daemon.left",
                daemon = self.lease.id,
                "could not leave the book (its lease lapses by itself): {e:#}"
            ),
        }
    }
}

impl<S: Store, G: Gateway> Engine<S, G> {
    /// Joins the book as a daemon ([`crate::store::Daemons::join`]) with a lease of `billing.lease`, renewed every
    /// quarter of it by a thread of its own on `beat`, a handle of its own on the same book (never queued behind the
    /// engine's work). A lease that cannot be renewed (lapsed in the book, or not renewed in time) stops the process:
    /// another daemon takes its work over, and systemd starts it again.
    pub fn join(&mut self, beat: S) -> Result<()> {
        let length = self.cfg.billing.lease;
        let shared = matches!(self.cfg.billing.database, crate::config::Database::Postgres(_));
        let asked = steady_ms();
        let id = {
            let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            store.join(&DaemonInfo::this_process(), length)?.0
        };
        if shared {
            crate::realtime::anchor_with(|| beat.clock_ms())?;
            self.clock = Arc::new(ProcessClock);
        }
        let lease =
            Arc::new(Lease { id, length, renewed: AtomicI64::new(asked), jobs: AtomicBool::new(false), shared });
        let (stop, stopped) = mpsc::channel();
        let held = lease.clone();
        std::thread::Builder::new().name("billd-lease".into()).spawn(move || heartbeat(beat, held, stopped))?;
        info!(event = "daemon.joined", daemon = id, lease_ms = length.as_millis() as u64, "daemon.joined");
        self.member = Some(Arc::new(Member { store: self.store.clone(), lease, stop: Some(stop) }));
        Ok(())
    }

    /// This process's lease (`None`: not joined, as in the tests of the engine alone).
    pub(super) fn lease(&self) -> Option<&Lease> {
        self.member.as_ref().map(|m| &*m.lease)
    }

    /// Whether a request asked to leave at `asked` may still leave ([`Lease::may_send`]; always, when not joined).
    pub(super) fn may_send(&self, asked: i64) -> bool {
        self.lease().is_none_or(|l| l.may_send(asked, self.gateway.timeout()))
    }
}

/// The heartbeat: renews the lease every quarter of it until `stopped` closes. A lease the book says is lost, or one
/// not renewed for a whole lease (the database unreachable), stops the process.
fn heartbeat<S: Store>(store: S, lease: Arc<Lease>, stopped: mpsc::Receiver<()>) {
    let every = lease.length / 4;
    loop {
        if !matches!(stopped.recv_timeout(every), Err(mpsc::RecvTimeoutError::Timeout)) {
            return;
        }
        let asked = steady_ms();
        let renewed = store.heartbeat(lease.id, lease.length);
        match renewed {
            Ok(Some(_)) => {
                lease.renewed(asked);
                // The database's clock read again, on its own (not the renewal's reading, taken before its commit).
                if lease.shared
                    && let Err(e) = crate::realtime::anchor_with(|| store.clock_ms())
                {
                    warn!(event = "daemon.heartbeat", daemon = lease.id, "could not read the database's clock: {e:#}");
                }
            }
            Ok(None) => lost(&lease, "the book says its lease lapsed (another daemon may have taken its work over)"),
            Err(e) => {
                let since =
                    Duration::from_millis(steady_ms().saturating_sub(lease.renewed.load(Ordering::SeqCst)) as u64);
                if since >= lease.length {
                    lost(&lease, &format!("its lease could not be renewed for {since:?}: {e:#}"));
                }
                warn!(event = "daemon.heartbeat", daemon = lease.id, "could not renew the lease (trying again): {e:#}");
            }
        }
    }
}

/// A lost lease is never renewed: the process stops (its in-flight outcomes, if any, are the new owner's to find).
fn lost(lease: &Lease, why: &str) -> ! {
    error!(
        event = "lease.lost",
        daemon = lease.id,
        "lease.lost: daemon {} stops: {why}; systemd starts it again as a new daemon",
        lease.id
    );
    std::process::exit(1)
}
