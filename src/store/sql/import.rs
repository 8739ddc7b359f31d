//! SQLite: `billd import`'s reads (the existing row, an id that differs only by case) and its chunked inserts (one
//! transaction per chunk).

use super::SqlStore;
use super::db::{Db, params};
use super::names::same_id_but_case;
use super::outbox::{About, fields, publish};
use crate::store::{ImportRow, ImportedAs};
use anyhow::Result;

pub(super) fn lookup(store: &SqlStore, id: &str) -> Result<(Option<ImportedAs>, Option<String>)> {
    let have = store.db().query_opt(
        "SELECT customer_uid, plan_id, start_date, source FROM subscriptions WHERE id = ?1",
        params![id],
        |r| Ok(ImportedAs { customer_uid: r.get(0)?, plan_id: r.get(1)?, start_date: r.get(2)?, source: r.get(3)? }),
    )?;
    Ok((have, same_id_but_case(store.db(), id)?))
}

pub(super) fn insert_chunk(
    store: &SqlStore,
    rows: &[ImportRow],
    now: i64,
    mut existing: impl FnMut(usize, &ImportedAs) -> Result<()>,
) -> Result<(usize, usize)> {
    let tx = store.tx()?;
    let (mut inserted, mut skipped) = (0, 0);
    {
        let ins =
            "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
               anchor_date, anchor_period, next_period, next_due_at, status, source, created_at, updated_at,
               last_period)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?11, 0, 0, ?9, ?12, 'manual', ?10, ?10, ?13)
             ON CONFLICT (id) DO NOTHING";
        let event =
            "INSERT INTO events (at, kind, subscription_id, detail) VALUES (?1, 'subscription.created', ?2, ?3)";
        let have = "SELECT customer_uid, plan_id, start_date, source FROM subscriptions WHERE id = ?1";
        for (i, row) in rows.iter().enumerate() {
            let start = row.start_date.to_string();
            let n = tx.execute(
                ins,
                params![
                    row.id,
                    row.customer_uid,
                    row.plan_id,
                    row.plan_name,
                    row.amount,
                    row.currency,
                    row.interval.to_string(),
                    start,
                    row.next_due_at.map(super::secs),
                    now,
                    row.anchor_date.to_string(),
                    row.status,
                    row.last_period.map(|p| p as i64)
                ],
            )?;
            if n == 0 {
                let found = tx.query_row(have, params![&row.id], |r| {
                    Ok(ImportedAs {
                        customer_uid: r.get(0)?,
                        plan_id: r.get(1)?,
                        start_date: r.get(2)?,
                        source: r.get(3)?,
                    })
                })?;
                existing(i, &found)?;
                skipped += 1;
                continue;
            }
            let detail = serde_json::json!({
                "plan": row.plan_id, "amount": row.amount, "currency": row.currency, "start": start,
                "status": row.status.as_str(), "source": "manual", "imported": true,
            });
            tx.execute(event, params![now, row.id, detail.to_string()])?;
            // Its public event, as every other way in writes one (`book::insert_row`).
            publish(&tx, now, "subscription.created", Some(&row.id), About::Subscription(&row.id), fields(detail))?;
            inserted += 1;
        }
    }
    tx.commit()?;
    Ok((inserted, skipped))
}
