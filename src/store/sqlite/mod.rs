//! The SQLite adapter of the storage contract: `SqliteStore` (open, pragmas, write transactions) and the
//! conversions at its edge (instants as UNIX seconds, statuses as their spelling); one file per concern below.

mod book;
mod changes;
mod credit;
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
mod schema;
mod stale;
mod sync;
#[cfg(test)]
mod tests;
mod views;

pub use schema::SCHEMA_VERSION;

use crate::billing::model::{Source, Status};
use crate::billing::quiet::RealInstant;
use crate::store::{
    ChangeState, ChangeTiming, ChargeStatus, Failure, OneTimeKind, PeriodState, RefundSource, RefundStatus, Store,
    from_ts,
};
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a write waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open billd database (one SQLite file in WAL mode, `synchronous=FULL`).
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The database file itself, open for the life of the handle (declared after `conn`, so closed after it: SQLite's
    /// own POSIX locks are not disturbed), for the scheduler's lock ([`Store::claim_scheduler`]). `None`: an empty
    /// book in memory ([`SqliteStore::empty`]).
    file: Option<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("database {}: the folder {} does not exist (set billing.database)", path.display(), dir.display());
        }
        // Never through a symlink, 0600 whatever the umask (SQLite gives -wal and -shm the same mode), and the
        // same checks for side files left from before (see crate::private).
        let side = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let check_sides = || -> Result<()> {
            for suffix in ["-wal", "-shm", "-journal"] {
                crate::private::check_side_by_path(&side(suffix)).map_err(|e| anyhow!("database {e}"))?;
            }
            Ok(())
        };
        let file = crate::private::open(path).map_err(|e| anyhow!("database {e}"))?;
        check_sides()?;
        // SQLite keeps its write-ahead log beside the path it was opened by: two hard links to one file would be
        // written through two logs (a cancel through one unseen by a daemon on the other, and a corrupt book).
        let opened = file.metadata().with_context(|| format!("database {}: cannot read", path.display()))?;
        let links = std::os::unix::fs::MetadataExt::nlink(&opened);
        if links > 1 {
            bail!(
                "database {}: the file has {links} hard links; SQLite keeps its log beside each path, so two paths \
                 to one file would each see a different book. Remove the other links",
                path.display()
            );
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("database {}: cannot open", path.display()))?;
        let store = SqliteStore { conn, path: path.to_path_buf(), file: Some(file) };
        store.configure().with_context(|| format!("database {}", path.display()))?;
        // What SQLite opened is still the file checked above (not a symlink or another file swapped in since), and
        // the side files it made are private.
        let now = std::fs::symlink_metadata(path).with_context(|| format!("database {}", path.display()))?;
        let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        };
        if now.file_type().is_symlink() || !same(&now, &opened) {
            bail!("database {}: the file was replaced while billd opened it", path.display());
        }
        // By path only: opening (and so closing) another descriptor of a file SQLite has open would drop SQLite's
        // own POSIX locks on it (a -shm lost that way corrupts its locking: SIGBUS, "locking protocol").
        for suffix in ["-wal", "-shm"] {
            crate::private::check_side_by_path(&side(suffix)).map_err(|e| anyhow!("database {e}"))?;
        }
        schema::migrate(&store.conn, &store.path).with_context(|| format!("database {}", path.display()))?;
        Ok(store)
    }

    /// An empty book in memory at this build's schema, named `path` in messages: what a database not created yet
    /// would list (nothing), without creating a file. It cannot be claimed as a scheduler.
    pub fn empty(path: &Path) -> Result<SqliteStore> {
        // Where it would be is checked as for a real one (a shared folder is refused before anything is there).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("database {}: the folder {} does not exist (set billing.database)", path.display(), dir.display());
        }
        crate::private::check_folder(path).map_err(|e| anyhow!("database {e}"))?;
        let conn = Connection::open_in_memory().context("cannot open an empty book in memory")?;
        conn.execute_batch("PRAGMA foreign_keys=ON;")?;
        let store = SqliteStore { conn, path: path.to_path_buf(), file: None };
        schema::migrate(&store.conn, &store.path)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&self) -> Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching a new database to WAL needs it to itself: another process creating or migrating it at the same
        // instant makes this busy for a moment (SQLite does not always wait on its own here), so wait as a write
        // would.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < schema::MIGRATION_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("cannot switch to WAL journaling (got {mode})");
        }
        self.conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        Ok(())
    }

    /// A write transaction (`BEGIN IMMEDIATE`: it takes the write lock at once, waiting up to the busy timeout, so
    /// every read inside it sees what the writes are decided on). One handle runs one transaction at a time.
    fn tx(&self) -> Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .with_context(|| format!("database {}: cannot start a write transaction", self.path.display()))
    }

    /// Direct access for this adapter's own tests.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// An exclusive `flock` on the database file itself (not a file beside it): every path to the same file (a
    /// symlink, a hard link, `..`) locks the same inode, and the kernel drops it when the process dies. (SQLite
    /// locks with POSIX record locks, which `flock` does not touch on Linux.)
    fn claim_scheduler(&mut self) -> Result<()> {
        let Some(file) = &self.file else {
            bail!("database {}: there is no such database yet; nothing can be scheduled on it", self.path.display());
        };
        match file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "database {} is in use by another `billd run` or `billd tick` (or a command that charges); only one \
                 scheduler may run per database",
                self.path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("database {}: cannot lock it", self.path.display()))
            }
        }
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
macro_rules! spelled_sql {
    ($($t:ty),+) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$t>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("bad {} {text:?}", stringify!($t)).into())
                })
            }
        }
    )+};
}

spelled_sql!(
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

impl ToSql for Source {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Source {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(if value.as_str()? == "config" { Source::Config } else { Source::Manual })
    }
}
