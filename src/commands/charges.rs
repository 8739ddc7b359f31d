//! `billd charges`: every attempt (and one-time charge) in the order it was made, or followed as they are recorded.

use crate::app::listed_store;
use crate::app::load_config;
use crate::commands::present::human;
use crate::config;
use crate::shapes::{charge_json, kind};
use crate::store::{ChargeStatus, OneTimeKind, Views};
use crate::text::cell;
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

/// Which charges to list.
#[derive(Clone, Copy)]
pub enum Only<'a> {
    All,
    /// One subscription's attempts.
    Subscription(&'a str),
    /// One-time charges (`charge-once` and `charge-key`), not a plan change's `proration` charge (listed with its
    /// subscription).
    OneTime,
}

pub fn charges(
    path: &Path,
    failed: bool,
    since: Option<&str>,
    only: Only<'_>,
    json: bool,
    follow: bool,
) -> Result<ExitCode> {
    let sub = match only {
        Only::Subscription(id) => Some(id),
        _ => None,
    };
    let cfg = load_config(path)?;
    let since = since
        .map(|s| -> Result<DateTime<Utc>> {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t.with_timezone(&Utc));
            }
            let d = config::parse_date(s).map_err(|e| anyhow!("--since: {e}"))?;
            Ok(cfg.billing.clock.due_at_midnight(d))
        })
        .transpose()?;
    let store = listed_store(&cfg)?;
    let tz = cfg.billing.clock.timezone;
    let mut last = 0;
    let mut first = true;
    // One-time charges have no attempt ids to follow: each (merchant_uid, status, tries) is shown once, so
    // `--follow` prints a new one-time charge, and its outcome, as they are recorded (they were never shown).
    let mut shown = std::collections::HashSet::new();
    loop {
        let mut rows =
            if matches!(only, Only::OneTime) { Vec::new() } else { store.list_charges(failed, since, sub, last)? };
        if let Some((id, _)) = rows.last() {
            last = *id;
        }
        // A subscription's own: the charges of a billing key tied to it (`charge-key --subscription`).
        for r in store.list_one_time(failed, since, sub)? {
            if matches!(only, Only::OneTime) && r.one_time == Some(OneTimeKind::Proration) {
                continue;
            }
            if shown.insert((r.merchant_uid.clone(), r.status, r.attempt)) {
                rows.push((0, r));
            }
        }
        // In the order the attempts were made, one-time charges among them.
        rows.sort_by_key(|(id, r)| (r.created_at, *id));
        if json && !follow {
            let rows: Vec<Value> = rows.iter().map(|(_, r)| charge_json(r, tz)).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(ExitCode::SUCCESS);
        }
        if first && !json {
            println!(
                "{:<23} {:<12} {:<16} {:>6} {:>7} {:<30} {:>12} {:>8} {:<8} DETAIL",
                "MADE", "KIND", "SUBSCRIPTION", "PERIOD", "ATTEMPT", "MERCHANT_UID", "AMOUNT", "REFUNDED", "STATUS"
            );
        }
        first = false;
        for (_, r) in &rows {
            if json {
                println!("{}", serde_json::to_string(&charge_json(r, tz))?);
                continue;
            }
            let detail = match (&r.imp_uid, &r.fail_reason) {
                (_, Some(reason)) => {
                    format!("{}{reason}", r.failure.map(|f| format!("{f}: ")).unwrap_or_default())
                }
                (Some(imp), None) => imp.clone(),
                _ => String::new(),
            };
            // A one-time charge has no period (nor a subscription unless tied to one): empty; ATTEMPT is its tries.
            let sub = r.subscription_id.as_deref().unwrap_or_default();
            let period = if r.one_time.is_none() { r.period.to_string() } else { String::new() };
            // What was refunded of a paid charge (`-`: nothing to refund, it is not paid).
            let refunded = if r.status == ChargeStatus::Paid { r.refunded.to_string() } else { "-".into() };
            // What the book holds is shown escaped (a row planted with a terminal escape is shown, not obeyed).
            println!(
                "{:<23} {:<12} {:<16} {:>6} {:>7} {:<30} {:>12} {:>8} {:<8} {}",
                human(r.created_at, tz),
                kind(r),
                cell(sub),
                period,
                r.attempt,
                cell(&r.merchant_uid),
                cell(&format!("{} {}", r.amount, r.currency)),
                refunded,
                r.status,
                cell(&detail)
            );
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
