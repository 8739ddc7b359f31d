//! The SQLite backend of the SQL store: opening a book file (pragmas, file trust, migrations), its write
//! transactions, the scheduler's lock, and `Db` over a rusqlite connection.

mod schema;
#[cfg(test)]
mod tests;

pub use schema::SCHEMA_VERSION;

use crate::store::sql::db::{Cell, Db, Param, Row, ToParam};
use crate::store::sql::{Backend, SqlStore, Tx};
use anyhow::{Context, Result, anyhow, bail};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a write waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open billd database (one SQLite file in WAL mode, `synchronous=FULL`).
pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// The database file itself, open for the life of the handle (declared after `conn`, so closed after it: SQLite's
    /// own POSIX locks are not disturbed), for the scheduler's lock ([`Store::claim_scheduler`]). `None`: an empty
    /// book in memory ([`empty`]).
    file: Option<std::fs::File>,
}

/// Opens (creating if needed) and migrates the book file at `path`.
pub fn open(path: &Path) -> Result<SqlStore> {
    Sqlite::open(path).map(SqlStore::new)
}

/// An empty book in memory at this build's schema, named `shown` in messages: what a book not created yet would
/// list (nothing), without creating anything. It cannot be claimed as a scheduler.
pub fn empty(shown: &str) -> Result<SqlStore> {
    Sqlite::empty(shown).map(SqlStore::new)
}

impl Sqlite {
    fn open(path: &Path) -> Result<Sqlite> {
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
        let store = Sqlite { conn, path: path.to_path_buf(), file: Some(file) };
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

    fn empty(shown: &str) -> Result<Sqlite> {
        let conn = Connection::open_in_memory().context("cannot open an empty book in memory")?;
        conn.execute_batch("PRAGMA foreign_keys=ON;")?;
        let store = Sqlite { conn, path: PathBuf::from(shown), file: None };
        schema::migrate(&store.conn, &store.path)?;
        Ok(store)
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
}

impl Backend for Sqlite {
    fn db(&self) -> &dyn Db {
        &self.conn
    }

    /// `BEGIN IMMEDIATE`: it takes the write lock at once, waiting up to the busy timeout.
    fn write(&self) -> Result<Box<dyn Tx + '_>> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .with_context(|| format!("database {}: cannot start a write transaction", self.path.display()))?;
        Ok(Box::new(tx))
    }

    /// `BEGIN DEFERRED`: its snapshot is taken at its first read.
    fn read(&self) -> Result<Box<dyn Tx + '_>> {
        Ok(Box::new(self.conn.unchecked_transaction()?))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn columns(&self, table: &str) -> Result<Vec<String>> {
        let db: &dyn Db = &self.conn;
        db.query_map(
            "SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid",
            crate::store::sql::db::params![table],
            |r| r.get(0),
        )
    }

    /// An exclusive `flock` on the database file itself (not a file beside it): every path to the same file (a
    /// symlink, a hard link, `..`) locks the same inode, and the kernel drops it when the process dies. (SQLite
    /// locks with POSIX record locks, which `flock` does not touch on Linux.) One scheduler per file: the one that
    /// holds it is alone (`true`), so a daemon whose lease was left running in the book is gone.
    fn claim_scheduler(&mut self) -> Result<bool> {
        let Some(file) = &self.file else {
            bail!("database {}: there is no such database yet; nothing can be scheduled on it", self.path.display());
        };
        match file.try_lock() {
            Ok(()) => Ok(true),
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

    fn claim_book(&mut self) -> Result<bool> {
        self.claim_scheduler()
    }

    /// The one scheduler's process delivers.
    fn try_deliveries(&mut self) -> Result<bool> {
        Ok(true)
    }

    /// One machine, one scheduler at a time: its wall clock as this process first read it, carried forward on the
    /// steady clock (a wall clock stepped forward would lapse the scheduler's own lease at once).
    fn clock_ms(&self) -> Result<i64> {
        Ok(crate::realtime::process_wall_ms())
    }
}

// ---- Db over a rusqlite connection ------------------------------------------------------------------------------

/// A bound parameter, as rusqlite binds it (text borrowed, not copied).
struct Bound<'a>(&'a dyn ToParam);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0.to_param() {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Param::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(r)),
            Param::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

struct LiteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Row for LiteRow<'_, '_> {
    fn cell(&self, i: usize) -> Result<Cell<'_>> {
        Ok(match self.0.get_ref(i)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Int(n),
            ValueRef::Real(r) => Cell::Real(r),
            ValueRef::Text(t) => Cell::Text(std::str::from_utf8(t).with_context(|| format!("column {i}"))?),
            ValueRef::Blob(_) => bail!("column {i}: expected a value, found a blob"),
        })
    }
}

/// Statements are prepared once per connection (rusqlite's statement cache).
impl Db for Connection {
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        let mut st = self.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params.iter().map(|p| Bound(*p))))?)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()> {
        let mut st = self.prepare_cached(sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(params.iter().map(|p| Bound(*p))))?;
        while let Some(row) = rows.next()? {
            if !each(&LiteRow(row))? {
                break;
            }
        }
        Ok(())
    }
}

impl Db for Transaction<'_> {
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        Db::execute(&**self, sql, params)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()> {
        (**self).query_each(sql, params, each)
    }
}

impl Tx for Transaction<'_> {
    fn commit(self: Box<Self>) -> Result<()> {
        Ok((*self).commit()?)
    }
}
