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

/// The advisory lock every write transaction takes first: writes run one at a time, as SQLite's do, so that every
/// read inside a write transaction sees what its writes are decided on.
const WRITE_LOCK: i64 = 0x6269_6c6c_6400_0001;

/// The advisory lock of the scheduler (held by the session of the one `billd run`/`tick` that charges).
const SCHEDULER_LOCK: i64 = 0x6269_6c6c_6400_0002;

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

/// Waits for `f`, which runs on the I/O runtime.
fn wait<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T> {
    futures::executor::block_on(io().spawn(f)).map_err(|e| anyhow!("the database I/O task failed: {e}"))
}

/// Opens (migrating if needed) the PostgreSQL book at `target`.
pub fn open(target: &PgTarget) -> Result<SqlStore> {
    let pg = Postgres::connect(target)?;
    schema::migrate(&pg).with_context(|| format!("database {}", target.display()))?;
    Ok(SqlStore::new(pg))
}

/// Opens the PostgreSQL book at `target` if it has one (migrating it if it is older); `None`: the database holds no
/// billd book yet (nothing is created).
pub fn open_existing(target: &PgTarget) -> Result<Option<SqlStore>> {
    let pg = Postgres::connect(target)?;
    if !schema::exists(&pg).with_context(|| format!("database {}", target.display()))? {
        return Ok(None);
    }
    schema::migrate(&pg).with_context(|| format!("database {}", target.display()))?;
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
    /// This handle holds the scheduler's lock (taken again after a reconnection, or an error).
    scheduler: bool,
}

impl Postgres {
    fn connect(target: &PgTarget) -> Result<Postgres> {
        let client = connect::connect(target)?;
        Ok(Postgres {
            target: target.clone(),
            client: RefCell::new(client),
            prepared: RefCell::new(HashMap::new()),
            in_tx: Cell::new(false),
            scheduler: false,
        })
    }

    /// The client, connected again first if the connection was lost outside a transaction.
    fn client(&self) -> Result<std::cell::Ref<'_, Client>> {
        if self.client.borrow().is_closed() {
            if self.in_tx.get() {
                bail!("database {}: the connection was lost in a transaction", self.target.display());
            }
            let client = connect::connect(&self.target)?;
            if self.scheduler {
                let held = lock_scheduler(&client)?;
                if !held {
                    bail!(
                        "database {}: the scheduler's lock was lost with the connection and another billd holds it \
                         now",
                        self.target.display()
                    );
                }
            }
            *self.client.borrow_mut() = client;
            self.prepared.borrow_mut().clear();
        }
        Ok(self.client.borrow())
    }

    fn statement(&self, client: &Client, sql: &str) -> Result<Statement> {
        if let Some(st) = self.prepared.borrow().get(sql) {
            return Ok(st.clone());
        }
        let translated = dialect::translate(sql);
        let st = futures::executor::block_on(client.prepare(&translated)).map_err(|e| self.error(e))?;
        self.prepared.borrow_mut().insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// A PostgreSQL error, with the server's message and the book's location (never the password: it is not in the
    /// target).
    fn error(&self, e: tokio_postgres::Error) -> anyhow::Error {
        match e.as_db_error() {
            Some(db) => anyhow!("database {}: {} ({})", self.target.display(), db.message(), db.code().code()),
            None => anyhow!("database {}: {e}", self.target.display()),
        }
    }

    fn batch(&self, sql: &str) -> Result<()> {
        let client = self.client()?;
        futures::executor::block_on(client.batch_execute(sql)).map_err(|e| self.error(e))
    }
}

/// Tries the scheduler's advisory lock on `client`'s session.
fn lock_scheduler(client: &Client) -> Result<bool> {
    let row = futures::executor::block_on(client.query_one("SELECT pg_try_advisory_lock($1)", &[&SCHEDULER_LOCK]))?;
    Ok(row.get(0))
}

impl Db for Postgres {
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        let client = self.client()?;
        let st = self.statement(&client, sql)?;
        let n = futures::executor::block_on(client.execute_raw(&st, params.iter().map(|p| Bound(*p))))
            .map_err(|e| self.error(e))?;
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
        let rows: Vec<tokio_postgres::Row> = futures::executor::block_on(async {
            let stream = client.query_raw(&st, params.iter().map(|p| Bound(*p))).await?;
            futures::TryStreamExt::try_collect(stream).await
        })
        .map_err(|e| self.error(e))?;
        drop(client);
        for row in &rows {
            if !each(&PgRow(row))? {
                break;
            }
        }
        Ok(())
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
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        self.pg.in_tx.set(false);
        self.pg.batch("COMMIT")
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pg.in_tx.set(false);
            // A lost connection has rolled it back already.
            let _ = self.pg.batch("ROLLBACK");
        }
    }
}

impl Backend for Postgres {
    fn db(&self) -> &dyn Db {
        self
    }

    fn write(&self) -> Result<Box<dyn Tx + '_>> {
        let tx = PgTx::begin(self, "BEGIN")?;
        tx.execute("SELECT pg_advisory_xact_lock(?1)", crate::store::sql::db::params![WRITE_LOCK])
            .context("cannot take the write lock")?;
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

    fn claim_scheduler(&mut self) -> Result<()> {
        let client = self.client()?;
        if !lock_scheduler(&client)? {
            bail!(
                "database {} is in use by another `billd run` or `billd tick` (or a command that charges); only one \
                 scheduler may run per database",
                self.target.display()
            );
        }
        drop(client);
        self.scheduler = true;
        Ok(())
    }
}

/// Runs `f` on the I/O runtime and waits (for connecting, which spawns the connection's task there).
pub(crate) fn on_io<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T> {
    wait(f)
}
