//! The PostgreSQL backend of the SQL store: connecting (URL, password, TLS), the schema, write transactions under one
//! advisory lock, the scheduler's lock, and `Db` over a `tokio-postgres` connection driven by a private I/O thread.

mod cells;
mod connect;
pub mod dialect;
mod schema;

use crate::config::PgTarget;
use crate::store::sql::db::{Db, Row, ToParam};
use crate::store::sql::{Backend, SqlStore, Tx};
use anyhow::{Context, Result, anyhow, bail};
use cells::{Bound, PgRow};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use tokio_postgres::{Client, Statement};

// billd's advisory locks are the book's own: two keys, the book's lock key (a random number its schema keeps,
// `schema_version.lock_key`) and one of these, so that two books in one database (two schemas), or another
// application's locks, never share one.

/// The advisory lock every write transaction takes first: writes run one at a time, as SQLite's do, so that every
/// read inside a write transaction sees what its writes are decided on.
const WRITE_LOCK: i32 = 1;

/// The advisory lock of the schedulers: shared by every daemon (`billd run`, `tick`, a command that charges) while
/// it runs, taken whole by `billd store copy` (so that nothing is copied while a daemon may write, and no daemon
/// starts during a copy).
const SCHEDULER_LOCK: i32 = 2;

/// The advisory lock of webhook deliveries and the outbox's pruning (`Jobs::Deliveries`): one handle holds it, for as
/// long as its session lives; the others skip those jobs. (The billing jobs are the daemons table's.)
const DELIVERIES_LOCK: i32 = 5;

/// The lock of the daemons' own writes (joins, heartbeats, leaving, the billing jobs): one at a time among them,
/// never behind [`WRITE_LOCK`] (a long import would stop every daemon's heartbeat).
const DAEMONS_LOCK: i32 = 6;

/// The advisory locks of the daemons: daemon `id` holds `DAEMON_LOCKS + id` for as long as its session lives, so
/// that another daemon can tell one whose process died (or whose session ended) from one merely stopped.
const DAEMON_LOCKS: i32 = 1000;

/// The lock of daemon `id`: its key (ids beyond what one book ever gives out wrap, harmlessly: the lock only tells
/// "surely gone" from "maybe alive").
fn daemon_lock(id: i64) -> i32 {
    DAEMON_LOCKS.wrapping_add((id & 0x3fff_ffff) as i32)
}

/// How long a scheduler claim waits for the lock of a process that has just ended.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The runtime that drives every connection's socket: one thread for the process, started at the first connection.
/// Callers wait on their queries from any thread (a blocking task or not) with `futures::executor::block_on`,
/// never inside this runtime.
fn io() -> &'static tokio::runtime::Handle {
    static IO: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    IO.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the I/O runtime starts");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("billd-postgres".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("the I/O thread starts");
        handle
    })
}

/// The longest one statement may take before the connection is given up (a server that stopped answering): the
/// statement fails, and the next one connects again. Migrations are not bound by it.
const STATEMENT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits for `f`, which runs on the I/O runtime.
fn wait<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T> {
    futures::executor::block_on(io().spawn(f)).map_err(|e| anyhow!("the database I/O task failed: {e}"))
}

/// Waits here for `f` at most `limit` (`None`: it did not finish in time). The timer is made in the I/O runtime's
/// context and polled here with `f` (a task spawned for it cost the I/O thread two wake-ups a statement: billd's CPU
/// a charge on PostgreSQL went from 1034 to 791 µs without it, BENCHMARKS.md target 8).
fn within<T>(limit: std::time::Duration, f: impl Future<Output = T>) -> Option<T> {
    let timer = {
        let _in_io = io().enter();
        tokio::time::sleep(limit)
    };
    match futures::executor::block_on(futures::future::select(std::pin::pin!(f), std::pin::pin!(timer))) {
        futures::future::Either::Left((done, _)) => Some(done),
        futures::future::Either::Right(_) => None,
    }
}

