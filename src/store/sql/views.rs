//! SQLite: the read-only views behind the listings, `subscriptions show` and `upcoming`.

use super::book::{SUB_SELECT, sub_from_row};
use super::db::{Db, Row, params};
use super::one_time::doubt_from;
use super::{SqlStore, at, secs};
use crate::billing::model::Pause;
use crate::billing::model::{Status, Subscription};
use crate::store::{
    AttemptStory, BillingSubscription, ChargeRow, ChargeStatus, OpenPeriod, PausedSubscription, PeriodStory,
    SubscriptionRow, Views,
};
use anyhow::Result;
use chrono::{DateTime, Utc};

/// A subscription's open period waiting for an attempt, if any.
fn open_period(conn: &dyn Db, id: &str) -> Result<Option<OpenPeriod>> {
    conn.query_opt(
        "SELECT period, next_attempt_at, amount - credit, currency FROM periods
             WHERE subscription_id = ?1 AND state = 'open' AND next_attempt_at IS NOT NULL",
        params![id],
        |r| {
            Ok(OpenPeriod {
                period: r.get::<i64>(0)? as u64,
                next_attempt_at: at(r.get(1)?),
                amount: r.get(2)?,
                currency: r.get(3)?,
            })
        },
    )
}

impl Views for SqlStore {
    fn subscription_row(&self, id: &str) -> Result<Option<SubscriptionRow>> {
        let st = format!("{SUB_ROW_SELECT} WHERE s.id = ?1");
        self.db().query_opt(&st, params![id], sub_row)
    }

    fn pause_of(&self, id: &str) -> Result<Option<Pause>> {
        super::lifecycle::pause_in(self.db(), id)
    }

    fn resuming_by(&self, until: DateTime<Utc>) -> Result<Vec<PausedSubscription>> {
        let st = format!(
            "{SUB_SELECT} WHERE status = 'suspended' AND resume_at IS NOT NULL AND resume_at <= ?1 ORDER BY id"
        );
        let subs: Vec<Subscription> = self.db().query_map(&st, params![secs(until)], sub_from_row)?;
        let mut out = Vec::with_capacity(subs.len());
        for s in subs {
            let pause = super::lifecycle::pause_in(self.db(), &s.id)?.unwrap_or_default();
            let open = open_period(self.db(), &s.id)?;
            out.push((s, pause, open));
        }
        Ok(out)
    }

