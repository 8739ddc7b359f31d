//! SQLite: plan changes (`plan_changes`) and the credit they leave (`subscriptions.credit`): recorded, and applied
//! at once or, for one that charges, by whatever settles its charge (`settle_in`, called from `one_time.rs`), as
//! `billing::proration::paid_change_applies` decides from the subscription as it is then.

use super::book::current_status;
use super::credit::{any_refund, money_of, period_charges, release_credit_in};
use super::db::{Db, Row, params};
use super::events::{event, subscription_event};
use super::{SqlStore, at, secs};
use crate::billing::calendar::Interval;
use crate::billing::model::Status;
use crate::billing::proration::{AsItIs, Decided, apply_credit, paid_change_applies};
use crate::store::{ChangeState, ChangeTiming, Changes, PlanChange, PlanChangeRow};
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

const CHANGE_SELECT: &str = "SELECT id, state, subscription_id, timing, at, period, from_plan_id, from_amount,
    from_interval, to_plan_id, to_plan_name, to_amount, to_interval, rate, owed, merchant_uid, anchor_date,
    anchor_period, next_period, next_due_at, opens_uid, opens_amount, created_at, credit_used, released, sets_term,
    to_last_period
    FROM plan_changes";

fn change_from_row(r: &dyn Row) -> Result<PlanChangeRow> {
    let id: i64 = r.get(0)?;
    let read = || -> Result<PlanChangeRow> {
        let interval = |i: usize| -> Result<Interval> { r.text(i)?.parse::<Interval>().map_err(|e| anyhow!(e)) };
        let timing = r.text(3)?;
        let state = r.text(1)?;
        let opens_uid: Option<String> = r.get(20)?;
        let opens_amount: Option<i64> = r.get(21)?;
        let change = PlanChange {
            subscription_id: r.get(2)?,
            timing: ChangeTiming::parse(timing).ok_or_else(|| anyhow!("bad timing {timing:?}"))?,
            at: at(r.get(4)?),
            period: r.get::<i64>(5)? as u64,
            from_plan_id: r.get(6)?,
            from_amount: r.get(7)?,
            from_interval: interval(8)?,
            to_plan_id: r.get(9)?,
            to_plan_name: r.get(10)?,
            to_amount: r.get(11)?,
            to_interval: interval(12)?,
            rate: r.get(13)?,
            owed: r.get(14)?,
            credit_used: r.get(23)?,
            merchant_uid: r.get(15)?,
            anchor_date: r.text(16)?.parse::<NaiveDate>()?,
            anchor_period: r.get::<i64>(17)? as u64,
            next_period: r.get::<i64>(18)? as u64,
            next_due_at: r.get::<Option<i64>>(19)?.map(at),
            opens: opens_uid.zip(opens_amount),
            last_period: (r.get::<i64>(25)? != 0)
                .then(|| r.get::<Option<i64>>(26))
                .transpose()?
                .map(|p| p.map(|p| p.max(0) as u64)),
        };
        Ok(PlanChangeRow {
            id,
            state: ChangeState::parse(state).ok_or_else(|| anyhow!("bad state {state:?}"))?,
            change,
            created_at: at(r.get(22)?),
            released: r.get(24)?,
        })
    };
    read().with_context(|| format!("plan change {id} has a corrupt row"))
}

/// The plan changes of subscription `id`, oldest first.
fn changes_of(conn: &dyn Db, id: &str) -> Result<Vec<PlanChangeRow>> {
    let st = format!("{CHANGE_SELECT} WHERE subscription_id = ?1 ORDER BY id");
    let rows = conn.query_map(&st, params![id], change_from_row)?;
    Ok(rows)
}