/// Opens (migrating if needed) the PostgreSQL book at `target`.
pub fn open(target: &PgTarget) -> Result<SqlStore> {
    let pg = Postgres::connect(target)?;
    schema::migrate(&pg)?;
    pg.read_lock_key()?;
    Ok(SqlStore::new(pg))
}

/// Opens the PostgreSQL book at `target` if it has one (migrating it if it is older); `None`: the database holds no
/// billd book yet (nothing is created).
pub fn open_existing(target: &PgTarget) -> Result<Option<SqlStore>> {
    let pg = Postgres::connect(target)?;
    if !schema::exists(&pg)? {
        return Ok(None);
    }
    schema::migrate(&pg)?;
    pg.read_lock_key()?;
    Ok(Some(SqlStore::new(pg)))
}

/// A connection to a PostgreSQL book (reconnected when lost, between transactions).
pub struct Postgres {
    target: PgTarget,
    client: RefCell<Client>,
    /// Statements prepared on this connection, by their SQL as the store writes it.
    prepared: RefCell<HashMap<String, Statement>>,
    /// A transaction is open on the connection (no reconnection under it).
    in_tx: Cell<bool>,
    /// A statement outlived [`STATEMENT`]: the connection is dropped and made again before the next one.
    broken: Cell<bool>,
    /// This handle holds the scheduler's lock (an advisory lock of its session), shared (a daemon) or whole (a
    /// copy): losing the connection loses it, and the process then stops (`scheduler.lost`).
    scheduler: Option<Held>,
    /// The deliveries' lock this handle's session holds ([`DELIVERIES_LOCK`]).
    jobs: Option<i32>,
    /// The book's lock key (`schema_version.lock_key`), the first key of each of its advisory locks; read once the
    /// book's schema is there ([`Postgres::read_lock_key`]).
    book: Cell<i32>,
}

/// How a handle holds the scheduler's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    Shared,
    Whole,
}

impl Postgres {
    /// Reads the book's lock key (once its schema is there), before any lock of the book is taken.
    fn read_lock_key(&self) -> Result<()> {
        let db: &dyn Db = self;
        let key =
            db.query_row("SELECT lock_key FROM schema_version", crate::store::sql::db::params![], |r| r.get::<i64>(0))?;
        self.book.set(key as i32);
        Ok(())
    }

    fn connect(target: &PgTarget) -> Result<Postgres> {
        let client = connect::connect(target)?;
        session(&client, target)?;
        Ok(Postgres {
            target: target.clone(),
            client: RefCell::new(client),
            prepared: RefCell::new(HashMap::new()),
            in_tx: Cell::new(false),
            broken: Cell::new(false),
            scheduler: None,
            jobs: None,
            book: Cell::new(0),
        })
    }

