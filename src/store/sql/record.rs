//! SQLite: recording outcomes (group commit): attempts, their periods, and the status changes `billing::status`
//! decides from the status read inside the transaction.

use super::book::change_status;
use super::db::{Db, params};
use super::events::event;
use super::outbox::{About, fields, publish};
use super::{SqlStore, real_cols, secs, secs_ceil};
use crate::billing::dunning::Decision;
use crate::billing::status::{Cause, exhausted_reason};
use crate::store::{AttemptResult, Failure, Recorded, StatusChange};
use anyhow::{Context, Result, bail};
use serde_json::json;

/// A paid attempt: its row (`?1` id, `?2` imp_uid, `?3` now)…
const PAID_ATTEMPT: &str = "UPDATE attempts SET status = 'paid', imp_uid = ?2, fail_reason = NULL, check_at = NULL,
    resolved_at = ?3, updated_at = ?3 WHERE id = ?1 AND status != 'paid'";

/// …and its period (`?1` subscription, `?2` period, `?3` now).
const PAID_PERIOD: &str = "UPDATE periods SET state = 'paid', next_attempt_at = NULL, retry_ahead_of = NULL,
    closed_at = ?3 WHERE subscription_id = ?1 AND period = ?2";

/// Records a batch (see [`crate::store::Ledger::record`]); returns the status changes and the attempts fenced off.
pub(super) fn record(store: &SqlStore, items: &[Recorded], now: i64) -> Result<(Vec<StatusChange>, Vec<i64>)> {
    let tx = store.tx()?;
    let mut changes = Vec::new();
    let mut fenced = Vec::new();
    let owner_of = "SELECT owner FROM attempts WHERE id = ?1";
    for it in items {
        let a = &it.attempt;
        // (An attempt not in the book is recording's error, below.)
        let owner: Option<Option<i64>> = tx.query_opt(owner_of, params![a.id], |r| r.get(0))?;
        if owner.is_some_and(|o| o != store.owner) {
            // Another daemon took it over (this one's lease lapsed): its outcome is that daemon's to record.
            tracing::warn!(event = "charge.fenced", subscription = %a.subscription_id, period = a.period,
                merchant_uid = %a.merchant_uid,
                "charge.fenced: this daemon's lease lapsed and another daemon took the charge over; its outcome here \
                 is not recorded (the new owner looks it up)");
            fenced.push(a.id);
            continue;
        }
        record_one(&tx, it, now, &mut changes).with_context(|| format!("recording merchant_uid {}", a.merchant_uid))?;
    }
    tx.commit()?;
    Ok((changes, fenced))
}

/// [`record`] for one outcome, only if its attempt is still unresolved with the status and tries it was read with
/// (checked inside the transaction); `None`: it changed, nothing is written (`Notices::record_unchanged`).
pub(super) fn record_unchanged(store: &SqlStore, it: &Recorded, now: i64) -> Result<Option<Vec<StatusChange>>> {
    let a = &it.attempt;
    if !a.status.unresolved() {
        return Ok(None);
    }
    let tx = store.tx()?;
    let same = tx.exists(
        "SELECT 1 FROM attempts WHERE id = ?1 AND subscription_id = ?2 AND period = ?3 AND attempt = ?4
               AND status = ?5 AND tries = ?6",
        params![a.id, a.subscription_id, a.period as i64, a.attempt, a.status, a.tries],
    )?;
    if !same {
        return Ok(None);
    }
    let mut changes = Vec::new();
    {
        record_one(&tx, it, now, &mut changes).with_context(|| format!("recording merchant_uid {}", a.merchant_uid))?;
    }
    tx.commit()?;
    Ok(Some(changes))
}

/// A subscription's status change for `cause`, as `billing::status` decides it; noted in `changes`.
fn status_to(
    tx: &dyn Db,
    it: &Recorded,
    cause: Cause,
    now: i64,
    reason: &str,
    changes: &mut Vec<StatusChange>,
) -> Result<()> {
    let id = &it.attempt.subscription_id;
    // An end with credit left released it (refundable): said in the end's log line.
    if let Some((from, Some(to), _, _, credit_released)) = change_status(tx, id, cause, now, reason)? {
        changes.push(StatusChange { subscription_id: id.clone(), from, to, credit_released });
    }
    Ok(())
}

