//! `billd subscriptions show ID`: one subscription's whole story (plan, status and why, every period with each
//! attempt, and what happens next, when).

use crate::app::load_config;
use crate::app::open_store;
use crate::billing::model::{Status, Subscription};
use crate::commands::present::{human, rfc3339};
use crate::store::{Book, Failure, PeriodState, PeriodStory, Store, Views};
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// What billd does next for a subscription, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    /// `charge`, `retry`, `look_up`, `held`, `none`.
    pub action: &'static str,
    pub at: Option<DateTime<Utc>>,
    pub text: String,
}

/// The next step for `sub` given its periods (oldest first) and its next due instant.
pub fn next_action(sub: &Subscription, periods: &[PeriodStory], next_due_at: Option<DateTime<Utc>>) -> Next {
    let none = |text: String| Next { action: "none", at: None, text };
    match sub.status {
        Status::Canceled => return none("none: canceled, never charged again".into()),
        Status::Suspended => return none(format!("none until `billd resume {}`", sub.id)),
        Status::Active | Status::PastDue => {}
    }
    if let Some(open) = periods.iter().find(|p| p.state == PeriodState::Open) {
        let last = open.attempts.last();
        if let Some(a) = last.filter(|a| a.status.unresolved()) {
            return Next {
                action: "look_up",
                at: a.check_at,
                text: format!(
                    "look up {} (outcome unknown; resent only if the gateway has no record)",
                    open.merchant_uid
                ),
            };
        }
        if let Some(at) = open.next_attempt_at {
            let kind = if open.attempts.is_empty() { "charge" } else { "retry" };
            return Next {
                action: kind,
                at: Some(at),
                text: format!("{kind} period {} ({})", open.period, open.merchant_uid),
            };
        }
        if last.is_some_and(|a| a.failure == Some(Failure::Mismatch)) {
            return Next {
                action: "held",
                at: None,
                text: format!(
                    "held for an operator: period {} ({}) — see its attempt below; cancel the other payment at the \
                     gateway, then `billd retry {}`",
                    open.period, open.merchant_uid, sub.id
                ),
            };
        }
        return none(format!("period {} is open with nothing scheduled", open.period));
    }
    match next_due_at {
        Some(at) => Next { action: "charge", at: Some(at), text: format!("charge period {}", sub.next_period) },
        None => none("no further period".into()),
    }
}

pub fn show(path: &Path, id: &str, as_json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let store = open_store(&cfg)?;
    let sub = store.subscription(id)?.ok_or_else(|| anyhow!("no subscription {id:?} in {}", store.location()))?;
    let next_due_at = store.next_due_at(id)?;
    let (periods, why) = store.subscription_story(id)?;
    let next = next_action(&sub, &periods, next_due_at);
    let tz = cfg.billing.clock.timezone;
    let why = why.filter(|_| matches!(sub.status, Status::Canceled | Status::Suspended));
    if as_json {
        let periods: Vec<_> = periods
            .iter()
            .map(|p| {
                json!({
                    "period": p.period, "due_at": rfc3339(p.due_at, tz), "merchant_uid": p.merchant_uid,
                    "amount": p.amount, "currency": p.currency, "state": p.state.as_str(), "declines": p.declines,
                    "next_attempt_at": p.next_attempt_at.map(|t| rfc3339(t, tz)),
                    "attempts": p.attempts.iter().map(|a| json!({
                        "attempt": a.attempt, "status": a.status.as_str(), "failure": a.failure.map(Failure::as_str), "imp_uid": a.imp_uid,
                        "reason": a.fail_reason, "made_at": rfc3339(a.created_at, tz),
                        "updated_at": rfc3339(a.updated_at, tz), "check_at": a.check_at.map(|t| rfc3339(t, tz)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = json!({
            "id": sub.id, "customer_uid": sub.customer_uid, "plan": sub.plan_id, "plan_name": sub.plan_name,
            "amount": sub.amount, "currency": sub.currency, "interval": sub.interval.to_string(),
            "start": sub.start_date.to_string(), "source": sub.source.as_str(), "status": sub.status.as_str(),
            "why": why, "next": { "action": next.action, "at": next.at.map(|t| rfc3339(t, tz)), "what": next.text },
            "periods": periods,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("subscription {} (customer_uid {})", sub.id, sub.customer_uid);
    println!(
        "  plan     {} ({:?}): {} {} every {}, from {} (source {})",
        sub.plan_id,
        sub.plan_name,
        sub.amount,
        sub.currency,
        sub.interval,
        sub.start_date,
        sub.source.as_str()
    );
    match &why {
        Some(w) => println!("  status   {} ({w})", sub.status),
        None => println!("  status   {}", sub.status),
    }
    match next.at {
        Some(at) => println!("  next     {} at {}", next.text, human(at, tz)),
        None => println!("  next     {}", next.text),
    }
    if periods.is_empty() {
        println!("  periods  none opened yet");
    }
    for p in &periods {
        println!(
            "  period {:<4} due {}  {} {}  {}  {}",
            p.period,
            human(p.due_at, tz),
            p.amount,
            p.currency,
            p.state,
            p.merchant_uid
        );
        for a in &p.attempts {
            let outcome = match (&a.failure, &a.imp_uid, &a.fail_reason) {
                (Some(f), _, Some(r)) => format!("{} ({f}): {r}", a.status),
                (None, Some(imp), _) => format!("{} (imp_uid {imp})", a.status),
                (None, None, Some(r)) => format!("{}: {r}", a.status),
                _ => a.status.to_string(),
            };
            println!("      attempt {:<2} made {}  {}", a.attempt, human(a.created_at, tz), outcome);
        }
    }
    Ok(ExitCode::SUCCESS)
}
