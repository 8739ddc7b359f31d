//! SQLite: one-time charges (`charge-once`, `charge-key`): the intent before the command sends, and their settlement
//! (guarded by `tries`, so a send, a pass's lookup and a command's answer never overwrite one another).

use super::db::{Db, Row, params};
use super::events::event;
use super::outbox::{About, fields, publish};
use super::{SqlStore, at, real_cols, real_from, secs, secs_ceil};
use crate::billing::quiet::{RealInstant, quiet_period};
use crate::store::{
    ChargeStatus, Doubt, Failure, MerchantUidHolder, OneTime, OneTimeCharge, OneTimeKind, OneTimeState,
    UnresolvedOneTime,
};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::json;

impl OneTime for SqlStore {
    fn one_time(&self, merchant_uid: &str) -> Result<Option<OneTimeState>> {
        self.db().query_opt(
            "SELECT id, customer_uid, amount, currency, status, failure, imp_uid, fail_reason, check_at,
                   updated_at, tries, timeout_ms, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, card_masked, kind,
                   subscription_id, name
                 FROM one_time_charges WHERE merchant_uid = ?1",
            params![merchant_uid],
            |r| {
                Ok(OneTimeState {
                    id: r.get(0)?,
                    kind: r.get(16)?,
                    customer_uid: r.get(1)?,
                    subscription_id: r.get(17)?,
                    name: r.get(18)?,
                    card_masked: r.get(15)?,
                    amount: r.get(2)?,
                    currency: r.get(3)?,
                    status: r.get(4)?,
                    failure: r.get(5)?,
                    imp_uid: r.get(6)?,
                    fail_reason: r.get(7)?,
                    check_at: r.get::<Option<i64>>(8)?.map(at),
                    updated_at: at(r.get(9)?),
                    tries: r.get(10)?,
                    doubt: doubt_from(r, 11)?,
                })
            },
        )
    }

    fn merchant_uid_holder(&self, merchant_uid: &str) -> Result<Option<MerchantUidHolder>> {
        holder(self.db(), merchant_uid)
    }

