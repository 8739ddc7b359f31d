//! The storage contract over SQL: `SqlStore` implements every trait of `crate::store` once, against `db::Db`, for
//! whichever backend opened it (`store::sqlite`); one file per concern below.

mod attempts;
mod book;
mod changes;
pub mod copy;
mod credit;
mod daemons;
pub mod db;
mod events;
mod import;
mod ledger;
mod lifecycle;
mod names;
mod notices;
mod one_time;
mod outbox;
mod record;
mod refunds;
mod stale;
mod sync;
mod views;

#[cfg(test)]
pub(crate) use outbox::{About, publish};

use crate::billing::model::{Source, Status};
use crate::billing::quiet::RealInstant;
use crate::store::{
    ChangeState, ChangeTiming, ChargeStatus, Failure, OneTimeKind, PeriodState, RefundSource, RefundStatus, Store,
    from_ts,
};
use anyhow::Result;
use chrono::{DateTime, Utc};
use db::{Cell, Column, Db, Param, ToParam};
use std::any::Any;
use std::ops::Deref;

/// What a database backend gives the store: a handle for reads, write transactions, and the scheduler's lock.
pub trait Backend: Send + Any {
    /// The handle for reads outside a write transaction.
    fn db(&self) -> &dyn Db;

    /// A write transaction: it holds the write lock from its start, so that every read inside it sees what its
    /// writes are decided on. One handle runs one transaction at a time.
    fn write(&self) -> Result<Box<dyn Tx + '_>>;

    /// A write transaction of the `daemons` table alone (see `SqlStore::daemons_tx`): one at a time among such
    /// writes; on a backend whose writers are one at a time anyway (SQLite), [`Backend::write`].
    fn write_daemons(&self) -> Result<Box<dyn Tx + '_>> {
        self.write()
    }

    /// A read transaction: every read inside it sees one snapshot of the book.
    fn read(&self) -> Result<Box<dyn Tx + '_>>;

    /// Where the book is, for messages (never a secret).
    fn location(&self) -> String;

    /// See [`Store::claim_scheduler`]; `true`: this handle is the book's only scheduler (no other may run, so a
    /// lease other daemons left running in the book is over).
    fn claim_scheduler(&mut self) -> Result<bool>;

    /// See [`Store::claim_book`]; `true`: no scheduler can be running (a lease left in the book is over).
    fn claim_book(&mut self) -> Result<bool>;

    /// Whether this handle delivers the webhooks ([`crate::store::Daemons::try_jobs`]'s `Jobs::Deliveries`).
    fn try_deliveries(&mut self) -> Result<bool>;

    /// The database's clock (every daemon's one clock), in milliseconds since the UNIX epoch.
    fn clock_ms(&self) -> Result<i64>;

    /// Inside the transaction `tx` that inserts daemon `id` (this handle's): what lets other handles tell, later,
    /// that its process is gone ([`Backend::daemon_gone`]). Nothing where one scheduler runs at a time.
    fn hold_daemon(&self, _tx: &dyn Db, _id: i64) -> Result<()> {
        Ok(())
    }

    /// Whether daemon `id` (another handle's) is surely gone, its lease still running: its process died or lost
    /// its database session (so it can write nothing more). `false`: it may be alive (stopped, stalled, or running).
    fn daemon_gone(&self, _id: i64) -> Result<bool> {
        Ok(false)
    }

    /// The columns a row of `table` keeps (not the generated ones), in the schema's order.
    fn columns(&self, table: &str) -> Result<Vec<String>>;

    /// After rows were copied into `table` with their ids (in `tx`): what the backend needs so that its next id
    /// follows them (PostgreSQL's identity sequences; SQLite keeps up by itself).
    fn after_copy(&self, _tx: &dyn Db, _table: &str) -> Result<()> {
        Ok(())
    }
}

/// A write transaction of a [`Backend`]; dropped without [`Tx::commit`], it rolls back.
pub trait Tx: Db {
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A write transaction, used as a [`Db`] (and dereferenced to one for its helpers: `tx.query_row(…)`).
pub struct Txn<'a>(Box<dyn Tx + 'a>);

impl Db for Txn<'_> {
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        self.0.execute(sql, params)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn db::Row) -> Result<bool>,
    ) -> Result<()> {
        self.0.query_each(sql, params, each)
    }
}