    /// The client, connected again first if the connection was lost outside a transaction.
    fn client(&self) -> Result<std::cell::Ref<'_, Client>> {
        if self.client.borrow().is_closed() || self.broken.get() {
            if self.scheduler.is_some() {
                self.lost();
            }
            if self.in_tx.get() {
                // Never carried on by a new session: the server rolled the transaction back with the old one.
                bail!(
                    "database {}: the connection was lost in a transaction, which the server rolled back",
                    self.target.display()
                );
            }
            let client = connect::connect(&self.target)?;
            session(&client, &self.target)?;
            *self.client.borrow_mut() = client;
            self.prepared.borrow_mut().clear();
            self.broken.set(false);
        }
        Ok(self.client.borrow())
    }

    fn statement(&self, client: &Client, sql: &str) -> Result<Statement> {
        if let Some(st) = self.prepared.borrow().get(sql) {
            return Ok(st.clone());
        }
        let translated = dialect::translate(sql);
        let st = self.wait(client.prepare(&translated))?;
        self.prepared.borrow_mut().insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// The scheduler's lock was the session's: it went with the connection, and another billd may have taken the
    /// book meanwhile. This process stops here, as if killed (what it had in flight is reconciled by the next
    /// scheduler, after its quiet period); systemd starts it again.
    fn lost(&self) -> ! {
        tracing::error!(
            event = "scheduler.lost",
            database = %self.target.display(),
            "the connection holding the scheduler's lock on {} was lost (the server restarted, failed over or ended \
             the session): another billd may hold the book now, so this one stops",
            self.target.display()
        );
        std::process::exit(1);
    }

    /// A PostgreSQL error, with the server's message and the book's location (never the password: it is not in the
    /// target). The scheduler's connection lost: the process stops ([`Postgres::lost`]).
    fn error(&self, e: tokio_postgres::Error) -> anyhow::Error {
        let gone = e.is_closed()
            || e.as_db_error().is_some_and(|db| db.code().code().starts_with("57P"))
            || self.client.try_borrow().is_ok_and(|c| c.is_closed());
        if self.scheduler.is_some() && gone {
            self.lost();
        }
        match e.as_db_error() {
            Some(db) => anyhow!("database {}: {} ({})", self.target.display(), said(db.message()), db.code().code()),
            None => anyhow!("database {}: {}", self.target.display(), said(&e.to_string())),
        }
    }

    fn batch(&self, sql: &str) -> Result<()> {
        let client = self.client()?;
        self.wait(client.batch_execute(sql))
    }

    /// Statements that may take long (a migration of a large book): no time limit.
    fn batch_unbounded(&self, sql: &str) -> Result<()> {
        let client = self.client()?;
        futures::executor::block_on(client.batch_execute(sql)).map_err(|e| self.error(e))
    }

    /// Waits for `f` at most [`STATEMENT`]; past it, the connection is marked to be made again and `f` fails.
    fn wait<T>(&self, f: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T> {
        match within(STATEMENT, f) {
            Some(done) => done.map_err(|e| self.error(e)),
            None => {
                self.broken.set(true);
                bail!(
                    "database {}: no answer within {} s (the connection is given up and made again)",
                    self.target.display(),
                    STATEMENT.as_secs()
                )
            }
        }
    }
}

impl Db for Postgres {
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        let client = self.client()?;
        let st = self.statement(&client, sql)?;
        let n = self.wait(client.execute_raw(&st, params.iter().map(|p| Bound(*p))))?;
        Ok(n as usize)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()> {
        let client = self.client()?;
        let st = self.statement(&client, sql)?;
        // Every row is read before the first is handed over: a caller may run another statement on this connection
        // while it reads them (as SQLite allows), which would wait forever behind rows not yet taken.
        let rows: Vec<tokio_postgres::Row> = self.wait(async {
            let stream = client.query_raw(&st, params.iter().map(|p| Bound(*p))).await?;
            futures::TryStreamExt::try_collect(stream).await
        })?;
        drop(client);
        for row in &rows {
            if !each(&PgRow(row))? {
                break;
            }
        }
        Ok(())
    }
}

/// A new session's settings: a lock held elsewhere (another billd's write, an operator's `LOCK TABLE` left open) is
/// waited for 5 s at most, as SQLite's busy timeout does: the statement then fails (a pass is tried again later),
/// never stalls. A migration waits longer (`schema::migrate`).
fn session(client: &Client, target: &PgTarget) -> Result<()> {
    futures::executor::block_on(client.batch_execute("SET lock_timeout = '5s'"))
        .map_err(|e| anyhow!("database {}: {}", target.display(), said(&e.to_string())))
}

/// The scheduler's lock is given back when its handle goes (the server would free it only once it notices the
/// session is gone, a moment after).
impl Drop for Postgres {
    fn drop(&mut self) {
        // Not the scheduler any more: a failure here is not a lost lock.
        let held = self.scheduler.take();
        let jobs = self.jobs.take();
        if self.client.borrow().is_closed() {
            return;
        }
        let client = self.client.borrow();
        let unlock = match held {
            Some(Held::Shared) => Some("SELECT pg_advisory_unlock_shared($1, $2)"),
            Some(Held::Whole) => Some("SELECT pg_advisory_unlock($1, $2)"),
            None => None,
        };
        let book = self.book.get();
        if let Some(unlock) = unlock {
            let _ = self.wait(client.query_one(unlock, &[&book, &SCHEDULER_LOCK]));
        }
        if let Some(key) = jobs {
            let _ = self.wait(client.query_one("SELECT pg_advisory_unlock($1, $2)", &[&book, &key]));
        }
    }
}

/// A transaction on a [`Postgres`] connection: rolled back if dropped without a commit.
struct PgTx<'a> {
    pg: &'a Postgres,
    done: bool,
}

