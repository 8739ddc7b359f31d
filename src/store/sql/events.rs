//! SQLite: the event log (`events`), written inside the transaction of the change it records.

use super::db::{Db, params};
use super::outbox::{About, fields, publish};
use super::{SqlStore, secs};
use crate::store::Events;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// Appends an event (inside the caller's transaction).
pub(super) fn event(conn: &dyn Db, now: i64, kind: &str, sub: Option<&str>, detail: serde_json::Value) -> Result<()> {
    conn.execute(
        "INSERT INTO events (at, kind, subscription_id, detail) VALUES (?1, ?2, ?3, ?4)",
        params![now, kind, sub, detail.to_string()],
    )?;
    Ok(())
}

/// Appends event `kind` of subscription `id` and publishes it to the outbox under the same type, with the
/// subscription as it is now and the detail's fields (inside the caller's transaction).
pub(super) fn subscription_event(
    conn: &dyn Db,
    now: i64,
    kind: &str,
    id: &str,
    detail: serde_json::Value,
) -> Result<()> {
    event(conn, now, kind, Some(id), detail.clone())?;
    publish(conn, now, kind, Some(id), About::Subscription(id), fields(detail))
}

impl Events for SqlStore {
    fn log_event(
        &self,
        kind: &str,
        subscription: Option<&str>,
        detail: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.tx()?;
        event(&tx, secs(now), kind, subscription, detail)?;
        tx.commit()?;
        Ok(())
    }
}
