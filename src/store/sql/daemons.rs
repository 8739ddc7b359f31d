//! The daemons sharing a book: joining with a lease on the database's clock, heartbeats, leaving, the list
//! `billd status` shows, and the rule of which attempts a daemon may take over.

use super::SqlStore;
use super::attempts::{ATTEMPT_SELECT, attempt_from_row};
use super::db::{Row, params};
use crate::store::{Attempt, DaemonInfo, DaemonRow, Daemons, Jobs, Store};
use anyhow::{Result, bail};
use std::time::Duration;

/// The condition (on `attempts a`) that no live daemon other than this handle's owns the attempt: its owner is
/// `?{me}`, no one, or a daemon whose lease lapsed (at `?{now}`, the database's clock in ms) or ended. The one rule
/// of what a sweep may take over.
fn not_owned_by_others(me: usize, now: usize) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM daemons d WHERE d.id = a.owner AND d.left_ms IS NULL AND d.lease_until_ms > ?{now}
                    AND d.id IS DISTINCT FROM ?{me})"
    )
}

/// [`crate::store::Ledger::unresolved_after`]: a page of the unresolved attempts to reconcile at `now` (UNIX s) that
/// no live daemon but this handle's owns, taken over in one write transaction (read and stamped with their new owner
/// under the write lock, so two daemons never take the same one).
pub(super) fn take_unresolved(
    store: &SqlStore,
    now: i64,
    after: Option<(&str, u64)>,
    limit: usize,
) -> Result<Vec<Attempt>> {
    let st = format!(
        "{ATTEMPT_SELECT} WHERE a.status IN ('pending', 'unknown') AND (a.status = 'pending' OR a.check_at <= ?1)
           AND (a.subscription_id, a.period) > (?3, ?4) AND {}
         ORDER BY a.subscription_id, a.period LIMIT ?2",
        not_owned_by_others(5, 6)
    );
    if after.is_none() && store.owner.is_some() {
        end_gone(store)?;
    }
    let (sub, period) = after.unwrap_or(("", 0));
    let after_period = if after.is_some() { period as i64 } else { -1 };
    let clock = store.backend.clock_ms()?;
    let tx = store.tx()?;
    let rows = tx.query_map(
        &st,
        params![now, limit.min(i64::MAX as usize) as i64, sub, after_period, store.owner, clock],
        |r| Ok((attempt_from_row(r)?, r.get::<Option<i64>>(22)?)),
    )?;
    let take = "UPDATE attempts SET owner = ?2 WHERE id = ?1";
    let mut out = Vec::with_capacity(rows.len());
    for (mut a, owner) in rows {
        if store.owner.is_some() && owner != store.owner {
            tx.execute(take, params![a.id, store.owner])?;
            a.taken_over = !store.alone && owner.is_some();
        }
        out.push(a);
    }
    tx.commit()?;
    Ok(out)
}

/// Ends every other daemon's lease: this handle is the book's only scheduler, so their processes are gone.
pub(super) fn end_others(store: &SqlStore) -> Result<()> {
    let now = store.backend.clock_ms()?;
    let tx = store.tx()?;
    tx.execute(
        "UPDATE daemons SET left_ms = ?1, left_why = 'gone: another scheduler found the book free'
           WHERE left_ms IS NULL AND id IS DISTINCT FROM ?2",
        params![now, store.owner],
    )?;
    tx.commit()
}

/// An error naming the daemons whose leases run on the book (a copy waits for them to stop, or to lapse).
/// A lease whose daemon is surely gone ([`super::Backend::daemon_gone`]: its session ended) is no obstacle: it can
/// write nothing more.
pub(super) fn refuse_running(store: &SqlStore) -> Result<()> {
    let mut running = Vec::new();
    for d in store.daemons(Duration::ZERO)?.into_iter().filter(DaemonRow::running) {
        if !store.backend.daemon_gone(d.id)? {
            running.push(d);
        }
    }
    if let Some(d) = running.first() {
        let left = (d.lease_until_ms.saturating_sub(d.db_now_ms).max(0) / 1000).saturating_add(1);
        bail!(
            "database {}: {} daemon(s) hold a lease on it (daemon {} on {}, pid {}, for {left} s more): stop them \
             first (a daemon killed without leaving holds its lease until it lapses)",
            store.location(),
            running.len(),
            d.id,
            crate::text::cell(&d.info.host),
            d.info.pid
        );
    }
    Ok(())
}

