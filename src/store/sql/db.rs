//! The SQL layer the store's logic is written against: a database handle (`Db`: execute, query) that each backend
//! implements, the values it binds (`ToParam`, `params!`) and reads (`Row`, `Column`).

use anyhow::{Result, anyhow};

/// A value bound to a statement's parameter (`?1`, `?2`, …), borrowed from what the caller holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
}

/// What may be bound to a parameter.
pub trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

/// The parameters of one statement, in order: `params![a, b]` binds `a` to `?1` and `b` to `?2`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::sql::db::ToParam] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::sql::db::ToParam),+] as &[&dyn $crate::store::sql::db::ToParam] };
}
pub(crate) use params;

macro_rules! int_param {
    ($($t:ty),+) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Int(i64::from(*self))
            }
        }
    )+};
}
int_param!(i64, i32, u32, u16, u8, bool);

impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        self.as_ref().map_or(Param::Null, ToParam::to_param)
    }
}

/// A value read from a row's column, borrowed from the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Bool(bool),
}

impl<'a> Cell<'a> {
    /// The text this cell holds; `Err`: what it holds instead.
    pub fn text(self) -> Result<&'a str, String> {
        match self {
            Cell::Text(t) => Ok(t),
            other => expected("text", other),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "NULL",
            Cell::Int(_) => "an integer",
            Cell::Real(_) => "a real",
            Cell::Text(_) => "text",
            Cell::Bool(_) => "a boolean",
        }
    }
}

/// What a column may be read as.
pub trait Column: Sized {
    /// `Err`: what was there instead (said with the column's position by [`Row::get`]).
    fn from_cell(cell: Cell<'_>) -> Result<Self, String>;
}

fn expected<T>(what: &str, cell: Cell<'_>) -> Result<T, String> {
    Err(format!("expected {what}, found {}", cell.kind()))
}

impl Column for i64 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Int(i) => Ok(i),
            other => expected("an integer", other),
        }
    }
}

impl Column for u32 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        let i = i64::from_cell(cell)?;
        u32::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
}

impl Column for f64 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Real(r) => Ok(r),
            Cell::Int(i) => Ok(i as f64),
            other => expected("a number", other),
        }
    }
}

/// SQLite has no booleans (a comparison is 0 or 1); PostgreSQL's are read as such.
impl Column for bool {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Bool(b) => Ok(b),
            Cell::Int(i) => Ok(i != 0),
            other => expected("a boolean", other),
        }
    }
}

impl Column for String {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        cell.text().map(str::to_owned)
    }
}

impl<T: Column> Column for Option<T> {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// One row of a query's result.
pub trait Row {
    /// The value of the `i`-th column (from 0).
    fn cell(&self, i: usize) -> Result<Cell<'_>>;
}

impl dyn Row + '_ {
    /// The `i`-th column (from 0) as a `T`.
    pub fn get<T: Column>(&self, i: usize) -> Result<T> {
        T::from_cell(self.cell(i)?).map_err(|e| anyhow!("column {i}: {e}"))
    }

    /// The `i`-th column's text, borrowed from the row.
    pub fn text(&self, i: usize) -> Result<&str> {
        self.text_opt(i)?.ok_or_else(|| anyhow!("column {i}: expected text, found NULL"))
    }

    /// The `i`-th column's text, borrowed from the row, or `None` for NULL.
    pub fn text_opt(&self, i: usize) -> Result<Option<&str>> {
        match self.cell(i)? {
            Cell::Text(t) => Ok(Some(t)),
            Cell::Null => Ok(None),
            other => Err(anyhow!("column {i}: expected text, found {}", other.kind())),
        }
    }
}

/// The error of [`query_row`](dyn Db::query_row) when the query returned no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRows;

impl std::fmt::Display for NoRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the query returned no row")
    }
}

impl std::error::Error for NoRows {}

/// A database handle: a connection, or a write transaction on one. Statements are written with numbered
/// parameters (`?1`); each backend caches what it prepares.
pub trait Db {
    /// Runs one statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize>;

    /// Runs one query, handing each row to `each` until it returns `false` or the rows end.
    fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()>;
}

impl dyn Db + '_ {
    /// The first row, read by `f`; [`NoRows`] if there is none.
    pub fn query_row<T>(&self, sql: &str, params: &[&dyn ToParam], f: impl FnOnce(&dyn Row) -> Result<T>) -> Result<T> {
        self.query_opt(sql, params, f)?.ok_or_else(|| NoRows.into())
    }

    /// The first row, read by `f`, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: impl FnOnce(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.query_each(sql, params, &mut |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Every row, each read by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        mut f: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query_each(sql, params, &mut |row| {
            out.push(f(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Whether the query returns any row.
    pub fn exists(&self, sql: &str, params: &[&dyn ToParam]) -> Result<bool> {
        Ok(self.query_opt(sql, params, |_| Ok(()))?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_says_what_it_found_instead() {
        assert_eq!(i64::from_cell(Cell::Text("x")), Err("expected an integer, found text".to_string()));
        assert_eq!(Option::<i64>::from_cell(Cell::Null), Ok(None));
        assert_eq!(bool::from_cell(Cell::Int(1)), Ok(true));
        assert_eq!(bool::from_cell(Cell::Bool(false)), Ok(false));
        assert!(u32::from_cell(Cell::Int(-1)).is_err());
    }

    #[test]
    fn params_bind_in_order_and_none_is_null() {
        let name = String::from("a");
        let none: Option<i64> = None;
        let p = params![name, 7i64, none, "b", true];
        let bound: Vec<Param<'_>> = p.iter().map(|p| p.to_param()).collect();
        assert_eq!(bound, [Param::Text("a"), Param::Int(7), Param::Null, Param::Text("b"), Param::Int(1)]);
    }
}
