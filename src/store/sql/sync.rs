//! SQLite: applying a config sync's plan to the book (inserts, updates, cancels, and the re-timing of next charges
//! when the charge clock changed).

use super::book::{SUB_SELECT, change_status, current_status, discount_json, insert_row, sub_from_row};
use super::db::{Db, params};
use super::events::subscription_event;
use super::names::same_id_but_case;
use super::secs;
use crate::billing::calendar::ChargeClock;
use crate::billing::model::{Status, Subscription};
use crate::billing::status::Cause;
use crate::billing::sync::{Change, SyncPlan};
use anyhow::{Result, bail};
use serde_json::json;

/// Leaves out of `plan` the updates of subscriptions with a plan change whose charge is not settled (read inside
/// `tx`), each with a warning: the change applies (or fails) first, from the plan it was made from, and the next
/// sync applies the file then. So a sync never moves a subscription under its change (which would leave it
/// pending, and no period would open again).
pub(super) fn hold_pending_changes(tx: &dyn Db, plan: &mut SyncPlan) -> Result<()> {
    let pending = "SELECT to_plan_id, merchant_uid FROM plan_changes WHERE subscription_id = ?1 AND state = 'pending'";
    let mut held = Vec::new();
    for change in std::mem::take(&mut plan.changes) {
        if let Change::Update { after, .. } = &change
            && let Some((to, uid)) =
                tx.query_opt(pending, params![&after.id], |r| Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?)))?
        {
            held.push(format!(
                "subscription {:?}: its change to plan {to} has a charge not settled yet ({}); the config's changes \
                 to it are applied by a sync once it is settled (rerun `billd subscriptions change` or let a pass \
                 settle it)",
                after.id,
                uid.as_deref().unwrap_or("-")
            ));
            continue;
        }
        plan.changes.push(change);
    }
    plan.warnings.extend(held);
    Ok(())
}

/// Applies a sync plan inside `tx`. An update is guarded by the state the plan was computed from (a changed row
/// is an error: nothing of the plan is applied).
pub(super) fn apply_sync_in(tx: &dyn Db, plan: &SyncPlan, clock: &ChargeClock, now: i64) -> Result<()> {
    for change in &plan.changes {
        match change {
            Change::Insert(s) => {
                let due = s.billed_due(clock, s.next_period).map(secs);
                if current_status(tx, &s.id)?.is_some() {
                    // Added by command or import under the same id: the database's subscription stays as is.
                    tracing::warn!(event = "config.sync", subscription = %s.id,
                        "subscription {:?} in the config already exists in the database (added by command or import); the config entry is ignored", s.id);
                    continue;
                }
                if let Some(other) = same_id_but_case(tx, &s.id)? {
                    tracing::error!(event = "config.sync", subscription = %s.id,
                        "subscription {:?} in the config differs from subscription {other:?} in the database only \
                         by case; it is not added (rename it: merchant_uids that differ only by case may be one \
                         order at the gateway)", s.id);
                    continue;
                }
                insert_row(tx, s, s.source, due, now)?;
            }
            Change::Update { before, after: s, what } => {
                let due = s.billed_due(clock, s.next_period).map(secs);
                let n = tx.execute(
                    "UPDATE subscriptions SET customer_uid = ?2, plan_id = ?3, plan_name = ?4, amount = ?5,
                       currency = ?6, interval = ?7, start_date = ?8, anchor_date = ?9, anchor_period = ?10,
                       next_due_at = ?11, updated_at = ?12, discount = ?15, cancel_at = ?16, last_period = ?17
                     WHERE id = ?1 AND next_period = ?13 AND status = ?14",
                    params![
                        s.id,
                        s.customer_uid,
                        s.plan_id,
                        s.plan_name,
                        s.amount,
                        s.currency,
                        s.interval.to_string(),
                        s.start_date.to_string(),
                        s.anchor_date.to_string(),
                        s.anchor_period as i64,
                        due,
                        now,
                        before.next_period as i64,
                        before.status,
                        discount_json(s.discount),
                        s.cancel_at.map(secs),
                        s.last_period.map(|p| p as i64)
                    ],
                )?;
                if n != 1 {
                    bail!("subscription {:?} changed while the config was being applied; nothing applied", s.id);
                }
                let detail = json!({ "changes": what });
                subscription_event(tx, now, "subscription.updated", &s.id, detail)?;
                // A cancel_at set makes a subscription that bills canceling; one removed makes a canceling one active
                // again. A paused or suspended one stays so (an outsider's paused subscription was billed again).
                if before.cancel_at != s.cancel_at {
                    let current = current_status(tx, &s.id)?;
                    let to = match (s.cancel_at.is_some(), current) {
                        (true, Some(st)) if st.bills() && st != Status::Canceling => Some(Status::Canceling),
                        (false, Some(Status::Canceling)) => Some(Status::Active),
                        _ => None,
                    };
                    if let Some(to) = to {
                        change_status(tx, &s.id, Cause::Operator(to), now, "cancel_at in the config")?;
                    }
                }
            }
            Change::Cancel { id, reason } => {
                change_status(tx, id, Cause::Operator(Status::Canceled), now, reason)?;
            }
        }
    }
    Ok(())
}

/// The charge clock in force (see [`Book::book_clock`]); an unreadable row counts as none.
pub(super) fn book_clock_in(conn: &dyn Db) -> Result<Option<ChargeClock>> {
    let row: Option<(String, String)> =
        conn.query_opt("SELECT timezone, charge_time FROM book_clock WHERE id = 1", params![], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(row.and_then(|(tz, t)| {
        Some(ChargeClock {
            timezone: tz.parse().ok()?,
            charge_time: chrono::NaiveTime::parse_from_str(&t, "%H:%M:%S").ok()?,
        })
    }))
}

/// Re-times the next due instant of every subscription that is not canceled with `clock` (its next period is not
/// opened, so not claimed; open periods keep their times); returns how many changed.
pub(super) fn retime_in(tx: &dyn Db, clock: &ChargeClock) -> Result<usize> {
    let subs: Vec<Subscription> =
        tx.query_map(&format!("{SUB_SELECT} WHERE status NOT IN ('canceled', 'completed')"), params![], sub_from_row)?;
    let mut n = 0;
    let update = "UPDATE subscriptions SET next_due_at = ?2 WHERE id = ?1 AND next_due_at IS DISTINCT FROM ?2";
    for s in &subs {
        // Only periods that are ever billed (a term's last, before cancel_at): an outsider's re-timed charge time put
        // a period canceled at period end before its cancel_at, and it was charged.
        let due = s.billed_due(clock, s.next_period).map(secs);
        n += tx.execute(update, params![s.id, due])?;
    }
    Ok(n)
}
