//! `billd status`: the daemons sharing the book (host, pid, version, last heartbeat, lease, charges held, the
//! one-at-a-time jobs), and those that left within the last day.

use crate::app::{existing_store, load_config};
use crate::commands::present::human;
use crate::store::{DaemonRow, Daemons, Store};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::path::Path;
use std::process::ExitCode;

/// How far back daemons that left are listed.
const RECENT: std::time::Duration = std::time::Duration::from_secs(86_400);

pub fn status(path: &Path, json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let store = existing_store(&cfg)?;
    let rows = store.daemons(RECENT)?;
    if json {
        let list: Vec<serde_json::Value> = rows.iter().map(as_json).collect();
        crate::say!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let tz = cfg.billing.clock.timezone;
    let at = |ms: i64| human(DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default(), tz);
    let running: Vec<&DaemonRow> = rows.iter().filter(|d| d.running()).collect();
    crate::say!("book {}", store.location());
    if running.is_empty() {
        crate::say!("no daemon runs on it (`billd run` joins it as one; `billd tick` for the length of a pass)");
    }
    if rows.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!(
        "{:<7} {:<20} {:>8} {:<9} {:<24} {:<15} {:<24} {:>5} {:<4}",
        "DAEMON",
        "HOST",
        "PID",
        "VERSION",
        "STARTED",
        "LAST HEARTBEAT",
        "LEASE",
        "HELD",
        "JOBS"
    );
    for d in &rows {
        let ago = |ms: i64| seconds((d.db_now_ms - ms).max(0));
        let lease = match &d.left {
            Some((when, why)) => format!("ended {} ago: {}", ago(*when), crate::commands::present::cut(why, 40)),
            None if d.running() => format!("{} left", seconds(d.lease_until_ms - d.db_now_ms)),
            None => format!("lapsed {} ago", ago(d.lease_until_ms)),
        };
        crate::say!(
            "{:<7} {:<20} {:>8} {:<9} {:<24} {:<15} {:<24} {:>5} {:<4}",
            d.id,
            crate::commands::present::cut(&d.info.host, 20),
            d.info.pid,
            crate::commands::present::cut(&d.info.version, 9),
            at(d.started_ms),
            format!("{} ago", ago(d.heartbeat_ms)),
            lease,
            d.holds,
            if d.jobs && d.running() { "yes" } else { "-" }
        );
    }
    let held: u64 = rows.iter().filter(|d| !d.running()).map(|d| d.holds).sum();
    if held > 0 {
        crate::say!(
            "{held} charges in doubt belong to daemons that stopped: the next pass of a running daemon looks them up"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn seconds(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn as_json(d: &DaemonRow) -> serde_json::Value {
    let iso = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339();
    serde_json::json!({
        "daemon": d.id,
        "host": d.info.host,
        "pid": d.info.pid,
        "version": d.info.version,
        "started_at": iso(d.started_ms),
        "heartbeat_at": iso(d.heartbeat_ms),
        "lease_until": iso(d.lease_until_ms),
        "running": d.running(),
        "left_at": d.left.as_ref().map(|l| iso(l.0)),
        "left_why": d.left.as_ref().map(|l| l.1.clone()),
        "charges_held": d.holds,
        "jobs": d.jobs && d.running(),
    })
}
