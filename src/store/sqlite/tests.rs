//! Tests of the SQLite adapter itself: its migrations, and guarantees that need SQL to set up (a large backlog).
//! The contract's guarantees are tested for every adapter by `store::contract`.

use super::Sqlite;
use super::schema::{MIGRATIONS, SCHEMA_VERSION};
use crate::billing::quiet::RealInstant;
use crate::store::sql::SqlStore;
use crate::store::{ChargeStatus, Failure, Ledger, OneTime, OneTimeCharge, OneTimeKind, from_ts};
use rusqlite::Connection;
use std::path::Path;

/// The connection under a store this adapter opened.
fn conn(store: &SqlStore) -> &Connection {
    &store.backend::<Sqlite>().expect("a SQLite book").conn
}

/// A version-3 database (as billd 0.1 before migration 0004 left it) with a paid period, a declined one due
/// for a retry and an attempt whose outcome is unknown.
fn v3_database(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    for sql in &MIGRATIONS[..3] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch(
        "PRAGMA foreign_keys=ON;
         INSERT INTO subscriptions VALUES ('s1', 'c1', 'monthly', 'Monthly', 9900, 'KRW', '1 month', '2025-01-01',
           '2025-01-01', 0, 2, 5000, 'past_due', 'config', 0, 0);
         INSERT INTO subscriptions VALUES ('s2', 'c2', 'monthly', 'Monthly', 9900, 'KRW', '1 month', '2025-01-01',
           '2025-01-01', 0, 1, 5000, 'active', 'manual', 0, 0);
         INSERT INTO periods VALUES ('s1', 0, 10, 'billd-s1-0', 'c1', 9900, 'KRW', 'Monthly', 'paid', 0, NULL, 10, 11);
         INSERT INTO periods VALUES ('s1', 1, 20, 'billd-s1-1', 'c1', 9900, 'KRW', 'Monthly', 'open', 1, 1000, 20, NULL);
         INSERT INTO periods VALUES ('s2', 0, 10, 'billd-s2-0', 'c2', 9900, 'KRW', 'Monthly', 'open', 0, NULL, 10, NULL);
         INSERT INTO attempts VALUES (1, 's1', 0, 1, 'billd-s1-0', 'c1', 9900, 'KRW', 'paid', NULL, 'imp_1', NULL, 0,
           NULL, 10, 11, 11);
         INSERT INTO attempts VALUES (2, 's1', 1, 1, 'billd-s1-1', 'c1', 9900, 'KRW', 'failed', 'declined', 'imp_2',
           'insufficient funds', 0, NULL, 20, 21, 21);
         INSERT INTO attempts VALUES (3, 's2', 0, 1, 'billd-s2-0', 'c2', 9900, 'KRW', 'unknown', NULL, NULL,
           'timeout', 1, 500, 10, 12, NULL);
         INSERT INTO events (at, kind, subscription_id, detail) VALUES (1, 'subscription.created', 's1', '{}');
         PRAGMA user_version = 3;",
    )
    .unwrap();
}

#[test]
fn unresolved_attempts_are_paged_by_key_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("billd.sqlite3")).unwrap();
    conn(&store)
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2499)
             INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date, anchor_date, anchor_period,
               next_period, next_due_at, status, source, created_at, updated_at)
             SELECT 's' || i, 'c', 'p', 'P', 100, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 2, 5000, 'active',
               'manual', 0, 0 FROM n;
             INSERT INTO periods (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name,
               state, declines, next_attempt_at, opened_at)
             SELECT id, 1, 10, 'm-' || id, 'c', 100, 'KRW', 'P', 'open', 0, NULL, 10 FROM subscriptions;
             INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
               status, check_at, created_at, updated_at)
             SELECT subscription_id, 1, 1, merchant_uid, 'c', 100, 'KRW',
               CASE WHEN CAST(substr(subscription_id, 2) AS INTEGER) % 2 = 0 THEN 'pending' ELSE 'unknown' END, 20, 10, 10 FROM periods;",
        )
        .unwrap();
    let (mut seen, mut after) = (std::collections::BTreeSet::new(), None::<(String, u64)>);
    loop {
        let page = store.unresolved_after(from_ts(30), after.as_ref().map(|(s, p)| (s.as_str(), *p)), 1000).unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.subscription_id.clone(), last.period));
        for a in page {
            assert!(seen.insert(a.merchant_uid), "returned twice");
        }
    }
    assert_eq!(seen.len(), 2500);
    // Before the unknown ones' check time only the pending ones are due.
    assert_eq!(store.unresolved_after(from_ts(15), None, 5000).unwrap().len(), 1250);
}

