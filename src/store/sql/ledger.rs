//! SQLite: periods and attempts up to the request: opening due periods, claiming attempts (the intents), the
//! unresolved ones to reconcile, resends, releases, and what is due (outcomes are recorded in `record.rs`).

use super::book::{SUB_SELECT, change_status, skip_json, sub_from_row};
use super::db::{Db, params};
use super::events::{event, subscription_event};
use super::lifecycle::PAUSE_ENDED_BY_CANCEL_AT;
use super::{SqlStore, at, real_cols, secs, secs_ceil};
use crate::billing::model::Status;
use crate::billing::proration::apply_credit;
use crate::billing::quiet::RealInstant;
use crate::billing::status::{Cause, merchant_uid_taken_reason};
use crate::store::{
    Attempt, ChargeStatus, ClaimStep, DueSubscription, Ledger, NewPeriod, Recorded, Refused, Scope, StaleFound,
    StatusChange,
};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::json;

/// The SET clause of an operator's "charge it now" (`retry`, `resume`) on a period (`?2`: now): its next attempt
/// is due now (never later than it was: one already due stays as it is), and if that is ahead of its scheduled
/// retry, the scheduled instant is kept in `retry_ahead_of` (an earlier one kept there stays: a second retry before
/// the first was made is still ahead of the same scheduled retry).
pub(super) const DUE_NOW_BY_OPERATOR: &str =
    "next_attempt_at = CASE WHEN next_attempt_at < ?2 THEN next_attempt_at ELSE ?2 END,
    retry_ahead_of = CASE WHEN next_attempt_at > ?2 THEN coalesce(retry_ahead_of, next_attempt_at)
                          ELSE retry_ahead_of END";

/// The one rule of which subscriptions may open their next period (a `WHERE` on `subscriptions`, its due instant
/// aside): it bills, its next due instant is before its `cancel_at` (whatever wrote it) and its next period within its
/// term, no period of it is open and no plan change of it pending. Every query that opens, counts or waits for a next
/// period uses it.
pub(super) const OPENS_NEXT: &str = "bills AND next_due_at IS NOT NULL
    AND (cancel_at IS NULL OR next_due_at < cancel_at)
    AND (last_period IS NULL OR next_period <= last_period)
    AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id AND p.state = 'open')
    AND NOT EXISTS (SELECT 1 FROM plan_changes c WHERE c.subscription_id = subscriptions.id AND c.state = 'pending')";

/// The first due instant a scope's step opens (`scope.not_before`, or none), in UNIX seconds.
fn from_of(scope: &Scope) -> i64 {
    scope.not_before.map_or(i64::MIN, secs)
}

/// The subscriptions (of `scope`) whose next period is due from `scope.not_before` to `now` and may open, oldest due
/// first.
pub(super) fn subscriptions_to_open_in(
    conn: &dyn Db,
    scope: &Scope,
    now: i64,
    limit: usize,
    max_amount: i64,
) -> Result<Vec<DueSubscription>> {
    let st = format!(
        "{SUB_SELECT} WHERE {OPENS_NEXT} AND next_due_at BETWEEN ?5 AND ?1 AND amount <= ?3
           AND (CAST(?4 AS TEXT) IS NULL OR id = ?4)
         ORDER BY next_due_at, id LIMIT ?2"
    );
    let rows = conn.query_map(&st, params![now, limit as i64, max_amount, scope.only, from_of(scope)], |r| {
        let due: i64 = r.get(11)?;
        Ok(DueSubscription { sub: sub_from_row(r)?, next_due_at: at(due) })
    })?;
    Ok(rows)
}

