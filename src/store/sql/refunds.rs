//! SQLite: refunds: the intent before `billd refund` sends, its settlement by a lookup of the payment, and refunds made outside billd found in its cancel history.

use super::db::{Db, Row, params};
use super::events::event;
use super::one_time::doubt_from;
use super::outbox::{About, fields, publish};
use super::{SqlStore, at, real_cols, secs, secs_ceil};
use crate::billing::quiet::RealInstant;
use crate::billing::quiet::quiet_period;
use crate::billing::refunds::{Cancel, attribute, refundable};
use crate::store::{
    ChargeStatus, NewRefund, PaidCharge, RefundRefused, RefundRow, RefundSource, RefundStatus, RefundTarget, Refunds,
    RefundsSettled, RefundsStale, SeenRefund,
};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::json;

/// The columns [`row`] reads, in its order.
const COLS: &str = "id, merchant_uid, imp_uid, amount, currency, checksum, reason, status, source, cancellation_id,
    detail, check_at, timeout_ms, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, created_at, updated_at";

fn row(r: &dyn Row) -> Result<RefundRow> {
    Ok(RefundRow {
        id: r.get(0)?,
        merchant_uid: r.get(1)?,
        imp_uid: r.get(2)?,
        amount: r.get(3)?,
        currency: r.get(4)?,
        checksum: r.get(5)?,
        reason: r.get(6)?,
        status: r.get(7)?,
        source: r.get(8)?,
        cancellation_id: r.get(9)?,
        detail: r.get(10)?,
        check_at: r.get::<Option<i64>>(11)?.map(at),
        doubt: doubt_from(r, 12)?,
        created_at: at(r.get(16)?),
        updated_at: at(r.get(17)?),
    })
}

/// A charge as a refund needs it (read inside the caller's transaction, if any).
struct Charge {
    imp_uid: Option<String>,
    status: ChargeStatus,
    amount: i64,
    currency: String,
    /// The subscription of a period's charge (for its events).
    subscription: Option<String>,
    /// When billd began the charge (seconds): no refund of it was made before.
    begun: i64,
}

/// The charge `merchant_uid` (as stored): a period's paid attempt (else its latest one), or a one-time charge.
fn charge(conn: &dyn Db, merchant_uid: &str) -> Result<Option<Charge>> {
    let read = |r: &dyn Row| {
        Ok(Charge {
            imp_uid: r.get(0)?,
            status: r.get(1)?,
            amount: r.get(2)?,
            currency: r.get(3)?,
            subscription: r.get(4)?,
            begun: r.get(5)?,
        })
    };
    let period = conn.query_opt(
        "SELECT a.imp_uid, a.status, a.amount, a.currency, a.subscription_id, a.created_at
             FROM periods p JOIN attempts a ON a.subscription_id = p.subscription_id AND a.period = p.period
             WHERE p.merchant_uid = ?1 ORDER BY a.status = 'paid' DESC, a.id DESC LIMIT 1",
        params![merchant_uid],
        read,
    )?;
    if period.is_some() {
        return Ok(period);
    }
    conn.query_opt(
        "SELECT imp_uid, status, amount, currency, NULL, created_at FROM one_time_charges
                WHERE merchant_uid = ?1",
        params![merchant_uid],
        read,
    )
}

/// Every refund of a charge, oldest first.
fn refunds_of(conn: &dyn Db, merchant_uid: &str) -> Result<Vec<RefundRow>> {
    let st = format!("SELECT {COLS} FROM refunds WHERE merchant_uid = ?1 ORDER BY id");
    let rows = conn.query_map(&st, params![merchant_uid], row)?;
    Ok(rows)
}

fn by_id(conn: &dyn Db, id: i64) -> Result<RefundRow> {
    conn.query_row(&format!("SELECT {COLS} FROM refunds WHERE id = ?1"), params![id], row)
}

/// Refunded so far, and spent (every refund not known to have failed: those in doubt count).
fn sums(rows: &[RefundRow]) -> (i64, i64) {
    let refunded = rows.iter().filter(|r| r.status == RefundStatus::Refunded).map(|r| r.amount).sum();
    let spent = rows.iter().filter(|r| r.status != RefundStatus::Failed).map(|r| r.amount).sum();
    (refunded, spent)
}