#[test]
fn a_late_answer_replaces_abandoned_but_nothing_replaces_a_settled_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("billd.sqlite3")).unwrap();
    let charge = OneTimeCharge {
        merchant_uid: "m-1".into(),
        kind: OneTimeKind::Card,
        customer_uid: None,
        subscription_id: None,
        name: "n".into(),
        amount: 100,
        currency: "KRW".into(),
        card_masked: "424242******4242".into(),
    };
    let (id, tries) =
        store.begin_one_time(&charge, &RealInstant::wall(1000), from_ts(1), 5000, from_ts(100), None).unwrap().unwrap();
    assert_eq!(
        store.begin_one_time(&charge, &RealInstant::wall(1000), from_ts(1), 5000, from_ts(100), None).unwrap(),
        None,
        "a second send of it"
    );
    // A pass found no record of it and closed it; the command's answer then arrives: paid.
    assert!(
        store
            .finish_one_time(
                id,
                tries,
                ChargeStatus::Failed,
                Some(Failure::Abandoned),
                None,
                Some("no record"),
                from_ts(2)
            )
            .unwrap()
    );
    assert!(store.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_1"), None, from_ts(3)).unwrap());
    assert_eq!(store.one_time("m-1").unwrap().map(|s| s.status), Some(ChargeStatus::Paid));
    // A settled payment is not replaced.
    assert!(
        !store
            .finish_one_time(id, tries, ChargeStatus::Failed, Some(Failure::Abandoned), None, None, from_ts(4))
            .unwrap()
    );
    assert_eq!(
        store.one_time("m-1").unwrap().map(|s| (s.status, s.imp_uid)),
        Some((ChargeStatus::Paid, Some("imp_1".into())))
    );
}

#[test]
fn migration_4_keeps_every_row_and_every_guarantee() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billd.sqlite3");
    v3_database(&path);
    let store = super::open(&path).unwrap();
    let c = conn(&store);
    let one = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("PRAGMA user_version"), SCHEMA_VERSION as i64);
    assert_eq!(one("PRAGMA foreign_keys"), 1, "foreign keys are back on after the migration");
    assert_eq!(one("SELECT count(*) FROM pragma_foreign_key_check"), 0);
    assert_eq!(one("SELECT count(*) FROM subscriptions"), 2);
    assert_eq!(one("SELECT count(*) FROM periods"), 3);
    assert_eq!(one("SELECT count(*) FROM attempts"), 3);
    assert_eq!(one("SELECT count(*) FROM events"), 1);
    assert_eq!(one("SELECT declines FROM periods WHERE subscription_id = 's1' AND period = 1"), 1);
    // The unknown attempt left by the old billd is assumed sent with a generous timeout (review 2, finding 3:
    // the quiet period before its resend is never the new config's, possibly shorter one).
    assert_eq!(one("SELECT timeout_ms FROM attempts WHERE id = 3"), 300_000);
    let schema: String = c.query_row("SELECT sql FROM sqlite_schema WHERE name = 'periods'", [], |r| r.get(0)).unwrap();
    assert!(schema.contains("WITHOUT ROWID"), "{schema}");

    // The local guarantees and the CHECKs hold in the rebuilt tables.
    let second_paid = "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount,
        currency, status, created_at, updated_at) VALUES ('s1', 0, 2, 'billd-s1-0', 'c1', 9900, 'KRW', 'paid', 1, 1)";
    assert!(c.execute(second_paid, []).is_err(), "a second paid attempt for a period");
    let second_unresolved = "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid,
        amount, currency, status, created_at, updated_at)
        VALUES ('s2', 0, 2, 'billd-s2-0', 'c2', 9900, 'KRW', 'pending', 1, 1)";
    assert!(c.execute(second_unresolved, []).is_err(), "a second unresolved attempt for a period");
    assert!(c.execute("UPDATE periods SET state = 'bogus' WHERE subscription_id = 's2'", []).is_err());
    assert!(c.execute("UPDATE attempts SET failure = 'bogus' WHERE id = 2", []).is_err());
    assert!(c.execute("UPDATE attempts SET status = 'bogus' WHERE id = 3", []).is_err());
    let orphan = "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount,
        currency, status, created_at, updated_at) VALUES ('s9', 0, 1, 'billd-s9-0', 'c9', 9900, 'KRW', 'failed', 1, 1)";
    assert!(c.execute(orphan, []).is_err(), "an attempt without its period");

    // What was unresolved is still found, and the due retry is claimed (as attempt 2 of a past-due period).
    let unresolved = store.unresolved(from_ts(600), 10).unwrap();
    assert_eq!(unresolved.iter().map(|a| (a.merchant_uid.as_str(), a.tries)).collect::<Vec<_>>(), [("billd-s2-0", 1)]);
    assert!(store.unresolved(from_ts(400), 10).unwrap().is_empty(), "its check is not due before check_at");
    let claimed = store.claim_due(from_ts(2000), 10, i64::MAX, 5000).unwrap();
    assert_eq!(claimed.len(), 1);
    let a = &claimed[0];
    assert_eq!((a.merchant_uid.as_str(), a.attempt, a.declines, a.past_due), ("billd-s1-1", 2, 1, true));
    assert_eq!(store.next_wake().unwrap(), Some(from_ts(500)));
}

