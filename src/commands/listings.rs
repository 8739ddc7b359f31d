//! The listings `billd subscriptions` and `billd charges`: what happens next for each subscription, every attempt in
//! the order it was made.

use crate::app::load_config;
use crate::app::open_store;
use crate::billing::model::Status;
use crate::commands::present::{cut, human, rfc3339};
use crate::config;
use crate::store::{ChargeRow, Failure, SubscriptionRow, Views};
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// A subscription's next charge: (when, what), for the NEXT CHARGE column. A past-due subscription's next charge is
/// its retry, not its next period; an attempt whose outcome is unknown is looked up first.
fn next_charge(r: &SubscriptionRow) -> (Option<DateTime<Utc>>, &'static str) {
    if !r.status.bills() {
        return (None, "");
    }
    if let Some(at) = r.check_at {
        return (Some(at), "lookup");
    }
    if let Some(at) = r.next_attempt_at {
        return (Some(at), if r.declines > 0 { "retry" } else { "charge" });
    }
    (r.next_due_at, "charge")
}

fn subscription_json(r: &SubscriptionRow, retries: usize, tz: Tz) -> Value {
    let (at, kind) = next_charge(r);
    json!({
        "id": r.id, "customer_uid": r.customer_uid, "plan": r.plan, "amount": r.amount, "currency": r.currency,
        "interval": r.interval, "status": r.status.as_str(), "source": r.source.as_str(),
        "next_due_at": r.next_due_at.map(|t| rfc3339(t, tz)),
        "next_charge": at.map(|t| json!({ "at": rfc3339(t, tz), "kind": kind })),
        "retries_left": retries_left(r, retries),
        "paid_periods": r.paid_periods,
        "why": r.why,
    })
}

/// Retries left for the open period (or for the next one, for a subscription that bills); `None` otherwise.
fn retries_left(r: &SubscriptionRow, retries: usize) -> Option<usize> {
    r.status.bills().then(|| retries.saturating_sub(r.declines as usize))
}

pub fn subscriptions(path: &Path, status: Option<&str>, json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let status = status
        .map(|s| Status::parse(s).ok_or_else(|| anyhow!("--status {s:?}: use active, past_due, suspended or canceled")))
        .transpose()?;
    let store = open_store(&cfg)?;
    let rows = store.list_subscriptions(status)?;
    let tz = cfg.billing.clock.timezone;
    let retries = cfg.dunning.retry_after.len();
    if json {
        let rows: Vec<Value> = rows.iter().map(|r| subscription_json(r, retries, tz)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<14} {:<14} {:>12} {:<9} {:<30} {:>12} {:>4}  WHY",
        "ID", "CUSTOMER", "PLAN", "AMOUNT", "STATUS", "NEXT CHARGE", "RETRIES LEFT", "PAID"
    );
    for r in &rows {
        let (at, kind) = next_charge(r);
        let next = at.map(|t| format!("{} {kind}", human(t, tz))).unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<14} {:<14} {:>12} {:<9} {:<30} {:>12} {:>4}  {}",
            r.id,
            r.customer_uid,
            r.plan,
            format!("{} {}", r.amount, r.currency),
            r.status,
            next,
            retries_left(r, retries).map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            r.paid_periods,
            r.why.as_deref().map(|w| cut(w, 60)).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn charge_json(r: &ChargeRow, tz: Tz) -> Value {
    json!({
        "subscription_id": r.subscription_id, "period": r.period, "attempt": r.attempt,
        "merchant_uid": r.merchant_uid, "customer_uid": r.customer_uid, "amount": r.amount, "currency": r.currency,
        "status": r.status.as_str(), "failure": r.failure.map(Failure::as_str), "imp_uid": r.imp_uid,
        "fail_reason": r.fail_reason,
        "due_at": rfc3339(r.due_at, tz), "made_at": rfc3339(r.created_at, tz), "updated_at": rfc3339(r.updated_at, tz),
    })
}

pub fn charges(
    path: &Path,
    failed: bool,
    since: Option<&str>,
    sub: Option<&str>,
    json: bool,
    follow: bool,
) -> Result<ExitCode> {
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
    let store = open_store(&cfg)?;
    let tz = cfg.billing.clock.timezone;
    let mut last = 0;
    let mut first = true;
    loop {
        let mut rows = store.list_charges(failed, since, sub, last)?;
        if let Some((id, _)) = rows.last() {
            last = *id;
        }
        if first && !follow && sub.is_none() {
            rows.extend(store.list_one_time(failed, since)?.into_iter().map(|r| (0, r)));
            // In the order the attempts were made, one-time charges among them.
            rows.sort_by_key(|(id, r)| (r.created_at, *id));
        }
        if json && !follow {
            let rows: Vec<Value> = rows.iter().map(|(_, r)| charge_json(r, tz)).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(ExitCode::SUCCESS);
        }
        if first && !json {
            println!(
                "{:<23} {:<16} {:>6} {:>7} {:<30} {:>12} {:<8} DETAIL",
                "MADE", "SUBSCRIPTION", "PERIOD", "ATTEMPT", "MERCHANT_UID", "AMOUNT", "STATUS"
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
            println!(
                "{:<23} {:<16} {:>6} {:>7} {:<30} {:>12} {:<8} {}",
                human(r.created_at, tz),
                r.subscription_id,
                r.period,
                r.attempt,
                r.merchant_uid,
                format!("{} {}", r.amount, r.currency),
                r.status,
                detail
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
