//! An attempt as the store reads it: the one SELECT (with its period and subscription) and the row it makes.

use super::db::Row;
use super::{at, real_from};
use crate::store::Attempt;
use anyhow::Result;

pub(super) const ATTEMPT_SELECT: &str = "SELECT a.id, a.subscription_id, a.period, a.attempt, a.merchant_uid,
    a.customer_uid, a.amount, a.currency, p.name, p.due_at, a.status, a.tries, p.declines,
    s.bills AS billing, s.status IN ('past_due', 'trialing') AS past_due, a.timeout_ms,
    a.refused_resends, a.doubt_wall_ms, a.doubt_boot_ms, a.doubt_boot_id, a.retry_ahead_of,
    p.period IS NOT DISTINCT FROM s.last_period AS ends_term, a.owner
  FROM attempts a
  JOIN periods p ON p.subscription_id = a.subscription_id AND p.period = a.period
  JOIN subscriptions s ON s.id = a.subscription_id";

pub(super) fn attempt_from_row(r: &dyn Row) -> Result<Attempt> {
    Ok(Attempt {
        id: r.get(0)?,
        subscription_id: r.get(1)?,
        period: r.get::<i64>(2)? as u64,
        attempt: r.get::<i64>(3)? as u32,
        merchant_uid: r.get(4)?,
        customer_uid: r.get(5)?,
        amount: r.get(6)?,
        currency: r.get(7)?,
        name: r.get(8)?,
        due_at: at(r.get(9)?),
        status: r.get(10)?,
        tries: r.get::<i64>(11)? as u32,
        declines: r.get::<i64>(12)? as u32,
        billing: r.get(13)?,
        past_due: r.get(14)?,
        timeout_ms: r.get::<Option<i64>>(15)?.map(|t| t.max(0) as u64),
        refused_resends: r.get::<i64>(16)? as u32,
        taken_over: false,
        in_doubt: real_from(r.get(17)?, r.get(18)?, r.get(19)?),
        ahead_of: r.get::<Option<i64>>(20)?.map(at),
        ends_term: r.get(21)?,
    })
}