fn record_one(tx: &dyn Db, it: &Recorded, now: i64, changes: &mut Vec<StatusChange>) -> Result<()> {
    let a = &it.attempt;
    // The event detail of an outcome that writes an event (a paid one does not).
    let detail = || {
        json!({
            "merchant_uid": a.merchant_uid, "period": a.period, "attempt": a.attempt, "amount": a.amount,
            "currency": a.currency,
        })
    };
    // An outcome for an attempt that is no longer there to settle (voided by a cancel, a pause or a sync before its
    // request left, its id perhaps reused since) is dropped: no event, no status change. A paid one cannot be
    // dropped (it would be a payment billd does not know): that is an error.
    if !matches!(it.result, AttemptResult::Paid { .. }) {
        let here = tx.exists(
            "SELECT 1 FROM attempts WHERE id = ?1 AND subscription_id = ?2 AND period = ?3 AND attempt = ?4
                   AND status IN ('pending', 'unknown')",
            params![a.id, a.subscription_id, a.period as i64, a.attempt],
        )?;
        if !here {
            return Ok(());
        }
    }
    match &it.result {
        AttemptResult::Paid { imp_uid } => {
            if tx.execute(PAID_ATTEMPT, params![a.id, imp_uid, now])? != 1 {
                // Recorded paid already (by another handle that settled it too): nothing more to write or publish.
                let already = tx.exists("SELECT 1 FROM attempts WHERE id = ?1 AND status = 'paid'", params![a.id])?;
                if already {
                    return Ok(());
                }
                bail!("attempt {} is not in the book (voided before it was sent?)", a.id);
            }
            tx.execute(PAID_PERIOD, params![a.subscription_id, a.period as i64, now])?;
            publish(tx, now, "charge.paid", Some(&a.subscription_id), About::Attempt(a.id), Default::default())?;
            // The paid attempt row is the record of the payment (no separate event: this is the hot path of a
            // billing day). A past-due subscription becomes active again; its status is read only then (no other
            // status can turn into past due while the attempt is out, as a subscription has one open period).
            if a.past_due {
                status_to(tx, it, Cause::Paid, now, "paid", changes)?;
            }
            if a.ends_term {
                status_to(tx, it, Cause::TermEnded, now, "its last period is paid: its term is over", changes)?;
            }
        }
        AttemptResult::Unresolved { reason } | AttemptResult::ResendRefused { reason } => {
            let Decision::CheckAt(at) = it.decision else { bail!("unresolved outcome needs a check time") };
            let refused = matches!(it.result, AttemptResult::ResendRefused { .. }) as i64;
            // In doubt from the real instant it was decided at (its request left before): the quiet period is
            // counted from there (an outcome recorded without one keeps the stamp of its send, or, if it has none,
            // the instant of recording).
            let (wall, boot_ms, boot_id) = match &it.doubt {
                Some(d) => {
                    let (w, m, i) = real_cols(d);
                    (Some(w), m, i)
                }
                None => (None, None, None),
            };
            tx.execute(
                "UPDATE attempts SET status = 'unknown', fail_reason = ?2, tries = tries + 1, check_at = ?3,
                   updated_at = ?4, refused_resends = refused_resends + ?5,
                   doubt_wall_ms = coalesce(?6, doubt_wall_ms, 1000 * CAST(?4 AS BIGINT)),
                   doubt_boot_ms = CASE WHEN CAST(?6 AS BIGINT) IS NULL THEN doubt_boot_ms ELSE ?7 END,
                   doubt_boot_id = CASE WHEN CAST(?6 AS BIGINT) IS NULL THEN doubt_boot_id ELSE ?8 END
                 WHERE id = ?1",
                params![a.id, reason, secs_ceil(at), now, refused, wall, boot_ms, boot_id],
            )?;
            let mut d = detail();
            d["reason"] = json!(reason);
            d["check_at"] = json!(at.to_rfc3339());
            event(tx, now, "charge.unknown", Some(&a.subscription_id), d)?;
        }
        AttemptResult::Mismatch { reason } => {
            // Held: the period stays open with no next attempt, so nothing more is sent for it (and no later period
            // of the subscription opens) until an operator acts.
            tx.execute(
                "UPDATE attempts SET status = 'failed', failure = 'mismatch', fail_reason = ?2, check_at = NULL,
                   resolved_at = ?3, updated_at = ?3 WHERE id = ?1",
                params![a.id, reason, now],
            )?;
            tx.execute(
                "UPDATE periods SET next_attempt_at = NULL, retry_ahead_of = NULL
                 WHERE subscription_id = ?1 AND period = ?2",
                params![a.subscription_id, a.period as i64],
            )?;
            let mut d = detail();
            d["reason"] = json!(reason);
            event(tx, now, "charge.mismatch", Some(&a.subscription_id), d)?;
        }
        // Closed without a charge, the period left open and due: an abandoned attempt is charged again only if the
        // subscription bills again; a withheld one (a mass rejection) by a later pass, with no decline counted and
        // no status change.
        AttemptResult::Abandoned { reason } => close_leaving_open(tx, it, now, Failure::Abandoned, reason, detail())?,
        AttemptResult::Withheld { reason } => close_leaving_open(tx, it, now, Failure::Rejected, reason, detail())?,
        AttemptResult::Declined { imp_uid, reason } => {
            record_failure(tx, it, now, Failure::Declined, imp_uid.as_deref(), reason, detail(), changes)?;
        }
        AttemptResult::Rejected { reason } => {
            record_failure(tx, it, now, Failure::Rejected, None, reason, detail(), changes)?;
        }
    }
    // Not paid (or held as a mismatch), for a subscription that has ended meanwhile (canceled while this charge was
    // in doubt): the credit its period took comes back and is released now, refundable, as an end after this
    // outcome releases it (an outsider's stayed on the period for good).
    if matches!(
        it.result,
        AttemptResult::Abandoned { .. }
            | AttemptResult::Withheld { .. }
            | AttemptResult::Declined { .. }
            | AttemptResult::Rejected { .. }
            | AttemptResult::Mismatch { .. }
    ) {
        super::credit::release_credit_in(tx, &a.subscription_id, now)?;
    }
    Ok(())
}