/// The event detail of a refund.
fn detail(r: &RefundRow) -> serde_json::Value {
    json!({ "merchant_uid": r.merchant_uid, "imp_uid": r.imp_uid, "amount": r.amount, "currency": r.currency,
            "reason": r.reason, "source": r.source.as_str(), "cancellation_id": r.cancellation_id,
            "detail": r.detail })
}

/// The `charge.refunded` event of refund `r`, logged and published (the charge as it is now, and the refund).
fn refunded(tx: &dyn Db, now: i64, sub: Option<&str>, r: &RefundRow) -> Result<()> {
    event(tx, now, "charge.refunded", sub, detail(r))?;
    let refund = json!({ "amount": r.amount, "currency": r.currency, "reason": r.reason, "source": r.source.as_str(),
                         "cancellation_id": r.cancellation_id });
    let extra = fields(json!({ "refund": refund }));
    publish(tx, now, "charge.refunded", sub, About::PaidCharge(&r.merchant_uid), extra)
}

impl Refunds for SqlStore {
    fn refund_target(&self, merchant_uid: &str) -> Result<Option<RefundTarget>> {
        let Some(c) = charge(self.db(), merchant_uid)? else { return Ok(None) };
        let rows = refunds_of(self.db(), merchant_uid)?;
        let (refunded, _) = sums(&rows);
        Ok(Some(RefundTarget {
            merchant_uid: merchant_uid.to_owned(),
            imp_uid: c.imp_uid.filter(|_| c.status == ChargeStatus::Paid),
            status: c.status,
            amount: c.amount,
            currency: c.currency,
            refunded,
            unresolved: rows.into_iter().find(|r| r.status.unresolved()),
            beside_credit: super::credit::refundable_beside_credit(self.db(), merchant_uid)?,
        }))
    }

