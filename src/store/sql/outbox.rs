//! SQLite: the webhook outbox (`outbox`): public events published inside the transaction of their change, and
//! their delivery state.

use super::db::{Db, Row, params};
use super::events::subscription_event;
use super::views::{CHARGE_SELECT, ONE_TIME_SELECT, SUB_ROW_SELECT, charge_row, one_time_row, sub_row};
use super::{SqlStore, at, secs};
use crate::store::{
    Delivery, DeliveryAttempt, DeliveryState, Outbox, OutboxEvent, OutboxFilter, OutboxStats, Replay, Snapshot,
};
use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// What a published event is about: a period's attempt (its row id), a one-time charge or the paid charge of a
/// merchant_uid (a refund's), or a subscription.
pub(crate) enum About<'a> {
    Attempt(i64),
    /// A one-time charge by merchant_uid.
    OneTime(&'a str),
    /// The paid charge of this merchant_uid, a period's attempt or a one-time charge.
    PaidCharge(&'a str),
    Subscription(&'a str),
}

/// Publishes event `kind` about `about` into the outbox, inside the caller's transaction, with the charge or
/// subscription as it is now in that transaction and `extra` (the event's own fields). `subscription` names the
/// stream (`None`: the stream of events of no subscription).
pub(crate) fn publish(
    conn: &dyn Db,
    now: i64,
    kind: &str,
    subscription: Option<&str>,
    about: About<'_>,
    extra: Map<String, Value>,
) -> Result<()> {
    let mut snapshot = Snapshot { charge: None, subscription: None, extra };
    match about {
        About::Attempt(id) => {
            let sql = format!("{CHARGE_SELECT} WHERE a.id = ?1");
            snapshot.charge = conn.query_opt(&sql, params![id], charge_row)?;
        }
        About::OneTime(merchant_uid) => {
            let sql = format!("{ONE_TIME_SELECT} WHERE merchant_uid = ?1");
            snapshot.charge = conn.query_opt(&sql, params![merchant_uid], one_time_row)?;
        }
        About::PaidCharge(merchant_uid) => {
            let sql = format!("{CHARGE_SELECT} WHERE a.merchant_uid = ?1 AND a.status = 'paid'");
            snapshot.charge = conn.query_opt(&sql, params![merchant_uid], charge_row)?;
            if snapshot.charge.is_none() {
                let sql = format!("{ONE_TIME_SELECT} WHERE merchant_uid = ?1");
                snapshot.charge = conn.query_opt(&sql, params![merchant_uid], one_time_row)?;
            }
        }
        About::Subscription(id) => {
            let sql = format!("{SUB_ROW_SELECT} WHERE s.id = ?1");
            snapshot.subscription = conn.query_opt(&sql, params![id], sub_row)?;
        }
    }
    let stream = subscription.unwrap_or("");
    let sequence: i64 = conn.query_row(
        "INSERT INTO outbox_streams (stream, last) VALUES (?1, 1)
             ON CONFLICT (stream) DO UPDATE SET last = outbox_streams.last + 1 RETURNING last",
        params![stream],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO outbox (id, type, created_at, subscription_id, stream, sequence, snapshot, next_attempt_at)
         VALUES (?7, ?1, ?2, ?3, ?4, ?5, ?6, ?2)",
        params![kind, now, subscription, stream, sequence, serde_json::to_string(&snapshot)?, event_id()?],
    )
    .with_context(|| format!("publishing {kind}"))?;
    Ok(())
}

/// A new event id: `evt_`, the real instant in milliseconds (12 hex digits), then 80 random bits from the operating
/// system (20 hex digits). Unique forever, and written in about the order of the index of ids, so that an insert
/// appends to that index instead of landing on a random page of it (random ids made every insert into a large
/// outbox read and rewrite a page).
fn event_id() -> Result<String> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut random = [0u8; 10];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("cannot read the OS random generator: {e}"))?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("evt_{:012x}{hex}", ms & 0xffff_ffff_ffff))
}

