//! The storage contract's test suite (`billd::store::contract`) run on the SQLite adapter, each test on a fresh
//! database file.

use billd::store::contract::Backend;
use billd::store::sql::SqlStore;
use billd::store::sqlite;

/// A fresh SQLite book in a temporary folder; each `open` is a new connection to the same file.
struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

impl Backend for Sqlite {
    type Store = SqlStore;

    fn open(&self) -> SqlStore {
        sqlite::open(&self.0.path().join("billd.sqlite3")).unwrap()
    }
}

billd::store_contract_tests!(Sqlite::new());