/// Closes an attempt as failed (`failure`) and leaves its period open and due from `now`, with a `charge.abandoned`
/// (abandoned) or `charge.withheld` (a rejection withheld in a mass rejection) event.
fn close_leaving_open(
    tx: &dyn Db,
    it: &Recorded,
    now: i64,
    failure: Failure,
    reason: &str,
    mut detail: serde_json::Value,
) -> Result<()> {
    let a = &it.attempt;
    tx.execute(
        "UPDATE attempts SET status = 'failed', failure = ?2, fail_reason = ?3, check_at = NULL, resolved_at = ?4,
           updated_at = ?4 WHERE id = ?1",
        params![a.id, failure, reason, now],
    )?;
    tx.execute(
        "UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2",
        params![a.subscription_id, a.period as i64, now],
    )?;
    detail["reason"] = json!(reason);
    let kind = if failure == Failure::Abandoned { "charge.abandoned" } else { "charge.withheld" };
    event(tx, now, kind, Some(&a.subscription_id), detail)
}

#[allow(clippy::too_many_arguments)]
fn record_failure(
    tx: &dyn Db,
    it: &Recorded,
    now: i64,
    failure: Failure,
    imp_uid: Option<&str>,
    reason: &str,
    mut detail: serde_json::Value,
    changes: &mut Vec<StatusChange>,
) -> Result<()> {
    let a = &it.attempt;
    tx.execute(
        "UPDATE attempts SET status = 'failed', failure = ?2, imp_uid = ?3, fail_reason = ?4, check_at = NULL,
           resolved_at = ?5, updated_at = ?5 WHERE id = ?1",
        params![a.id, failure, imp_uid, reason, now],
    )?;
    // A decline counts against the period's retries unless it was an operator's extra attempt; either way the
    // period's next attempt is a scheduled one from now on.
    let counted = failure == Failure::Declined && !matches!(it.decision, Decision::BackToSchedule(_));
    tx.execute(
        "UPDATE periods SET declines = declines + ?3, retry_ahead_of = NULL WHERE subscription_id = ?1 AND period = ?2",
        params![a.subscription_id, a.period as i64, counted as i64],
    )?;
    detail["reason"] = json!(reason);
    detail["failure"] = json!(failure.as_str());
    match it.decision {
        Decision::RetryAt(at) | Decision::BackToSchedule(at) => {
            tx.execute(
                "UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2",
                params![a.subscription_id, a.period as i64, secs(at)],
            )?;
            detail["next_retry"] = json!(at.to_rfc3339());
            if !counted && failure == Failure::Declined {
                detail["counted"] = json!(false);
            }
            charge_failed(tx, now, a, detail)?;
            status_to(tx, it, Cause::FailedWillRetry, now, reason, changes)?;
        }
        Decision::Exhausted(action) => {
            tx.execute(
                "UPDATE periods SET state = 'given_up', next_attempt_at = NULL, closed_at = ?3
                 WHERE subscription_id = ?1 AND period = ?2",
                params![a.subscription_id, a.period as i64, now],
            )?;
            super::credit::return_credit(tx, &a.subscription_id, a.period, now)?;
            detail["final_action"] = json!(action.as_str());
            charge_failed(tx, now, a, detail)?;
            let why = exhausted_reason(failure == Failure::Rejected, reason);
            status_to(tx, it, Cause::Exhausted(action), now, &why, changes)?;
            if a.ends_term && action == crate::billing::dunning::OnExhausted::Skip {
                let why = "its last period was given up: its term is over";
                status_to(tx, it, Cause::TermEnded, now, why, changes)?;
            }
        }
        other => bail!("a failed attempt cannot be followed by {other:?}"),
    }
    Ok(())
}

/// The `charge.failed` event of attempt `a`, logged and published (its `reason`, `failure`, and `next_retry` or
/// `final_action`).
fn charge_failed(tx: &dyn Db, now: i64, a: &crate::store::Attempt, detail: serde_json::Value) -> Result<()> {
    event(tx, now, "charge.failed", Some(&a.subscription_id), detail.clone())?;
    let keep = ["reason", "failure", "next_retry", "final_action", "counted"];
    let extra = fields(detail).into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect();
    publish(tx, now, "charge.failed", Some(&a.subscription_id), About::Attempt(a.id), extra)
}
