//! The storage contract's test suite (`billd::store::contract`) run on the PostgreSQL backend, each test on a fresh
//! database of a throwaway cluster the test process starts itself (`tests/common/pg.rs`; skipped, saying so, where
//! PostgreSQL is not installed, and failing under CI=true).

mod common;
#[path = "common/pg.rs"]
mod pg;

use billd::config::PgTarget;
use billd::store::contract::Backend;
use billd::store::postgres;
use billd::store::sql::SqlStore;

/// A fresh PostgreSQL book; each `open` is a new connection to the same database.
struct Postgres(pg::PgDb);

impl Postgres {
    fn new() -> Option<Postgres> {
        pg::database().map(Postgres)
    }
}

impl Backend for Postgres {
    type Store = SqlStore;
    const SHARED: bool = true;

    fn open(&self) -> SqlStore {
        postgres::open(&PgTarget::parse(self.0.url(), None).unwrap()).unwrap()
    }
}

billd::store_contract_tests!(match Postgres::new() {
    Some(pg) => pg,
    None => return,
});