impl<'a> PgTx<'a> {
    fn begin(pg: &'a Postgres, sql: &str) -> Result<PgTx<'a>> {
        pg.batch(sql).context("cannot start a transaction")?;
        pg.in_tx.set(true);
        Ok(PgTx { pg, done: false })
    }
}

impl Db for PgTx<'_> {
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        self.pg.execute(sql, params)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()> {
        self.pg.query_each(sql, params, each)
    }
}

impl Tx for PgTx<'_> {
    /// COMMIT on the connection the transaction began on, never another: a connection lost before it means the
    /// server rolled the transaction back, and that is an error (an outside review saw a COMMIT sent on a new
    /// session answer "no transaction in progress" and a cancel reported done that was never saved).
    fn commit(mut self: Box<Self>) -> Result<()> {
        crate::failpoint::pause("pg_before_commit");
        let committed = self.pg.batch("COMMIT");
        self.done = true;
        self.pg.in_tx.set(false);
        committed.context("the transaction was not saved (or cannot be known to be)")
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A lost connection has rolled it back already (and the ROLLBACK fails, never sent on a new session).
            let _ = self.pg.batch("ROLLBACK");
            self.pg.in_tx.set(false);
        }
    }
}

impl Backend for Postgres {
    fn db(&self) -> &dyn Db {
        self
    }

    fn write(&self) -> Result<Box<dyn Tx + '_>> {
        let tx = PgTx::begin(self, "BEGIN")?;
        tx.execute("SELECT pg_advisory_xact_lock(?1, ?2)", crate::store::sql::db::params![self.book.get(), WRITE_LOCK])
            .context("cannot take the write lock")?;
        Ok(Box::new(tx))
    }

    /// Ordered among the daemons' own writes by a lock of their own, never behind [`WRITE_LOCK`].
    fn write_daemons(&self) -> Result<Box<dyn Tx + '_>> {
        let tx = PgTx::begin(self, "BEGIN")?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(?1, ?2)",
            crate::store::sql::db::params![self.book.get(), DAEMONS_LOCK],
        )
        .context("cannot take the daemons' lock")?;
        Ok(Box::new(tx))
    }

    fn read(&self) -> Result<Box<dyn Tx + '_>> {
        Ok(Box::new(PgTx::begin(self, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?))
    }

    fn location(&self) -> String {
        self.target.display()
    }

    fn columns(&self, table: &str) -> Result<Vec<String>> {
        let db: &dyn Db = self;
        db.query_map(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 AND is_generated = 'NEVER'
             ORDER BY ordinal_position",
            crate::store::sql::db::params![table],
            |r| r.get(0),
        )
    }

    /// Each identity column's sequence moved past the ids copied (else the next insert would take id 1 again).
    fn after_copy(&self, tx: &dyn Db, table: &str) -> Result<()> {
        let identities: Vec<String> = tx.query_map(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 AND is_identity = 'YES'",
            crate::store::sql::db::params![table],
            |r| r.get(0),
        )?;
        for column in identities {
            tx.query_row(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                   (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
                ),
                crate::store::sql::db::params![],
                |_| Ok(()),
            )?;
        }
        Ok(())
    }

    /// Shared with the other daemons: refused only while a copy holds the book whole.
    fn claim_scheduler(&mut self) -> Result<bool> {
        self.claim(Held::Shared)?;
        Ok(false)
    }

    fn claim_book(&mut self) -> Result<bool> {
        self.claim(Held::Whole)?;
        Ok(false)
    }

    /// A session lock, kept for the handle's life.
    fn try_deliveries(&mut self) -> Result<bool> {
        let key = DELIVERIES_LOCK;
        if self.jobs.is_none() {
            let client = self.client()?;
            let book = self.book.get();
            let held: bool = self.wait(client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&book, &key]))?.get(0);
            drop(client);
            self.jobs = held.then_some(key);
        }
        Ok(self.jobs == Some(key))
    }

    fn hold_daemon(&self, tx: &dyn Db, id: i64) -> Result<()> {
        let key = crate::store::sql::db::params![self.book.get(), daemon_lock(id)];
        tx.execute("SELECT pg_advisory_lock(?1, ?2)", key).map(|_| ())
    }

    /// Its lock is free: no session holds it (taken and given back at once).
    fn daemon_gone(&self, id: i64) -> Result<bool> {
        let client = self.client()?;
        let (book, key) = (self.book.get(), daemon_lock(id));
        let free: bool = self.wait(client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&book, &key]))?.get(0);
        if free {
            self.wait(client.query_one("SELECT pg_advisory_unlock($1, $2)", &[&book, &key]))?;
        }
        Ok(free)
    }

    fn clock_ms(&self) -> Result<i64> {
        let client = self.client()?;
        let now = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";
        Ok(self.wait(client.query_one(now, &[]))?.get(0))
    }
}

