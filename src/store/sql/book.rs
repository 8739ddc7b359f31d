//! SQLite: the subscriptions (reads, config sync, operator status changes, resume, manual adds) and the one place a
//! subscription's status changes (`change_status`, as `billing::status` decides).

use super::db::{Db, Row, params};
use super::events::{event, subscription_event};
use super::ledger::DUE_NOW_BY_OPERATOR;
use super::lifecycle::{after_restart, end_in, pause_in, stopped_by_dunning};
use super::names::same_id_but_case;
use super::outbox::{About, fields, publish};
use super::sync::{apply_sync_in, book_clock_in, retime_in};
use super::{SqlStore, at, secs};
use crate::billing::calendar::{ChargeClock, Interval};
use crate::billing::model::{Pause, Source, Status, Subscription};
use crate::billing::proration::Discount;
use crate::billing::status::{Cause, next_status};
use crate::billing::sync::SyncPlan;
use crate::store::{Book, ImportRow, ImportedAs, SafetyStop, StatusChange, StatusSet, status_event};
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

pub(super) const SUB_SELECT: &str = "SELECT id, customer_uid, plan_id, plan_name, amount, currency, interval,
    start_date, anchor_date, anchor_period, next_period, next_due_at, status, source, skip_windows, discount,
    cancel_at, last_period FROM subscriptions";

/// A row of [`SUB_SELECT`] (read by position: looking columns up by name was a measurable part of opening periods).
pub(super) fn sub_from_row(r: &dyn Row) -> Result<Subscription> {
    let id: String = r.get(0)?;

    (|| -> Result<Subscription> {
        let interval = r.text(6)?;
        let start = r.text(7)?;
        let anchor = r.text(8)?;
        let status = r.text(12)?;
        Ok(Subscription {
            customer_uid: r.get(1)?,
            plan_id: r.get(2)?,
            plan_name: r.get(3)?,
            amount: r.get(4)?,
            currency: r.get(5)?,
            interval: interval.parse::<Interval>().map_err(|e| anyhow!(e))?,
            start_date: start.parse::<NaiveDate>()?,
            anchor_date: anchor.parse::<NaiveDate>()?,
            anchor_period: r.get::<i64>(9)? as u64,
            next_period: r.get::<i64>(10)? as u64,
            status: Status::parse(status).ok_or_else(|| anyhow!("bad status {status:?}"))?,
            source: r.get(13)?,
            skip: match r.text_opt(14)? {
                Some(text) => serde_json::from_str(text).context("skip_windows")?,
                None => Vec::new(),
            },
            discount: match r.text_opt(15)? {
                Some(text) => Some(serde_json::from_str(text).context("discount")?),
                None => None,
            },
            cancel_at: r.get::<Option<i64>>(16)?.map(at),
            last_period: r.get::<Option<i64>>(17)?.map(|p| p.max(0) as u64),
            id: id.clone(),
        })
    })()
    .with_context(|| format!("subscription {id:?} has a corrupt row"))
}

/// Writes a new subscription row (every column a subscription keeps) and its `subscription.created` event, inside
/// `tx`: the one place a subscription is inserted, for a sync and a command alike (a column added since was written
/// by one of two copies only).
pub(super) fn insert_row(tx: &dyn Db, s: &Subscription, source: Source, due: Option<i64>, now: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
           anchor_date, anchor_period, next_period, next_due_at, status, source, created_at, updated_at, discount,
           cancel_at, last_period)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?17, ?18)",
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
            s.next_period as i64,
            due,
            s.status,
            source,
            now,
            discount_json(s.discount),
            s.cancel_at.map(secs),
            s.last_period.map(|p| p as i64)
        ],
    )?;
    let detail = json!({
        "plan": s.plan_id, "amount": s.amount, "currency": s.currency, "start": s.start_date.to_string(),
        "status": s.status.as_str(), "source": source.as_str(), "discount": s.discount,
    });
    subscription_event(tx, now, "subscription.created", &s.id, detail)
}

/// A discount as stored: JSON (NULL when there is none).
pub(super) fn discount_json(d: Option<Discount>) -> Option<String> {
    d.map(|d| serde_json::to_string(&d).unwrap_or_default())
}