/// Applies a recorded change inside `tx` (the subscription bills the new plan; a credit is added, and the held credit
/// it counted on spent; a new first period is recorded paid), marks it applied, and logs `subscription.plan_changed`.
/// A change that keeps the period writes no calendar (the subscription keeps its next period and due date as they
/// are); one at period end or one that restarts the interval writes the calendar it decided. An error if the
/// subscription no longer has the plan the change was made from (nothing of it applies).
pub(super) fn apply_in(tx: &dyn Db, row_id: i64, c: &PlanChange, now: i64) -> Result<()> {
    let credit = (-c.owed).max(0);
    let calendar = c.timing == ChangeTiming::PeriodEnd || c.opens.is_some();
    // A term it sets (`?15`: sets one; `?16`: its last period, NULL for none) applies with it; one whose last period
    // is before the next period leaves nothing to open (completed by the next pass, as a term shortened in the file).
    let changed = tx.execute(
        "UPDATE subscriptions SET plan_id = ?3, plan_name = ?4, amount = ?5, interval = ?6,
               anchor_date = CASE WHEN ?13 THEN ?7 ELSE anchor_date END,
               anchor_period = CASE WHEN ?13 THEN ?8 ELSE anchor_period END,
               next_period = CASE WHEN ?13 THEN ?9 ELSE next_period END,
               next_due_at = CASE
                 WHEN ?15 AND CAST(?16 AS BIGINT) IS NOT NULL AND (CASE WHEN ?13 THEN ?9 ELSE next_period END) > ?16 THEN NULL
                 WHEN ?13 THEN coalesce(?10, next_due_at) ELSE next_due_at END,
               last_period = CASE WHEN ?15 THEN ?16 ELSE last_period END,
               credit = credit + ?11 - ?14, updated_at = ?12
             WHERE id = ?1 AND plan_id = ?2",
        params![
            c.subscription_id,
            c.from_plan_id,
            c.to_plan_id,
            c.to_plan_name,
            c.to_amount,
            c.to_interval.to_string(),
            c.anchor_date.to_string(),
            c.anchor_period as i64,
            c.next_period as i64,
            c.next_due_at.map(secs),
            credit,
            now,
            calendar,
            c.credit_used,
            c.last_period.is_some(),
            c.last_period.flatten().map(|p| p as i64)
        ],
    )?;
    if changed != 1 {
        bail!("subscription {} no longer has plan {}; the change is not applied", c.subscription_id, c.from_plan_id);
    }
    if let Some((uid, amount)) = &c.opens {
        // The new plan's first period, from the change's instant: paid by the change (its charge, or the old
        // period's unused part).
        let (customer, currency): (String, String) = tx.query_row(
            "SELECT customer_uid, currency FROM subscriptions WHERE id = ?1",
            params![&c.subscription_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let inserted = tx.execute(
            "INSERT INTO periods (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name,
               state, next_attempt_at, opened_at, closed_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'paid', NULL, ?9, ?9
             WHERE NOT EXISTS (SELECT 1 FROM one_time_charges WHERE merchant_uid = ?4 COLLATE NOCASE)
             ON CONFLICT DO NOTHING",
            params![
                c.subscription_id,
                (c.period + 1) as i64,
                secs(c.at),
                uid,
                customer,
                amount,
                currency,
                c.to_plan_name,
                now
            ],
        )?;
        if inserted != 1 {
            bail!("period {} of subscription {} (merchant_uid {uid}) exists already", c.period + 1, c.subscription_id);
        }
    }
    tx.execute("UPDATE plan_changes SET state = 'applied', updated_at = ?2 WHERE id = ?1", params![row_id, now])?;
    let detail = json!({
        "timing": c.timing.as_str(), "at": c.at.to_rfc3339(), "period": c.period,
        "from": c.from_plan_id, "to": c.to_plan_id, "amount": c.to_amount, "interval": c.to_interval.to_string(),
        "owed": c.owed, "merchant_uid": c.merchant_uid, "credit_added": credit, "credit_used": c.credit_used,
        "last_period": c.last_period.flatten(),
    });
    subscription_event(tx, now, "subscription.plan_changed", &c.subscription_id, detail)
}

/// What settling the one-time charge `merchant_uid` does to the plan change it belongs to, inside `tx`. Paid: the
/// change applies if [`paid_change_applies`] says it still does to the subscription as it is inside `tx`; otherwise
/// it is not applied (failed, if it was pending, so that periods open again) and what its charge took is the
/// customer's: credited to the subscription (`subscription.plan_change_credited`, with the reason), and released as
/// refundable at once if the subscription has ended. Failed: a pending change fails. Nothing for a charge that
/// belongs to no change.
pub(super) fn settle_in(tx: &dyn Db, merchant_uid: &str, paid: bool, now: i64) -> Result<()> {
    let row =
        tx.query_opt(&format!("{CHANGE_SELECT} WHERE merchant_uid = ?1"), params![merchant_uid], change_from_row)?;
    let Some(row) = row else { return Ok(()) };
    let c = &row.change;
    match (paid, row.state) {
        (_, ChangeState::Applied) | (false, ChangeState::Failed) => Ok(()),
        (true, state) => {
            let sub = tx.query_opt(
                "SELECT plan_id, status, next_period, cancel_at, last_period, suspended_at, credit
                     FROM subscriptions WHERE id = ?1",
                params![&c.subscription_id],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<Status>(1)?,
                        r.get::<i64>(2)?,
                        r.get::<Option<i64>>(3)?,
                        r.get::<Option<i64>>(4)?,
                        r.get::<Option<i64>>(5)?,
                        r.get::<i64>(6)?,
                    ))
                },
            )?;
            let decided = Decided {
                pending: state == ChangeState::Pending,
                from_plan: &c.from_plan_id,
                next_period: c.period + 1,
                restarts: c.opens.is_some(),
                at: c.at,
                credit_used: c.credit_used,
            };
            let verdict = match &sub {
                Some((plan, status, next, cancel_at, last, paused, credit)) => paid_change_applies(
                    &decided,
                    &AsItIs {
                        plan,
                        bills: status.bills(),
                        ended: status.is_final(),
                        next_period: *next as u64,
                        cancel_at: cancel_at.map(at),
                        last_period: last.map(|p| p.max(0) as u64),
                        paused_at: paused.map(at),
                        credit: *credit,
                    },
                ),
                None => Err("the subscription is gone"),
            };
            match verdict {
                Ok(()) => apply_in(tx, row.id, c, now),
                Err(why) => {
                    // Not applied: the charge paid is the customer's, carried to the next periods like a downgrade's
                    // credit (released at once, refundable, if the subscription has ended). The change fails, so
                    // that periods open again.
                    let charged = c.charge();
                    tx.execute(
                        "UPDATE subscriptions SET credit = credit + ?2, updated_at = ?3 WHERE id = ?1",
                        params![c.subscription_id, charged, now],
                    )?;
                    tx.execute(
                        "UPDATE plan_changes SET state = 'failed', updated_at = ?2 WHERE id = ?1",
                        params![row.id, now],
                    )?;
                    let detail = json!({ "merchant_uid": merchant_uid, "from": c.from_plan_id, "to": c.to_plan_id,
                        "credited": charged, "plan": sub.as_ref().map(|s| s.0.clone()),
                        "reason": format!("its charge was found paid, but the change no longer applies: {why}; \
                                           the charge is credited to the subscription") });
                    event(tx, now, "subscription.plan_change_credited", Some(&c.subscription_id), detail)?;
                    release_credit_in(tx, &c.subscription_id, now)?;
                    Ok(())
                }
            }
        }
        (false, _) => {
            tx.execute(
                "UPDATE plan_changes SET state = 'failed', updated_at = ?2 WHERE id = ?1",
                params![row.id, now],
            )?;
            let detail = json!({ "merchant_uid": merchant_uid, "from": c.from_plan_id, "to": c.to_plan_id });
            event(tx, now, "subscription.plan_change_failed", Some(&c.subscription_id), detail)
        }
    }
}