/// An object's fields as an event's `extra`.
pub(super) fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

const EVENT_SELECT: &str =
    "SELECT seq, id, type, created_at, subscription_id, sequence, snapshot, body, state, attempts,
        next_attempt_at, give_up_at, last_attempt_at, last_error, settled_at FROM outbox";

fn event_row(r: &dyn Row) -> Result<OutboxEvent> {
    let snapshot: String = r.get(6)?;
    let state: String = r.get(8)?;
    Ok(OutboxEvent {
        position: r.get(0)?,
        id: r.get(1)?,
        kind: r.get(2)?,
        created_at: at(r.get(3)?),
        subscription_id: r.get(4)?,
        sequence: r.get::<i64>(5)? as u64,
        snapshot: serde_json::from_str(&snapshot).context("column 6 (snapshot)")?,
        body: r.get(7)?,
        state: DeliveryState::parse(&state).ok_or_else(|| anyhow!("column 8: bad delivery state {state:?}"))?,
        attempts: r.get::<i64>(9)? as u32,
        next_attempt_at: at(r.get(10)?),
        give_up_at: r.get::<Option<i64>>(11)?.map(at),
        last_attempt_at: r.get::<Option<i64>>(12)?.map(at),
        last_error: r.get(13)?,
        settled_at: r.get::<Option<i64>>(14)?.map(at),
    })
}