/// Skip windows as stored: a JSON array of `[from, to]` (NULL when there are none).
pub(super) fn skip_json(windows: &[(i64, i64)]) -> Option<String> {
    (!windows.is_empty()).then(|| serde_json::to_string(windows).unwrap_or_default())
}

fn config_subscriptions_in(conn: &dyn Db) -> Result<Vec<Subscription>> {
    let st = format!("{SUB_SELECT} WHERE source = 'config' ORDER BY id");
    let rows = conn.query_map(&st, params![], sub_from_row)?;
    Ok(rows)
}

pub(super) fn current_status(conn: &dyn Db, id: &str) -> Result<Option<Status>> {
    let s: Option<String> =
        conn.query_opt("SELECT status FROM subscriptions WHERE id = ?1", params![id], |r| r.get(0))?;
    Ok(s.and_then(|s| Status::parse(&s)))
}

/// What [`change_status`] did: (before, after, attempts voided, plan changes withdrawn, credit released).
type Moved = (Status, Option<Status>, usize, usize, i64);

/// Moves subscription `id` to the status [`next_status`] decides for `cause`, given its status as it is inside `tx`,
/// and records the change (with `reason`) as an event. A status that does not bill voids, in the same transaction,
/// the subscription's claimed attempts whose requests have not left ([`void_unsent`]), whatever made the change.
/// Returns its status before (`None`: no such subscription), the status it moved to (`None`: no change), how many
/// attempts it voided, how many plan changes whose charges had not left it withdrew (`changes::withdraw_in`) and
/// how much credit an end released (`credit::release_credit_in`).
pub(super) fn change_status(tx: &dyn Db, id: &str, cause: Cause, now: i64, reason: &str) -> Result<Option<Moved>> {
    let Some(from) = current_status(tx, id)? else {
        return Ok(None);
    };
    let Some(to) = next_status(from, cause) else {
        return Ok(Some((from, None, 0, 0, 0)));
    };
    // A plan change whose charge has not left is withdrawn with the claims.
    let (voided, withdrawn) =
        if to.bills() { (0, 0) } else { (void_unsent(tx, id, now)?, super::changes::withdraw_in(tx, id, now)?.0) };
    tx.execute(
        "UPDATE subscriptions SET status = ?2, updated_at = ?3, resume_at = NULL, resume_catch_up = 0,
           suspended_at = CASE WHEN ?2 = 'suspended' THEN ?3 ELSE suspended_at END,
           stopped_by = CASE WHEN ?4 THEN 'dunning' END WHERE id = ?1",
        params![id, to, now, matches!(cause, Cause::Exhausted(_))],
    )?;
    // An end (canceled, completed) with credit left releases it: refundable, never lost.
    let released = super::credit::release_credit_in(tx, id, now)?;
    let mut detail = json!({ "from": from.as_str(), "reason": reason });
    let mut extra = json!({ "previous_status": from.as_str(), "reason": reason });
    if released > 0 {
        detail["credit_released"] = json!(released);
        extra["credit_released"] = json!(released);
    }
    event(tx, now, &format!("subscription.{}", to.as_str()), Some(id), detail)?;
    let extra = fields(extra);
    publish(tx, now, status_event(to, cause), Some(id), About::Subscription(id), extra)?;
    Ok(Some((from, Some(to), voided, withdrawn, released)))
}

/// Voids a subscription's claimed attempts whose requests have not left (pending, never stamped by
/// `Ledger::begin_send`): removed as [`Ledger::release`](crate::store::Ledger::release) removes them, their periods
/// due again at `now` (charged only if the subscription bills again). A sender that has not yet made its "go"
/// write then finds nothing to send. Returns how many.
pub(super) fn void_unsent(tx: &dyn Db, id: &str, now: i64) -> Result<usize> {
    let del = "DELETE FROM attempts WHERE subscription_id = ?1 AND status = 'pending' AND doubt_wall_ms IS NULL
         RETURNING period";
    let periods = tx.query_map(del, params![id], |r| r.get::<i64>(0))?;
    let due = "UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2 AND state = 'open'";
    for p in &periods {
        tx.execute(due, params![id, p, now])?;
    }
    Ok(periods.len())
}

