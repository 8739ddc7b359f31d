//! SQLite: subscription ids as the book holds them (a leaf: every way a subscription enters asks it).

use super::db::{Db, params};
use anyhow::Result;

/// The subscription whose id equals `id` but for case, if any (ids that differ only by case are refused: their
/// merchant_uids would too, and the gateway may not tell them apart).
pub(super) fn same_id_but_case(conn: &dyn Db, id: &str) -> Result<Option<String>> {
    conn.query_opt("SELECT id FROM subscriptions WHERE id = ?1 COLLATE NOCASE AND id <> ?1 LIMIT 1", params![id], |r| {
        r.get(0)
    })
}