/// Creates (status pending) the next attempt of up to `limit` open periods due at or before `now` (of `only`, if
/// given), inside `tx`.
fn claim_in(
    tx: &dyn Db,
    owner: Option<i64>,
    only: Option<&str>,
    now: i64,
    limit: usize,
    max_amount: i64,
    timeout_ms: u64,
) -> Result<Vec<Attempt>> {
    let mut out = Vec::new();
    let sel =
        "SELECT p.subscription_id, p.period, p.merchant_uid, p.customer_uid, p.amount - p.credit, p.currency, p.name,
                p.due_at, p.declines,
                (SELECT count(*) FROM attempts a WHERE a.subscription_id = p.subscription_id
                   AND a.period = p.period) AS made, s.status IN ('past_due', 'trialing'),
                CASE WHEN p.retry_ahead_of > ?1 THEN p.retry_ahead_of END, p.period IS NOT DISTINCT FROM s.last_period
         FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
         WHERE p.state = 'open' AND p.next_attempt_at <= ?1 AND s.bills
           AND p.amount <= ?3 AND (CAST(?4 AS TEXT) IS NULL OR p.subscription_id = ?4)
         ORDER BY p.next_attempt_at, p.due_at, p.subscription_id LIMIT ?2";
    let rows = tx.query_map(sel, params![now, limit as i64, max_amount, only], |r| {
        Ok(Attempt {
            id: 0,
            subscription_id: r.get(0)?,
            period: r.get::<i64>(1)? as u64,
            attempt: r.get::<i64>(9)? as u32 + 1,
            merchant_uid: r.get(2)?,
            customer_uid: r.get(3)?,
            amount: r.get(4)?,
            currency: r.get(5)?,
            name: r.get(6)?,
            due_at: at(r.get(7)?),
            status: ChargeStatus::Pending,
            tries: 0,
            declines: r.get::<i64>(8)? as u32,
            ahead_of: r.get::<Option<i64>>(11)?.map(at),
            ends_term: r.get(12)?,
            billing: true,
            past_due: r.get(10)?,
            timeout_ms: Some(timeout_ms),
            refused_resends: 0,
            taken_over: false,
            in_doubt: None,
        })
    })?;
    out.extend(rows);
    let ins = "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
           status, created_at, updated_at, timeout_ms, retry_ahead_of, owner)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, ?9, ?10, ?11) RETURNING id";
    let hold = "UPDATE periods SET next_attempt_at = NULL WHERE subscription_id = ?1 AND period = ?2";
    for a in &mut out {
        a.id = tx.query_row(
            ins,
            params![
                a.subscription_id,
                a.period as i64,
                a.attempt as i64,
                a.merchant_uid,
                a.customer_uid,
                a.amount,
                a.currency,
                now,
                timeout_ms as i64,
                a.ahead_of.map(|t| t.timestamp()),
                owner
            ],
            |r| r.get(0),
        )?;
        tx.execute(hold, params![a.subscription_id, a.period as i64])?;
    }
    Ok(out)
}

/// Advances a subscription from the period `p` opens or skips to the one following it, inside `tx`: an error if its
/// next period is no longer `p`'s.
pub(super) fn advance(tx: &dyn Db, p: &NewPeriod, now: i64) -> Result<()> {
    let advanced = tx.execute(
        "UPDATE subscriptions SET next_period = ?5, next_due_at = ?3, updated_at = ?4, skip_windows = ?6
             WHERE id = ?1 AND next_period = ?2",
        params![
            p.subscription_id,
            p.period as i64,
            p.following_due_at.map(secs),
            now,
            p.following_period as i64,
            skip_json(&p.skip_ahead)
        ],
    )?;
    if advanced != 1 {
        bail!("subscription {} changed while opening period {}", p.subscription_id, p.period);
    }
    Ok(())
}