/// Withdraws, inside `tx`, the pending plan changes of subscription `id` whose charge has not left (no intent yet,
/// or an intent whose "go" was never given): failed with a `subscription.plan_change_failed` event, so that their
/// charge never leaves (the go and the intent of a change's charge require its change pending). Called by every
/// status change to a status that does not bill. Returns (how many were withdrawn, how many changes have a charge
/// that may have left: settled by lookup; if paid, credited, never applied to a subscription that does not bill).
pub(super) fn withdraw_in(tx: &dyn Db, id: &str, now: i64) -> Result<(usize, usize)> {
    let pending: Vec<(i64, Option<String>, bool)> = tx.query_map(
        "SELECT c.id, c.merchant_uid,
               o.id IS NULL OR (o.status = 'pending' AND o.go_wall_ms IS NULL) OR o.status = 'failed'
             FROM plan_changes c LEFT JOIN one_time_charges o ON o.merchant_uid = c.merchant_uid
             WHERE c.subscription_id = ?1 AND c.state = 'pending'",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (mut withdrawn, mut out) = (0, 0);
    for (change, uid, unsent) in pending {
        if !unsent {
            out += 1;
            continue;
        }
        tx.execute("UPDATE plan_changes SET state = 'failed', updated_at = ?2 WHERE id = ?1", params![change, now])?;
        let detail = json!({ "merchant_uid": uid, "sent": false,
            "reason": "withdrawn: the subscription stopped billing (a cancel or a pause) before its charge left" });
        event(tx, now, "subscription.plan_change_failed", Some(id), detail)?;
        withdrawn += 1;
    }
    Ok((withdrawn, out))
}

/// Why `c` may not be recorded, read inside `tx` (`None`: it may).
fn refusal(tx: &dyn Db, c: &PlanChange, seen: usize) -> Result<Option<String>> {
    let id = &c.subscription_id;
    let Some(status) = current_status(tx, id)? else {
        return Ok(Some(format!("no subscription {id:?}")));
    };
    if !status.bills() {
        return Ok(Some(format!("subscription {id} is {status}: it does not bill")));
    }
    let (plan, next): (String, i64) =
        tx.query_row("SELECT plan_id, next_period FROM subscriptions WHERE id = ?1", params![id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let open: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM periods WHERE subscription_id = ?1 AND state = 'open')",
        params![id],
        |r| r.get(0),
    )?;
    let (count, pending): (i64, i64) = tx.query_row(
        "SELECT count(*), count(*) FILTER (WHERE state = 'pending') FROM plan_changes WHERE subscription_id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // The last change in force (or pending): a change is never dated before it (a back-dated `--as-of` would
    // settle time already settled by it).
    let last: Option<i64> = tx.query_row(
        "SELECT max(at) FROM plan_changes WHERE subscription_id = ?1 AND state != 'failed'",
        params![id],
        |r| r.get(0),
    )?;
    let expected = match c.timing {
        ChangeTiming::Now => c.period + 1,
        ChangeTiming::PeriodEnd => c.period,
    };
    // A change now credits or charges the rest of a period from what it paid: a period with refunds (of its own
    // charge or of a change's charge in it; made, in doubt, or failed, which may still land) would be credited
    // money already given back (outsiders got 10 000 back and 4 843 of credit on 10 000, and a refunded upgrade
    // credited again).
    // The period's charges are its own and the change charges that are its money (`billing::credit`: a change of
    // interval's charge pays the new plan's first period).
    let refunded: bool =
        c.timing == ChangeTiming::Now && any_refund(tx, &period_charges(tx, id, c.period, &money_of(tx, id)?)?)?;
    Ok(if plan != c.from_plan_id {
        Some(format!("subscription {id} has plan {plan} now, not {}", c.from_plan_id))
    } else if open {
        Some(format!("subscription {id} has an open period (charge it with `billd retry` or let dunning run first)"))
    } else if refunded {
        Some(format!(
            "subscription {id}: period {} has refunds; a change now would credit what was given back (change at \
             period end)",
            c.period
        ))
    } else if pending > 0 {
        Some(format!("subscription {id} has a plan change whose charge is not settled yet"))
    } else if let Some(last) = last.filter(|l| secs(c.at) < *l) {
        Some(format!(
            "subscription {id}: a change at {} is before the last change of it ({}); changes are made in time order",
            c.at.to_rfc3339(),
            at(last).to_rfc3339()
        ))
    } else if next as u64 != expected || count as usize != seen {
        Some(format!("subscription {id} changed meanwhile (another command or a pass); rerun to decide again"))
    } else {
        None
    })
}

impl Changes for SqlStore {
    fn change_plan(
        &self,
        c: &PlanChange,
        seen: usize,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<PlanChangeRow, String>> {
        let now = secs(now);
        let tx = self.tx()?;
        if let Some(why) = refusal(&tx, c, seen)? {
            return Ok(Err(why));
        }
        if (c.owed > 0) != c.merchant_uid.is_some() {
            bail!("plan change of {}: a charge needs its merchant_uid, and only a charge has one", c.subscription_id);
        }
        // The credit the customer holds pays the change's charge first (read here, spent when it applies): what it
        // leaves is charged; a credit that covers it whole charges nothing, and the change applies at once.
        let held: i64 =
            tx.query_row("SELECT credit FROM subscriptions WHERE id = ?1", params![&c.subscription_id], |r| r.get(0))?;
        let mut c = c.clone();
        if c.owed > 0 {
            let (charged, _) = apply_credit(c.owed, held);
            c.credit_used = c.owed - charged;
            if charged == 0 {
                c.merchant_uid = None;
            }
        } else {
            c.credit_used = 0;
        }
        let c = &c;
        let id: i64 = tx.query_row(
            "INSERT INTO plan_changes (subscription_id, timing, at, period, from_plan_id, from_amount,
                   from_interval, to_plan_id, to_plan_name, to_amount, to_interval, rate, owed, merchant_uid,
                   anchor_date, anchor_period, next_period, next_due_at, opens_uid, opens_amount, state, created_at,
                    updated_at, credit_used, sets_term, to_last_period)
                  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
                    'pending', ?21, ?21, ?22, ?23, ?24) RETURNING id",
            params![
                c.subscription_id,
                c.timing.as_str(),
                secs(c.at),
                c.period as i64,
                c.from_plan_id,
                c.from_amount,
                c.from_interval.to_string(),
                c.to_plan_id,
                c.to_plan_name,
                c.to_amount,
                c.to_interval.to_string(),
                c.rate,
                c.owed,
                c.merchant_uid,
                c.anchor_date.to_string(),
                c.anchor_period as i64,
                c.next_period as i64,
                c.next_due_at.map(secs),
                c.opens.as_ref().map(|o| o.0.as_str()),
                c.opens.as_ref().map(|o| o.1),
                now,
                c.credit_used,
                c.last_period.is_some(),
                c.last_period.flatten().map(|p| p as i64)
            ],
            |r| r.get(0),
        )?;
        let state = if c.merchant_uid.is_none() {
            apply_in(&tx, id, c, now)?;
            ChangeState::Applied
        } else {
            let detail = json!({ "merchant_uid": c.merchant_uid, "owed": c.owed, "credit_used": c.credit_used,
                "charge": c.charge(), "to": c.to_plan_id });
            event(&tx, now, "subscription.plan_change_pending", Some(&c.subscription_id), detail)?;
            ChangeState::Pending
        };
        tx.commit()?;
        Ok(Ok(PlanChangeRow { id, state, change: c.clone(), created_at: at(now), released: 0 }))
    }

    fn abandon_plan_change(&self, merchant_uid: &str, reason: &str, now: DateTime<Utc>) -> Result<bool> {
        let now = secs(now);
        let tx = self.tx()?;
        let failed: Option<String> = tx.query_opt(
            "UPDATE plan_changes SET state = 'failed', updated_at = ?2
                 WHERE merchant_uid = ?1 AND state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM one_time_charges WHERE merchant_uid = ?1 COLLATE NOCASE)
                 RETURNING subscription_id",
            params![merchant_uid, now],
            |r| r.get(0),
        )?;
        if let Some(sub) = &failed {
            let detail = json!({ "merchant_uid": merchant_uid, "reason": reason, "sent": false });
            event(&tx, now, "subscription.plan_change_failed", Some(sub), detail)?;
        }
        tx.commit()?;
        Ok(failed.is_some())
    }

    fn abandon_unbegun_changes(
        &self,
        recorded_before: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlanChangeRow>> {
        let now = secs(now);
        let tx = self.tx()?;
        let ids: Vec<i64> = tx.query_map(
            "UPDATE plan_changes SET state = 'failed', updated_at = ?2
                 WHERE state = 'pending' AND created_at <= ?1
                   AND NOT EXISTS (SELECT 1 FROM one_time_charges o
                                     WHERE o.merchant_uid = plan_changes.merchant_uid COLLATE NOCASE)
                 RETURNING id",
            params![secs(recorded_before), now],
            |r| r.get(0),
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = tx.query_row(&format!("{CHANGE_SELECT} WHERE id = ?1"), params![id], change_from_row)?;
            let detail = json!({ "merchant_uid": row.change.merchant_uid, "reason": reason, "sent": false });
            event(&tx, now, "subscription.plan_change_failed", Some(&row.change.subscription_id), detail)?;
            out.push(row);
        }
        tx.commit()?;
        Ok(out)
    }

    fn settle_paid_change(&self, merchant_uid: &str, now: DateTime<Utc>) -> Result<bool> {
        let tx = self.tx()?;
        let stuck: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM plan_changes c JOIN one_time_charges o ON o.merchant_uid = c.merchant_uid
               WHERE c.merchant_uid = ?1 AND c.state = 'pending' AND o.status = 'paid')",
            params![merchant_uid],
            |r| r.get(0),
        )?;
        if stuck {
            settle_in(&tx, merchant_uid, true, secs(now))?;
        }
        tx.commit()?;
        Ok(stuck)
    }

    fn plan_changes(&self, id: &str) -> Result<Vec<PlanChangeRow>> {
        changes_of(self.db(), id)
    }

    fn pending_changes(&self) -> Result<Vec<PlanChangeRow>> {
        let st = format!("{CHANGE_SELECT} WHERE state = 'pending' ORDER BY id");
        let rows = self.db().query_map(&st, params![], change_from_row)?;
        Ok(rows)
    }

    fn credit(&self, id: &str) -> Result<i64> {
        let credit: Option<i64> =
            self.db().query_opt("SELECT credit FROM subscriptions WHERE id = ?1", params![id], |r| r.get(0))?;
        Ok(credit.unwrap_or(0))
    }
}
