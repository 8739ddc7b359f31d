//! The PostgreSQL schema: a baseline at SQLite's schema 23 and the migrations after it, each applied once, under
//! an advisory lock, in one transaction each; a book written by a newer billd is refused.

use super::Postgres;
use crate::store::sql::db::{Db, params};
use crate::store::sqlite::SCHEMA_VERSION;
use anyhow::{Context, Result, bail};

/// The migrations, by the schema version each one brings the book to (the same numbers as SQLite's: one build, one
/// version).
const MIGRATIONS: &[(usize, &str)] =
    &[(23, include_str!("migrations/0023_baseline.sql")), (24, include_str!("migrations/0024_daemons.sql"))];

/// Taken by a migration, so that two processes opening one new book do not both create it.
const MIGRATION_LOCK: i64 = 0x6269_6c6c_6400_0003;

/// Whether the database holds a billd book.
pub(super) fn exists(pg: &Postgres) -> Result<bool> {
    let db: &dyn Db = pg;
    db.query_row("SELECT to_regclass('schema_version') IS NOT NULL", params![], |r| r.get(0))
}

pub(super) fn migrate(pg: &Postgres) -> Result<()> {
    let last = MIGRATIONS.last().map_or(0, |m| m.0);
    assert_eq!(last, SCHEMA_VERSION, "the PostgreSQL schema follows SQLite's");
    // Another process may be migrating: wait for it as long as a large migration takes (as SQLite's does).
    pg.batch("BEGIN; SET LOCAL lock_timeout = '300s'")?;
    // One transaction, never carried on by a new session if the connection is lost.
    pg.in_tx.set(true);
    let result = (|| -> Result<()> {
        pg.execute("SELECT pg_advisory_xact_lock(?1)", params![MIGRATION_LOCK])?;
        let db: &dyn Db = pg;
        let version = if exists(pg)? {
            db.query_opt("SELECT version FROM schema_version", params![], |r| r.get::<i64>(0))?.unwrap_or(0) as usize
        } else {
            0
        };
        if version > SCHEMA_VERSION {
            bail!(
                "database {}: schema version {version} is newer than this billd understands ({SCHEMA_VERSION}); run \
                 the newer billd that wrote it",
                pg.target.display()
            );
        }
        for (to, sql) in MIGRATIONS.iter().filter(|m| m.0 > version) {
            if version > 0 {
                tracing::info!(event = "database.migrate", from = version, to, "migrating to schema {to}");
            }
            pg.batch_unbounded(sql).with_context(|| format!("migration to schema {to}"))?;
            pg.execute("UPDATE schema_version SET version = ?1", params![*to as i64])?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            let committed = pg.batch("COMMIT");
            pg.in_tx.set(false);
            committed
        }
        Err(e) => {
            let _ = pg.batch("ROLLBACK");
            pg.in_tx.set(false);
            Err(e)
        }
    }
}