impl Outbox for SqlStore {
    fn deliverable(&self, now: DateTime<Utc>, after: i64, limit: usize) -> Result<Vec<OutboxEvent>> {
        // Each stream's head: a pending event with no earlier pending event in its stream (forward over the pending
        // events by position, so a page costs what it reads).
        let st = format!(
            "{EVENT_SELECT} o INDEXED BY outbox_pending_seq WHERE o.state = 'pending' AND o.seq > ?3
               AND o.next_attempt_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.state = 'pending' AND e.stream = o.stream
                                 AND e.sequence < o.sequence)
             ORDER BY o.seq LIMIT ?2"
        );
        let rows = self.db().query_map(&st, params![secs(now), limit as i64, after], event_row)?;
        Ok(rows)
    }

    fn still_deliverable(&self, id: &str, attempts: u32, now: DateTime<Utc>) -> Result<bool> {
        self.db().exists(
            "SELECT 1 FROM outbox o WHERE o.id = ?1 AND o.state = 'pending' AND o.attempts = ?2
                   AND o.next_attempt_at <= ?3
                   AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.state = 'pending' AND e.stream = o.stream
                                     AND e.sequence < o.sequence)",
            params![id, attempts as i64, secs(now)],
        )
    }

    fn deliveries_attempted(&self, attempts: &[DeliveryAttempt], now: DateTime<Utc>) -> Result<Vec<bool>> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.tx()?;
        let mut written = Vec::with_capacity(attempts.len());
        {
            let update = "UPDATE outbox SET body = coalesce(body, ?2), attempts = attempts + 1, state = ?3,
                   next_attempt_at = coalesce(?4, next_attempt_at), last_attempt_at = ?5,
                   last_error = CASE WHEN ?3 = 'delivered' THEN last_error ELSE ?6 END,
                   settled_at = CASE WHEN ?3 = 'pending' THEN NULL ELSE CAST(?5 AS BIGINT) END
                 WHERE id = ?1 AND state = 'pending'";
            for a in attempts {
                let (state, next, error) = match &a.outcome {
                    Delivery::Delivered => ("delivered", None, None),
                    Delivery::RetryAt(t, e) => ("pending", Some(secs(*t)), Some(e.as_str())),
                    Delivery::GaveUp(e) => ("failed", None, Some(e.as_str())),
                };
                written.push(tx.execute(update, params![a.id, a.body, state, next, secs(now), error])? == 1);
            }
        }
        tx.commit()?;
        Ok(written)
    }

    fn expire_unsent(&self, before: DateTime<Utc>, why: &str, now: DateTime<Utc>) -> Result<usize> {
        let tx = self.tx()?;
        let n = tx.execute(
            "UPDATE outbox SET state = 'failed', last_error = ?2, settled_at = ?3
                 WHERE seq IN (SELECT seq FROM outbox INDEXED BY outbox_unsent
                               WHERE state = 'pending' AND attempts = 0 AND created_at < ?1)",
            params![secs(before), why, secs(now)],
        )?;
        tx.commit()?;
        Ok(n)
    }

    fn prune_outbox(&self, before: DateTime<Utc>) -> Result<usize> {
        let tx = self.tx()?;
        let n = tx.execute("DELETE FROM outbox WHERE state != 'pending' AND settled_at < ?1", params![secs(before)])?;
        tx.commit()?;
        Ok(n)
    }

    fn outbox_events(&self, filter: &OutboxFilter, limit: usize) -> Result<Vec<OutboxEvent>> {
        let st = format!(
            "{EVENT_SELECT} WHERE (?1 = 0 OR state = 'failed') AND (CAST(?2 AS BIGINT) IS NULL OR created_at >= ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR subscription_id = ?3)
             ORDER BY seq LIMIT ?4"
        );
        let rows = self.db().query_map(
            &st,
            params![filter.failed_only as i64, filter.since.map(secs), filter.subscription, limit as i64],
            event_row,
        )?;
        Ok(rows)
    }

    fn outbox_event(&self, id: &str) -> Result<Option<OutboxEvent>> {
        let sql = format!("{EVENT_SELECT} WHERE id = ?1");
        self.db().query_opt(&sql, params![id], event_row)
    }

    fn replay(&self, which: &Replay, give_up_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<String>> {
        let tx = self.tx()?;
        let (id, since) = match which {
            Replay::Event(id) => (Some(id.as_str()), None),
            Replay::Since(t) => (None, Some(secs(*t))),
        };
        let ids = tx.query_map(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?3, give_up_at = ?4,
                   settled_at = NULL
                 WHERE state != 'pending' AND (CAST(?1 AS TEXT) IS NULL OR id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR created_at >= ?2)
                 RETURNING id",
            params![id, since, secs(now), secs(give_up_at)],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(ids)
    }

    fn outbox_stats(&self) -> Result<OutboxStats> {
        // Both from the index of pending events: a count of its entries (no row is read), and the first pending
        // event by position, the oldest one (events are written in order; a full scan for min(created_at) took a
        // quarter of a second with a million pending).
        let (pending, oldest): (i64, Option<i64>) = self.db().query_row(
            "SELECT (SELECT count(*) FROM outbox INDEXED BY outbox_pending_seq WHERE state = 'pending'),
                    (SELECT created_at FROM outbox INDEXED BY outbox_pending_seq WHERE state = 'pending'
                     ORDER BY seq LIMIT 1)",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(OutboxStats { pending: pending as u64, oldest_pending: oldest.map(at) })
    }

    fn announce_trials_ending(&self, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<String>> {
        let tx = self.tx()?;
        let due: Vec<(String, i64)> = tx.query_map(
            "SELECT id, next_due_at FROM subscriptions s INDEXED BY subscriptions_trialing_due
                 WHERE status = 'trialing' AND next_due_at <= ?1 AND next_due_at > ?2 AND bills
                   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.subscription_id = s.id
                                     AND e.kind = 'subscription.trial_ending')
                 ORDER BY next_due_at, id",
            params![secs(until), secs(now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (id, ends) in &due {
            let detail = serde_json::json!({ "trial_ends": at(*ends).to_rfc3339() });
            subscription_event(&tx, secs(now), "subscription.trial_ending", id, detail)?;
        }
        tx.commit()?;
        Ok(due.into_iter().map(|(id, _)| id).collect())
    }

    fn next_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        let t: Option<i64> = self.db().query_row(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending' AND attempts > 0",
            params![],
            |r| r.get(0),
        )?;
        Ok(t.map(at))
    }
}