impl Txn<'_> {
    pub fn commit(self) -> Result<()> {
        self.0.commit()
    }
}

impl<'a> Deref for Txn<'a> {
    type Target = dyn Db + 'a;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// An open billd book, on whichever backend opened it.
pub struct SqlStore {
    backend: Box<dyn Backend>,
    /// The daemon this handle joined the book as ([`crate::store::Daemons::join`]): the owner its claims and
    /// takeovers stamp, and the fence its writes require. `None`: not joined (the attempts it writes have no owner).
    owner: Option<i64>,
    /// This handle is the book's only scheduler ([`Backend::claim_scheduler`]): every other daemon is surely gone.
    alone: bool,
}

impl SqlStore {
    pub fn new(backend: impl Backend) -> SqlStore {
        SqlStore { backend: Box::new(backend), owner: None, alone: false }
    }

    /// The backend, as its own type (`None`: another backend).
    pub fn backend<B: Backend>(&self) -> Option<&B> {
        (&*self.backend as &dyn Any).downcast_ref()
    }

    fn db(&self) -> &dyn Db {
        self.backend.db()
    }

    /// A write transaction. Every write goes through one, a single statement too: that is where PostgreSQL's writers
    /// are put one at a time (SQLite's are anyway), so that a conditional write ("only if it still bills") is
    /// decided on what every other write left (`tests/architecture.rs` checks that no write bypasses it).
    fn tx(&self) -> Result<Txn<'_>> {
        Ok(Txn(self.backend.write()?))
    }

    /// A write transaction of the daemons' own rows (join, heartbeat, leave, the billing jobs): ordered among the
    /// daemons' writes, never behind the book's other writers (a long import), so a lease is renewed whatever they do.
    fn daemons_tx(&self) -> Result<Txn<'_>> {
        Ok(Txn(self.backend.write_daemons()?))
    }

    fn snapshot(&self) -> Result<Txn<'_>> {
        Ok(Txn(self.backend.read()?))
    }
}

impl Store for SqlStore {
    fn location(&self) -> String {
        self.backend.location()
    }

    fn claim_scheduler(&mut self) -> Result<()> {
        if self.backend.claim_scheduler()? {
            self.alone = true;
            daemons::end_others(self)?;
        }
        Ok(())
    }

    fn claim_book(&mut self) -> Result<()> {
        if !self.backend.claim_book()? {
            daemons::refuse_running(self)?;
        }
        Ok(())
    }
}

// ---- the edge: instants and statuses as stored ------------------------------------------------------------------

/// An instant as stored: UNIX seconds, rounded down.
fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// A "not before" instant as stored (a check time): UNIX seconds, rounded up, so that rounding never makes it
/// earlier.
fn secs_ceil(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

/// A stored instant.
fn at(t: i64) -> DateTime<Utc> {
    from_ts(t)
}

/// A real instant as stored: `doubt_wall_ms`, `doubt_boot_ms`, `doubt_boot_id` (`None`: no wall reading).
fn real_from(wall_ms: Option<i64>, boot_ms: Option<i64>, boot_id: Option<String>) -> Option<RealInstant> {
    Some(RealInstant { wall_ms: wall_ms?, boot: boot_id.zip(boot_ms) })
}

/// A real instant's three stored columns.
fn real_cols(t: &RealInstant) -> (i64, Option<i64>, Option<&str>) {
    (t.wall_ms, t.boot.as_ref().map(|b| b.1), t.boot.as_ref().map(|b| b.0.as_str()))
}

/// Statuses are stored as their spelling (`as_str`), and refused when read back as anything else.
macro_rules! spelled {
    ($($t:ty),+) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Text(self.as_str())
            }
        }

        impl Column for $t {
            fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
                let text = cell.text()?;
                <$t>::parse(text).ok_or_else(|| format!("bad {} {text:?}", stringify!($t)))
            }
        }
    )+};
}

spelled!(
    ChargeStatus,
    ChangeState,
    ChangeTiming,
    Failure,
    OneTimeKind,
    PeriodState,
    RefundSource,
    RefundStatus,
    Status
);

impl ToParam for Source {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self.as_str())
    }
}

impl Column for Source {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        Ok(if cell.text()? == "config" { Source::Config } else { Source::Manual })
    }
}
