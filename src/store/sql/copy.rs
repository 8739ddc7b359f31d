//! Copying a whole book, with its history, from one store to another (SQLite ↔ PostgreSQL): every table, every
//! column a row keeps (ids included), in one transaction of the target, checked by counting.

use super::SqlStore;
use super::db::{Cell, Db, Param, Row, ToParam};
use crate::store::Store;
use anyhow::{Context, Result, bail};

/// Every table of a book, each after the tables it refers to.
pub const TABLES: &[&str] = &[
    "daemons",
    "subscriptions",
    "periods",
    "attempts",
    "events",
    "one_time_charges",
    "safety_stop",
    "book_clock",
    "refunds",
    "plan_changes",
    "outbox",
    "outbox_streams",
];

/// A value read from one book, to be written to the other.
enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl ToParam for Owned {
    fn to_param(&self) -> Param<'_> {
        match self {
            Owned::Null => Param::Null,
            Owned::Int(i) => Param::Int(*i),
            Owned::Real(r) => Param::Real(*r),
            Owned::Text(t) => Param::Text(t),
        }
    }
}

fn owned(row: &dyn Row, i: usize) -> Result<Owned> {
    Ok(match row.cell(i)? {
        Cell::Null => Owned::Null,
        Cell::Int(n) => Owned::Int(n),
        Cell::Real(r) => Owned::Real(r),
        Cell::Text(t) => Owned::Text(t.to_owned()),
        Cell::Bool(b) => Owned::Int(i64::from(b)),
    })
}

/// How many rows each table of `store` holds, in [`TABLES`]' order.
pub fn counts(store: &SqlStore) -> Result<Vec<(&'static str, u64)>> {
    TABLES
        .iter()
        .map(|t| {
            let n: i64 =
                store
                    .db()
                    .query_row(&format!("SELECT count(*) FROM {t}"), crate::store::sql::db::params![], |r| r.get(0))?;
            Ok((*t, n.max(0) as u64))
        })
        .collect()
}

/// Copies every row of `from` into `to`, which must be empty; both books are held whole for the copy
/// ([`Store::claim_book`]: nothing charges on either meanwhile, and a running daemon or a live lease makes it refuse). Returns each table's count,
/// checked equal on both sides after the copy.
pub fn copy(from: &mut SqlStore, to: &mut SqlStore) -> Result<Vec<(&'static str, u64)>> {
    from.claim_book().context("the source book")?;
    to.claim_book().context("the target book")?;
    let taken: Vec<_> = counts(to)?.into_iter().filter(|(_, n)| *n > 0).collect();
    if !taken.is_empty() {
        let list: Vec<String> = taken.iter().map(|(t, n)| format!("{t} {n}")).collect();
        bail!("the target book {} is not empty ({}): nothing was copied", to.location(), list.join(", "));
    }
    let read = from.snapshot()?;
    let write = to.tx()?;
    for table in TABLES {
        let columns = from.backend.columns(table)?;
        let list = columns.join(", ");
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", marks.join(", "));
        read.query_each(&format!("SELECT {list} FROM {table}"), crate::store::sql::db::params![], &mut |row| {
            let values = (0..columns.len()).map(|i| owned(row, i)).collect::<Result<Vec<Owned>>>()?;
            let params: Vec<&dyn ToParam> = values.iter().map(|v| v as &dyn ToParam).collect();
            write.execute(&insert, &params).with_context(|| format!("copying {table}"))?;
            Ok(true)
        })?;
        to.backend.after_copy(&write, table)?;
    }
    // No daemon runs on the copy: a lease copied running (one of a process killed without leaving) is ended there.
    write.execute(
        "UPDATE daemons SET left_ms = ?1, left_why = 'gone: its book was copied' WHERE left_ms IS NULL",
        crate::store::sql::db::params![to.backend.clock_ms()?],
    )?;
    write.commit()?;
    drop(read);
    let (source, target) = (counts(from)?, counts(to)?);
    if source != target {
        bail!("the copy does not count what the source holds: source {source:?}, target {target:?}");
    }
    Ok(source)
}