impl Postgres {
    /// Takes the scheduler's lock as `how`. The lock of a process that just ended is freed when the server notices
    /// its session is gone, a moment later: a claim waits up to [`CLAIM_WAIT`] for it before refusing (a copy
    /// right after the daemons stopped, a restart after a kill).
    fn claim(&mut self, how: Held) -> Result<()> {
        if self.scheduler.is_some() {
            bail!("database {}: this handle holds the scheduler's lock already", self.target.display());
        }
        let try_lock = match how {
            Held::Shared => "SELECT pg_try_advisory_lock_shared($1, $2)",
            Held::Whole => "SELECT pg_try_advisory_lock($1, $2)",
        };
        let book = self.book.get();
        let started = std::time::Instant::now();
        loop {
            let client = self.client()?;
            let held: bool = self.wait(client.query_one(try_lock, &[&book, &SCHEDULER_LOCK]))?.get(0);
            drop(client);
            if held {
                self.scheduler = Some(how);
                return Ok(());
            }
            if started.elapsed() >= CLAIM_WAIT {
                match how {
                    Held::Shared => bail!(
                        "database {} is being copied (`billd store copy` holds it whole); no daemon may run on it \
                         meanwhile",
                        self.target.display()
                    ),
                    Held::Whole => bail!(
                        "database {} is in use by a `billd run` or `billd tick` (or a command that charges, or \
                         another copy); stop every daemon on it first",
                        self.target.display()
                    ),
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// What the server said, for a message: invisible characters escaped, at most 300 characters (a server's text is
/// not trusted to be short or clean).
pub(super) fn said(text: &str) -> String {
    let safe = crate::text::cell(text);
    let mut out: String = safe.chars().take(300).collect();
    if safe.chars().nth(300).is_some() {
        out.push('…');
    }
    out
}

/// Runs `f` on the I/O runtime and waits (for connecting, which spawns the connection's task there).
pub(crate) fn on_io<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T> {
    wait(f)
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn a_statement_waited_for_past_its_limit_is_given_up() {
        let t = std::time::Instant::now();
        assert_eq!(within(std::time::Duration::from_millis(100), std::future::pending::<()>()), None);
        assert!(t.elapsed() >= std::time::Duration::from_millis(100));
        assert_eq!(within(std::time::Duration::from_secs(30), async { 5 }), Some(5));
    }

    #[test]
    fn what_a_server_says_is_shown_escaped_and_short() {
        assert_eq!(super::said("plain"), "plain");
        let hostile = format!("\u{1b}]0;pwned\u{7}{}", "x".repeat(1000));
        let shown = super::said(&hostile);
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'), "{shown:?}");
        assert!(shown.chars().count() <= 301 && shown.ends_with('…'), "{shown:?}");
    }
}
