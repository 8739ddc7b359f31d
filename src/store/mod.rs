//! SQLite adapter: migrations, pragmas, and every read and write billd makes (one transaction per batch).

use crate::billing::calendar::{ChargeClock, Interval};
use crate::billing::dunning::Decision;
use crate::billing::model::{Source, Status, Subscription};
use crate::billing::status::{Cause, exhausted_reason, merchant_uid_taken_reason, next_status};
use crate::billing::sync::{Change, SyncPlan};
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/migrations/0001_init.sql"),
    include_str!("sqlite/migrations/0002_one_time_charges.sql"),
    include_str!("sqlite/migrations/0003_pass_indexes.sql"),
    include_str!("sqlite/migrations/0004_lean_charge_path.sql"),
    include_str!("sqlite/migrations/0005_one_time_unresolved.sql"),
    include_str!("sqlite/migrations/0006_exactly_once_holes.sql"),
];

/// How long a write waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a database waits for another process that is migrating it (a rebuild of a large history takes
/// minutes: README, "Upgrade").
const MIGRATION_WAIT: Duration = Duration::from_secs(300);

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// An open billd database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A charge attempt with what is needed to send or reconcile it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: i64,
    pub subscription_id: String,
    pub period: u64,
    pub attempt: u32,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: String,
    pub due_at: i64,
    /// `pending` (intent committed, maybe sent) or `unknown` (sent; outcome to be confirmed).
    pub status: String,
    pub tries: u32,
    /// Declined attempts of this period so far.
    pub declines: u32,
    /// Whether the subscription is still billed (active or past due).
    pub billing: bool,
    /// Whether the subscription was past due when the attempt was claimed (a payment makes it active again; no
    /// other status can turn into past due while the attempt is out, as a subscription has one open period).
    pub past_due: bool,
    /// The gateway timeout its latest request was sent with, in milliseconds (`None`: a row from before schema
    /// 6). The quiet period before the next look at it is twice this, whatever the config says now.
    pub timeout_ms: Option<u64>,
    /// Resends of it that the gateway refused while no lookup found the first request.
    pub refused_resends: u32,
}

/// What the gateway's answer (or a lookup) established about an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Paid {
        imp_uid: String,
    },
    Declined {
        imp_uid: Option<String>,
        reason: String,
    },
    Rejected {
        reason: String,
    },
    Unresolved {
        reason: String,
    },
    /// A resend refused by the gateway while no lookup finds the first request (which may still be in progress):
    /// unresolved, and counted, so that a refusal becomes final only after a few.
    ResendRefused {
        reason: String,
    },
    /// A lookup found a paid payment under the attempt's merchant_uid whose amount, currency or customer differs
    /// from what was sent: never taken as paid; the attempt is held (its period waits) for an operator.
    Mismatch {
        reason: String,
    },
    /// The gateway never saw it and the subscription no longer bills: closed without a charge.
    Abandoned {
        reason: String,
    },
}

/// An outcome to record, with the dunning decision for its period.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub attempt: Attempt,
    pub result: AttemptResult,
    pub decision: Decision,
}

/// A subscription status change made while recording.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub subscription_id: String,
    pub from: Status,
    pub to: Status,
}

/// A period to open: computed by the engine from the calendar.
#[derive(Debug, Clone)]
pub struct NewPeriod {
    pub subscription_id: String,
    pub period: u64,
    pub due_at: i64,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: String,
    /// The period billed after this one ([`Subscription::following`]) and its due instant (`None`: no further
    /// period).
    pub following_period: u64,
    pub following_due_at: Option<i64>,
    /// The subscription's skip windows still ahead of the following period.
    pub skip_ahead: Vec<(i64, i64)>,
}

/// A subscription that needs its next period opened.
#[derive(Debug, Clone)]
pub struct DueSubscription {
    pub sub: Subscription,
    pub next_due_at: i64,
}

/// One attempt row, for listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChargeRow {
    pub subscription_id: String,
    pub period: u64,
    pub attempt: u32,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure: Option<String>,
    pub imp_uid: Option<String>,
    pub fail_reason: Option<String>,
    /// Unix seconds (the commands show them in the billing time zone).
    pub due_at: i64,
    /// When the attempt was made (its intent committed).
    pub created_at: i64,
    pub updated_at: i64,
}

/// A recorded one-time charge, as `charge-once` needs it before sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeState {
    pub id: i64,
    pub customer_uid: Option<String>,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `paid`, `failed` or `unknown`.
    pub status: String,
    pub failure: Option<String>,
    pub imp_uid: Option<String>,
    pub fail_reason: Option<String>,
    /// For an unresolved one: no look at it (by a pass, or a rerun's resend) before this instant (`None`: a row
    /// from before schema 6; see `updated_at`).
    pub check_at: Option<i64>,
    pub updated_at: i64,
    /// How many times it was sent: a send, a pass's lookup or a command's answer is recorded only if no other send
    /// of it began meanwhile (see [`Store::finish_one_time`]).
    pub tries: i64,
}

/// A one-time charge for a pass to settle by lookup.
#[derive(Debug, Clone)]
pub struct UnresolvedOneTime {
    pub id: i64,
    /// Which send of it this is (see [`Store::finish_one_time`]).
    pub tries: i64,
    pub merchant_uid: String,
    pub customer_uid: Option<String>,
    pub amount: i64,
    pub currency: String,
}

/// A key-in payment made by `billd charge-once` (only the masked card is kept).
#[derive(Debug, Clone)]
pub struct OneTimeCharge {
    pub merchant_uid: String,
    pub customer_uid: Option<String>,
    pub name: String,
    pub amount: i64,
    pub currency: String,
    pub card_masked: String,
}

/// A billed subscription, its next due instant, and its open period (period, next attempt, amount, currency).
pub type BillingSubscription = (Subscription, Option<i64>, Option<(u64, i64, i64, String)>);

/// One period of a subscription with its attempts, for `subscriptions show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeriodStory {
    pub period: u64,
    pub due_at: i64,
    pub merchant_uid: String,
    pub amount: i64,
    pub currency: String,
    /// `open`, `paid` or `given_up`.
    pub state: String,
    pub declines: u32,
    pub next_attempt_at: Option<i64>,
    pub attempts: Vec<AttemptStory>,
}

/// One attempt of a period, for `subscriptions show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptStory {
    pub attempt: u32,
    pub status: String,
    pub failure: Option<String>,
    pub imp_uid: Option<String>,
    pub fail_reason: Option<String>,
    pub check_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A subscription with its derived state, for listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionRow {
    pub id: String,
    pub customer_uid: String,
    pub plan: String,
    pub amount: i64,
    pub currency: String,
    pub interval: String,
    pub status: String,
    pub source: String,
    /// Unix seconds of the next period's due instant (billed subscriptions only).
    pub next_due_at: Option<i64>,
    pub paid_periods: u64,
    /// The open period's next attempt (a retry of a past-due one), if one is scheduled.
    pub next_attempt_at: Option<i64>,
    /// The open period's unresolved attempt's next look, if it has one.
    pub check_at: Option<i64>,
    /// Declined attempts of the open period (0 without one).
    pub declines: u32,
    /// Why it is canceled or suspended (the reason of its latest such change).
    pub why: Option<String>,
}