    fn stopped_by_dunning(&self, customer_uid: &str) -> Result<Vec<(String, Status)>> {
        let st =
            "SELECT id, status FROM subscriptions WHERE stopped_by = 'dunning' AND status IN ('canceled', 'suspended')
               AND customer_uid = ?1 COLLATE NOCASE ORDER BY id";
        let rows = self.db().query_map(st, params![customer_uid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows)
    }

    fn subscriptions_using(&self, customer_uid: &str) -> Result<Vec<(String, Status, String)>> {
        let st = "SELECT id, status, customer_uid FROM subscriptions WHERE status != 'canceled'
               AND (customer_uid = ?1 COLLATE NOCASE
                    OR id IN (SELECT subscription_id FROM periods WHERE state = 'open'
                                AND customer_uid = ?1 COLLATE NOCASE))
             ORDER BY id";
        let rows = self.db().query_map(st, params![customer_uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows)
    }

    fn manual_prices(&self) -> Result<Vec<(String, i64, u64)>> {
        let st = "SELECT plan_id, amount, count(*) FROM subscriptions WHERE source = 'manual' AND bills
             GROUP BY plan_id, amount ORDER BY plan_id, amount";
        let rows =
            self.db().query_map(st, params![], |r| Ok((r.get(0)?, r.get(1)?, r.get::<i64>(2)?.max(0) as u64)))?;
        Ok(rows)
    }

    fn list_subscriptions(&self, status: Option<Status>) -> Result<Vec<SubscriptionRow>> {
        let st = format!("{SUB_ROW_SELECT} WHERE (CAST(?1 AS TEXT) IS NULL OR s.status = ?1) ORDER BY s.id");
        let rows = self.db().query_map(&st, params![status], sub_row)?;
        Ok(rows)
    }

    fn list_charges(
        &self,
        failed_only: bool,
        since: Option<DateTime<Utc>>,
        subscription: Option<&str>,
        after_id: i64,
    ) -> Result<Vec<(i64, ChargeRow)>> {
        let st = format!(
            "{CHARGE_SELECT} WHERE a.id > ?4 AND (?1 = 0 OR a.status = 'failed') AND (CAST(?2 AS BIGINT) IS NULL OR a.updated_at >= ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR a.subscription_id = ?3)
             ORDER BY a.id"
        );
        let rows =
            self.db().query_map(&st, params![failed_only as i64, since.map(secs), subscription, after_id], |r| {
                Ok((r.get(0)?, charge_row(r)?))
            })?;
        Ok(rows)
    }

    fn list_one_time(
        &self,
        failed_only: bool,
        since: Option<DateTime<Utc>>,
        subscription: Option<&str>,
    ) -> Result<Vec<ChargeRow>> {
        let st = format!(
            "{ONE_TIME_SELECT} WHERE (?1 = 0 OR status = 'failed') AND (CAST(?2 AS BIGINT) IS NULL OR updated_at >= ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR subscription_id = ?3)
             ORDER BY id"
        );
        let rows =
            self.db().query_map(&st, params![failed_only as i64, since.map(secs), subscription], one_time_row)?;
        Ok(rows)
    }

    fn next_due_at(&self, id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .db()
            .query_opt("SELECT next_due_at FROM subscriptions WHERE id = ?1", params![id], |r| r.get::<Option<i64>>(0))?
            .flatten()
            .map(at))
    }

    fn subscription_story(&self, id: &str) -> Result<(Vec<PeriodStory>, Option<String>)> {
        let mut periods: Vec<PeriodStory> = {
            let st = "SELECT period, due_at, merchant_uid, amount, currency, state, declines, next_attempt_at
                 FROM periods WHERE subscription_id = ?1 ORDER BY period";

            self.db().query_map(st, params![id], |r| {
                Ok(PeriodStory {
                    period: r.get::<i64>(0)? as u64,
                    due_at: at(r.get(1)?),
                    merchant_uid: r.get(2)?,
                    amount: r.get(3)?,
                    currency: r.get(4)?,
                    state: r.get(5)?,
                    declines: r.get::<i64>(6)? as u32,
                    next_attempt_at: r.get::<Option<i64>>(7)?.map(at),
                    attempts: Vec::new(),
                })
            })?
        };
        let st = "SELECT period, attempt, status, failure, imp_uid, fail_reason, check_at, created_at, updated_at,
                    timeout_ms, doubt_wall_ms, doubt_boot_ms, doubt_boot_id
             FROM attempts WHERE subscription_id = ?1 ORDER BY period, attempt";
        let rows = self.db().query_map(st, params![id], |r| {
            Ok((
                r.get::<i64>(0)? as u64,
                AttemptStory {
                    attempt: r.get::<i64>(1)? as u32,
                    status: r.get(2)?,
                    failure: r.get(3)?,
                    imp_uid: r.get(4)?,
                    fail_reason: r.get(5)?,
                    check_at: r.get::<Option<i64>>(6)?.map(at),
                    doubt: doubt_from(r, 9)?.filter(|_| r.get::<ChargeStatus>(2).is_ok_and(|s| s.unresolved())),
                    created_at: at(r.get(7)?),
                    updated_at: at(r.get(8)?),
                },
            ))
        })?;
        for row in rows {
            let (period, a) = row;
            if let Some(p) = periods.iter_mut().find(|p| p.period == period) {
                p.attempts.push(a);
            }
        }
        let why: Option<String> = self
            .db()
            .query_opt(
                "SELECT json_extract(detail, '$.reason') FROM events
                 WHERE subscription_id = ?1
                   AND kind IN ('subscription.canceled', 'subscription.suspended', 'subscription.completed')
                 ORDER BY id DESC LIMIT 1",
                params![id],
                |r| r.get(0),
            )?
            .flatten();
        Ok((periods, why))
    }

    /// Read through the due indexes, so a short window over a large book reads only what falls in it.
    fn billing_subscriptions(&self, until: DateTime<Utc>) -> Result<Vec<BillingSubscription>> {
        let st = format!(
            "{SUB_SELECT} WHERE id IN (
               SELECT id FROM subscriptions WHERE bills AND next_due_at <= ?1
               UNION
               SELECT p.subscription_id FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
                 WHERE p.state = 'open' AND p.next_attempt_at IS NOT NULL AND s.bills)
             ORDER BY id"
        );
        let subs: Vec<(Subscription, Option<i64>)> =
            self.db().query_map(&st, params![secs(until)], |r| Ok((sub_from_row(r)?, r.get::<Option<i64>>(11)?)))?;
        let mut out = Vec::with_capacity(subs.len());
        for (s, due) in subs {
            let o = open_period(self.db(), &s.id)?;
            out.push((s, due.map(at), o));
        }
        Ok(out)
    }
}

