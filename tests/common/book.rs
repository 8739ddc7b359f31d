//! Reading a book in tests, SQLite or PostgreSQL alike: one query, its rows as text (`World::query`, props.rs).
#![allow(dead_code)]

use std::cell::RefCell;

/// One row: each value as text (integers in decimal), `None` for NULL.
pub type Row = Vec<Option<String>>;

/// A SQL string literal of `s` (quotes doubled): the queries take literals, no parameters.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `sql` on a SQLite connection; an error (no such table yet, say) is returned.
pub fn sqlite_query(db: &rusqlite::Connection, sql: &str) -> Result<Vec<Row>, String> {
    use rusqlite::types::ValueRef;
    let mut st = db.prepare(sql).map_err(|e| e.to_string())?;
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(v) => Some(v.to_string()),
                        ValueRef::Real(v) => Some(v.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into()),
                    })
                })
                .collect()
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// A PostgreSQL book: its URL and a client of it (tokio-postgres, no TLS: the tests' cluster is on 127.0.0.1, on a
/// runtime of its own; connected at the first query, again once the connection is closed).
pub struct Postgres {
    pub url: String,
    runtime: tokio::runtime::Runtime,
    client: RefCell<Option<tokio_postgres::Client>>,
}

impl Postgres {
    pub fn new(url: &str) -> Postgres {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        Postgres { url: url.to_string(), runtime, client: RefCell::new(None) }
    }

    /// Runs `sql` (the simple query protocol: values come back as text); an error is returned.
    pub fn query(&self, sql: &str) -> Result<Vec<Row>, String> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = self
                .runtime
                .block_on(tokio_postgres::connect(&self.url, tokio_postgres::NoTls))
                .map_err(|e| format!("connect to {}: {e}", self.url))?;
            self.runtime.spawn(conn);
            *slot = Some(client);
        }
        let client = slot.as_ref().expect("connected");
        let messages = self.runtime.block_on(client.simple_query(sql)).map_err(|e| format!("{e:?}"))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }
}