/// The one SQL list of what bills (the generated column `bills`, schema 16) is `Status::bills`, status by status:
/// every query that asks what bills asks it.
#[test]
fn the_bills_column_is_status_bills() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("b.sqlite3")).unwrap();
    for s in crate::billing::model::Status::ALL {
        let bills: bool = conn(&store)
            .query_row(
                "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
                   anchor_date, status, source, created_at, updated_at)
                 VALUES (?1, 'c', 'p', 'P', 1, 'KRW', '1 month', '2025-01-01', '2025-01-01', ?1, 'manual', 0, 0)
                 RETURNING bills",
                [s.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bills, s.bills(), "{s}");
    }
}

/// Subscription `s` (plan p, 9900 a month, period 0 paid) with a change to plan q made now whose charge of 2500
/// (`m-s-0-c1`) is pending.
fn pending_change(store: &SqlStore) {
    use crate::billing::model::{Source, Status, Subscription};
    use crate::store::{Book, ChangeState, ChangeTiming, Changes, PlanChange};
    let date = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let month: crate::billing::calendar::Interval = "1 month".parse().unwrap();
    let sub = Subscription {
        id: "s".into(),
        customer_uid: "c".into(),
        plan_id: "p".into(),
        plan_name: "P".into(),
        amount: 9900,
        currency: "KRW".into(),
        interval: month,
        start_date: date,
        anchor_date: date,
        anchor_period: 0,
        next_period: 1,
        status: Status::Active,
        source: Source::Manual,
        skip: Vec::new(),
        discount: None,
        cancel_at: None,
        last_period: None,
    };
    store.insert_manual(&sub, Some(from_ts(1_000_000)), from_ts(1)).unwrap();
    // Its period 0 paid (the change settles it).
    conn(store).execute("UPDATE subscriptions SET next_period = 1 WHERE id = 's'", []).unwrap();
    let change = PlanChange {
        subscription_id: "s".into(),
        timing: ChangeTiming::Now,
        at: from_ts(10),
        period: 0,
        from_plan_id: "p".into(),
        from_amount: 9900,
        from_interval: month,
        to_plan_id: "q".into(),
        to_plan_name: "Q".into(),
        to_amount: 19_900,
        to_interval: month,
        rate: Some(19_900),
        owed: 2500,
        credit_used: 0,
        merchant_uid: Some("m-s-0-c1".into()),
        anchor_date: date,
        anchor_period: 0,
        next_period: 1,
        next_due_at: None,
        opens: None,
        last_period: None,
    };
    assert_eq!(store.change_plan(&change, 0, from_ts(10)).unwrap().unwrap().state, ChangeState::Pending);
}

/// The charge of [`pending_change`].
fn proration_charge() -> OneTimeCharge {
    OneTimeCharge {
        merchant_uid: "m-s-0-c1".into(),
        kind: OneTimeKind::Proration,
        customer_uid: Some("c".into()),
        subscription_id: Some("s".into()),
        name: "Q".into(),
        amount: 2500,
        currency: "KRW".into(),
        card_masked: "-".into(),
    }
}

