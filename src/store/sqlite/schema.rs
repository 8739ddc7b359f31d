//! The SQLite schema: the migrations (`migrations/*.sql`, applied in order, each once) and the schema version.

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_one_time_charges.sql"),
    include_str!("migrations/0003_pass_indexes.sql"),
    include_str!("migrations/0004_lean_charge_path.sql"),
    include_str!("migrations/0005_one_time_unresolved.sql"),
    include_str!("migrations/0006_exactly_once_holes.sql"),
    include_str!("migrations/0007_real_time.sql"),
    include_str!("migrations/0008_merchant_uid_nocase.sql"),
    include_str!("migrations/0009_safety_stop.sql"),
    include_str!("migrations/0010_operator_retry.sql"),
    include_str!("migrations/0011_one_time_key_charges.sql"),
    include_str!("migrations/0012_discount.sql"),
    include_str!("migrations/0013_skipped_periods.sql"),
    include_str!("migrations/0014_refunds.sql"),
    include_str!("migrations/0015_pause_until.sql"),
    include_str!("migrations/0016_lifecycle_statuses.sql"),
    include_str!("migrations/0017_plan_changes.sql"),
    include_str!("migrations/0018_stopped_by.sql"),
    include_str!("migrations/0019_outbox.sql"),
    include_str!("migrations/0020_plan_change_money.sql"),
    include_str!("migrations/0021_change_terms.sql"),
    include_str!("migrations/0022_no_pause_end_for_dunning.sql"),
    include_str!("migrations/0023_lean_checks.sql"),
    include_str!("migrations/0024_daemons.sql"),
];

/// How long opening a database waits for another process that is migrating it (a rebuild of a large history takes
/// minutes: README, "Upgrade").
pub(super) const MIGRATION_WAIT: Duration = Duration::from_secs(300);

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Applies the migrations this database lacks, each once: the schema version is read inside the write transaction
/// that applies the next migration, so a process that opens the database at the same instant waits for the other's
/// migration (up to [`MIGRATION_WAIT`]) and then finds it done.
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > SCHEMA_VERSION {
        bail!(
            "schema version {version} is newer than this billd understands ({SCHEMA_VERSION}); \
             run the newer billd that wrote it"
        );
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // Migrations may rebuild tables (SQLite's documented procedure: create, copy, drop, rename), which needs
    // foreign keys off; they are checked before each migration commits and turned back on after.
    if version > 0 {
        tracing::info!(
            event = "database.migrate",
            from = version,
            to = SCHEMA_VERSION,
            "database {}: migrating from schema {version} to {SCHEMA_VERSION} (a large history takes a while)",
            path.display()
        );
    }
    conn.execute_batch("PRAGMA foreign_keys=OFF")?;
    // Another process may be migrating: wait for it as long as a large migration takes, not the usual few
    // seconds.
    conn.busy_timeout(MIGRATION_WAIT)?;
    let result = (|| -> Result<()> {
        loop {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).with_context(|| {
                format!("another billd process has been migrating it for {} s", MIGRATION_WAIT.as_secs())
            })?;
            let i = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
            if i >= SCHEMA_VERSION {
                return Ok(());
            }
            let sql = MIGRATIONS[i];
            tx.execute_batch(sql).with_context(|| format!("migration {}", i + 1))?;
            let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            if broken > 0 {
                bail!("migration {}: {broken} rows break a foreign key; nothing was changed", i + 1);
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
    })();
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA foreign_keys=ON")?;
    result
}