/// Opens the due periods `make` builds for up to `room` subscriptions and claims their first attempts, inside `tx`.
/// A period whose merchant_uid is taken is refused (its subscription suspended) and the page goes on.
#[allow(clippy::too_many_arguments)]
fn open_in(
    tx: &dyn Db,
    owner: Option<i64>,
    scope: &Scope,
    now: i64,
    room: usize,
    max_amount: i64,
    timeout_ms: u64,
    make: impl Fn(&DueSubscription) -> NewPeriod,
    step: &mut ClaimStep,
) -> Result<()> {
    let due = subscriptions_to_open_in(tx, scope, now, room, max_amount)?;
    // A period the subscription's credit covers whole is recorded paid (closed) at once: nothing is sent.
    let ins = "INSERT INTO periods (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency,
           name, state, next_attempt_at, opened_at, credit, closed_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN CAST(?10 AS BIGINT) = CAST(?6 AS BIGINT) THEN 'paid' ELSE 'open' END, NULL, ?9, ?10,
                CASE WHEN CAST(?10 AS BIGINT) = CAST(?6 AS BIGINT) THEN CAST(?9 AS BIGINT) END
         WHERE NOT EXISTS (SELECT 1 FROM one_time_charges WHERE merchant_uid = ?4 COLLATE NOCASE)
         ON CONFLICT (merchant_uid) DO NOTHING";
    let credit_of = "SELECT credit FROM subscriptions WHERE id = ?1";
    let spend = "UPDATE subscriptions SET credit = ?2 WHERE id = ?1";
    let claim = "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
           status, created_at, updated_at, timeout_ms, owner)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?8, ?9) RETURNING id";
    for d in &due {
        let p = make(d);
        // The credit pays first (read inside the transaction); what it leaves is charged.
        let credit: i64 = tx.query_row(credit_of, params![&p.subscription_id], |r| r.get(0))?;
        let (charged, left) = apply_credit(p.amount, credit);
        let inserted = tx.execute(
            ins,
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
                p.amount - charged
            ],
        )?;
        if inserted == 0 {
            // Its merchant_uid is taken, by a period or a one-time charge (the period itself cannot exist: the
            // subscription's next_period is past every period it has).
            let owner: Option<String> = tx.query_opt(
                "SELECT 'subscription \"' || subscription_id || '\" period ' || period FROM periods
                       WHERE merchant_uid = ?1
                     UNION ALL SELECT 'a one-time charge' FROM one_time_charges WHERE merchant_uid = ?1 COLLATE NOCASE",
                params![&p.merchant_uid],
                |r| r.get(0),
            )?;
            let Some(owner) = owner else {
                bail!("period {} of subscription {} exists already", p.period, p.subscription_id);
            };
            let reason = merchant_uid_taken_reason(&p.merchant_uid, p.period, &owner);
            change_status(tx, &p.subscription_id, Cause::MerchantUidTaken, now, &reason)?;
            step.refused.push(Refused {
                subscription_id: p.subscription_id,
                period: p.period,
                merchant_uid: p.merchant_uid,
                reason,
            });
            continue;
        }
        advance(tx, &p, now)?;
        if credit > 0 {
            tx.execute(spend, params![p.subscription_id, left])?;
        }
        if charged == 0 {
            let detail = json!({
                "period": p.period, "merchant_uid": p.merchant_uid, "amount": p.amount, "currency": p.currency,
                "credit_left": left,
            });
            subscription_event(tx, now, "period.paid_by_credit", &p.subscription_id, detail)?;
            step.opened += 1;
            continue;
        }
        let id = tx.query_row(
            claim,
            params![
                p.subscription_id,
                p.period as i64,
                p.merchant_uid,
                p.customer_uid,
                charged,
                p.currency,
                now,
                timeout_ms as i64,
                owner
            ],
            |r| r.get(0),
        )?;
        step.attempts.push(Attempt {
            id,
            subscription_id: p.subscription_id,
            period: p.period,
            attempt: 1,
            merchant_uid: p.merchant_uid,
            customer_uid: p.customer_uid,
            amount: charged,
            currency: p.currency,
            name: p.name,
            due_at: p.due_at,
            status: ChargeStatus::Pending,
            tries: 0,
            declines: 0,
            ahead_of: None,
            billing: true,
            past_due: matches!(d.sub.status, Status::PastDue | Status::Trialing),
            ends_term: d.sub.last_period == Some(p.period),
            timeout_ms: Some(timeout_ms),
            refused_resends: 0,
            taken_over: false,
            in_doubt: None,
        });
        step.opened += 1;
    }
    Ok(())
}