/// Issue 25 review F2: a change's charge found paid after its subscription moved to another plan (as a sync of a
/// billd before the fix did, or any write outside the change) settles the change: it fails, its charge is
/// credited to the subscription with `subscription.plan_change_credited`, and nothing is left pending to block the
/// subscription's periods.
#[test]
fn a_paid_change_whose_subscription_moved_is_credited_back() {
    use crate::store::{Book, ChangeState, Changes};
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("billd.sqlite3")).unwrap();
    pending_change(&store);
    conn(&store).execute("UPDATE subscriptions SET plan_id = 'r' WHERE id = 's'", []).unwrap();
    let (id, tries) = store
        .begin_one_time(&proration_charge(), &RealInstant::wall(1000), from_ts(11), 5000, from_ts(100), None)
        .unwrap()
        .unwrap();
    assert!(store.finish_one_time(id, tries, ChargeStatus::Paid, None, Some("imp_1"), None, from_ts(12)).unwrap());
    assert_eq!(store.plan_changes("s").unwrap()[0].state, ChangeState::Failed, "the change was left pending");
    assert_eq!(store.credit("s").unwrap(), 2500, "the paid charge was neither applied nor credited");
    let credited: i64 = conn(&store)
        .query_row("SELECT count(*) FROM events WHERE kind = 'subscription.plan_change_credited'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(credited, 1);
    assert_eq!(store.subscription("s").unwrap().unwrap().plan_id, "r");
}

/// A change an older billd left pending with its charge paid (found paid after a sync moved the subscription: the
/// subscription never opened a period again) is settled by `settle_paid_change` (the change's rerun): failed, its
/// charge credited.
#[test]
fn a_change_left_pending_with_its_charge_paid_is_settled_by_its_rerun() {
    use crate::store::{ChangeState, Changes};
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("billd.sqlite3")).unwrap();
    pending_change(&store);
    // As an older billd left it: the plan moved, the charge paid, the change still pending.
    conn(&store).execute("UPDATE subscriptions SET plan_id = 'r' WHERE id = 's'", []).unwrap();
    let (id, tries) = store
        .begin_one_time(&proration_charge(), &RealInstant::wall(1000), from_ts(11), 5000, from_ts(100), None)
        .unwrap()
        .unwrap();
    // The outcome recorded without the change's settlement (what the older billd's settle_in did: an event only).
    conn(&store)
        .execute(
            "UPDATE one_time_charges SET status = 'paid', imp_uid = 'imp_1' WHERE id = ?1 AND tries = ?2",
            [id, tries],
        )
        .unwrap();
    assert_eq!(store.plan_changes("s").unwrap()[0].state, ChangeState::Pending);
    assert!(store.settle_paid_change("m-s-0-c1", from_ts(20)).unwrap());
    assert_eq!(store.plan_changes("s").unwrap()[0].state, ChangeState::Failed);
    assert_eq!(store.credit("s").unwrap(), 2500);
    assert!(!store.settle_paid_change("m-s-0-c1", from_ts(21)).unwrap(), "settled twice");
    assert_eq!(store.credit("s").unwrap(), 2500, "credited twice");
}

/// Schema 22 (issue 25 review): a pause's end that an older billd let be set on a subscription dunning suspended
/// (it would have reactivated it on that date) is dropped, with an event; an operator's pause keeps its end.
#[test]
fn migration_22_drops_the_pause_end_of_what_dunning_suspended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billd.sqlite3");
    {
        let store = super::open(&path).unwrap();
        conn(&store)
            .execute_batch(
                "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval,
                   start_date, anchor_date, anchor_period, next_period, next_due_at, status, source, created_at,
                   updated_at, resume_at, resume_catch_up, stopped_by)
                 VALUES ('d', 'c', 'p', 'P', 100, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 1, NULL,
                   'suspended', 'manual', 0, 0, 5000, 1, 'dunning'),
                        ('o', 'c', 'p', 'P', 100, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 1, NULL,
                   'suspended', 'manual', 0, 0, 6000, 0, NULL);
                 DROP TABLE daemons;
                 ALTER TABLE attempts DROP COLUMN owner;
                 PRAGMA user_version = 21;",
            )
            .unwrap();
    }
    let store = super::open(&path).unwrap();
    let ends: Vec<(String, Option<i64>)> = {
        let mut st = conn(&store).prepare("SELECT id, resume_at FROM subscriptions ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(ends, [("d".to_string(), None), ("o".to_string(), Some(6000))]);
    let said: i64 = conn(&store)
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'subscription.resume_dropped' AND subscription_id = 'd'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(said, 1);
    assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION);
}