pub fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// An instant as UNIX seconds rounded up: for a "not before" time (a check after a quiet period), so that rounding
/// never makes it earlier.
pub fn ts_ceil(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

pub fn from_ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

fn rfc3339(t: i64) -> String {
    from_ts(t).to_rfc3339()
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("database {}: the folder {} does not exist (set billing.database)", path.display(), dir.display());
        }
        // 0600 whatever the umask (SQLite gives -wal and -shm the same mode).
        crate::private::create(path).with_context(|| format!("database {}: cannot create", path.display()))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("database {}: cannot open", path.display()))?;
        let mut store = Store { conn, path: path.to_path_buf() };
        store.configure().with_context(|| format!("database {}", path.display()))?;
        store.migrate().with_context(|| format!("database {}", path.display()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching a new database to WAL needs it to itself: another process creating or migrating it at the same
        // instant makes this busy for a moment (SQLite does not always wait on its own here), so wait as a write
        // would.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < MIGRATION_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("cannot switch to WAL journaling (got {mode})");
        }
        self.conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        Ok(())
    }

    /// Applies the migrations this database lacks, each once: the schema version is read inside the write
    /// transaction that applies the next migration, so a process that opens the database at the same instant waits
    /// for the other's migration (up to [`MIGRATION_WAIT`]) and then finds it done.
    fn migrate(&mut self) -> Result<()> {
        let version: usize = self.conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
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
                self.path.display()
            );
        }
        self.conn.execute_batch("PRAGMA foreign_keys=OFF")?;
        // Another process may be migrating: wait for it as long as a large migration takes, not the usual few
        // seconds.
        self.conn.busy_timeout(MIGRATION_WAIT)?;
        let result = (|| -> Result<()> {
            loop {
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).with_context(|| {
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
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        self.conn.execute_batch("PRAGMA foreign_keys=ON")?;
        result
    }

    fn tx(&mut self) -> Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_context(|| format!("database {}: cannot start a write transaction", self.path.display()))
    }

    // ---- subscriptions -------------------------------------------------------------------------------------

    /// Subscriptions that came from the config file.
    pub fn config_subscriptions(&self) -> Result<Vec<Subscription>> {
        let mut st = self.conn.prepare_cached(&format!("{SUB_SELECT} WHERE source = 'config' ORDER BY id"))?;
        let rows = st.query_map([], sub_from_row)?;
        rows.map(|r| r.map_err(Into::into).and_then(|x| x)).collect()
    }

    pub fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        let mut st = self.conn.prepare_cached(&format!("{SUB_SELECT} WHERE id = ?1"))?;
        match st.query_row([id], sub_from_row).optional()? {
            Some(r) => Ok(Some(r?)),
            None => Ok(None),
        }
    }

    /// Number of subscriptions that are billed (active or past due).
    pub fn billing_count(&self) -> Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM subscriptions WHERE status IN ('active', 'past_due')",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Applies the config to the database in one write transaction, with every read that decides a write made
    /// inside it: `plan` gets the config-sourced subscriptions and the number of billed subscriptions as they are
    /// in that transaction, and returns the changes (or an error: nothing is changed). So a pass or a command that
    /// committed in between (say, a period opened) is never overwritten with values computed from a stale read.
    pub fn sync_with(
        &mut self,
        clock: &ChargeClock,
        now: i64,
        plan: impl FnOnce(&[Subscription], usize) -> Result<SyncPlan>,
    ) -> Result<SyncPlan> {
        let tx = self.tx()?;
        let subs = {
            let mut st = tx.prepare_cached(&format!("{SUB_SELECT} WHERE source = 'config' ORDER BY id"))?;
            let rows = st.query_map([], sub_from_row)?;
            rows.map(|r| r.map_err(Into::into).and_then(|x| x)).collect::<Result<Vec<_>>>()?
        };
        crate::failpoint::pause("sync_after_read");
        let active = billing_count_in(&tx)?;
        let plan = plan(&subs, active)?;
        if !plan.is_empty() {
            apply_sync_in(&tx, &plan, clock, now)?;
            tx.commit()?;
        }
        Ok(plan)
    }
}

fn billing_count_in(conn: &Connection) -> Result<usize> {
    let n: i64 =
        conn.query_row("SELECT count(*) FROM subscriptions WHERE status IN ('active', 'past_due')", [], |r| r.get(0))?;
    Ok(n as usize)
}

