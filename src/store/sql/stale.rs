//! SQLite: `billing.catch_up_window`: the periods older than the window, and how they are settled once looked up at
//! the gateway (recorded paid when it paid them, skipped otherwise).

use super::book::{SUB_SELECT, change_status, sub_from_row};
use super::db::{Db, params};
use super::events::{event, subscription_event};
use super::ledger::advance;
use super::outbox::{About, publish};
use super::{at, secs};
use crate::billing::status::Cause;
use crate::store::{DueSubscription, NewPeriod, StaleFound};
use anyhow::Result;
use serde_json::json;

/// [`crate::store::Ledger::stale_due`].
pub(super) fn stale_due(
    conn: &dyn Db,
    cutoff: i64,
    only: Option<&str>,
    after: Option<(i64, &str)>,
    limit: usize,
) -> Result<Vec<DueSubscription>> {
    // Through the due index: a book with nothing stale costs one empty range, whatever its size.
    let st = format!(
        "{SUB_SELECT} WHERE bills AND next_due_at < ?1 AND (next_due_at, id) > (?3, ?4) AND (CAST(?2 AS TEXT) IS NULL OR id = ?2)
           AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id AND p.state = 'open')
           AND NOT EXISTS (SELECT 1 FROM plan_changes c WHERE c.subscription_id = subscriptions.id
                             AND c.state = 'pending')
         ORDER BY next_due_at, id LIMIT ?5"
    );
    let (due, id) = after.unwrap_or((i64::MIN, ""));
    let rows = conn.query_map(&st, params![cutoff, only, due, id, limit.min(i64::MAX as usize) as i64], |r| {
        let due: i64 = r.get(11)?;
        Ok(DueSubscription { sub: sub_from_row(r)?, next_due_at: at(due) })
    })?;
    Ok(rows)
}

/// [`crate::store::Ledger::settle_stale`] inside `tx`.
pub(super) fn settle_stale_in(tx: &dyn Db, items: &[(NewPeriod, StaleFound)], now: i64) -> Result<Vec<usize>> {
    let mut written = Vec::with_capacity(items.len());
    for (i, (p, found)) in items.iter().enumerate() {
        // Decided from the row as it is now: still billed, at this period, with nothing open or pending.
        let last: Option<Option<i64>> = tx.query_opt(
            "SELECT last_period FROM subscriptions WHERE id = ?1 AND bills AND next_period = ?2
                   AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id
                                     AND p.state = 'open')
                   AND NOT EXISTS (SELECT 1 FROM plan_changes c WHERE c.subscription_id = subscriptions.id
                                     AND c.state = 'pending')",
            params![p.subscription_id, p.period as i64],
            |r| r.get(0),
        )?;
        let Some(last) = last else { continue };
        let paid = match found {
            StaleFound::Paid { imp_uid } => record_paid(tx, p, imp_uid, now)?,
            StaleFound::NotPaid { .. } => false,
        };
        if !paid {
            let reason = match found {
                StaleFound::NotPaid { reason } => reason.clone(),
                StaleFound::Paid { .. } => format!(
                    "paid at the gateway, but its merchant_uid {} is held by another charge in this book: not recorded",
                    p.merchant_uid
                ),
            };
            record_skipped(tx, p, &reason, now)?;
        }
        advance(tx, p, now)?;
        if last == Some(p.period as i64) {
            let why = if paid { "its last period is paid: its term is over" } else { "its last period was skipped" };
            change_status(tx, &p.subscription_id, Cause::TermEnded, now, why)?;
        }
        written.push(i);
    }
    Ok(written)
}

/// Inserts period `p` closed at `now` in `state` (`paid` or `skipped`), unless its merchant_uid is held by another
/// period or a one-time charge (in any case); returns how many rows it inserted (0 or 1).
fn insert_closed(tx: &dyn Db, p: &NewPeriod, state: &str, now: i64) -> Result<usize> {
    tx.execute(
        "INSERT INTO periods (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency,
               name, state, next_attempt_at, opened_at, closed_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, NULL, ?9, ?9
             WHERE NOT EXISTS (SELECT 1 FROM one_time_charges WHERE merchant_uid = ?4 COLLATE NOCASE)
             ON CONFLICT (merchant_uid) DO NOTHING",
        params![
            p.subscription_id,
            p.period as i64,
            secs(p.due_at),
            p.merchant_uid,
            p.customer_uid,
            p.amount,
            p.currency,
            p.name,
            now,
            state
        ],
    )
}

/// Records period `p` paid under `imp_uid` (a payment the gateway holds that the book did not know): the period
/// closed paid and one paid attempt, with a `charge.paid` event. False (nothing written) when its merchant_uid is
/// held by another period or a one-time charge.
fn record_paid(tx: &dyn Db, p: &NewPeriod, imp_uid: &str, now: i64) -> Result<bool> {
    let inserted = insert_closed(tx, p, "paid", now)?;
    if inserted == 0 {
        return Ok(false);
    }
    let attempt: i64 = tx.query_row(
        "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
           status, imp_uid, created_at, updated_at, resolved_at)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, 'paid', ?7, ?8, ?8, ?8) RETURNING id",
        params![p.subscription_id, p.period as i64, p.merchant_uid, p.customer_uid, p.amount, p.currency, imp_uid, now],
        |r| r.get(0),
    )?;
    let detail = json!({
        "period": p.period, "merchant_uid": p.merchant_uid, "imp_uid": imp_uid, "amount": p.amount,
        "currency": p.currency, "reason": "older than catch_up_window: found paid at the gateway",
    });
    event(tx, now, "period.found_paid", Some(&p.subscription_id), detail)?;
    publish(tx, now, "charge.paid", Some(&p.subscription_id), About::Attempt(attempt), Default::default())?;
    Ok(true)
}

/// Records period `p` skipped (never charged; its merchant_uid kept when free), with a `period.skipped` event.
fn record_skipped(tx: &dyn Db, p: &NewPeriod, reason: &str, now: i64) -> Result<()> {
    insert_closed(tx, p, "skipped", now)?;
    let detail = json!({
        "period": p.period, "merchant_uid": p.merchant_uid, "due_at": p.due_at.to_rfc3339(), "amount": p.amount,
        "currency": p.currency, "reason": reason,
    });
    subscription_event(tx, now, "period.skipped", &p.subscription_id, detail)
}