/// Ends the leases of the other daemons that own unresolved attempts and are surely gone
/// ([`super::Backend::daemon_gone`]: a process killed, a session ended), so that their work is taken over at once
/// instead of when their leases lapse. A daemon merely stopped or stalled keeps its lease until it lapses.
fn end_gone(store: &SqlStore) -> Result<()> {
    let now = store.backend.clock_ms()?;
    let owners: Vec<i64> = store.db().query_map(
        "SELECT DISTINCT d.id FROM daemons d JOIN attempts a ON a.owner = d.id
          WHERE d.left_ms IS NULL AND d.lease_until_ms > ?1 AND d.id IS DISTINCT FROM ?2
            AND (a.status = 'pending' OR a.status = 'unknown')",
        params![now, store.owner],
        |r| r.get(0),
    )?;
    for id in owners {
        if store.backend.daemon_gone(id)? {
            let tx = store.tx()?;
            tx.execute(
                "UPDATE daemons SET left_ms = ?2, left_why = 'gone: its database session ended'
                   WHERE id = ?1 AND left_ms IS NULL",
                params![id, store.backend.clock_ms()?],
            )?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// How long the book keeps a daemon that left (for `billd status` and audits).
const KEPT_MS: i64 = 7 * 86_400_000;

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn daemon_row(r: &dyn Row) -> Result<DaemonRow> {
    Ok(DaemonRow {
        id: r.get(0)?,
        info: DaemonInfo {
            host: r.get(1)?,
            pid: r.get::<i64>(2)?.clamp(0, u32::MAX as i64) as u32,
            version: r.get(3)?,
        },
        started_ms: r.get(4)?,
        heartbeat_ms: r.get(5)?,
        lease_until_ms: r.get(6)?,
        left: match r.get::<Option<i64>>(7)? {
            Some(at) => Some((at, r.get::<Option<String>>(8)?.unwrap_or_default())),
            None => None,
        },
        jobs: r.get::<i64>(9)? != 0,
        holds: r.get::<i64>(10)?.max(0) as u64,
        db_now_ms: 0,
    })
}

impl Daemons for SqlStore {
    fn join(&mut self, who: &DaemonInfo, lease: Duration) -> Result<(i64, i64)> {
        let now = self.backend.clock_ms()?;
        let tx = self.daemons_tx()?;
        let id: i64 = tx.query_row(
            "INSERT INTO daemons (host, pid, version, started_ms, heartbeat_ms, lease_until_ms)
               VALUES (?1, ?2, ?3, ?4, ?4, ?5) RETURNING id",
            params![who.host, who.pid as i64, who.version, now, now.saturating_add(millis(lease))],
            |r| r.get(0),
        )?;
        self.backend.hold_daemon(&tx, id)?;
        // The book keeps a week of daemons that left (a tick a minute would otherwise add half a million a year); an
        // id is never reused, so an attempt whose owner is gone from the list is simply no live daemon's.
        tx.execute("DELETE FROM daemons WHERE left_ms < ?1", params![now.saturating_sub(KEPT_MS)])?;
        tx.commit()?;
        self.owner = Some(id);
        Ok((id, now))
    }

    fn heartbeat(&self, me: i64, lease: Duration) -> Result<Option<i64>> {
        let tx = self.daemons_tx()?;
        let now = self.backend.clock_ms()?;
        let renewed = tx.execute(
            "UPDATE daemons SET heartbeat_ms = ?2, lease_until_ms = ?3
               WHERE id = ?1 AND left_ms IS NULL AND lease_until_ms > ?2",
            params![me, now, now.saturating_add(millis(lease))],
        )?;
        if renewed == 0 {
            // Lapsed: said so in the book (once), for `billd status`.
            tx.execute(
                "UPDATE daemons SET left_ms = ?2, left_why = 'its lease lapsed' WHERE id = ?1 AND left_ms IS NULL",
                params![me, now],
            )?;
        }
        tx.commit()?;
        Ok((renewed == 1).then_some(now))
    }

    fn leave(&self, why: &str) -> Result<()> {
        let Some(me) = self.owner else { return Ok(()) };
        let now = self.backend.clock_ms()?;
        let tx = self.daemons_tx()?;
        tx.execute(
            "UPDATE daemons SET left_ms = ?2, left_why = ?3 WHERE id = ?1 AND left_ms IS NULL",
            params![me, now, why],
        )?;
        tx.commit()
    }

    fn clock_ms(&self) -> Result<i64> {
        self.backend.clock_ms()
    }

    fn try_jobs(&mut self, which: Jobs) -> Result<bool> {
        match which {
            Jobs::Deliveries => self.backend.try_deliveries(),
            Jobs::Billing => {
                let Some(me) = self.owner else { return Ok(false) };
                let tx = self.daemons_tx()?;
                let now = self.backend.clock_ms()?;
                tx.execute(
                    "UPDATE daemons SET jobs = 1 WHERE id = ?1 AND jobs = 0 AND left_ms IS NULL AND lease_until_ms > ?2
                       AND NOT EXISTS (SELECT 1 FROM daemons o WHERE o.id <> ?1 AND o.jobs = 1 AND o.left_ms IS NULL
                                         AND o.lease_until_ms > ?2)",
                    params![me, now],
                )?;
                let held = tx.exists(
                    "SELECT 1 FROM daemons WHERE id = ?1 AND jobs = 1 AND left_ms IS NULL AND lease_until_ms > ?2",
                    params![me, now],
                )?;
                tx.commit()?;
                Ok(held)
            }
        }
    }

    fn daemons(&self, recent: Duration) -> Result<Vec<DaemonRow>> {
        let now = self.backend.clock_ms()?;
        let since = now.saturating_sub(millis(recent));
        let mut rows = self.db().query_map(
            "SELECT d.id, d.host, d.pid, d.version, d.started_ms, d.heartbeat_ms, d.lease_until_ms, d.left_ms,
                    d.left_why, d.jobs,
                    (SELECT count(*) FROM attempts a WHERE a.owner = d.id
                       AND (a.status = 'pending' OR a.status = 'unknown'))
               FROM daemons d
              WHERE (d.left_ms IS NULL AND d.lease_until_ms > ?1) OR coalesce(d.left_ms, d.lease_until_ms) >= ?1
              ORDER BY d.id",
            params![since],
            daemon_row,
        )?;
        for r in &mut rows {
            r.db_now_ms = now;
        }
        Ok(rows)
    }
}