    fn begin_refund(
        &self,
        r: &NewRefund,
        sent: &RealInstant,
        now: DateTime<Utc>,
        timeout_ms: u64,
        check_at: DateTime<Utc>,
    ) -> Result<std::result::Result<RefundRow, RefundRefused>> {
        let tx = self.tx()?;
        let Some(c) = charge(&tx, &r.merchant_uid)? else { return Ok(Err(RefundRefused::NoCharge)) };
        let imp_uid = match (&c.imp_uid, c.status) {
            (Some(imp), ChargeStatus::Paid) => imp.clone(),
            (_, status) => return Ok(Err(RefundRefused::NotPaid(status))),
        };
        let rows = refunds_of(&tx, &r.merchant_uid)?;
        let (refunded, spent) = sums(&rows);
        let remaining = refundable(c.amount, spent);
        // A refund is (merchant_uid, amount, reason): the same one made or in doubt is not begun again, whoever
        // made it (billd, or outside billd: the gateway lists it). Without an amount (the rest), one that took the
        // whole balance then, once nothing remains. This is the one place the rule is decided.
        let same = |x: &&RefundRow| {
            x.status != RefundStatus::Failed
                && x.reason == r.reason
                && r.amount.map_or(remaining == 0 && x.checksum.is_none_or(|c| c == x.amount), |a| a == x.amount)
        };
        if let Some(m) = rows.iter().rev().find(same) {
            return Ok(Err(RefundRefused::Made(Box::new(m.clone()))));
        }
        if let Some(u) = rows.iter().find(|x| x.status.unresolved()) {
            return Ok(Err(RefundRefused::Unresolved(Box::new(u.clone()))));
        }
        let amount = r.amount.unwrap_or(remaining);
        if amount <= 0 || amount > remaining {
            return Ok(Err(RefundRefused::TooMuch { paid: c.amount, refunded, remaining }));
        }
        if let Some(sub) = &c.subscription
            && let Some(m) = tx.query_opt(
                "SELECT coalesce(merchant_uid, '') FROM plan_changes WHERE subscription_id = ?1 AND state = 'pending'",
                params![sub],
                |r| r.get::<String>(0),
            )?
        {
            return Ok(Err(RefundRefused::ChangePending(m)));
        }
        // Issue 25: never what a plan change of the charge's period credited (the credit is the customer's already).
        if let Some((refundable, credited)) = super::credit::refundable_beside_credit(&tx, &r.merchant_uid)?
            && amount > refundable
        {
            return Ok(Err(RefundRefused::Credited { refundable, credited }));
        }
        let (wall, boot_ms, boot_id) = real_cols(sent);
        let n = secs(now);
        let id: i64 = tx.query_row(
            "INSERT INTO refunds (merchant_uid, imp_uid, amount, currency, checksum, reason, status, source,
               timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 'billd', ?7, ?8, ?9, ?10, ?11, ?12, ?12) RETURNING id",
            params![
                r.merchant_uid,
                imp_uid,
                amount,
                c.currency,
                remaining,
                r.reason,
                timeout_ms as i64,
                secs_ceil(check_at),
                wall,
                boot_ms,
                boot_id,
                n
            ],
            |x| x.get(0),
        )?;
        let begun = by_id(&tx, id)?;
        let mut d = detail(&begun);
        d["checksum"] = json!(remaining);
        event(&tx, n, "refund.pending", c.subscription.as_deref(), d)?;
        tx.commit()?;
        Ok(Ok(begun))
    }

    fn refund_go(&self, id: i64, at: &RealInstant) -> Result<bool> {
        let (wall, boot_ms, boot_id) = real_cols(at);
        let tx = self.tx()?;
        let changed = tx.execute(
            "UPDATE refunds SET doubt_wall_ms = ?2, doubt_boot_ms = ?3, doubt_boot_id = ?4
             WHERE id = ?1 AND status = 'pending'",
            params![id, wall, boot_ms, boot_id],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    fn refund_refused(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<bool> {
        let tx = self.tx()?;
        let done = to_failed(&tx, id, reason, secs(now))?;
        tx.commit()?;
        Ok(done)
    }

    fn refund_unknown(
        &self,
        id: i64,
        reason: &str,
        since: &RealInstant,
        check_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let tx = self.tx()?;
        let done = to_unknown(&tx, id, reason, since, secs_ceil(check_at), secs(now))?;
        tx.commit()?;
        Ok(done)
    }

    fn settle_refunds(
        &self,
        merchant_uid: &str,
        paid: i64,
        seen: &[SeenRefund],
        real_now: &RealInstant,
        now: DateTime<Utc>,
    ) -> Result<RefundsSettled> {
        let n = secs(now);
        // A refund's check times are real time (its request's quiet period is): from the wall clock, whatever
        // billing instant `now` is (a far `--as-of` put a check years off, and no pass in real time looked again).
        let wall = DateTime::from_timestamp_millis(real_now.wall_ms).unwrap_or(now);
        let tx = self.tx()?;
        let Some(c) = charge(&tx, merchant_uid)?.filter(|c| c.status == ChargeStatus::Paid) else {
            return Ok(RefundsSettled::default());
        };
        let Some(imp_uid) = c.imp_uid.clone() else { return Ok(RefundsSettled::default()) };
        if paid != c.amount {
            bail!(
                "charge {merchant_uid}: the gateway's payment {imp_uid} has another amount than billd recorded ({} {}); \
                 its refunds are not settled from it",
                c.amount,
                c.currency
            );
        }
        let rows = refunds_of(&tx, merchant_uid)?;
        // An answer older than a refund recorded meanwhile (by another process, after this lookup was answered):
        // nothing is read from it.
        let unlisted = rows
            .iter()
            .filter(|r| r.status == RefundStatus::Refunded)
            .filter_map(|r| r.cancellation_id.as_deref())
            .find(|id| !seen.iter().any(|s| s.id == *id));
        if let Some(id) = unlisted {
            return Err(RefundsStale { merchant_uid: merchant_uid.to_owned(), cancellation_id: id.to_owned() }.into());
        }
        let recorded: Vec<String> = rows.iter().filter_map(|r| r.cancellation_id.clone()).collect();
        // An entry's reason counts only as the gateway gave it (billd's reasons come back unchanged): compared
        // exactly.
        let cancels: Vec<Cancel<'_>> =
            seen.iter().map(|s| (s.id.as_str(), s.amount, s.verbatim.then_some(s.reason.as_str()))).collect();
        let doubt = rows.iter().find(|r| r.status.unresolved()).cloned();
        let in_doubt = doubt.as_ref().map(|d| (d.amount, d.checksum.unwrap_or(-1), d.reason.as_str()));
        let found = attribute(c.amount, &cancels, |id| recorded.iter().any(|r| r == id), in_doubt);
        let mut settled = RefundsSettled::default();
        let mut taken = recorded.clone();
        if let Some(d) = doubt {
            if let Some(i) = found.ours {
                tx.execute(
                    "UPDATE refunds SET status = 'refunded', cancellation_id = ?2, detail = NULL, check_at = NULL,
                       updated_at = ?3 WHERE id = ?1",
                    params![d.id, seen[i].id, n],
                )?;
                taken.push(seen[i].id.clone());
                refunded(&tx, n, c.subscription.as_deref(), &by_id(&tx, d.id)?)?;
            } else if d.status == RefundStatus::Pending && d.check_at.is_some_and(|t| t > wall) {
                // The command that began it may still be sending it (its check time is when it is surely over).
            } else if d.status == RefundStatus::Pending {
                // Its command stopped before recording an outcome, perhaps before its request left: a full quiet
                // period from this look.
                let quiet = d.doubt.as_ref().map_or(quiet_period(None), |x| x.quiet);
                let check = secs_ceil(wall + chrono::Duration::from_std(quiet).unwrap_or(chrono::Duration::hours(1)));
                let why = "no such refund at the gateway yet; the `billd refund` that sent it stopped before its \
                           answer, so it is looked up again after the quiet period";
                to_unknown(&tx, d.id, why, real_now, check, n)?;
            } else {
                let left = d.doubt.as_ref().map(|x| x.remaining(real_now)).unwrap_or_default();
                if left.is_zero() {
                    let why = "not in the payment's refunds at the gateway after the quiet period: nothing was \
                               refunded (run `billd refund` again to refund it)";
                    to_failed(&tx, d.id, why, n)?;
                } else {
                    let until = wall + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::hours(1));
                    tx.execute(
                        "UPDATE refunds SET check_at = CASE WHEN check_at > ?2 THEN check_at ELSE ?2 END
                         WHERE id = ?1 AND status = 'unknown'",
                        params![d.id, secs_ceil(until)],
                    )?;
                }
            }
            settled.in_doubt = Some(by_id(&tx, d.id)?);
        }
        // billd's refunds settled as failed that the gateway made after all (a cancel that reached it after the
        // quiet period): the entry of its amount and reason at its checksum's place is that refund, not one made
        // outside billd.
        for f in rows.iter().filter(|r| r.source == RefundSource::Billd && r.status == RefundStatus::Failed) {
            let Some(checksum) = f.checksum else { continue };
            let late = Some((f.amount, checksum, f.reason.as_str()));
            let Some(i) = attribute(c.amount, &cancels, |id| taken.iter().any(|t| t == id), late).ours else {
                continue;
            };
            tx.execute(
                "UPDATE refunds SET status = 'refunded', cancellation_id = ?2, detail = NULL, check_at = NULL,
                   updated_at = ?3 WHERE id = ?1 AND status = 'failed'",
                params![f.id, seen[i].id, n],
            )?;
            taken.push(seen[i].id.clone());
            let r = by_id(&tx, f.id)?;
            refunded(&tx, n, c.subscription.as_deref(), &r)?;
            settled.late.push(r);
        }
        // Refunds made outside billd, once billd's own is no longer in doubt (one of them could be it).
        if settled.in_doubt.as_ref().is_none_or(|r| !r.status.unresolved()) {
            let outside = attribute(c.amount, &cancels, |id| taken.iter().any(|t| t == id), None).external;
            for i in outside {
                let s = &seen[i];
                // The gateway's time of it, if it is one it could be (from the charge to a day ahead), else now.
                let made = s.at.map(secs).filter(|t| (c.begun..=n + 86_400).contains(t)).unwrap_or(n);
                let id: i64 = tx.query_row(
                    "INSERT INTO refunds (merchant_uid, imp_uid, amount, currency, reason, status, source,
                       cancellation_id, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'refunded', 'external', ?6, ?7, ?8) RETURNING id",
                    params![merchant_uid, imp_uid, s.amount, c.currency, s.reason, s.id, made, n],
                    |x| x.get(0),
                )?;
                let r = by_id(&tx, id)?;
                refunded(&tx, n, c.subscription.as_deref(), &r)?;
                settled.external.push(r);
            }
        }
        // Never more refunded than the gateway lists: an answer that would make it so (entries billd cannot tell
        // from ones it recorded, say) is not read for this charge.
        let listed: i64 = seen.iter().map(|s| s.amount).sum();
        let total: i64 = tx.query_row(
            "SELECT coalesce(sum(amount), 0) FROM refunds WHERE merchant_uid = ?1 AND status = 'refunded'",
            params![merchant_uid],
            |r| r.get(0),
        )?;
        if total > listed {
            bail!(
                "charge {merchant_uid}: the gateway's payment {imp_uid} lists {listed} {cur} refunded, but settling \
                 its cancel history would make billd's refunds of it {total} {cur} (entries billd cannot tell from \
                 those it recorded); nothing was recorded from this answer",
                cur = c.currency
            );
        }
        tx.commit()?;
        Ok(settled)
    }

    fn unresolved_refunds(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RefundRow>> {
        let st = format!(
            "SELECT {COLS} FROM refunds WHERE status IN ('pending', 'unknown') AND coalesce(check_at, 0) <= ?1
             ORDER BY check_at NULLS FIRST, id LIMIT ?2"
        );
        let rows = self.db().query_map(&st, params![secs(now), limit as i64], row)?;
        Ok(rows)
    }

    fn paid_charges(&self, since: Option<DateTime<Utc>>, after: Option<&str>, limit: usize) -> Result<Vec<PaidCharge>> {
        let st = "SELECT merchant_uid, imp_uid, amount FROM (
               SELECT merchant_uid, imp_uid, amount, updated_at AS t FROM attempts
                WHERE status = 'paid' AND imp_uid IS NOT NULL
               UNION ALL
               SELECT merchant_uid, imp_uid, amount, updated_at FROM one_time_charges
                WHERE status = 'paid' AND imp_uid IS NOT NULL) AS paid
             WHERE (CAST(?1 AS BIGINT) IS NULL OR t >= ?1) AND (CAST(?2 AS TEXT) IS NULL OR merchant_uid > ?2)
             ORDER BY merchant_uid LIMIT ?3";
        let rows = self.db().query_map(st, params![since.map(secs), after, limit as i64], |r| {
            Ok(PaidCharge { merchant_uid: r.get(0)?, imp_uid: r.get(1)?, amount: r.get(2)? })
        })?;
        Ok(rows)
    }

    fn list_refunds(&self, since: Option<DateTime<Utc>>) -> Result<Vec<RefundRow>> {
        let st =
            format!("SELECT {COLS} FROM refunds WHERE (CAST(?1 AS BIGINT) IS NULL OR created_at >= ?1) ORDER BY id");
        let rows = self.db().query_map(&st, params![since.map(secs)], row)?;
        Ok(rows)
    }
}