    fn begin_one_time(
        &self,
        c: &OneTimeCharge,
        sent: &RealInstant,
        now: DateTime<Utc>,
        timeout_ms: u64,
        check_at: DateTime<Utc>,
        prev_tries: Option<i64>,
    ) -> Result<Option<(i64, i64)>> {
        let (now, check_at) = (secs(now), secs_ceil(check_at));
        let (wall, boot_ms, boot_id) = real_cols(sent);
        let tx = self.tx()?;
        // A merchant_uid held in another case (by a period or another one-time charge) is never taken: the gateway
        // may not tell them apart.
        match holder(&tx, &c.merchant_uid)? {
            Some(MerchantUidHolder::OneTime { merchant_uid, .. }) if merchant_uid == c.merchant_uid => {}
            Some(h) => {
                bail!("merchant_uid {} is taken (compared without case) by {h}; nothing was written", c.merchant_uid)
            }
            None => {}
        }
        // The charge of a plan change leaves only for a change still pending (a cancel or a pause withdraws one
        // whose charge has not left; a pass abandons one whose intent never came): of the two, exactly one wins.
        if c.kind == OneTimeKind::Proration {
            let pending: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM plan_changes WHERE merchant_uid = ?1 AND state = 'pending')",
                params![&c.merchant_uid],
                |r| r.get(0),
            )?;
            if !pending {
                bail!(
                    "merchant_uid {}: its plan change is no longer pending (withdrawn by a cancel or a pause, or \
                     abandoned by a pass); nothing was written, nothing sent",
                    c.merchant_uid
                );
            }
        }
        let row = match prev_tries {
            None => tx.query_opt(
                "INSERT INTO one_time_charges (merchant_uid, customer_uid, name, amount, currency, card_masked,
                       status, tries, created_at, updated_at, timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms,
                       doubt_boot_id, kind, subscription_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 1, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (merchant_uid) DO NOTHING RETURNING id, tries",
                params![
                    c.merchant_uid,
                    c.customer_uid,
                    c.name,
                    c.amount,
                    c.currency,
                    c.card_masked,
                    now,
                    timeout_ms as i64,
                    check_at,
                    wall,
                    boot_ms,
                    boot_id,
                    c.kind,
                    c.subscription_id
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?,
            Some(tries) => tx.query_opt(
                "UPDATE one_time_charges SET status = 'pending', tries = tries + 1, failure = NULL,
                       fail_reason = NULL, card_masked = ?3, updated_at = ?4, timeout_ms = ?5, check_at = ?6,
                       doubt_wall_ms = ?7, doubt_boot_ms = ?8, doubt_boot_id = ?9, go_wall_ms = NULL
                     WHERE merchant_uid = ?1 AND tries = ?2 AND status IN ('failed', 'pending', 'unknown')
                     RETURNING id, tries",
                params![c.merchant_uid, tries, c.card_masked, now, timeout_ms as i64, check_at, wall, boot_ms, boot_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?,
        };
        tx.commit()?;
        Ok(row)
    }

    fn one_time_go(&self, id: i64, tries: i64, at: &RealInstant) -> Result<bool> {
        let (wall, boot_ms, boot_id) = real_cols(at);
        // A plan change's charge leaves only while its change is pending and its subscription bills (as a period's
        // attempt leaves only while its subscription bills: `Ledger::begin_send`); a cancel or a pause withdraws
        // the change in its own transaction, so exactly one of the two wins.
        let tx = self.tx()?;
        let changed = tx.execute(
            "UPDATE one_time_charges SET doubt_wall_ms = ?3, doubt_boot_ms = ?4, doubt_boot_id = ?5, go_wall_ms = ?3
             WHERE id = ?1 AND tries = ?2 AND status = 'pending'
               AND (kind != 'proration' OR EXISTS (
                 SELECT 1 FROM plan_changes c JOIN subscriptions s ON s.id = c.subscription_id
                 WHERE c.merchant_uid = one_time_charges.merchant_uid AND c.state = 'pending' AND s.bills))",
            params![id, tries, wall, boot_ms, boot_id],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    fn one_time_unknown(
        &self,
        id: i64,
        tries: i64,
        reason: &str,
        since: &RealInstant,
        check_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (now, check_at_secs) = (secs(now), secs_ceil(check_at));
        let (wall, boot_ms, boot_id) = real_cols(since);
        let tx = self.tx()?;
        let changed = tx.execute(
            "UPDATE one_time_charges SET status = 'unknown', failure = NULL, fail_reason = ?2, check_at = ?3,
               updated_at = ?4, doubt_wall_ms = ?6, doubt_boot_ms = ?7, doubt_boot_id = ?8
             WHERE id = ?1 AND tries = ?5 AND status IN ('pending', 'unknown')",
            params![id, reason, check_at_secs, now, tries, wall, boot_ms, boot_id],
        )?;
        if changed == 1 {
            let mut detail = json!({ "reason": reason, "check_at": at(check_at_secs).to_rfc3339() });
            let sub = describe(&tx, id, &mut detail)?;
            event(&tx, now, "charge.unknown", sub.as_deref(), detail)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn finish_one_time(
        &self,
        id: i64,
        tries: i64,
        status: ChargeStatus,
        failure: Option<Failure>,
        imp_uid: Option<&str>,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = secs(now);
        let tx = self.tx()?;
        let changed = tx.execute(
            "UPDATE one_time_charges SET status = ?2, failure = ?3, imp_uid = coalesce(?4, imp_uid), fail_reason = ?5,
               updated_at = ?6
             WHERE id = ?1 AND tries = ?7 AND (status IN ('pending', 'unknown') OR failure = 'abandoned'
                                               OR (?2 = 'paid' AND status = 'failed' AND failure != 'mismatch'))",
            params![id, status, failure, imp_uid, reason, now, tries],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        let kind = match status {
            ChargeStatus::Paid => "charge.paid",
            ChargeStatus::Failed => "charge.failed",
            _ => "charge.unknown",
        };
        let mut detail = json!({ "imp_uid": imp_uid, "reason": reason });
        let sub = describe(&tx, id, &mut detail)?;
        event(&tx, now, kind, sub.as_deref(), detail.clone())?;
        if matches!(status, ChargeStatus::Paid | ChargeStatus::Failed) {
            let muid = detail["merchant_uid"].as_str().unwrap_or_default();
            let extra = fields(json!({ "reason": detail["reason"] }));
            publish(&tx, now, kind, sub.as_deref(), About::OneTime(muid), extra)?;
        }
        // The charge of a plan change: its outcome applies or fails the change, in this transaction.
        let (merchant_uid, of): (String, OneTimeKind) =
            tx.query_row("SELECT merchant_uid, kind FROM one_time_charges WHERE id = ?1", params![id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if of == OneTimeKind::Proration && matches!(status, ChargeStatus::Paid | ChargeStatus::Failed) {
            super::changes::settle_in(&tx, &merchant_uid, status == ChargeStatus::Paid, now)?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn unresolved_one_time(
        &self,
        now: DateTime<Utc>,
        fallback: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<UnresolvedOneTime>> {
        let st = format!(
            "{UNRESOLVED_ONE_TIME_SELECT} WHERE status IN ('pending', 'unknown')
               AND coalesce(check_at, updated_at + ?2) <= ?1 ORDER BY updated_at, id LIMIT ?3"
        );
        let rows = self.db().query_map(
            &st,
            params![secs(now), fallback.num_seconds(), limit as i64],
            unresolved_one_time_row,
        )?;
        Ok(rows)
    }

    fn defer_one_time(&self, id: i64, tries: i64, check_at: DateTime<Utc>) -> Result<()> {
        let tx = self.tx()?;
        tx.execute(
            "UPDATE one_time_charges SET check_at = CASE WHEN check_at > ?3 THEN check_at ELSE ?3 END
             WHERE id = ?1 AND tries = ?2 AND status IN ('pending', 'unknown')",
            params![id, tries, secs_ceil(check_at)],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// The columns [`unresolved_one_time_row`] reads, from `one_time_charges`.
pub(super) const UNRESOLVED_ONE_TIME_SELECT: &str = "SELECT id, merchant_uid, customer_uid, amount, currency, tries,
    timeout_ms, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, status = 'pending', imp_uid, kind, status
  FROM one_time_charges";

/// A one-time charge to settle, as [`UNRESOLVED_ONE_TIME_SELECT`] reads it.
pub(super) fn unresolved_one_time_row(r: &dyn Row) -> Result<UnresolvedOneTime> {
    Ok(UnresolvedOneTime {
        id: r.get(0)?,
        merchant_uid: r.get(1)?,
        kind: r.get(12)?,
        customer_uid: r.get(2)?,
        amount: r.get(3)?,
        currency: r.get(4)?,
        tries: r.get(5)?,
        doubt: doubt_from(r, 6)?,
        pending: r.get(10)?,
        known_failed: r.get(11)?,
    })
}

/// What holds `merchant_uid` compared without case: a period, or a one-time charge (one spelled exactly so first).
fn holder(conn: &dyn Db, merchant_uid: &str) -> Result<Option<MerchantUidHolder>> {
    let one_time = conn.query_opt(
        "SELECT merchant_uid, kind FROM one_time_charges WHERE merchant_uid = ?1 COLLATE NOCASE
             ORDER BY merchant_uid = ?1 DESC LIMIT 1",
        params![merchant_uid],
        |r| Ok(MerchantUidHolder::OneTime { merchant_uid: r.get(0)?, kind: r.get(1)? }),
    )?;
    if one_time.is_some() {
        return Ok(one_time);
    }
    conn.query_opt(
        "SELECT subscription_id, period, merchant_uid FROM periods WHERE merchant_uid = ?1 COLLATE NOCASE LIMIT 1",
        params![merchant_uid],
        |r| {
            Ok(MerchantUidHolder::Period {
                subscription_id: r.get(0)?,
                period: r.get::<i64>(1)? as u64,
                merchant_uid: r.get(2)?,
            })
        },
    )
}

/// Fills an event's detail with what names one-time charge `id` (its merchant_uid, its kind, and for a charge of a
/// billing key the key charged); returns the subscription it is tied to, if any.
fn describe(tx: &dyn Db, id: i64, detail: &mut serde_json::Value) -> Result<Option<String>> {
    let (muid, kind, key, sub): (String, OneTimeKind, Option<String>, Option<String>) = tx.query_row(
        "SELECT merchant_uid, kind, customer_uid, subscription_id FROM one_time_charges WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    detail["merchant_uid"] = json!(muid);
    detail["one_time"] = json!(true);
    if kind != OneTimeKind::Card {
        detail["kind"] = json!(kind.as_str());
        detail["customer_uid"] = json!(key);
    }
    Ok(sub)
}

/// A request in doubt from the columns `timeout_ms, doubt_wall_ms, doubt_boot_ms, doubt_boot_id` starting at `i`.
pub(super) fn doubt_from(r: &dyn Row, i: usize) -> Result<Option<Doubt>> {
    let timeout_ms = r.get::<Option<i64>>(i)?.map(|t| t.max(0) as u64);
    Ok(real_from(r.get(i + 1)?, r.get(i + 2)?, r.get(i + 3)?)
        .map(|since| Doubt { since, quiet: quiet_period(timeout_ms) }))
}
