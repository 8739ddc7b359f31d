//! SQLite: the rows the credit rules of plan changes read (`billing::credit`), inside the caller's transaction: a
//! subscription's changes as money, a period's charges, the refund cap beside credits, and the release of the credit
//! left when a subscription ends.

use super::book::current_status;
use super::db::{Db, params};
use super::events::event;
use crate::billing::credit::{ChangeMoney, Outcome, change_charges_of, refund_cap, release};
use anyhow::Result;
use serde_json::json;

/// The plan changes of subscription `id` as money, oldest first (each with what its charge was paid).
pub(super) fn money_of(conn: &dyn Db, id: &str) -> Result<Vec<ChangeMoney>> {
    let st = "SELECT c.id, c.timing = 'now', c.period, c.state, c.owed, c.opens_amount, c.merchant_uid, c.released,
           coalesce(o.status = 'paid', FALSE), coalesce(o.amount, 0)
         FROM plan_changes c LEFT JOIN one_time_charges o ON o.merchant_uid = c.merchant_uid
         WHERE c.subscription_id = ?1 ORDER BY c.id";
    let rows = conn.query_map(st, params![id], |r| {
        let paid: bool = r.get(8)?;
        let state: String = r.get(3)?;
        let outcome = match (state.as_str(), paid) {
            ("applied", _) => Outcome::Applied,
            ("pending", _) => Outcome::Pending,
            (_, true) => Outcome::Credited,
            _ => Outcome::Failed,
        };
        let charge: Option<String> = r.get(6)?;
        let amount: i64 = r.get(9)?;
        Ok(ChangeMoney {
            id: r.get(0)?,
            now: r.get(1)?,
            period: r.get::<i64>(2)? as u64,
            outcome,
            owed: r.get(4)?,
            opens: r.get(5)?,
            charge: charge.map(|m| (m, if paid { amount } else { 0 })),
            released: r.get(7)?,
        })
    })?;
    Ok(rows)
}

/// The charges that are the money of period `period` of subscription `id`: the period's own merchant_uid (if it
/// was opened) and the change charges that are its money ([`change_charges_of`]).
pub(super) fn period_charges(conn: &dyn Db, id: &str, period: u64, money: &[ChangeMoney]) -> Result<Vec<String>> {
    let own: Option<String> = conn.query_opt(
        "SELECT merchant_uid FROM periods WHERE subscription_id = ?1 AND period = ?2",
        params![id, period as i64],
        |r| r.get(0),
    )?;
    Ok(own.into_iter().chain(change_charges_of(period, money).into_iter().map(str::to_owned)).collect())
}