/// A CHECK, generated column or partial index with `IN (...)` of three values or more builds a temporary index of its
/// list every time a statement that evaluates it runs (about 2 µs an INSERT or UPDATE of the charge path): the
/// schema spells such rules `x = 'a' OR x = 'b' OR ...` (migrations 4 and 23).
#[test]
fn no_rule_in_the_schema_lists_three_values_or_more() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("b.sqlite3")).unwrap();
    let mut st = conn(&store).prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").unwrap();
    let schema: Vec<(String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    let mut long_lists = Vec::new();
    for (name, sql) in &schema {
        let sql = sql.to_uppercase();
        for (i, _) in sql.match_indices(" IN (") {
            let list = &sql[i + 5..];
            let list = &list[..list.find(')').unwrap_or(list.len())];
            if list.matches(',').count() >= 2 {
                long_lists.push(format!("{name}: IN ({list})"));
            }
        }
    }
    assert!(long_lists.is_empty(), "{long_lists:#?}");
}

/// Migration 23 rebuilds six tables (their rules spelled without IN lists): every row and column comes through.
#[test]
fn migration_23_keeps_every_row_of_the_tables_it_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billd.sqlite3");
    let tables = ["subscriptions", "periods", "one_time_charges", "refunds", "plan_changes", "outbox"];
    let rows = |conn: &Connection| -> Vec<Vec<String>> {
        tables
            .iter()
            .map(|t| {
                let mut st = conn.prepare(&format!("SELECT * FROM {t} ORDER BY 1")).unwrap();
                let n = st.column_count();
                st.query_map([], |r| {
                    (0..n)
                        .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|v| v.join("|"))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            })
            .collect()
    };
    let before = {
        let conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        for sql in &MIGRATIONS[..22] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 22;
             INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
               anchor_date, anchor_period, next_period, next_due_at, status, source, created_at, updated_at,
               skip_windows, suspended_at, discount, resume_at, resume_catch_up, last_period, cancel_at, credit,
               stopped_by)
             VALUES ('s', 'c', 'p', 'P', 9900, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 2, 5000, 'past_due',
               'config', 1, 2, '[]', NULL, '{}', 7000, 1, 11, 9000, 300, NULL),
                    ('t', 'c', 'p', 'P', 9900, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 0, 4000, 'trialing',
               'manual', 1, 2, NULL, NULL, NULL, NULL, 0, NULL, NULL, 0, NULL),
                    ('u', 'c', 'p', 'P', 9900, 'KRW', '1 month', '2025-01-01', '2025-01-01', 0, 1, NULL, 'suspended',
               'manual', 1, 2, NULL, 3, NULL, NULL, 0, NULL, NULL, 0, 'dunning');
             INSERT INTO periods VALUES ('s', 0, 10, 'm-s-0', 'c', 9900, 'KRW', 'P', 'paid', 0, NULL, 10, 11, NULL, 0),
                                        ('s', 1, 20, 'm-s-1', 'c', 9900, 'KRW', 'P', 'open', 1, 1000, 20, NULL, 15,
                                         300);
             INSERT INTO attempts (id, subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
               status, imp_uid, created_at, updated_at)
             VALUES (1, 's', 0, 1, 'm-s-0', 'c', 9900, 'KRW', 'paid', 'imp_1', 10, 11);
             INSERT INTO one_time_charges (id, merchant_uid, customer_uid, name, amount, currency, card_masked, status,
               failure, imp_uid, fail_reason, tries, created_at, updated_at, timeout_ms, check_at, doubt_wall_ms,
               doubt_boot_ms, doubt_boot_id, kind, subscription_id, go_wall_ms)
             VALUES (1, 'o-1', 'c', 'Add-on', 500, 'KRW', '424242******4242', 'failed', 'mismatch', 'imp_2', 'x', 1,
               3, 4, 30000, 5, 6, 7, 'boot', 'key', 's', 8);
             INSERT INTO refunds (id, merchant_uid, imp_uid, amount, currency, checksum, reason, status, source,
               cancellation_id, detail, timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, created_at,
               updated_at)
             VALUES (1, 'm-s-0', 'imp_1', 100, 'KRW', 9900, 'r', 'refunded', 'billd', 'c1', NULL, 30000, NULL, 1, 2,
               'boot', 3, 4);
             INSERT INTO plan_changes (id, subscription_id, timing, at, period, from_plan_id, from_amount,
               from_interval, to_plan_id, to_plan_name, to_amount, to_interval, rate, owed, merchant_uid, anchor_date,
               anchor_period, next_period, next_due_at, opens_uid, opens_amount, state, created_at, updated_at,
               credit_used, released, sets_term, to_last_period)
             VALUES (1, 's', 'now', 5, 1, 'p', 9900, '1 month', 'q', 'Q', 19900, '1 month', 500000, 5000, 'm-s-1-c1',
               '2025-01-15', 1, 2, 8000, 'm-s-1', 19900, 'applied', 5, 6, 0, 0, 1, 12);
             INSERT INTO outbox (seq, id, type, created_at, subscription_id, stream, sequence, snapshot, body, state,
               attempts, next_attempt_at, give_up_at, last_attempt_at, last_error, settled_at)
             VALUES (1, 'evt_1', 'charge.paid', 10, 's', 's', 1, '{}', '{\"a\":1}', 'delivered', 1, 10, NULL, 11,
               NULL, 11),
                    (2, 'evt_2', 'subscription.past_due', 20, 's', 's', 2, '{}', NULL, 'pending', 0, 20, NULL, NULL,
               NULL, NULL);",
        )
        .unwrap();
        rows(&conn)
    };
    assert!(before.iter().all(|t| !t.is_empty()));
    let store = super::open(&path).unwrap();
    assert_eq!(rows(conn(&store)), before);
    let broken: i64 =
        conn(&store).query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(broken, 0);
    let ok: String = conn(&store).query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

