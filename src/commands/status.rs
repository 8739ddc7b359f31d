//! `billd status`: the daemons sharing the book (host, pid, version, last heartbeat, lease, charges held, the
//! one-at-a-time jobs), and the latest of those that left within the last day.

use crate::app::{existing_store, load_config};
use crate::commands::present::{cut, human};
use crate::store::{DaemonRow, Daemons, Store};
use crate::text::cell;
use anyhow::Result;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::path::Path;
use std::process::ExitCode;

/// How far back daemons that left are listed.
const RECENT: std::time::Duration = std::time::Duration::from_secs(86_400);

/// At most this many daemons that left are listed (the latest): a tick a minute leaves 1,440 a day.
const LEFT_SHOWN: usize = 20;

pub fn status(path: &Path, json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let store = existing_store(&cfg)?;
    let tz = cfg.billing.clock.timezone;
    let rows = store.daemons(RECENT)?;
    let (running, left): (Vec<&DaemonRow>, Vec<&DaemonRow>) = rows.iter().partition(|d| d.running());
    let hidden = left.len().saturating_sub(LEFT_SHOWN);
    let shown: Vec<&DaemonRow> = running.iter().chain(left.iter().skip(hidden)).copied().collect();
    if json {
        let list: Vec<serde_json::Value> = shown.iter().map(|d| as_json(d, tz)).collect();
        crate::say!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!("book {}", store.location());
    if running.is_empty() {
        crate::say!("no daemon runs on it (`billd run` joins it as one; `billd tick` for the length of its pass)");
    } else if !running.iter().any(|d| d.jobs) {
        crate::say!(
            "no running daemon does the one-at-a-time jobs yet (config sync, sweeps): the next pass takes them"
        );
    }
    if shown.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let line = |cols: [&str; 9]| {
        let [id, host, pid, version, started, beat, lease, held, jobs] = cols;
        format!("{id:<7} {host:<20} {pid:>8} {version:<9} {started:<24} {beat:<15} {lease:<44} {held:>5} {jobs}")
    };
    crate::say!("{}", line(["DAEMON", "HOST", "PID", "VERSION", "STARTED", "LAST HEARTBEAT", "LEASE", "HELD", "JOBS"]));
    for d in &shown {
        let ago = |ms: i64| seconds(d.db_now_ms.saturating_sub(ms));
        let lease = match &d.left {
            Some((when, why)) => format!("ended {} ago: {}", ago(*when), cell(why)),
            None if d.running() => format!("{} left", seconds(d.lease_until_ms.saturating_sub(d.db_now_ms))),
            None => format!("lapsed {} ago", ago(d.lease_until_ms)),
        };
        crate::say!(
            "{}",
            line([
                &d.id.to_string(),
                &cut(&cell(&d.info.host), 20),
                &d.info.pid.to_string(),
                &cut(&cell(&d.info.version), 9),
                &at(d.started_ms, tz),
                &format!("{} ago", ago(d.heartbeat_ms)),
                &cut(&lease, 44),
                &d.holds.to_string(),
                if d.jobs && d.running() { "yes" } else { "-" },
            ])
        );
    }
    if hidden > 0 {
        crate::say!("({hidden} more left in the last day; `billd status --json` lists the same {LEFT_SHOWN} latest)");
    }
    let held: u64 = rows.iter().filter(|d| !d.running()).map(|d| d.holds).sum();
    if held > 0 {
        crate::say!(
            "{held} charges in doubt belong to daemons that stopped: the next pass of a running daemon looks them up"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An instant of the book's clock in the billing time zone (`-` when out of range: a row written by hand).
fn at(ms: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(|| "-".into(), |t| human(t, tz))
}

fn seconds(ms: i64) -> String {
    let s = ms.max(0).saturating_add(999) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn as_json(d: &DaemonRow, tz: Tz) -> serde_json::Value {
    // RFC 3339 with the billing time zone's offset, as every listing; null when out of range (a row written by hand).
    let iso = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).to_rfc3339());
    serde_json::json!({
        "daemon": d.id,
        "host": d.info.host,
        "pid": d.info.pid,
        "version": d.info.version,
        "started_at": iso(d.started_ms),
        "heartbeat_at": iso(d.heartbeat_ms),
        "lease_until": iso(d.lease_until_ms),
        "running": d.running(),
        "left_at": d.left.as_ref().and_then(|l| iso(l.0)),
        "left_why": d.left.as_ref().map(|l| l.1.clone()),
        "charges_held": d.holds,
        "jobs": d.jobs && d.running(),
    })
}