/// Whether any of `charges` has a refund (made, in doubt, or failed: a failed one may still land).
pub(super) fn any_refund(conn: &dyn Db, charges: &[String]) -> Result<bool> {
    let st = "SELECT EXISTS (SELECT 1 FROM refunds WHERE merchant_uid = ?1)";
    for m in charges {
        if conn.query_row(st, params![m], |r| r.get::<bool>(0))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The refund rule of credits for the charge `merchant_uid`, read inside the caller's transaction
/// ([`refund_cap`]): `None` when the charge is no period's or change's, or its period's changes left no credit;
/// else (what may still be refunded of its period's charges, what stays credited).
pub(super) fn refundable_beside_credit(conn: &dyn Db, merchant_uid: &str) -> Result<Option<(i64, i64)>> {
    let period: Option<(String, i64)> = conn.query_opt(
        "SELECT subscription_id, period FROM periods WHERE merchant_uid = ?1",
        params![merchant_uid],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let change: Option<String> = conn.query_opt(
        "SELECT subscription_id FROM plan_changes WHERE merchant_uid = ?1",
        params![merchant_uid],
        |r| r.get(0),
    )?;
    let (id, period) = match (period, change) {
        (Some((id, p)), _) => (id, p as u64),
        (None, Some(id)) => {
            let money = money_of(conn, &id)?;
            let of = money.iter().find(|c| c.charge.as_ref().is_some_and(|(m, _)| m == merchant_uid));
            match of {
                Some(c) => (id, c.charge_period()),
                None => return Ok(None),
            }
        }
        (None, None) => return Ok(None),
    };
    let money = money_of(conn, &id)?;
    let own_paid: i64 = conn.query_row(
        "SELECT coalesce(sum(amount), 0) FROM attempts WHERE subscription_id = ?1 AND period = ?2
               AND status = 'paid'",
        params![id, period as i64],
        |r| r.get(0),
    )?;
    let mut spent = 0i64;
    let st = "SELECT coalesce(sum(amount), 0) FROM refunds WHERE merchant_uid = ?1 AND status != 'failed'";
    for m in period_charges(conn, &id, period, &money)? {
        spent += conn.query_row(st, params![&m], |r| r.get::<i64>(0))?;
    }
    Ok(refund_cap(period, &money, own_paid, spent))
}

/// Gives the credit a period not paid had taken (`periods.credit`, spent when it opened) back to its subscription,
/// with a `period.credit_returned` event, inside `tx` (the transaction that gives the period up, or ends the
/// subscription): a credit is never lost with a period that is not paid.
pub(super) fn return_credit(tx: &dyn Db, id: &str, period: u64, now: i64) -> Result<()> {
    let credit: i64 = tx.query_row(
        "SELECT credit FROM periods WHERE subscription_id = ?1 AND period = ?2",
        params![id, period as i64],
        |r| r.get(0),
    )?;
    if credit == 0 {
        return Ok(());
    }
    tx.execute("UPDATE periods SET credit = 0 WHERE subscription_id = ?1 AND period = ?2", params![id, period as i64])?;
    tx.execute(
        "UPDATE subscriptions SET credit = credit + ?2, updated_at = ?3 WHERE id = ?1",
        params![id, credit, now],
    )?;
    event(tx, now, "period.credit_returned", Some(id), json!({ "period": period, "credit": credit }))
}

/// Releases the credit left to subscription `id` if it has ended (canceled or completed, read inside the caller's
/// transaction): taken out of its credit (no period ever spends it), recorded on the changes that added it
/// ([`release`]), and refundable from then on (the refund cap of their periods no longer counts it), with a
/// `subscription.credit_released` event. Returns how much was released (0: nothing to release).
pub(super) fn release_credit_in(conn: &dyn Db, id: &str, now: i64) -> Result<i64> {
    if !current_status(conn, id)?.is_some_and(|s| s.is_final()) {
        return Ok(0);
    }
    // An open period that will never be charged now (no request of it in flight) gives back the credit it took
    // first (an outsider's canceled past-due subscription kept 4 517 on its open period: neither spendable nor
    // refundable). One in flight keeps it until its charge is settled.
    let open: Vec<i64> = conn.query_map(
        "SELECT period FROM periods p WHERE subscription_id = ?1 AND state = 'open' AND credit > 0
               AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.subscription_id = p.subscription_id
                                 AND a.period = p.period AND a.status IN ('pending', 'unknown'))",
        params![id],
        |r| r.get(0),
    )?;
    for period in open {
        return_credit(conn, id, period as u64, now)?;
    }
    let credit: i64 = conn.query_row("SELECT credit FROM subscriptions WHERE id = ?1", params![id], |r| r.get(0))?;
    if credit <= 0 {
        return Ok(0);
    }
    let parts = release(&money_of(conn, id)?, credit);
    let st = "UPDATE plan_changes SET released = released + ?2 WHERE id = ?1";
    for (change, n) in &parts {
        conn.execute(st, params![change, n])?;
    }
    let released: i64 = parts.iter().map(|p| p.1).sum();
    conn.execute(
        "UPDATE subscriptions SET credit = credit - ?2, updated_at = ?3 WHERE id = ?1",
        params![id, released, now],
    )?;
    let detail = json!({ "released": released, "credit_left": credit - released,
        "reason": "the subscription ended with credit left: refundable from its charges (`billd refund`)" });
    event(conn, now, "subscription.credit_released", Some(id), detail)?;
    Ok(released)
}