/// Removes claimed attempts whose requests never left (pending, not stamped by a "go" write) and makes their periods
/// due again at `now`, inside `tx`.
fn release_in(tx: &dyn Db, owner: Option<i64>, attempt_ids: &[i64], now: i64) -> Result<()> {
    let del = "DELETE FROM attempts WHERE id = ?1 AND status = 'pending' AND tries = 0 AND doubt_wall_ms IS NULL
           AND owner IS NOT DISTINCT FROM ?2
         RETURNING subscription_id, period";
    let due = "UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2";
    for id in attempt_ids {
        let key: Option<(String, i64)> = tx.query_opt(del, params![id, owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some((sub, period)) = key {
            tx.execute(due, params![sub, period, now])?;
        }
    }
    Ok(())
}

impl Ledger for SqlStore {
    fn subscriptions_to_open_count_within(&self, scope: &Scope, now: DateTime<Utc>, max_amount: i64) -> Result<usize> {
        let n: i64 = self.db().query_row(
            &format!(
                "SELECT count(*) FROM subscriptions WHERE {OPENS_NEXT} AND next_due_at BETWEEN ?4 AND ?1
                   AND amount <= ?2 AND (CAST(?3 AS TEXT) IS NULL OR id = ?3)"
            ),
            params![secs(now), max_amount, scope.only, from_of(scope)],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    fn claim_due(&self, now: DateTime<Utc>, limit: usize, max_amount: i64, timeout_ms: u64) -> Result<Vec<Attempt>> {
        let tx = self.tx()?;
        let out = claim_in(&tx, self.owner, None, secs(now), limit, max_amount, timeout_ms)?;
        tx.commit()?;
        Ok(out)
    }

    fn open_and_claim_within(
        &self,
        scope: &Scope,
        now: DateTime<Utc>,
        limit: usize,
        open_limit: usize,
        max_amount: i64,
        timeout_ms: u64,
        make: impl Fn(&DueSubscription) -> NewPeriod,
    ) -> Result<ClaimStep> {
        let now = secs(now);
        let tx = self.tx()?;
        let attempts = claim_in(&tx, self.owner, scope.only.as_deref(), now, limit, max_amount, timeout_ms)?;
        let mut step = ClaimStep { attempts, ..ClaimStep::default() };
        let room = limit.saturating_sub(step.attempts.len()).min(open_limit);
        if room > 0 {
            open_in(&tx, self.owner, scope, now, room, max_amount, timeout_ms, make, &mut step)?;
        }
        tx.commit()?;
        Ok(step)
    }

    fn stale_due(
        &self,
        cutoff: DateTime<Utc>,
        only: Option<&str>,
        after: Option<(DateTime<Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<DueSubscription>> {
        super::stale::stale_due(self.db(), secs(cutoff), only, after.map(|(t, id)| (secs(t), id)), limit)
    }

    fn settle_stale(&self, items: &[(NewPeriod, StaleFound)], now: DateTime<Utc>) -> Result<Vec<usize>> {
        let tx = self.tx()?;
        let written = super::stale::settle_stale_in(&tx, items, secs(now))?;
        tx.commit()?;
        Ok(written)
    }

    /// Read straight from the one-unresolved-per-period index, so a large backlog (say, after a gateway outage)
    /// costs one index range a page, never a scan and sort of the whole backlog; taken over in one write transaction
    /// (`daemons::take_unresolved`).
    fn unresolved_after(&self, now: DateTime<Utc>, after: Option<(&str, u64)>, limit: usize) -> Result<Vec<Attempt>> {
        super::daemons::take_unresolved(self, secs(now), after, limit)
    }

    fn unresolved_count(&self) -> Result<usize> {
        let n: i64 = self.db().query_row(
            "SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')",
            params![],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    fn known_imp_uids(&self, subscription_id: &str, period: u64) -> Result<Vec<String>> {
        let st = "SELECT imp_uid FROM attempts WHERE subscription_id = ?1 AND period = ?2 AND imp_uid IS NOT NULL";
        let rows = self.db().query_map(st, params![subscription_id, period as i64], |r| r.get(0))?;
        Ok(rows)
    }

    fn begin_send(&self, attempt_ids: &[i64], at: &RealInstant, now: DateTime<Utc>) -> Result<Vec<i64>> {
        let (wall, boot_ms, boot_id) = real_cols(at);
        let tx = self.tx()?;
        let mut go = Vec::with_capacity(attempt_ids.len());
        {
            let stamp = "UPDATE attempts SET doubt_wall_ms = ?2, doubt_boot_ms = ?3, doubt_boot_id = ?4
                 WHERE id = ?1 AND status = 'pending' AND doubt_wall_ms IS NULL AND owner IS NOT DISTINCT FROM ?5
                   AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = attempts.subscription_id
                                 AND s.bills)";
            let mut unwanted = Vec::new();
            for &id in attempt_ids {
                if tx.execute(stamp, params![id, wall, boot_ms, boot_id, self.owner])? == 1 {
                    go.push(id);
                } else {
                    unwanted.push(id);
                }
            }
            release_in(&tx, self.owner, &unwanted, secs(now))?;
        }
        tx.commit()?;
        Ok(go)
    }

    fn mark_resending(&self, a: &Attempt, at: &RealInstant, now: DateTime<Utc>, timeout_ms: u64) -> Result<bool> {
        let (wall, boot_ms, boot_id) = real_cols(at);
        let tx = self.tx()?;
        let n = tx.execute(
            "UPDATE attempts SET status = 'pending', updated_at = ?4, timeout_ms = ?5, doubt_wall_ms = ?6,
               doubt_boot_ms = ?7, doubt_boot_id = ?8
             WHERE id = ?1 AND status = ?2 AND tries = ?3 AND owner IS NOT DISTINCT FROM ?9
               AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = attempts.subscription_id
                             AND s.bills)",
            params![a.id, a.status, a.tries as i64, secs(now), timeout_ms as i64, wall, boot_ms, boot_id, self.owner],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn defer(&self, items: &[(i64, u32, DateTime<Utc>)]) -> Result<()> {
        let tx = self.tx()?;
        {
            let st = "UPDATE attempts SET check_at = CASE WHEN check_at > ?3 THEN check_at ELSE ?3 END
                 WHERE id = ?1 AND status = 'unknown' AND tries = ?2 AND owner IS NOT DISTINCT FROM ?4";
            for (id, tries, check_at) in items {
                tx.execute(st, params![id, *tries as i64, secs_ceil(*check_at), self.owner])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn release(&self, attempt_ids: &[i64], now: DateTime<Utc>) -> Result<()> {
        let tx = self.tx()?;
        release_in(&tx, self.owner, attempt_ids, secs(now))?;
        tx.commit()?;
        Ok(())
    }

    fn record_fenced(&self, items: &[Recorded], now: DateTime<Utc>) -> Result<(Vec<StatusChange>, Vec<i64>)> {
        super::record::record(self, items, secs(now))
    }

    fn next_wake(&self) -> Result<Option<DateTime<Utc>>> {
        // Only what a pass would do: a subscription held (a pending plan change, an open period, a cancel date or
        // a term reached) never makes the next wake an instant already past (a daemon would spin on it). The first
        // due subscription is the first in the due index that opens next (`ORDER BY … LIMIT 1`: PostgreSQL reads
        // `min()` over that filter as a scan of the whole table, 1.3 s for a million subscriptions).
        let t: Option<i64> = self.db().query_row(
            &format!(
                "SELECT min(t) FROM (
               SELECT t FROM (SELECT next_due_at AS t FROM subscriptions WHERE {OPENS_NEXT}
                               ORDER BY next_due_at LIMIT 1) AS first_due
               UNION ALL
               SELECT min(p.next_attempt_at) FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
                 WHERE p.state = 'open' AND p.next_attempt_at IS NOT NULL AND s.bills
               UNION ALL
               SELECT min(check_at) FROM attempts WHERE status IN ('pending', 'unknown')
               UNION ALL
               SELECT min(CASE WHEN cancel_at < resume_at AND {PAUSE_ENDED_BY_CANCEL_AT}
                                 AND NOT EXISTS (SELECT 1 FROM periods p
                                                  WHERE p.subscription_id = subscriptions.id AND p.state = 'open')
                               THEN cancel_at ELSE resume_at END)
                 FROM subscriptions WHERE status = 'suspended' AND resume_at IS NOT NULL) AS wakes"
            ),
            params![],
            |r| r.get(0),
        )?;
        Ok(t.map(at))
    }

    fn over_amount_limit(&self, now: DateTime<Utc>, max_amount: i64) -> Result<Vec<(String, u64, i64)>> {
        let st = format!("SELECT id, next_period, amount FROM subscriptions WHERE {OPENS_NEXT}
               AND next_due_at <= ?1 AND amount > ?2
             UNION ALL
             SELECT p.subscription_id, p.period, p.amount FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
               WHERE p.state = 'open' AND p.next_attempt_at <= ?1 AND p.amount > ?2 AND s.bills");
        let rows = self
            .db()
            .query_map(&st, params![secs(now), max_amount], |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64, r.get(2)?)))?;
        // Sorted here: an ORDER BY in SQL makes SQLite walk all periods in key order instead of the due indexes.
        let mut held: Vec<(String, u64, i64)> = rows;
        held.sort();
        Ok(held)
    }

    fn due_backlog_within(&self, scope: &Scope, now: DateTime<Utc>, max_amount: i64) -> Result<i64> {
        self.db().query_row(
            &format!(
                "SELECT (SELECT count(*) FROM subscriptions WHERE {OPENS_NEXT} AND next_due_at BETWEEN ?4 AND ?1
                       AND amount <= ?2 AND (CAST(?3 AS TEXT) IS NULL OR id = ?3))
                  + (SELECT count(*) FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
                       WHERE p.state = 'open' AND p.next_attempt_at <= ?1 AND p.amount <= ?2
                         AND s.bills AND (CAST(?3 AS TEXT) IS NULL OR p.subscription_id = ?3))"
            ),
            params![secs(now), max_amount, scope.only, from_of(scope)],
            |r| r.get(0),
        )
    }

    fn failed_since(&self, since: DateTime<Utc>) -> Result<i64> {
        self.db().query_row(
            "SELECT count(*) FROM attempts WHERE status = 'failed' AND updated_at >= ?1",
            params![secs(since)],
            |r| r.get(0),
        )
    }

    fn held_period(&self, id: &str) -> Result<Option<(u64, String, String)>> {
        self.db().query_opt(
            "SELECT p.period, p.merchant_uid, coalesce(a.fail_reason, '') FROM periods p
                 JOIN attempts a ON a.subscription_id = p.subscription_id AND a.period = p.period
                 WHERE p.subscription_id = ?1 AND p.state = 'open' AND a.failure = 'mismatch'
                 ORDER BY a.id DESC LIMIT 1",
            params![id],
            |r| Ok((r.get::<i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )
    }

    fn retry_now(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let now = secs(now);
        let tx = self.tx()?;
        let n = tx.execute(
            &format!(
                "UPDATE periods SET {DUE_NOW_BY_OPERATOR} WHERE subscription_id = ?1 AND state = 'open'
                   AND next_attempt_at IS NOT NULL"
            ),
            params![id, now],
        )?;
        if n > 0 {
            event(&tx, now, "subscription.retry", Some(id), json!({ "reason": "retry requested by operator" }))?;
        }
        tx.commit()?;
        Ok(n > 0)
    }
}