/// A subscription's charges whose requests have left and are not settled yet; second, those of its plan changes.
fn in_flight(tx: &dyn Db, id: &str) -> Result<(usize, usize)> {
    let (n, changes): (i64, i64) = tx.query_row(
        "SELECT (SELECT count(*) FROM attempts WHERE subscription_id = ?1 AND status IN ('pending', 'unknown')
                       AND doubt_wall_ms IS NOT NULL),
                    (SELECT count(*) FROM plan_changes c JOIN one_time_charges o ON o.merchant_uid = c.merchant_uid
                       WHERE c.subscription_id = ?1 AND c.state = 'pending' AND o.status IN ('pending', 'unknown'))",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((n as usize + changes as usize, changes as usize))
}

/// The columns of a safety stop, read leniently (a row edited by hand never makes the stop impossible to read or
/// release): see [`stop_row`].
const STOP_COLUMNS: &str = "CAST(reason AS TEXT), CAST(max_charges_per_pass AS BIGINT), CAST(created_at AS BIGINT),
    CAST(released AS BIGINT)";

fn stop_row(r: &dyn Row) -> Result<SafetyStop> {
    Ok(SafetyStop {
        reason: r.get::<Option<String>>(0)?.unwrap_or_default(),
        max_charges_per_pass: r.get::<Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
        at: at(r.get::<Option<i64>>(2)?.unwrap_or(0)),
        released: r.get::<Option<i64>>(3)?.unwrap_or(0) != 0,
    })
}

impl Book for SqlStore {
    fn config_subscriptions(&self) -> Result<Vec<Subscription>> {
        config_subscriptions_in(self.db())
    }

    fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        let st = format!("{SUB_SELECT} WHERE id = ?1");
        self.db().query_opt(&st, params![id], sub_from_row)
    }

    fn sync_with(
        &self,
        clock: &ChargeClock,
        now: DateTime<Utc>,
        plan: impl FnOnce(&[Subscription]) -> Result<SyncPlan>,
    ) -> Result<SyncPlan> {
        let tx = self.tx()?;
        let subs = config_subscriptions_in(&tx)?;
        crate::failpoint::pause("sync_after_read");
        let mut plan = plan(&subs)?;
        super::sync::hold_pending_changes(&tx, &mut plan)?;
        let in_force = book_clock_in(&tx)?;
        if in_force != Some(*clock) {
            // Never synced (the clock is recorded), or another clock: the next charges are re-timed with it.
            tx.execute(
                "INSERT INTO book_clock (id, timezone, charge_time) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET timezone = excluded.timezone, charge_time = excluded.charge_time",
                params![clock.timezone.name(), clock.charge_time.format("%H:%M:%S").to_string()],
            )?;
            if let Some(old) = in_force {
                let n = retime_in(&tx, clock)?;
                let said = format!(
                    "charge time {} {} -> {} {}: {n} next charges re-timed",
                    old.charge_time.format("%H:%M"),
                    old.timezone,
                    clock.charge_time.format("%H:%M"),
                    clock.timezone
                );
                let detail = json!({ "from": format!("{} {}", old.charge_time, old.timezone),
                    "to": format!("{} {}", clock.charge_time, clock.timezone), "retimed": n });
                event(&tx, secs(now), "billing.clock_changed", None, detail)?;
                plan.retimed = Some(said);
            }
        }
        if !plan.changes.is_empty() {
            apply_sync_in(&tx, &plan, clock, secs(now))?;
        }
        tx.commit()?;
        Ok(plan)
    }

    fn set_status(&self, id: &str, to: Status, now: DateTime<Utc>, reason: &str) -> Result<Option<StatusSet>> {
        let tx = self.tx()?;
        let Some((before, _, voided, changes_withdrawn, credit_released)) =
            change_status(&tx, id, Cause::Operator(to), secs(now), reason)?
        else {
            return Ok(None);
        };
        let (in_flight, change_charges) = in_flight(&tx, id)?;
        tx.commit()?;
        Ok(Some(StatusSet { before, voided, in_flight, change_charges, changes_withdrawn, credit_released }))
    }

    fn pause(
        &self,
        id: &str,
        now: DateTime<Utc>,
        reason: &str,
        until: Option<(DateTime<Utc>, bool)>,
    ) -> Result<Option<StatusSet>> {
        let tx = self.tx()?;
        // A pause's end is an operator's: never put on what dunning suspended (it would reactivate it that day).
        if until.is_some() && current_status(&tx, id)? == Some(Status::Suspended) && stopped_by_dunning(&tx, id)? {
            bail!(
                "subscription {id:?} was suspended by dunning, not paused: it does not resume by itself; once its \
                 customer has a card that pays, `billd reactivate {id}` restarts it (with --charge-now, its given-up \
                 period is charged first); nothing changed"
            );
        }
        let Some((before, to, voided, changes_withdrawn, credit_released)) =
            change_status(&tx, id, Cause::Operator(Status::Suspended), secs(now), reason)?
        else {
            return Ok(None);
        };
        // Only a pause that took effect (or one already in force) gets its end: never a canceled subscription.
        if let Some((at, catch_up)) = until
            && (to == Some(Status::Suspended) || (to.is_none() && before == Status::Suspended))
        {
            tx.execute(
                "UPDATE subscriptions SET resume_at = ?2, resume_catch_up = ?3 WHERE id = ?1",
                params![id, secs(at), catch_up as i64],
            )?;
        }
        let (in_flight, change_charges) = in_flight(&tx, id)?;
        tx.commit()?;
        Ok(Some(StatusSet { before, voided, in_flight, change_charges, changes_withdrawn, credit_released }))
    }

    fn cancel_at(&self, id: &str, at: DateTime<Utc>, now: DateTime<Utc>, reason: &str) -> Result<Option<Status>> {
        let tx = self.tx()?;
        let Some(from) = current_status(&tx, id)? else {
            return Ok(None);
        };
        if !from.bills() {
            return Ok(Some(from));
        }
        // No period due at or after `at` opens: the next one not yet opened, if it is, never will.
        tx.execute(
            "UPDATE subscriptions SET cancel_at = ?2,
               next_due_at = CASE WHEN next_due_at >= ?2 THEN NULL ELSE next_due_at END WHERE id = ?1",
            params![id, secs(at)],
        )?;
        change_status(&tx, id, Cause::Operator(Status::Canceling), secs(now), reason)?;
        tx.commit()?;
        Ok(Some(from))
    }

    fn reactivate(
        &self,
        id: &str,
        now: DateTime<Utc>,
        charge_now: bool,
        restart: impl FnOnce(&Subscription) -> (u64, Option<DateTime<Utc>>),
    ) -> Result<(u64, Option<u64>)> {
        let tx = self.tx()?;
        let Some(sub) = tx.query_opt(&format!("{SUB_SELECT} WHERE id = ?1"), params![id], sub_from_row)? else {
            bail!("no subscription {id:?}");
        };
        if !matches!(sub.status, Status::Canceled | Status::Suspended) {
            bail!("subscription {id:?} is {}: only one that dunning canceled or suspended is reactivated", sub.status);
        }
        let by: Option<String> =
            tx.query_row("SELECT stopped_by FROM subscriptions WHERE id = ?1", params![id], |r| r.get(0))?;
        if by.as_deref() != Some("dunning") {
            bail!(
                "subscription {id:?} was {} by an operator or a sync, not by dunning: it is not reactivated (`billd \
                 resume` restarts a pause; a canceled subscription is added again under a new id)",
                sub.status
            );
        }
        let (period, due) = restart(&sub);
        let now_s = secs(now);
        tx.execute(
            "UPDATE subscriptions SET next_period = CASE WHEN next_period > ?2 THEN next_period ELSE ?2 END, next_due_at = ?3, updated_at = ?4
             WHERE id = ?1",
            params![id, period as i64, due.map(secs), now_s],
        )?;
        change_status(&tx, id, Cause::Reactivate, now_s, "reactivated by operator")?;
        let reopened = if charge_now {
            tx.query_opt(
                "UPDATE periods SET state = 'open', next_attempt_at = ?2, closed_at = NULL, retry_ahead_of = NULL
                 WHERE subscription_id = ?1 AND state = 'given_up'
                   AND period = (SELECT max(period) FROM periods WHERE subscription_id = ?1 AND state = 'given_up')
                 RETURNING period",
                params![id, now_s],
                |r| r.get::<i64>(0),
            )?
            .map(|p| p as u64)
        } else {
            None
        };
        if due.is_none() && reopened.is_none() {
            // Nothing written: reactivated, it would end at once (and completed is final: no `--charge-now` after).
            let given_up: Option<i64> = tx.query_row(
                "SELECT max(period) FROM periods WHERE subscription_id = ?1 AND state = 'given_up'",
                params![id],
                |r| r.get(0),
            )?;
            let end = if sub.last_period.is_some_and(|l| period > l) { "its term is over" } else { "its cancel_at" };
            bail!(
                "subscription {id:?} is not reactivated: it would bill nothing (no period is left to charge before \
                 {end}){}; nothing changed",
                given_up
                    .filter(|_| !charge_now)
                    .map(|p| format!("; `billd reactivate {id} --charge-now` charges its given-up period {p}"))
                    .unwrap_or_default()
            );
        }
        after_restart(&tx, id, now_s)?;
        tx.commit()?;
        Ok((period, reopened))
    }

    fn end_canceling(&self, now: DateTime<Utc>) -> Result<Vec<StatusChange>> {
        let tx = self.tx()?;
        let ended = end_in(&tx, secs(now), None)?;
        tx.commit()?;
        Ok(ended)
    }

    fn resumes_due(&self, now: DateTime<Utc>) -> Result<Vec<(String, bool)>> {
        let st = "SELECT id, resume_catch_up FROM subscriptions
             WHERE resume_at IS NOT NULL AND resume_at <= ?1 AND status = 'suspended' ORDER BY resume_at, id";
        let rows = self.db().query_map(st, params![secs(now)], |r| Ok((r.get(0)?, r.get::<i64>(1)? != 0)))?;
        Ok(rows)
    }

    fn resume_with(
        &self,
        id: &str,
        now: DateTime<Utc>,
        reason: &str,
        restart: impl FnOnce(&Subscription, &Pause) -> Result<(u64, Option<DateTime<Utc>>, Vec<(i64, i64)>)>,
    ) -> Result<(Subscription, u64)> {
        let now = secs(now);
        let tx = self.tx()?;
        let Some(sub) = tx.query_opt(&format!("{SUB_SELECT} WHERE id = ?1"), params![id], sub_from_row)? else {
            bail!("no subscription {id:?}");
        };
        let Some(to) = next_status(sub.status, Cause::Resume) else {
            bail!("subscription {id:?} is {}, not paused/suspended", sub.status);
        };
        if stopped_by_dunning(&tx, id)? {
            bail!(
                "subscription {id:?} was suspended by dunning, not paused: `billd reactivate {id}` restarts it once \
                 its customer has a card that pays (with --charge-now, its given-up period is charged first; a \
                 resume would drop that period for good); nothing changed"
            );
        }
        let pause = pause_in(&tx, id)?.unwrap_or_default();
        crate::failpoint::pause("resume_after_read");
        let (restart_period, restart_due, skip) = restart(&sub, &pause)?;
        let n = tx.execute(
            "UPDATE subscriptions SET status = ?7, next_period = CASE WHEN next_period > ?2 THEN next_period ELSE ?2 END, next_due_at = ?3,
               updated_at = ?4, skip_windows = ?6, resume_at = NULL, resume_catch_up = 0
             WHERE id = ?1 AND status = ?8 AND next_period = ?5",
            params![
                id,
                restart_period as i64,
                restart_due.map(secs),
                now,
                sub.next_period as i64,
                skip_json(&skip),
                to,
                sub.status
            ],
        )?;
        if n != 1 {
            bail!("subscription {id:?} changed while it was being resumed; nothing changed");
        }
        tx.execute(
            &format!(
                "UPDATE periods SET {DUE_NOW_BY_OPERATOR} WHERE subscription_id = ?1 AND state = 'open'
                   AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.subscription_id = periods.subscription_id
                                     AND a.period = periods.period
                                     AND (a.status IN ('pending', 'unknown') OR a.failure = 'mismatch'))"
            ),
            params![id, now],
        )?;
        event(
            &tx,
            now,
            &format!("subscription.{}", to.as_str()),
            Some(id),
            json!({ "from": sub.status.as_str(), "reason": reason,
            "next_period": restart_period }),
        )?;
        let extra = fields(json!({ "previous_status": sub.status.as_str(), "reason": reason }));
        publish(&tx, now, status_event(to, Cause::Resume), Some(id), About::Subscription(id), extra)?;
        after_restart(&tx, id, now)?;
        tx.commit()?;
        Ok((sub, restart_period))
    }

    fn book_clock(&self) -> Result<Option<ChargeClock>> {
        book_clock_in(self.db())
    }

    fn safety_stop(&self) -> Result<Option<SafetyStop>> {
        self.db().query_opt(&format!("SELECT {STOP_COLUMNS} FROM safety_stop WHERE id = 1"), params![], stop_row)
    }

    fn stop_billing(&self, stop: &SafetyStop) -> Result<()> {
        let tx = self.tx()?;
        let limit = i64::try_from(stop.max_charges_per_pass).unwrap_or(i64::MAX);
        let n = tx.execute(
            "INSERT INTO safety_stop (id, reason, max_charges_per_pass, created_at, released) VALUES (1, ?1, ?2, ?3, 0)
             ON CONFLICT (id) DO UPDATE SET reason = excluded.reason,
               max_charges_per_pass = excluded.max_charges_per_pass, created_at = excluded.created_at, released = 0
             WHERE safety_stop.released != 0",
            params![stop.reason, limit, secs(stop.at)],
        )?;
        if n > 0 {
            let detail = json!({ "reason": stop.reason, "max_charges_per_pass": stop.max_charges_per_pass });
            event(&tx, secs(stop.at), "billing.stopped", None, detail)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn release_billing(&self, why: &str, now: DateTime<Utc>) -> Result<Option<SafetyStop>> {
        let tx = self.tx()?;
        let stop =
            tx.query_opt(&format!("SELECT {STOP_COLUMNS} FROM safety_stop WHERE id = 1"), params![], stop_row)?;
        if stop.as_ref().is_some_and(|s| !s.released) {
            tx.execute("UPDATE safety_stop SET released = 1 WHERE id = 1", params![])?;
            let reason = stop.as_ref().map(|s| s.reason.clone());
            event(&tx, secs(now), "billing.released", None, json!({ "why": why, "stopped_for": reason }))?;
        }
        tx.commit()?;
        Ok(stop)
    }

    fn lift_safety_stop(&self, why: &str, only_released: bool, now: DateTime<Utc>) -> Result<bool> {
        let tx = self.tx()?;
        let n = tx.execute(
            "DELETE FROM safety_stop WHERE id = 1 AND (?1 = 0 OR released != 0)",
            params![only_released as i64],
        )?;
        if n > 0 {
            event(&tx, secs(now), "billing.resumed", None, json!({ "why": why }))?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    fn insert_manual(&self, s: &Subscription, next_due_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()> {
        let now = secs(now);
        let tx = self.tx()?;
        if current_status(&tx, &s.id)?.is_some() {
            bail!("subscription {:?} already exists", s.id);
        }
        if let Some(other) = same_id_but_case(&tx, &s.id)? {
            bail!(
                "subscription {:?} differs from subscription {other:?} only by case; pick another id (merchant_uids \
                 that differ only by case may be one order at the gateway)",
                s.id
            );
        }
        // A command adds it before its first period: period 0 of a calendar anchored at its first charge (its start,
        // or its trial's end), in the status its terms give (trialing, canceling or active; never one that does not
        // bill).
        if !s.status.bills() {
            bail!("subscription {:?} would be added {}: a new subscription bills", s.id, s.status);
        }
        let manual = Subscription { anchor_period: 0, next_period: 0, ..s.clone() };
        insert_row(&tx, &manual, Source::Manual, next_due_at.map(secs), now)?;
        tx.commit()?;
        Ok(())
    }

    fn import_lookup(&self, id: &str) -> Result<(Option<ImportedAs>, Option<String>)> {
        super::import::lookup(self, id)
    }

    fn import_chunk(
        &self,
        rows: &[ImportRow],
        now: DateTime<Utc>,
        existing: impl FnMut(usize, &ImportedAs) -> Result<()>,
    ) -> Result<(usize, usize)> {
        super::import::insert_chunk(self, rows, secs(now), existing)
    }
}
