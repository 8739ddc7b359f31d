//! Talking to systemd: READY, RELOADING, STOPPING, STATUS and watchdog pings (no-ops outside systemd).

use sd_notify::NotifyState;
use std::time::Duration;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify failed: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    let now = NotifyState::monotonic_usec_now().ok();
    match now {
        Some(t) => send(&[NotifyState::Reloading, t]),
        None => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd expects pings within, if it enabled one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok());
    if pid.is_some_and(|pid| pid != std::process::id()) {
        return None;
    }
    Some(Duration::from_micros(usec))
}