/// A subscription with its derived state, as listings show it (then `WHERE` on `s`).
pub(super) const SUB_ROW_SELECT: &str = "SELECT s.id, s.customer_uid, s.plan_id, s.amount, s.currency, s.interval,
        s.status, s.source, s.next_due_at,
        (SELECT count(*) FROM periods p WHERE p.subscription_id = s.id AND p.state = 'paid'),
        o.next_attempt_at, o.declines,
        u.check_at,
        CASE WHEN s.status IN ('canceled', 'suspended', 'completed') THEN
          (SELECT json_extract(e.detail, '$.reason') FROM events e WHERE e.subscription_id = s.id
             AND e.kind IN ('subscription.canceled', 'subscription.suspended', 'subscription.completed')
           ORDER BY e.id DESC LIMIT 1)
        END,
        u.timeout_ms, u.doubt_wall_ms, u.doubt_boot_ms, u.doubt_boot_id,
        CASE WHEN s.status = 'suspended' THEN s.resume_at END, s.cancel_at, s.stopped_by IS NOT DISTINCT FROM 'dunning'
     FROM subscriptions s
     LEFT JOIN periods o ON o.subscription_id = s.id AND o.state = 'open'
     LEFT JOIN attempts u ON u.subscription_id = s.id AND u.period = o.period
       AND u.status IN ('pending', 'unknown')";

pub(super) fn sub_row(r: &dyn Row) -> Result<SubscriptionRow> {
    let status: Status = r.get(6)?;
    Ok(SubscriptionRow {
        id: r.get(0)?,
        customer_uid: r.get(1)?,
        plan: r.get(2)?,
        amount: r.get(3)?,
        currency: r.get(4)?,
        interval: r.get(5)?,
        status,
        source: r.get(7)?,
        next_due_at: r.get::<Option<i64>>(8)?.filter(|_| status.bills()).map(at),
        paid_periods: r.get::<i64>(9)? as u64,
        next_attempt_at: r.get::<Option<i64>>(10)?.map(at),
        declines: r.get::<Option<i64>>(11)?.unwrap_or(0) as u32,
        check_at: r.get::<Option<i64>>(12)?.map(at),
        why: r.get(13)?,
        doubt: doubt_from(r, 14)?,
        resume_at: r.get::<Option<i64>>(18)?.map(at),
        cancel_at: r.get::<Option<i64>>(19)?.map(at),
        stopped_by_dunning: r.get(20)?,
    })
}

/// A period's attempt (its row id first), as `billd charges` shows it (then `WHERE` on `a`).
pub(super) const CHARGE_SELECT: &str = "SELECT a.id, a.subscription_id, a.period, a.attempt, a.merchant_uid,
        a.customer_uid, a.amount, a.currency, a.status, a.failure, a.imp_uid, a.fail_reason, p.due_at, a.created_at,
        a.updated_at,
        CASE WHEN a.status = 'paid' THEN (SELECT coalesce(sum(f.amount), 0) FROM refunds f
          WHERE f.merchant_uid = a.merchant_uid AND f.status = 'refunded') ELSE 0 END
     FROM attempts a JOIN periods p ON p.subscription_id = a.subscription_id AND p.period = a.period";

pub(super) fn charge_row(r: &dyn Row) -> Result<ChargeRow> {
    Ok(ChargeRow {
        subscription_id: r.get(1)?,
        one_time: None,
        period: r.get::<i64>(2)? as u64,
        attempt: r.get::<i64>(3)? as u32,
        merchant_uid: r.get(4)?,
        customer_uid: r.get(5)?,
        amount: r.get(6)?,
        currency: r.get(7)?,
        status: r.get(8)?,
        failure: r.get(9)?,
        imp_uid: r.get(10)?,
        fail_reason: r.get(11)?,
        due_at: at(r.get(12)?),
        created_at: at(r.get(13)?),
        updated_at: at(r.get(14)?),
        refunded: r.get(15)?,
    })
}

/// A one-time charge, as `billd charges` shows it (then `WHERE` on `one_time_charges`).
pub(super) const ONE_TIME_SELECT: &str = "SELECT merchant_uid, coalesce(customer_uid, ''), amount, currency, status,
        failure, imp_uid, fail_reason, tries, created_at, updated_at, kind, subscription_id,
        CASE WHEN status = 'paid' THEN (SELECT coalesce(sum(f.amount), 0) FROM refunds f
          WHERE f.merchant_uid = one_time_charges.merchant_uid AND f.status = 'refunded') ELSE 0 END
     FROM one_time_charges";

pub(super) fn one_time_row(r: &dyn Row) -> Result<ChargeRow> {
    Ok(ChargeRow {
        subscription_id: r.get(12)?,
        one_time: Some(r.get(11)?),
        period: 0,
        attempt: r.get::<i64>(8)? as u32,
        merchant_uid: r.get(0)?,
        customer_uid: r.get(1)?,
        amount: r.get(2)?,
        currency: r.get(3)?,
        status: r.get(4)?,
        failure: r.get(5)?,
        imp_uid: r.get(6)?,
        fail_reason: r.get(7)?,
        due_at: at(r.get(9)?),
        created_at: at(r.get(9)?),
        updated_at: at(r.get(10)?),
        refunded: r.get(13)?,
    })
}