/// Fails a refund in doubt (nothing refunded), with its event; false if it is not in doubt.
fn to_failed(tx: &dyn Db, id: i64, reason: &str, now: i64) -> Result<bool> {
    let changed = tx.execute(
        "UPDATE refunds SET status = 'failed', detail = ?2, check_at = NULL, updated_at = ?3
         WHERE id = ?1 AND status IN ('pending', 'unknown')",
        params![id, reason, now],
    )?;
    if changed == 1 {
        let r = by_id(tx, id)?;
        event(tx, now, "refund.failed", subscription_of(tx, &r.merchant_uid)?.as_deref(), detail(&r))?;
    }
    Ok(changed == 1)
}

/// Leaves a refund in doubt unknown from the real instant `since` until `check_at` at least, with its event; false
/// if it is not in doubt.
fn to_unknown(tx: &dyn Db, id: i64, reason: &str, since: &RealInstant, check_at: i64, now: i64) -> Result<bool> {
    let (wall, boot_ms, boot_id) = real_cols(since);
    let changed = tx.execute(
        "UPDATE refunds SET status = 'unknown', detail = ?2, check_at = ?3, updated_at = ?4, doubt_wall_ms = ?5,
           doubt_boot_ms = ?6, doubt_boot_id = ?7
         WHERE id = ?1 AND status IN ('pending', 'unknown')",
        params![id, reason, check_at, now, wall, boot_ms, boot_id],
    )?;
    if changed == 1 {
        let r = by_id(tx, id)?;
        let mut d = detail(&r);
        d["check_at"] = json!(at(check_at).to_rfc3339());
        event(tx, now, "refund.unknown", subscription_of(tx, &r.merchant_uid)?.as_deref(), d)?;
    }
    Ok(changed == 1)
}

/// The subscription whose period has this merchant_uid (`None`: a one-time charge).
fn subscription_of(conn: &dyn Db, merchant_uid: &str) -> Result<Option<String>> {
    conn.query_opt("SELECT subscription_id FROM periods WHERE merchant_uid = ?1", params![merchant_uid], |r| r.get(0))
}