/// The subscription whose id equals `id` but for case, if any (ids that differ only by case are refused: their
/// merchant_uids would too, and the gateway may not tell them apart).
fn same_id_but_case(conn: &Connection, id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT id FROM subscriptions WHERE id = ?1 COLLATE NOCASE AND id <> ?1 LIMIT 1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// Applies a sync plan inside `tx`. An update is guarded by the state the plan was computed from (a changed row
/// is an error: nothing of the plan is applied).
fn apply_sync_in(tx: &Transaction<'_>, plan: &SyncPlan, clock: &ChargeClock, now: i64) -> Result<()> {
    {
        for change in &plan.changes {
            match change {
                Change::Insert(s) => {
                    let due = s.calendar().due_at(clock, s.next_period).map(ts);
                    if current_status(tx, &s.id)?.is_some() {
                        // Added by command or import under the same id: the database's subscription stays as is.
                        tracing::warn!(event = "config.sync", subscription = %s.id,
                            "subscription {:?} in the config already exists in the database (added by command or import); the config entry is ignored", s.id);
                        continue;
                    }
                    if let Some(other) = same_id_but_case(tx, &s.id)? {
                        tracing::error!(event = "config.sync", subscription = %s.id,
                            "subscription {:?} in the config differs from subscription {other:?} in the database only \
                             by case; it is not added (rename it: merchant_uids that differ only by case may be one \
                             order at the gateway)", s.id);
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval,
                           start_date, anchor_date, anchor_period, next_period, next_due_at, status, source,
                           created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)",
                        params![
                            s.id,
                            s.customer_uid,
                            s.plan_id,
                            s.plan_name,
                            s.amount,
                            s.currency,
                            s.interval.to_string(),
                            s.start_date.to_string(),
                            s.anchor_date.to_string(),
                            s.anchor_period as i64,
                            s.next_period as i64,
                            due,
                            s.status.as_str(),
                            s.source.as_str(),
                            now
                        ],
                    )?;
                    event(
                        tx,
                        now,
                        "subscription.created",
                        Some(&s.id),
                        json!({
                            "plan": s.plan_id, "amount": s.amount, "currency": s.currency,
                            "start": s.start_date.to_string(), "status": s.status.as_str(), "source": s.source.as_str()
                        }),
                    )?;
                }
                Change::Update { before, after: s, what } => {
                    let due = s.calendar().due_at(clock, s.next_period).map(ts);
                    let n = tx.execute(
                        "UPDATE subscriptions SET customer_uid = ?2, plan_id = ?3, plan_name = ?4, amount = ?5,
                           currency = ?6, interval = ?7, start_date = ?8, anchor_date = ?9, anchor_period = ?10,
                           next_due_at = ?11, updated_at = ?12
                         WHERE id = ?1 AND next_period = ?13 AND status = ?14",
                        params![
                            s.id,
                            s.customer_uid,
                            s.plan_id,
                            s.plan_name,
                            s.amount,
                            s.currency,
                            s.interval.to_string(),
                            s.start_date.to_string(),
                            s.anchor_date.to_string(),
                            s.anchor_period as i64,
                            due,
                            now,
                            before.next_period as i64,
                            before.status.as_str()
                        ],
                    )?;
                    if n != 1 {
                        bail!("subscription {:?} changed while the config was being applied; nothing applied", s.id);
                    }
                    event(tx, now, "subscription.updated", Some(&s.id), json!({ "changes": what }))?;
                }
                Change::Cancel { id, reason } => {
                    set_status_tx(tx, id, Status::Canceled, now, reason)?;
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Sets a subscription's status (operator commands); returns the previous status.
    pub fn set_status(&mut self, id: &str, to: Status, now: i64, reason: &str) -> Result<Option<Status>> {
        let tx = self.tx()?;
        let from = set_status_tx(&tx, id, to, now, reason)?;
        tx.commit()?;
        Ok(from)
    }

    /// Resumes a suspended subscription: its open period (if any) is retried at `now`, and billing restarts at
    /// the period `restart` chooses. `restart` gets the subscription as it is inside this write transaction (so a
    /// sync that changed its calendar meanwhile is seen) and the instant it was suspended, and returns the period
    /// to restart at and its due instant. Returns the subscription as it was and the restart period.
    pub fn resume_with(
        &mut self,
        id: &str,
        now: i64,
        restart: impl FnOnce(&Subscription, Option<i64>) -> Result<(u64, Option<i64>, Vec<(i64, i64)>)>,
    ) -> Result<(Subscription, u64)> {
        let tx = self.tx()?;
        let sub = match tx.prepare_cached(&format!("{SUB_SELECT} WHERE id = ?1"))?.query_row([id], sub_from_row) {
            Ok(s) => s?,
            Err(rusqlite::Error::QueryReturnedNoRows) => bail!("no subscription {id:?}"),
            Err(e) => return Err(e.into()),
        };
        if sub.status != Status::Suspended {
            bail!("subscription {id:?} is {}, not paused/suspended", sub.status);
        }
        let suspended_at: Option<i64> =
            tx.query_row("SELECT suspended_at FROM subscriptions WHERE id = ?1", [id], |r| r.get(0))?;
        crate::failpoint::pause("resume_after_read");
        let (restart_period, restart_due, skip) = restart(&sub, suspended_at)?;
        let n = tx.execute(
            "UPDATE subscriptions SET status = 'active', next_period = max(next_period, ?2), next_due_at = ?3,
               updated_at = ?4, skip_windows = ?6
             WHERE id = ?1 AND status = 'suspended' AND next_period = ?5",
            params![id, restart_period as i64, restart_due, now, sub.next_period as i64, skip_json(&skip)],
        )?;
        if n != 1 {
            bail!("subscription {id:?} changed while it was being resumed; nothing changed");
        }
        tx.execute(
            "UPDATE periods SET next_attempt_at = ?2 WHERE subscription_id = ?1 AND state = 'open'
               AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.subscription_id = periods.subscription_id
                                 AND a.period = periods.period
                                 AND (a.status IN ('pending', 'unknown') OR a.failure = 'mismatch'))",
            params![id, now],
        )?;
        event(
            &tx,
            now,
            "subscription.active",
            Some(id),
            json!({ "from": "suspended", "reason": "resumed by operator",
            "next_period": restart_period }),
        )?;
        tx.commit()?;
        Ok((sub, restart_period))
    }

    /// A subscription's open period held by a mismatch (its merchant_uid paid by a payment that is not billd's):
    /// (period, merchant_uid, reason).
    pub fn held_period(&self, id: &str) -> Result<Option<(u64, String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT p.period, p.merchant_uid, coalesce(a.fail_reason, '') FROM periods p
                 JOIN attempts a ON a.subscription_id = p.subscription_id AND a.period = p.period
                 WHERE p.subscription_id = ?1 AND p.state = 'open' AND a.failure = 'mismatch'
                 ORDER BY a.id DESC LIMIT 1",
                [id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// Makes a subscription's open period due now (operator `retry`); false if it has none waiting.
    pub fn retry_now(&mut self, id: &str, now: i64) -> Result<bool> {
        let tx = self.tx()?;
        let n = tx.execute(
            "UPDATE periods SET next_attempt_at = ?2 WHERE subscription_id = ?1 AND state = 'open'
               AND next_attempt_at IS NOT NULL",
            params![id, now],
        )?;
        if n > 0 {
            event(&tx, now, "subscription.retry", Some(id), json!({ "reason": "retry requested by operator" }))?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Subscriptions that bill and have something to charge by `until` (their next period falls due, or an open
    /// period waits for an attempt), with their next due instant and any open period's next attempt, for
    /// `upcoming`. Read through the due indexes, so a short window over a large book reads only what falls in it.
    pub fn billing_subscriptions(&self, until: i64) -> Result<Vec<BillingSubscription>> {
        let mut st = self.conn.prepare_cached(&format!(
            "{SUB_SELECT} WHERE id IN (
               SELECT id FROM subscriptions WHERE status IN ('active', 'past_due') AND next_due_at <= ?1
               UNION
               SELECT p.subscription_id FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
                 WHERE p.state = 'open' AND p.next_attempt_at IS NOT NULL AND s.status IN ('active', 'past_due'))
             ORDER BY id"
        ))?;
        let subs: Vec<(Subscription, Option<i64>)> = st
            .query_map([until], |r| Ok((sub_from_row(r)?, r.get::<_, Option<i64>>(11)?)))?
            .map(|r| -> Result<_> {
                let (s, due) = r?;
                Ok((s?, due))
            })
            .collect::<Result<_>>()?;
        let mut open = self.conn.prepare_cached(
            "SELECT period, next_attempt_at, amount, currency FROM periods
             WHERE subscription_id = ?1 AND state = 'open' AND next_attempt_at IS NOT NULL",
        )?;
        let mut out = Vec::with_capacity(subs.len());
        for (s, due) in subs {
            let o = open
                .query_row([&s.id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            out.push((s, due, o));
        }
        Ok(out)
    }

    /// Adds a subscription created by command (source `manual`: a config sync never cancels it).
    pub fn insert_manual(&mut self, s: &Subscription, next_due_at: Option<i64>, now: i64) -> Result<()> {
        let tx = self.tx()?;
        if current_status(&tx, &s.id)?.is_some() {
            bail!("subscription {:?} already exists", s.id);
        }
        if let Some(other) = same_id_but_case(&tx, &s.id)? {
            bail!(
                "subscription {:?} differs from subscription {other:?} only by case; pick another id (merchant_uids \
                 that differ only by case may be one order at the gateway)",
                s.id
            );
        }
        tx.execute(
            "INSERT INTO subscriptions (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
               anchor_date, anchor_period, next_period, next_due_at, status, source, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 0, 0, ?9, 'active', 'manual', ?10, ?10)",
            params![
                s.id,
                s.customer_uid,
                s.plan_id,
                s.plan_name,
                s.amount,
                s.currency,
                s.interval.to_string(),
                s.start_date.to_string(),
                next_due_at,
                now
            ],
        )?;
        event(
            &tx,
            now,
            "subscription.created",
            Some(&s.id),
            json!({
                "plan": s.plan_id, "amount": s.amount, "currency": s.currency, "start": s.start_date.to_string(),
                "source": "manual"
            }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Appends an event that belongs to no pass (e.g. a billing key registered by command).
    pub fn log_event(
        &mut self,
        kind: &str,
        subscription: Option<&str>,
        detail: serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let tx = self.tx()?;
        event(&tx, now, kind, subscription, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// A one-time charge by merchant_uid.
    pub fn one_time(&self, merchant_uid: &str) -> Result<Option<OneTimeState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, customer_uid, amount, currency, status, failure, imp_uid, fail_reason, check_at,
                   updated_at, tries
                 FROM one_time_charges WHERE merchant_uid = ?1",
                [merchant_uid],
                |r| {
                    Ok(OneTimeState {
                        id: r.get(0)?,
                        customer_uid: r.get(1)?,
                        amount: r.get(2)?,
                        currency: r.get(3)?,
                        status: r.get(4)?,
                        failure: r.get(5)?,
                        imp_uid: r.get(6)?,
                        fail_reason: r.get(7)?,
                        check_at: r.get(8)?,
                        updated_at: r.get(9)?,
                        tries: r.get(10)?,
                    })
                },
            )
            .optional()?)
    }

    /// The subscription period (subscription, period) that owns `merchant_uid`, if any.
    pub fn period_by_merchant_uid(&self, merchant_uid: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .conn
            .query_row("SELECT subscription_id, period FROM periods WHERE merchant_uid = ?1", [merchant_uid], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()?)
    }

    /// Commits the intent of a one-time charge (status pending) before it is sent; returns its row id and its
    /// number of tries (which names this send). `prev_tries`: the row as the caller found it (`None`: there was
    /// none): a failed one, or an unresolved one whose lookup after its quiet period found no record, is sent again
    /// only if nothing changed it since (another `charge-once` of the same merchant_uid, say); otherwise `None`,
    /// and nothing may be sent. `timeout_ms`: the gateway timeout the request is sent with; `check_at`: no pass
    /// looks at it before then (the command may still be waiting for answers).
    pub fn begin_one_time(
        &mut self,
        c: &OneTimeCharge,
        now: i64,
        timeout_ms: u64,
        check_at: i64,
        prev_tries: Option<i64>,
    ) -> Result<Option<(i64, i64)>> {
        let tx = self.tx()?;
        let row = match prev_tries {
            None => tx
                .query_row(
                    "INSERT INTO one_time_charges (merchant_uid, customer_uid, name, amount, currency, card_masked,
                       status, tries, created_at, updated_at, timeout_ms, check_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 1, ?7, ?7, ?8, ?9)
                     ON CONFLICT (merchant_uid) DO NOTHING RETURNING id, tries",
                    params![
                        c.merchant_uid,
                        c.customer_uid,
                        c.name,
                        c.amount,
                        c.currency,
                        c.card_masked,
                        now,
                        timeout_ms as i64,
                        check_at
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            Some(tries) => tx
                .query_row(
                    "UPDATE one_time_charges SET status = 'pending', tries = tries + 1, failure = NULL,
                       fail_reason = NULL, card_masked = ?3, updated_at = ?4, timeout_ms = ?5, check_at = ?6
                     WHERE merchant_uid = ?1 AND tries = ?2 AND status IN ('failed', 'pending', 'unknown')
                     RETURNING id, tries",
                    params![c.merchant_uid, tries, c.card_masked, now, timeout_ms as i64, check_at],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        tx.commit()?;
        Ok(row)
    }

    /// Leaves a one-time charge unknown (its answer was lost and no lookup found it): no look at it, by a pass or
    /// a rerun, before `check_at`. Returns whether it did (a settled charge is left as it is).
    pub fn one_time_unknown(&mut self, id: i64, tries: i64, reason: &str, check_at: i64, now: i64) -> Result<bool> {
        let tx = self.tx()?;
        let changed = tx.execute(
            "UPDATE one_time_charges SET status = 'unknown', failure = NULL, fail_reason = ?2, check_at = ?3,
               updated_at = ?4 WHERE id = ?1 AND tries = ?5 AND status IN ('pending', 'unknown')",
            params![id, reason, check_at, now, tries],
        )?;
        if changed == 1 {
            let muid: String =
                tx.query_row("SELECT merchant_uid FROM one_time_charges WHERE id = ?1", [id], |r| r.get(0))?;
            event(
                &tx,
                now,
                "charge.unknown",
                None,
                json!({ "merchant_uid": muid, "one_time": true, "reason": reason, "check_at": rfc3339(check_at) }),
            )?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Records a one-time charge's outcome, if it is still pending or unknown, or was closed as abandoned by a
    /// pass that found no record of it (the answer of the `charge-once` that sent it is better evidence), and no
    /// other send of it began since the caller read it (`tries` unchanged: a pass's lookup never overwrites a
    /// rerun's send in progress). Returns whether it did.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_one_time(
        &mut self,
        id: i64,
        tries: i64,
        status: &str,
        failure: Option<&str>,
        imp_uid: Option<&str>,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let tx = self.tx()?;
        let changed = tx.execute(
            "UPDATE one_time_charges SET status = ?2, failure = ?3, imp_uid = coalesce(?4, imp_uid), fail_reason = ?5,
               updated_at = ?6
             WHERE id = ?1 AND tries = ?7 AND (status IN ('pending', 'unknown') OR failure = 'abandoned')",
            params![id, status, failure, imp_uid, reason, now, tries],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        let kind = match status {
            "paid" => "charge.paid",
            "failed" => "charge.failed",
            _ => "charge.unknown",
        };
        let muid: String =
            tx.query_row("SELECT merchant_uid FROM one_time_charges WHERE id = ?1", [id], |r| r.get(0))?;
        event(
            &tx,
            now,
            kind,
            None,
            json!({ "merchant_uid": muid, "one_time": true, "imp_uid": imp_uid, "reason": reason }),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// One-time charges still pending or unknown whose check time has come (older ones first). A row from before
    /// schema 6 has no check time: it is looked at `fallback_secs` after its last change.
    pub fn unresolved_one_time(&self, now: i64, fallback_secs: i64, limit: usize) -> Result<Vec<UnresolvedOneTime>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, merchant_uid, customer_uid, amount, currency, tries FROM one_time_charges
             WHERE status IN ('pending', 'unknown') AND coalesce(check_at, updated_at + ?2) <= ?1
             ORDER BY updated_at, id LIMIT ?3",
        )?;
        let rows = st.query_map(params![now, fallback_secs, limit as i64], |r| {
            Ok(UnresolvedOneTime {
                id: r.get(0)?,
                merchant_uid: r.get(1)?,
                customer_uid: r.get(2)?,
                amount: r.get(3)?,
                currency: r.get(4)?,
                tries: r.get(5)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// One-time charges as listing rows (subscription shown as `one-time`).
    pub fn list_one_time(&self, failed_only: bool, since: Option<i64>) -> Result<Vec<ChargeRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT merchant_uid, coalesce(customer_uid, ''), amount, currency, status, failure, imp_uid, fail_reason,
                    tries, created_at, updated_at
             FROM one_time_charges WHERE (?1 = 0 OR status = 'failed') AND (?2 IS NULL OR updated_at >= ?2)
             ORDER BY id",
        )?;
        let rows = st.query_map(params![failed_only as i64, since], |r| {
            Ok(ChargeRow {
                subscription_id: "one-time".into(),
                period: 0,
                attempt: r.get::<_, i64>(8)? as u32,
                merchant_uid: r.get(0)?,
                customer_uid: r.get(1)?,
                amount: r.get(2)?,
                currency: r.get(3)?,
                status: r.get(4)?,
                failure: r.get(5)?,
                imp_uid: r.get(6)?,
                fail_reason: r.get(7)?,
                due_at: r.get(9)?,
                created_at: r.get(9)?,
                updated_at: r.get(10)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    // ---- the pass --------------------------------------------------------------------------------------------

    /// How many billed subscriptions have their next period due at or before `now` (its amount within
    /// `max_amount`) and no open period: what [`Store::open_and_claim`] would open without a limit.
    pub fn subscriptions_to_open_count(&self, now: i64, max_amount: i64) -> Result<usize> {
        let n: i64 = self.conn.prepare_cached(
            "SELECT count(*) FROM subscriptions WHERE status IN ('active', 'past_due') AND next_due_at <= ?1
               AND amount <= ?2
               AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id AND p.state = 'open')",
        )?
        .query_row(params![now, max_amount], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Creates and commits (status pending) the next attempt of up to `limit` open periods due at or before
    /// `now`. Only after this commit may their requests be sent.
    pub fn claim_due(&mut self, now: i64, limit: usize, timeout_ms: u64) -> Result<Vec<Attempt>> {
        self.claim_due_within(now, limit, i64::MAX, timeout_ms)
    }

    /// [`Store::claim_due`] leaving out periods whose amount is above `max_amount` (a safety rail: they stay
    /// open and unclaimed until the limit allows them).
    pub fn claim_due_within(
        &mut self,
        now: i64,
        limit: usize,
        max_amount: i64,
        timeout_ms: u64,
    ) -> Result<Vec<Attempt>> {
        let tx = self.tx()?;
        let out = claim_in(&tx, now, limit, max_amount, timeout_ms)?;
        tx.commit()?;
        Ok(out)
    }

    /// One step of a pass, in one transaction: claims up to `limit` due attempts of open periods (as
    /// [`Store::claim_due_within`]; retries and leftovers first), then fills the page by opening up to `open_limit`
    /// due periods (of subscriptions as [`Store::subscriptions_to_open_count`] counts them, built by `make`) and
    /// claiming their first attempts at
    /// once. Returns how many periods it opened and every attempt claimed: their intents are committed, each
    /// with `timeout_ms`, the gateway timeout its request is about to be sent with.
    ///
    /// A period whose merchant_uid is already taken (by another subscription's period: a prefix shared with
    /// another deployment, say) is not opened: its subscription is suspended with the reason, logged, and the rest
    /// of the page goes on.
    pub fn open_and_claim(
        &mut self,
        now: i64,
        limit: usize,
        open_limit: usize,
        max_amount: i64,
        timeout_ms: u64,
        make: impl Fn(&DueSubscription) -> NewPeriod,
    ) -> Result<(usize, Vec<Attempt>)> {
        let tx = self.tx()?;
        let mut out = claim_in(&tx, now, limit, max_amount, timeout_ms)?;
        let room = limit.saturating_sub(out.len()).min(open_limit);
        let mut opened = 0;
        if room > 0 {
            let due = subscriptions_to_open_in(&tx, now, room, max_amount)?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO periods (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency,
                   name, state, next_attempt_at, opened_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open', NULL, ?9
                 WHERE NOT EXISTS (SELECT 1 FROM one_time_charges WHERE merchant_uid = ?4)
                 ON CONFLICT (merchant_uid) DO NOTHING",
            )?;
            let mut adv = tx.prepare_cached(
                "UPDATE subscriptions SET next_period = ?5, next_due_at = ?3, updated_at = ?4, skip_windows = ?6
                 WHERE id = ?1 AND next_period = ?2",
            )?;
            let mut claim = tx.prepare_cached(
                "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
                   status, created_at, updated_at, timeout_ms)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?8)",
            )?;
            for d in &due {
                let p = make(d);
                let inserted = ins.execute(params![
                    p.subscription_id,
                    p.period as i64,
                    p.due_at,
                    p.merchant_uid,
                    p.customer_uid,
                    p.amount,
                    p.currency,
                    p.name,
                    now
                ])?;
                if inserted == 0 {
                    // Its merchant_uid is taken, by a period or a one-time charge (the period itself cannot exist:
                    // the subscription's next_period is past every period it has).
                    let owner: Option<String> = tx
                        .prepare_cached(
                            "SELECT format('subscription \"%s\" period %d', subscription_id, period) FROM periods
                               WHERE merchant_uid = ?1
                             UNION ALL SELECT 'a one-time charge' FROM one_time_charges WHERE merchant_uid = ?1",
                        )?
                        .query_row([&p.merchant_uid], |r| r.get(0))
                        .optional()?;
                    let Some(owner) = owner else {
                        bail!("period {} of subscription {} exists already", p.period, p.subscription_id);
                    };
                    let why = merchant_uid_taken_reason(&p.merchant_uid, p.period, &owner);
                    tracing::error!(event = "charge.refused", subscription = %p.subscription_id,
                        merchant_uid = %p.merchant_uid, "charge.refused: {why}");
                    change_status(&tx, &p.subscription_id, Cause::MerchantUidTaken, now, &why)?;
                    continue;
                }
                let advanced = adv.execute(params![
                    p.subscription_id,
                    p.period as i64,
                    p.following_due_at,
                    now,
                    p.following_period as i64,
                    skip_json(&p.skip_ahead)
                ])?;
                if advanced != 1 {
                    bail!("subscription {} changed while opening period {}", p.subscription_id, p.period);
                }
                claim.execute(params![
                    p.subscription_id,
                    p.period as i64,
                    p.merchant_uid,
                    p.customer_uid,
                    p.amount,
                    p.currency,
                    now,
                    timeout_ms as i64
                ])?;
                out.push(Attempt {
                    id: tx.last_insert_rowid(),
                    subscription_id: p.subscription_id,
                    period: p.period,
                    attempt: 1,
                    merchant_uid: p.merchant_uid,
                    customer_uid: p.customer_uid,
                    amount: p.amount,
                    currency: p.currency,
                    name: p.name,
                    due_at: p.due_at,
                    status: "pending".into(),
                    tries: 0,
                    declines: 0,
                    billing: true,
                    past_due: d.sub.status == Status::PastDue,
                    timeout_ms: Some(timeout_ms),
                    refused_resends: 0,
                });
                opened += 1;
            }
        }
        tx.commit()?;
        Ok((opened, out))
    }

    /// Unresolved attempts to reconcile now: every `pending` one (left by a process that stopped) and every
    /// `unknown` one whose check time has come.
    pub fn unresolved(&self, now: i64, limit: usize) -> Result<Vec<Attempt>> {
        self.unresolved_after(now, None, limit)
    }

    /// [`Store::unresolved`] a page at a time, in (subscription, period) order after `after`: read straight from
    /// the one-unresolved-per-period index, so a large backlog (say, after a gateway outage) costs one index range
    /// a page, never a scan and sort of the whole backlog.
    pub fn unresolved_after(&self, now: i64, after: Option<(&str, u64)>, limit: usize) -> Result<Vec<Attempt>> {
        let mut st = self.conn.prepare_cached(&format!(
            "{ATTEMPT_SELECT} WHERE a.status IN ('pending', 'unknown') AND (a.status = 'pending' OR a.check_at <= ?1)
               AND (a.subscription_id, a.period) > (?3, ?4)
             ORDER BY a.subscription_id, a.period LIMIT ?2"
        ))?;
        let (sub, period) = after.unwrap_or(("", 0));
        let after_period = if after.is_some() { period as i64 } else { -1 };
        let rows =
            st.query_map(params![now, limit.min(i64::MAX as usize) as i64, sub, after_period], attempt_from_row)?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// Number of unresolved attempts (pending or unknown), whenever their check is due.
    pub fn unresolved_count(&self) -> Result<usize> {
        let n: i64 =
            self.conn
                .query_row("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// imp_uids of earlier declined attempts of a period (to tell a new decline from an old one in a lookup).
    pub fn known_imp_uids(&self, subscription_id: &str, period: u64) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            "SELECT imp_uid FROM attempts WHERE subscription_id = ?1 AND period = ?2 AND imp_uid IS NOT NULL",
        )?;
        let rows = st.query_map(params![subscription_id, period as i64], |r| r.get(0))?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// Marks an unresolved attempt as being resent (the gateway has no record of it) with a request whose timeout
    /// is `timeout_ms` (committed before the request leaves, so the quiet period after it is never shorter).
    pub fn mark_resending(&mut self, attempt_id: i64, now: i64, timeout_ms: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE attempts SET status = 'pending', updated_at = ?2, timeout_ms = ?3
             WHERE id = ?1 AND status IN ('pending', 'unknown')",
            params![attempt_id, now, timeout_ms as i64],
        )?;
        Ok(())
    }

    /// Removes claimed attempts that were never sent (on shutdown) and makes their periods due again.
    pub fn release(&mut self, attempt_ids: &[i64], now: i64) -> Result<()> {
        let tx = self.tx()?;
        for id in attempt_ids {
            let key: Option<(String, i64)> = tx
                .prepare_cached(
                    "DELETE FROM attempts WHERE id = ?1 AND status = 'pending' AND tries = 0
                     RETURNING subscription_id, period",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((sub, period)) = key {
                tx.prepare_cached(
                    "UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2",
                )?
                .execute(params![sub, period, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records outcomes and their decisions in one transaction (group commit).
    pub fn record(&mut self, items: &[Recorded], now: i64) -> Result<Vec<StatusChange>> {
        let tx = self.tx()?;
        let mut changes = Vec::new();
        {
            // A billing day's outcomes are nearly all "paid": its two statements are prepared once per batch.
            let mut paid = PaidStatements {
                attempt: tx.prepare_cached(
                    "UPDATE attempts SET status = 'paid', imp_uid = ?2, fail_reason = NULL, check_at = NULL,
                       resolved_at = ?3, updated_at = ?3 WHERE id = ?1",
                )?,
                period: tx.prepare_cached(
                    "UPDATE periods SET state = 'paid', next_attempt_at = NULL, closed_at = ?3
                     WHERE subscription_id = ?1 AND period = ?2",
                )?,
            };
            for it in items {
                record_one(&tx, &mut paid, it, now, &mut changes)
                    .with_context(|| format!("recording merchant_uid {}", it.attempt.merchant_uid))?;
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    /// The earliest instant at which something becomes due: a period, a retry or a check.
    pub fn next_wake(&self) -> Result<Option<i64>> {
        let t: Option<i64> = self.conn.query_row(
            "SELECT min(t) FROM (
               SELECT min(next_due_at) AS t FROM subscriptions WHERE status IN ('active', 'past_due')
               UNION ALL
               SELECT min(p.next_attempt_at) FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
                 WHERE p.state = 'open' AND p.next_attempt_at IS NOT NULL AND s.status IN ('active', 'past_due')
               UNION ALL
               SELECT min(check_at) FROM attempts WHERE status IN ('pending', 'unknown'))",
            [],
            |r| r.get(0),
        )?;
        Ok(t)
    }

    /// Due charges held back because their amount is above `max_amount`: (subscription, period, amount), for
    /// subscriptions whose next period has fallen due and for open periods waiting for an attempt.
    pub fn over_amount_limit(&self, now: i64, max_amount: i64) -> Result<Vec<(String, u64, i64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, next_period, amount FROM subscriptions WHERE status IN ('active', 'past_due')
               AND next_due_at <= ?1 AND amount > ?2
               AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id AND p.state = 'open')
             UNION ALL
             SELECT p.subscription_id, p.period, p.amount FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
               WHERE p.state = 'open' AND p.next_attempt_at <= ?1 AND p.amount > ?2 AND s.status IN ('active', 'past_due')",
        )?;
        let rows =
            st.query_map(params![now, max_amount], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?;
        // Sorted here: an ORDER BY in SQL makes SQLite walk all periods in key order instead of the due indexes.
        let mut held = rows.collect::<rusqlite::Result<Vec<(String, u64, i64)>>>()?;
        held.sort();
        Ok(held)
    }

    /// Periods due at or before `now` that are not charged yet: open ones waiting for an attempt, and
    /// subscriptions whose next period has fallen due.
    pub fn due_backlog(&self, now: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM subscriptions WHERE status IN ('active', 'past_due') AND next_due_at <= ?1
                       AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id
                                        AND p.state = 'open'))
                  + (SELECT count(*) FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
                       WHERE p.state = 'open' AND p.next_attempt_at <= ?1 AND s.status IN ('active', 'past_due'))",
            [now],
            |r| r.get(0),
        )?)
    }

    /// Failed attempts recorded at or after `since`.
    pub fn failed_since(&self, since: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM attempts WHERE status = 'failed' AND updated_at >= ?1",
            [since],
            |r| r.get(0),
        )?)
    }

    // ---- listings ---------------------------------------------------------------------------------------------

    pub fn list_subscriptions(&self, status: Option<Status>) -> Result<Vec<SubscriptionRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT s.id, s.customer_uid, s.plan_id, s.amount, s.currency, s.interval, s.status, s.source,
                    s.next_due_at,
                    (SELECT count(*) FROM periods p WHERE p.subscription_id = s.id AND p.state = 'paid'),
                    o.next_attempt_at, o.declines,
                    (SELECT min(a.check_at) FROM attempts a WHERE a.subscription_id = s.id
                       AND a.status IN ('pending', 'unknown')),
                    CASE WHEN s.status IN ('canceled', 'suspended') THEN
                      (SELECT json_extract(e.detail, '$.reason') FROM events e WHERE e.subscription_id = s.id
                         AND e.kind IN ('subscription.canceled', 'subscription.suspended') ORDER BY e.id DESC LIMIT 1)
                    END
             FROM subscriptions s
             LEFT JOIN periods o ON o.subscription_id = s.id AND o.state = 'open'
             WHERE (?1 IS NULL OR s.status = ?1) ORDER BY s.id",
        )?;
        let rows = st.query_map(params![status.map(Status::as_str)], |r| {
            let status: String = r.get(6)?;
            let billing = matches!(status.as_str(), "active" | "past_due");
            Ok(SubscriptionRow {
                id: r.get(0)?,
                customer_uid: r.get(1)?,
                plan: r.get(2)?,
                amount: r.get(3)?,
                currency: r.get(4)?,
                interval: r.get(5)?,
                status,
                source: r.get(7)?,
                next_due_at: r.get::<_, Option<i64>>(8)?.filter(|_| billing),
                paid_periods: r.get::<_, i64>(9)? as u64,
                next_attempt_at: r.get(10)?,
                declines: r.get::<_, Option<i64>>(11)?.unwrap_or(0) as u32,
                check_at: r.get(12)?,
                why: r.get(13)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    pub fn list_charges(
        &self,
        failed_only: bool,
        since: Option<i64>,
        subscription: Option<&str>,
        after_id: i64,
    ) -> Result<Vec<(i64, ChargeRow)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT a.id, a.subscription_id, a.period, a.attempt, a.merchant_uid, a.customer_uid, a.amount,
                    a.currency, a.status, a.failure, a.imp_uid, a.fail_reason, p.due_at, a.created_at, a.updated_at
             FROM attempts a JOIN periods p ON p.subscription_id = a.subscription_id AND p.period = a.period
             WHERE a.id > ?4 AND (?1 = 0 OR a.status = 'failed') AND (?2 IS NULL OR a.updated_at >= ?2)
               AND (?3 IS NULL OR a.subscription_id = ?3)
             ORDER BY a.id",
        )?;
        let rows = st.query_map(params![failed_only as i64, since, subscription, after_id], |r| {
            Ok((
                r.get(0)?,
                ChargeRow {
                    subscription_id: r.get(1)?,
                    period: r.get::<_, i64>(2)? as u64,
                    attempt: r.get::<_, i64>(3)? as u32,
                    merchant_uid: r.get(4)?,
                    customer_uid: r.get(5)?,
                    amount: r.get(6)?,
                    currency: r.get(7)?,
                    status: r.get(8)?,
                    failure: r.get(9)?,
                    imp_uid: r.get(10)?,
                    fail_reason: r.get(11)?,
                    due_at: r.get(12)?,
                    created_at: r.get(13)?,
                    updated_at: r.get(14)?,
                },
            ))
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// A subscription's next due instant (`None`: none, or no such subscription).
    pub fn next_due_at(&self, id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT next_due_at FROM subscriptions WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Every period of a subscription with its attempts, oldest first; and the reason of its latest status
    /// change (why it is canceled or suspended), if any.
    pub fn subscription_story(&self, id: &str) -> Result<(Vec<PeriodStory>, Option<String>)> {
        let mut periods: Vec<PeriodStory> = {
            let mut st = self.conn.prepare_cached(
                "SELECT period, due_at, merchant_uid, amount, currency, state, declines, next_attempt_at
                 FROM periods WHERE subscription_id = ?1 ORDER BY period",
            )?;
            let rows = st.query_map([id], |r| {
                Ok(PeriodStory {
                    period: r.get::<_, i64>(0)? as u64,
                    due_at: r.get(1)?,
                    merchant_uid: r.get(2)?,
                    amount: r.get(3)?,
                    currency: r.get(4)?,
                    state: r.get(5)?,
                    declines: r.get::<_, i64>(6)? as u32,
                    next_attempt_at: r.get(7)?,
                    attempts: Vec::new(),
                })
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut st = self.conn.prepare_cached(
            "SELECT period, attempt, status, failure, imp_uid, fail_reason, check_at, created_at, updated_at
             FROM attempts WHERE subscription_id = ?1 ORDER BY period, attempt",
        )?;
        let rows = st.query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                AttemptStory {
                    attempt: r.get::<_, i64>(1)? as u32,
                    status: r.get(2)?,
                    failure: r.get(3)?,
                    imp_uid: r.get(4)?,
                    fail_reason: r.get(5)?,
                    check_at: r.get(6)?,
                    created_at: r.get(7)?,
                    updated_at: r.get(8)?,
                },
            ))
        })?;
        for row in rows {
            let (period, a) = row?;
            if let Some(p) = periods.iter_mut().find(|p| p.period == period) {
                p.attempts.push(a);
            }
        }
        let why: Option<String> = self
            .conn
            .query_row(
                "SELECT json_extract(detail, '$.reason') FROM events
                 WHERE subscription_id = ?1 AND kind IN ('subscription.canceled', 'subscription.suspended')
                 ORDER BY id DESC LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok((periods, why))
    }

    /// Direct access for tests and diagnostics.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

fn subscriptions_to_open_in(
    conn: &Connection,
    now: i64,
    limit: usize,
    max_amount: i64,
) -> Result<Vec<DueSubscription>> {
    let mut st = conn.prepare_cached(&format!(
        "{SUB_SELECT} WHERE status IN ('active', 'past_due') AND next_due_at <= ?1 AND amount <= ?3
           AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = subscriptions.id AND p.state = 'open')
         ORDER BY next_due_at, id LIMIT ?2"
    ))?;
    let rows = st.query_map(params![now, limit as i64, max_amount], |r| {
        let due: i64 = r.get(11)?;
        Ok(sub_from_row(r)?.map(|sub| DueSubscription { sub, next_due_at: due }))
    })?;
    rows.map(|r| r.map_err(Into::into).and_then(|x| x)).collect()
}

/// Creates (status pending) the next attempt of up to `limit` open periods due at or before `now`, inside `tx`.
fn claim_in(tx: &Transaction<'_>, now: i64, limit: usize, max_amount: i64, timeout_ms: u64) -> Result<Vec<Attempt>> {
    let mut out = Vec::new();
    {
        let mut sel = tx.prepare_cached(
            "SELECT p.subscription_id, p.period, p.merchant_uid, p.customer_uid, p.amount, p.currency, p.name,
                    p.due_at, p.declines,
                    (SELECT count(*) FROM attempts a WHERE a.subscription_id = p.subscription_id
                       AND a.period = p.period) AS made, s.status = 'past_due'
             FROM periods p JOIN subscriptions s ON s.id = p.subscription_id
             WHERE p.state = 'open' AND p.next_attempt_at <= ?1 AND s.status IN ('active', 'past_due')
               AND p.amount <= ?3
             ORDER BY p.next_attempt_at, p.due_at, p.subscription_id LIMIT ?2",
        )?;
        let rows = sel.query_map(params![now, limit as i64, max_amount], |r| {
            Ok(Attempt {
                id: 0,
                subscription_id: r.get(0)?,
                period: r.get::<_, i64>(1)? as u64,
                attempt: r.get::<_, i64>(9)? as u32 + 1,
                merchant_uid: r.get(2)?,
                customer_uid: r.get(3)?,
                amount: r.get(4)?,
                currency: r.get(5)?,
                name: r.get(6)?,
                due_at: r.get(7)?,
                status: "pending".into(),
                tries: 0,
                declines: r.get::<_, i64>(8)? as u32,
                billing: true,
                past_due: r.get(10)?,
                timeout_ms: Some(timeout_ms),
                refused_resends: 0,
            })
        })?;
        for r in rows {
            out.push(r?);
        }
        let mut ins = tx.prepare_cached(
            "INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
               status, created_at, updated_at, timeout_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, ?9)",
        )?;
        let mut hold =
            tx.prepare_cached("UPDATE periods SET next_attempt_at = NULL WHERE subscription_id = ?1 AND period = ?2")?;
        for a in &mut out {
            ins.execute(params![
                a.subscription_id,
                a.period as i64,
                a.attempt as i64,
                a.merchant_uid,
                a.customer_uid,
                a.amount,
                a.currency,
                now,
                timeout_ms as i64
            ])?;
            a.id = tx.last_insert_rowid();
            hold.execute(params![a.subscription_id, a.period as i64])?;
        }
    }
    Ok(out)
}

const SUB_SELECT: &str = "SELECT id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
    anchor_date, anchor_period, next_period, next_due_at, status, source, skip_windows FROM subscriptions";

/// A row of [`SUB_SELECT`] (read by position: looking columns up by name was a measurable part of opening periods).
fn sub_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Subscription>> {
    let id: String = r.get(0)?;
    let interval = r.get_ref(6)?.as_str()?;
    let start = r.get_ref(7)?.as_str()?;
    let anchor = r.get_ref(8)?.as_str()?;
    let status = r.get_ref(12)?.as_str()?;
    let source = r.get_ref(13)?.as_str()?;
    let parsed = (|| -> Result<Subscription> {
        Ok(Subscription {
            customer_uid: r.get(1)?,
            plan_id: r.get(2)?,
            plan_name: r.get(3)?,
            amount: r.get(4)?,
            currency: r.get(5)?,
            interval: interval.parse::<Interval>().map_err(|e| anyhow!(e))?,
            start_date: start.parse::<NaiveDate>()?,
            anchor_date: anchor.parse::<NaiveDate>()?,
            anchor_period: r.get::<_, i64>(9)? as u64,
            next_period: r.get::<_, i64>(10)? as u64,
            status: Status::parse(status).ok_or_else(|| anyhow!("bad status {status:?}"))?,
            source: if source == "config" { Source::Config } else { Source::Manual },
            skip: match r.get_ref(14)?.as_str_or_null()? {
                Some(text) => serde_json::from_str(text).context("skip_windows")?,
                None => Vec::new(),
            },
            id: id.clone(),
        })
    })()
    .with_context(|| format!("subscription {id:?} has a corrupt row"));
    Ok(parsed)
}

/// Skip windows as stored: a JSON array of `[from, to]` (NULL when there are none).
fn skip_json(windows: &[(i64, i64)]) -> Option<String> {
    (!windows.is_empty()).then(|| serde_json::to_string(windows).unwrap_or_default())
}

const ATTEMPT_SELECT: &str = "SELECT a.id, a.subscription_id, a.period, a.attempt, a.merchant_uid, a.customer_uid,
    a.amount, a.currency, p.name, p.due_at, a.status, a.tries, p.declines,
    s.status IN ('active', 'past_due') AS billing, s.status = 'past_due' AS past_due, a.timeout_ms,
    a.refused_resends
  FROM attempts a
  JOIN periods p ON p.subscription_id = a.subscription_id AND p.period = a.period
  JOIN subscriptions s ON s.id = a.subscription_id";

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: r.get(0)?,
        subscription_id: r.get(1)?,
        period: r.get::<_, i64>(2)? as u64,
        attempt: r.get::<_, i64>(3)? as u32,
        merchant_uid: r.get(4)?,
        customer_uid: r.get(5)?,
        amount: r.get(6)?,
        currency: r.get(7)?,
        name: r.get(8)?,
        due_at: r.get(9)?,
        status: r.get(10)?,
        tries: r.get::<_, i64>(11)? as u32,
        declines: r.get::<_, i64>(12)? as u32,
        billing: r.get(13)?,
        past_due: r.get(14)?,
        timeout_ms: r.get::<_, Option<i64>>(15)?.map(|t| t.max(0) as u64),
        refused_resends: r.get::<_, i64>(16)? as u32,
    })
}

fn event(tx: &Transaction<'_>, now: i64, kind: &str, sub: Option<&str>, detail: serde_json::Value) -> Result<()> {
    tx.prepare_cached("INSERT INTO events (at, kind, subscription_id, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![now, kind, sub, detail.to_string()])?;
    Ok(())
}

fn current_status(tx: &Transaction<'_>, id: &str) -> Result<Option<Status>> {
    let s: Option<String> = tx
        .prepare_cached("SELECT status FROM subscriptions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(s.and_then(|s| Status::parse(&s)))
}

/// Moves subscription `id` to the status [`next_status`] decides for `cause`, given its status as it is inside `tx`,
/// and records the change (with `reason`) as an event. Returns its status before (`None`: no such subscription) and
/// the status it moved to (`None`: no change).
fn change_status(
    tx: &Transaction<'_>,
    id: &str,
    cause: Cause,
    now: i64,
    reason: &str,
) -> Result<Option<(Status, Option<Status>)>> {
    let Some(from) = current_status(tx, id)? else {
        return Ok(None);
    };
    let Some(to) = next_status(from, cause) else {
        return Ok(Some((from, None)));
    };
    tx.prepare_cached(
        "UPDATE subscriptions SET status = ?2, updated_at = ?3,
           suspended_at = CASE WHEN ?2 = 'suspended' THEN ?3 ELSE suspended_at END WHERE id = ?1",
    )?
    .execute(params![id, to.as_str(), now])?;
    event(
        tx,
        now,
        &format!("subscription.{}", to.as_str()),
        Some(id),
        json!({ "from": from.as_str(), "reason": reason }),
    )?;
    Ok(Some((from, Some(to))))
}

/// An operator's (or a config sync's) status change; returns the status before.
fn set_status_tx(tx: &Transaction<'_>, id: &str, to: Status, now: i64, reason: &str) -> Result<Option<Status>> {
    Ok(change_status(tx, id, Cause::Operator(to), now, reason)?.map(|(from, _)| from))
}

/// The statements that record a paid attempt, prepared once for a batch of outcomes.
struct PaidStatements<'a> {
    attempt: rusqlite::CachedStatement<'a>,
    period: rusqlite::CachedStatement<'a>,
}

fn record_one(
    tx: &Transaction<'_>,
    paid: &mut PaidStatements<'_>,
    it: &Recorded,
    now: i64,
    changes: &mut Vec<StatusChange>,
) -> Result<()> {
    let a = &it.attempt;
    let mut status_to = |cause: Cause, reason: &str, changes: &mut Vec<StatusChange>| -> Result<()> {
        if let Some((from, Some(to))) = change_status(tx, &a.subscription_id, cause, now, reason)? {
            changes.push(StatusChange { subscription_id: a.subscription_id.clone(), from, to });
        }
        Ok(())
    };
    // The event detail of an outcome that writes an event (a paid one does not).
    let detail = || {
        json!({
            "merchant_uid": a.merchant_uid, "period": a.period, "attempt": a.attempt, "amount": a.amount,
            "currency": a.currency,
        })
    };
    match &it.result {
        AttemptResult::Paid { imp_uid } => {
            paid.attempt.execute(params![a.id, imp_uid, now])?;
            paid.period.execute(params![a.subscription_id, a.period as i64, now])?;
            // The paid attempt row is the record of the payment (no separate event: this is the hot path of a
            // billing day). A past-due subscription becomes active again; any other status stays as it is.
            // A past-due subscription becomes active again (the status is read only then: no other status can
            // turn into past due while the attempt is out, as a subscription has one open period).
            if a.past_due {
                status_to(Cause::Paid, "paid", changes)?;
            }
        }
        AttemptResult::Unresolved { reason } | AttemptResult::ResendRefused { reason } => {
            let Decision::CheckAt(at) = it.decision else { bail!("unresolved outcome needs a check time") };
            let refused = matches!(it.result, AttemptResult::ResendRefused { .. }) as i64;
            tx.prepare_cached(
                "UPDATE attempts SET status = 'unknown', fail_reason = ?2, tries = tries + 1, check_at = ?3,
                   updated_at = ?4, refused_resends = refused_resends + ?5 WHERE id = ?1",
            )?
            .execute(params![a.id, reason, ts_ceil(at), now, refused])?;
            let mut d = detail();
            d["reason"] = json!(reason);
            d["check_at"] = json!(at.to_rfc3339());
            event(tx, now, "charge.unknown", Some(&a.subscription_id), d)?;
        }
        AttemptResult::Mismatch { reason } => {
            // Held: the period stays open with no next attempt, so nothing more is sent for it (and no later period
            // of the subscription opens) until an operator acts.
            tx.prepare_cached(
                "UPDATE attempts SET status = 'failed', failure = 'mismatch', fail_reason = ?2, check_at = NULL,
                   resolved_at = ?3, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![a.id, reason, now])?;
            tx.prepare_cached("UPDATE periods SET next_attempt_at = NULL WHERE subscription_id = ?1 AND period = ?2")?
                .execute(params![a.subscription_id, a.period as i64])?;
            let mut d = detail();
            d["reason"] = json!(reason);
            event(tx, now, "charge.mismatch", Some(&a.subscription_id), d)?;
        }
        AttemptResult::Abandoned { reason } => {
            tx.prepare_cached(
                "UPDATE attempts SET status = 'failed', failure = 'abandoned', fail_reason = ?2, check_at = NULL,
                   resolved_at = ?3, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![a.id, reason, now])?;
            // The period stays open: it is charged again only if the subscription bills again.
            tx.prepare_cached("UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2")?
                .execute(params![a.subscription_id, a.period as i64, now])?;
            let mut d = detail();
            d["reason"] = json!(reason);
            event(tx, now, "charge.abandoned", Some(&a.subscription_id), d)?;
        }
        AttemptResult::Declined { imp_uid, reason } => {
            record_failure(tx, it, now, "declined", imp_uid.as_deref(), reason, detail(), &mut status_to, changes)?;
        }
        AttemptResult::Rejected { reason } => {
            record_failure(tx, it, now, "rejected", None, reason, detail(), &mut status_to, changes)?;
        }
    }
    Ok(())
}

type StatusTo<'a> = dyn FnMut(Cause, &str, &mut Vec<StatusChange>) -> Result<()> + 'a;

#[allow(clippy::too_many_arguments)]
fn record_failure(
    tx: &Transaction<'_>,
    it: &Recorded,
    now: i64,
    failure: &str,
    imp_uid: Option<&str>,
    reason: &str,
    mut detail: serde_json::Value,
    status_to: &mut StatusTo<'_>,
    changes: &mut Vec<StatusChange>,
) -> Result<()> {
    let a = &it.attempt;
    tx.prepare_cached(
        "UPDATE attempts SET status = 'failed', failure = ?2, imp_uid = ?3, fail_reason = ?4, check_at = NULL,
           resolved_at = ?5, updated_at = ?5 WHERE id = ?1",
    )?
    .execute(params![a.id, failure, imp_uid, reason, now])?;
    if failure == "declined" {
        tx.prepare_cached("UPDATE periods SET declines = declines + 1 WHERE subscription_id = ?1 AND period = ?2")?
            .execute(params![a.subscription_id, a.period as i64])?;
    }
    detail["reason"] = json!(reason);
    detail["failure"] = json!(failure);
    match it.decision {
        Decision::RetryAt(at) => {
            tx.prepare_cached("UPDATE periods SET next_attempt_at = ?3 WHERE subscription_id = ?1 AND period = ?2")?
                .execute(params![a.subscription_id, a.period as i64, ts(at)])?;
            detail["next_retry"] = json!(at.to_rfc3339());
            event(tx, now, "charge.failed", Some(&a.subscription_id), detail)?;
            status_to(Cause::FailedWillRetry, reason, changes)?;
        }
        Decision::Exhausted(action) => {
            tx.prepare_cached(
                "UPDATE periods SET state = 'given_up', next_attempt_at = NULL, closed_at = ?3
                 WHERE subscription_id = ?1 AND period = ?2",
            )?
            .execute(params![a.subscription_id, a.period as i64, now])?;
            detail["final_action"] = json!(action.as_str());
            event(tx, now, "charge.failed", Some(&a.subscription_id), detail)?;
            let why = exhausted_reason(failure == "rejected", reason);
            status_to(Cause::Exhausted(action), &why, changes)?;
        }
        other => bail!("a failed attempt cannot be followed by {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let store = Store::open(&dir.path().join("billd.sqlite3")).unwrap();
        store
            .conn()
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2499)
                 INSERT INTO subscriptions SELECT 's' || i, 'c', 'p', 'P', 100, 'KRW', '1 month', '2025-01-01',
                   '2025-01-01', 0, 2, 5000, 'active', 'manual', 0, 0, NULL, NULL FROM n;
                 INSERT INTO periods SELECT id, 1, 10, 'm-' || id, 'c', 100, 'KRW', 'P', 'open', 0, NULL, 10, NULL
                   FROM subscriptions;
                 INSERT INTO attempts (subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency,
                   status, check_at, created_at, updated_at)
                 SELECT subscription_id, 1, 1, merchant_uid, 'c', 100, 'KRW',
                   CASE WHEN CAST(substr(subscription_id, 2) AS INTEGER) % 2 = 0 THEN 'pending' ELSE 'unknown' END, 20, 10, 10 FROM periods;",
            )
            .unwrap();
        let (mut seen, mut after) = (std::collections::BTreeSet::new(), None::<(String, u64)>);
        loop {
            let page = store.unresolved_after(30, after.as_ref().map(|(s, p)| (s.as_str(), *p)), 1000).unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.subscription_id.clone(), last.period));
            for a in page {
                assert!(seen.insert(a.merchant_uid), "returned twice");
            }
        }
        assert_eq!(seen.len(), 2500);
        // Before the unknown ones' check time only the pending ones are due.
        assert_eq!(store.unresolved_after(15, None, 5000).unwrap().len(), 1250);
    }

    #[test]
    fn a_late_answer_replaces_abandoned_but_nothing_replaces_a_settled_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("billd.sqlite3")).unwrap();
        let charge = OneTimeCharge {
            merchant_uid: "m-1".into(),
            customer_uid: None,
            name: "n".into(),
            amount: 100,
            currency: "KRW".into(),
            card_masked: "424242******4242".into(),
        };
        let (id, tries) = store.begin_one_time(&charge, 1, 5000, 100, None).unwrap().unwrap();
        assert_eq!(store.begin_one_time(&charge, 1, 5000, 100, None).unwrap(), None, "a second send of it");
        // A pass found no record of it and closed it; the command's answer then arrives: paid.
        assert!(store.finish_one_time(id, tries, "failed", Some("abandoned"), None, Some("no record"), 2).unwrap());
        assert!(store.finish_one_time(id, tries, "paid", None, Some("imp_1"), None, 3).unwrap());
        assert_eq!(store.one_time("m-1").unwrap().map(|s| s.status), Some("paid".to_string()));
        // A settled payment is not replaced.
        assert!(!store.finish_one_time(id, tries, "failed", Some("abandoned"), None, None, 4).unwrap());
        assert_eq!(
            store.one_time("m-1").unwrap().map(|s| (s.status, s.imp_uid)),
            Some(("paid".into(), Some("imp_1".into())))
        );
    }

    #[test]
    fn migration_4_keeps_every_row_and_every_guarantee() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("billd.sqlite3");
        v3_database(&path);
        let mut store = Store::open(&path).unwrap();
        let c = store.conn();
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
        let schema: String =
            c.query_row("SELECT sql FROM sqlite_schema WHERE name = 'periods'", [], |r| r.get(0)).unwrap();
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
        let unresolved = store.unresolved(600, 10).unwrap();
        assert_eq!(
            unresolved.iter().map(|a| (a.merchant_uid.as_str(), a.tries)).collect::<Vec<_>>(),
            [("billd-s2-0", 1)]
        );
        assert!(store.unresolved(400, 10).unwrap().is_empty(), "its check is not due before check_at");
        let claimed = store.claim_due(2000, 10, 5000).unwrap();
        assert_eq!(claimed.len(), 1);
        let a = &claimed[0];
        assert_eq!((a.merchant_uid.as_str(), a.attempt, a.declines, a.past_due), ("billd-s1-1", 2, 1, true));
        assert_eq!(store.next_wake().unwrap(), Some(500));
    }
}