/// Event ids begin with the real instant in milliseconds: written in order, they are appended to the index of ids
/// (random ids made every insert into a large outbox read and rewrite a random page of it). Still unique: 80 random
/// bits follow.
#[test]
fn event_ids_sort_in_the_order_events_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::open(&dir.path().join("b.sqlite3")).unwrap();
    for i in 0..40 {
        let extra = serde_json::Map::new();
        crate::store::sql::publish(
            conn(&store),
            i,
            "charge.paid",
            None,
            crate::store::sql::About::OneTime("none"),
            extra,
        )
        .unwrap();
        if i % 10 == 9 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let mut st = conn(&store).prepare("SELECT id FROM outbox ORDER BY seq").unwrap();
    let ids: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let instants: Vec<&str> = ids.iter().map(|id| &id[4..16]).collect();
    assert!(instants.is_sorted(), "{ids:#?}");
    assert!(instants.windows(2).any(|w| w[0] < w[1]), "{ids:#?}");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    assert!(ids.iter().all(|id| id.len() == 36 && id[4..].bytes().all(|b| b.is_ascii_hexdigit())), "{ids:#?}");
}

/// Schema 24: the book keeps a week of daemons that left (a tick a minute would add half a million rows a year),
/// and a daemon's id is never reused, even after the newest row is pruned (AUTOINCREMENT): an id is the fence of
/// the attempts it owned.
#[test]
fn daemons_that_left_over_a_week_ago_are_pruned_and_ids_are_never_reused() {
    use crate::store::{DaemonInfo, Daemons};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billd.sqlite3");
    let who = DaemonInfo { host: "h".into(), pid: 1, version: "t".into() };
    let mut old = super::open(&path).unwrap();
    let (old_id, _) = old.join(&who, std::time::Duration::from_secs(60)).unwrap();
    old.leave("stopped").unwrap();
    let week = 7 * 86_400_000 + 1000;
    conn(&old).execute("UPDATE daemons SET left_ms = left_ms - ?1 WHERE id = ?2", [week, old_id]).unwrap();
    let mut recent = super::open(&path).unwrap();
    let (recent_id, _) = recent.join(&who, std::time::Duration::from_secs(60)).unwrap();
    let ids: Vec<i64> =
        recent.daemons(std::time::Duration::from_secs(86_400 * 30)).unwrap().iter().map(|d| d.id).collect();
    assert_eq!(ids, [recent_id], "a daemon that left over a week ago is still kept");
    recent.leave("stopped").unwrap();
    conn(&recent).execute("UPDATE daemons SET left_ms = left_ms - ?1", [week]).unwrap();
    let mut next = super::open(&path).unwrap();
    let (next_id, _) = next.join(&who, std::time::Duration::from_secs(60)).unwrap();
    assert!(next_id > recent_id && recent_id > old_id, "an id was reused: {old_id} {recent_id} {next_id}");
}
