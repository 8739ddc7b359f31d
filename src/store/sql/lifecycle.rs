//! SQLite: a subscription's life beyond charging (issue 25): its pause as the book keeps it, who stopped it, and its
//! end (canceled at its `cancel_at`, completed with its term) for every subscription or after a restart.

use super::at;
use super::book::change_status;
use super::db::{Db, params};
use crate::billing::model::{Pause, Status};
use crate::billing::status::Cause;
use crate::store::StatusChange;
use anyhow::Result;

/// The pause of subscription `id` if it is suspended: when it began, when it ends by itself, its catch-up.
pub(super) fn pause_in(conn: &dyn Db, id: &str) -> Result<Option<Pause>> {
    conn.query_opt(
        "SELECT suspended_at, resume_at, resume_catch_up FROM subscriptions WHERE id = ?1 AND status = 'suspended'",
        params![id],
        |r| {
            Ok(Pause {
                since: r.get::<Option<i64>>(0)?.map(at),
                until: r.get::<Option<i64>>(1)?.map(at),
                catch_up: r.get::<i64>(2)? != 0,
            })
        },
    )
}

/// Whether dunning stopped subscription `id` (its retries ran out, or a charge was rejected), inside `tx`.
pub(super) fn stopped_by_dunning(tx: &dyn Db, id: &str) -> Result<bool> {
    let by: Option<Option<String>> =
        tx.query_opt("SELECT stopped_by FROM subscriptions WHERE id = ?1", params![id], |r| r.get(0))?;
    Ok(by.flatten().as_deref() == Some("dunning"))
}

/// A row of `subscriptions` paused with an end that skips what falls due meanwhile (`pause --until` without
/// --catch-up; an operator's pause, not dunning's): its cancel date ends it, paused ([`end_in`]), and the daemon
/// wakes for that date if it comes before the pause's end (`next_wake`). The one condition for both.
pub(super) const PAUSE_ENDED_BY_CANCEL_AT: &str =
    "(status = 'suspended' AND stopped_by IS NULL AND resume_at IS NOT NULL AND resume_catch_up = 0)";

/// [`crate::store::Book::end_canceling`] inside `tx`, for every subscription or only `only`: cancels those whose `cancel_at` came
/// once nothing before it is left to open or settle, completes those whose fixed term has nothing left to bill.
/// Returns the status changes it made.
pub(super) fn end_in(tx: &dyn Db, now: i64, only: Option<&str>) -> Result<Vec<StatusChange>> {
    // Once nothing due before cancel_at is left to open or settle (a period missed while billd was down is charged
    // first: an outsider's was never charged), and whatever status a resume or a reactivation left it in.
    let ended = |sql: &str| -> Result<Vec<(String, String, String)>> {
        tx.query_map(sql, params![now, only], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    };
    let nothing_left =
        "next_due_at IS NULL AND (CAST(?2 AS TEXT) IS NULL OR id = ?2) AND NOT EXISTS (SELECT 1 FROM periods p
           WHERE p.subscription_id = subscriptions.id AND p.state = 'open')";
    // A due instant at or after cancel_at never opens (`ledger::OPENS_NEXT`): nothing is left either. A pause with
    // an end that skips what falls due meanwhile (`pause --until` without --catch-up) has nothing left either: it
    // ends at its cancel date, never resumed past it (an outsider's `pause --until` past the date resumed it,
    // announced, and canceled it the same instant). A pause with --catch-up holds (what it charges at its end is due
    // before the date), and so do one without an end (`resume` decides then) and a dunning suspension.
    let canceled = ended(&format!(
        "SELECT id, source, status FROM subscriptions WHERE cancel_at <= ?1 AND (CAST(?2 AS TEXT) IS NULL OR id = ?2)
           AND ((bills AND (next_due_at IS NULL OR next_due_at >= cancel_at)) OR {PAUSE_ENDED_BY_CANCEL_AT})
           AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id AND p.state = 'open')
         ORDER BY cancel_at, id"
    ))?;
    let mut changes = Vec::new();
    let mut end = |id: &String, cause, why| -> Result<()> {
        if let Some((from, Some(to), _, _, credit_released)) = change_status(tx, id, cause, now, why)? {
            changes.push(StatusChange { subscription_id: id.clone(), from, to, credit_released });
        }
        Ok(())
    };
    for (id, source, status) in &canceled {
        // The operator's cancel at period end, or the file's cancel_at.
        let why = match (source.as_str(), status.as_str()) {
            ("config", "suspended") => "canceled at its cancel date while paused (cancel_at in the config)",
            (_, "suspended") => "canceled at its cancel date while paused",
            ("config", _) => "canceled at period end (cancel_at in the config)",
            _ => "canceled at period end",
        };
        end(id, Cause::CancelAtReached, why)?;
    }
    // A fixed term with nothing left to bill (shortened by a sync, its last period skipped by a pause, or
    // reactivated past it) is completed.
    let completed = ended(&format!(
        "SELECT id, source, status FROM subscriptions WHERE bills AND CAST(?1 AS BIGINT) IS NOT NULL AND last_period IS NOT NULL
           AND next_period > last_period AND {nothing_left} ORDER BY id"
    ))?;
    for (id, _, _) in &completed {
        end(id, Cause::TermEnded, "its term is over: no period is left to bill")?;
    }
    Ok(changes)
}

/// After a resume or a reactivation made subscription `id` bill again, inside `tx`: with nothing left to bill it ends
/// at once ([`end_in`]: canceled once its `cancel_at` came, completed once its term is over); with a `cancel_at`
/// (still ahead, or passed with periods before it left) it is canceling again.
pub(super) fn after_restart(tx: &dyn Db, id: &str, now: i64) -> Result<()> {
    if !end_in(tx, now, Some(id))?.is_empty() {
        return Ok(());
    }
    let canceling: bool = tx.query_row(
        "SELECT bills AND status != 'canceling' AND cancel_at IS NOT NULL FROM subscriptions WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    if canceling {
        change_status(tx, id, Cause::Operator(Status::Canceling), now, "its cancel at period end stands")?;
    }
    Ok(())
}
