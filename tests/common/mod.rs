//! Test harness: a real sandbox on 127.0.0.1, a real config and book per test, the real `billd` binary.
//!
//! The book is a SQLite file in the test's folder, or a PostgreSQL database given at setup ([`Setup::postgres`]);
//! the harness reads it through [`World::query`], which runs on either ([`World::db`] is SQLite's only).
//!
//! Every [`World`] checks, when it is dropped at the end of a test that did not fail, that no charge request
//! billd sent repeated a merchant_uid the gateway had already paid or was still charging (the sandbox's request
//! log, `at_arrival` `paid` or `in_flight`). A test that provokes such a request on purpose says why with
//! [`World::expect_repeat_requests`].
#![allow(dead_code)]

use billd_sandbox::{AtArrival, Endpoint, LedgerEntry, RequestLogEntry, Sandbox, SandboxConfig};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

#[allow(unused_imports)] // not every test binary uses the test cards
pub use billd_sandbox::cards;
#[allow(unused_imports)] // not every test binary reads the book
pub use book::lit;

pub mod book;

/// One test's world: a temp folder with schedules.toml and the database, and a sandbox gateway.
pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub config: PathBuf,
    /// The book's PostgreSQL URL ([`Setup::postgres`]) and a client of it; `None`: `billd.sqlite3` in `dir`.
    postgres: Option<book::Postgres>,
    /// Why this test sends a repeat request on purpose ([`World::expect_repeat_requests`]); `None`: it must not.
    repeats_expected: RefCell<Option<String>>,
}

pub struct Setup<'a> {
    pub sandbox: SandboxConfig,
    pub timezone: &'a str,
    pub charge_time: &'a str,
    pub timeout: &'a str,
    pub concurrency: u32,
    pub dunning: &'a str,
    /// `[[plans]]` and `[[subscriptions]]` entries.
    pub body: &'a str,
    /// The book on PostgreSQL at this URL (`billing.database`, kept by every [`World::write_config`]); `None`
    /// (the default): SQLite, `billd.sqlite3` in the test's folder.
    pub postgres: Option<&'a str>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            sandbox: SandboxConfig::default(),
            timezone: "Asia/Seoul",
            charge_time: "10:00",
            timeout: "5s",
            concurrency: 4,
            dunning: "retry_after = [\"1d\", \"2d\", \"4d\"]\non_exhausted = \"cancel\"",
            body: "",
            postgres: None,
        }
    }
}

pub const MONTHLY: &str = r#"
[[plans]]
id = "monthly"
name = "Monthly plan"
amount = 9900
interval = "1 month"
"#;

impl World {
    pub fn new(setup: Setup<'_>) -> World {
        let sandbox = Sandbox::start(setup.sandbox.clone()).expect("sandbox starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("schedules.toml");
        let postgres = setup.postgres.map(book::Postgres::new);
        let world = World { dir, sandbox, config, postgres, repeats_expected: RefCell::new(None) };
        world.write_config(&setup);
        world
    }

    /// Writes the config; its `billing.database` is the world's book whatever `setup.postgres` says.
    pub fn write_config(&self, setup: &Setup<'_>) {
        let text = format!(
            "[billing]\ntimezone = \"{}\"\ncharge_time = \"{}\"\ndatabase = \"{}\"\n\n\
             [gateway]\nbase_url = \"{}\"\nimp_key = \"imp_sandbox_key\"\ntimeout = \"{}\"\nconcurrency = {}\n\n\
             [dunning]\n{}\n{}",
            setup.timezone,
            setup.charge_time,
            self.postgres.as_ref().map_or("billd.sqlite3", |p| p.url.as_str()),
            self.sandbox.base_url(),
            setup.timeout,
            setup.concurrency,
            setup.dunning,
            setup.body
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// A `billd` command for this world (the secret comes from the environment, never argv).
    pub fn billd(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("billd"));
        c.arg("--config")
            .arg(&self.config)
            .env("BILLD_GATEWAY__IMP_SECRET", "imp_sandbox_secret")
            .env("BILLD_LOG", "info")
            .env_remove("BILLD_CONFIG")
            .env_remove("BILLD_WEBHOOKS__SECRET")
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    /// Runs `billd tick --as-of AS_OF` (with `--simulate` when AS_OF is ahead of the real time) and asserts it
    /// exits 0.
    pub fn tick(&self, as_of: &str) -> Output {
        let mut cmd = self.billd();
        cmd.args(["tick", "--as-of", as_of]);
        if future(as_of) {
            cmd.arg("--simulate");
        }
        let out = cmd.output().expect("run billd");
        assert!(
            out.status.success(),
            "billd tick --as-of {as_of} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Ticks once a day at `hh:mm` local (given as an RFC 3339 offset) from `from` to `to` inclusive.
    pub fn tick_daily(&self, from: &str, to: &str, time_and_offset: &str) {
        let mut d: chrono::NaiveDate = from.parse().unwrap();
        let end: chrono::NaiveDate = to.parse().unwrap();
        while d <= end {
            self.tick(&format!("{d}T{time_and_offset}"));
            d = d.succ_opt().unwrap();
        }
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.sandbox.ledger()
    }

    /// Waits until the gateway has no request in progress (a `charge_later_random` charge whose client was killed
    /// or gave up). A test that moves billd's clock (`--as-of`) past the quiet period faster than real time calls
    /// this first: by then the real gateway would have finished.
    pub fn wait_for_gateway_idle(&self) {
        let start = std::time::Instant::now();
        while self.sandbox.requests_in_progress() > 0 {
            assert!(start.elapsed() < std::time::Duration::from_secs(60), "the gateway is still charging after 60 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sleeps until the real quiet period of every unresolved request in the database is over (twice the timeout
    /// each was sent with, counted from the real instant it may have left), so that the next pass may look it up
    /// and resend it. The quiet period is real time by design (no billing instant shortens it); tests keep it short
    /// with short gateway timeouts.
    pub fn wait_quiet(&self) {
        let until = self.int(
            "SELECT max(t) FROM (
               SELECT doubt_wall_ms + 2 * coalesce(timeout_ms, 300000) AS t FROM attempts
                WHERE status IN ('pending', 'unknown') AND doubt_wall_ms IS NOT NULL
               UNION ALL
               SELECT doubt_wall_ms + 2 * coalesce(timeout_ms, 300000) FROM one_time_charges
                WHERE status IN ('pending', 'unknown') AND doubt_wall_ms IS NOT NULL) AS q",
        );
        let Some(until) = until else { return };
        let now = chrono::Utc::now().timestamp_millis();
        let wait = until - now + 50;
        assert!(wait < 120_000, "a quiet period of {wait} ms: too long for a test (use a short gateway timeout)");
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_millis(wait as u64));
        }
    }

    /// The sandbox's request log: every `again`, `onetime` and `cancel` as it arrived.
    pub fn requests(&self) -> Vec<RequestLogEntry> {
        self.sandbox.requests()
    }

    /// How many charge requests (`again` or `onetime`) for `merchant_uid` reached the gateway, whether they
    /// charged anything or not.
    pub fn sent(&self, merchant_uid: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.endpoint != Endpoint::Cancel && r.merchant_uid.as_deref() == Some(merchant_uid))
            .count()
    }

    /// Charge requests per merchant_uid.
    pub fn sent_by_merchant_uid(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.requests().into_iter().filter(|r| r.endpoint != Endpoint::Cancel) {
            *out.entry(r.merchant_uid.unwrap_or_default()).or_default() += 1;
        }
        out
    }

    /// Charge requests that named `customer_uid`.
    pub fn sent_for(&self, customer_uid: &str) -> Vec<RequestLogEntry> {
        self.requests()
            .into_iter()
            .filter(|r| r.endpoint != Endpoint::Cancel && r.customer_uid.as_deref() == Some(customer_uid))
            .collect()
    }

    /// This test sends a request for a paid or in-flight merchant_uid on purpose; `why` says why (required). The
    /// check at the end of the test is then skipped (the repeats are printed).
    pub fn expect_repeat_requests(&self, why: &str) {
        assert!(!why.trim().is_empty(), "expect_repeat_requests needs a reason");
        *self.repeats_expected.borrow_mut() = Some(why.to_string());
    }

    /// Requests that arrived for a merchant_uid already paid or still being charged at the gateway.
    pub fn repeat_requests(&self) -> Vec<RequestLogEntry> {
        self.requests().into_iter().filter(|r| r.at_arrival != AtArrival::New).collect()
    }

    /// Asserts no request hit a paid or in-flight merchant_uid; the failure lists each such request with every
    /// request for its merchant_uid before it.
    pub fn assert_no_repeat_requests(&self) {
        let log = self.requests();
        let repeats: Vec<&RequestLogEntry> = log.iter().filter(|r| r.at_arrival != AtArrival::New).collect();
        if repeats.is_empty() {
            return;
        }
        panic!(
            "billd sent {} request(s) for a merchant_uid the gateway had paid or was still charging:\n{}",
            repeats.len(),
            describe_repeats(&log)
        );
    }

    /// Paid payments at the gateway, per merchant_uid (asserting there is at most one for each).
    pub fn paid_by_merchant_uid(&self) -> BTreeMap<String, LedgerEntry> {
        let mut out = BTreeMap::new();
        for e in self.ledger().into_iter().filter(|e| e.status == "paid") {
            let m = e.merchant_uid.clone();
            if let Some(first) = out.insert(m.clone(), e) {
                let sent = self.requests();
                panic!(
                    "two paid payments for merchant_uid {m} (the first {}); the requests for it:\n{}",
                    first.imp_uid,
                    describe_requests_for(&sent, &m)
                );
            }
        }
        out
    }

    /// Paid merchant_uids of one customer, in the order the gateway charged them.
    pub fn paid_for(&self, customer_uid: &str) -> Vec<String> {
        self.ledger()
            .into_iter()
            .filter(|e| e.status == "paid" && e.customer_uid.as_deref() == Some(customer_uid))
            .map(|e| e.merchant_uid)
            .collect()
    }

    pub fn attempts_for(&self, customer_uid: &str) -> Vec<LedgerEntry> {
        self.ledger().into_iter().filter(|e| e.customer_uid.as_deref() == Some(customer_uid)).collect()
    }

    /// The SQLite book (a test that reads it with rusqlite runs on SQLite only: [`World::query`] runs on either).
    pub fn db(&self) -> rusqlite::Connection {
        assert!(
            self.postgres.is_none(),
            "World::db opens the SQLite book; this world's is on PostgreSQL (World::query)"
        );
        rusqlite::Connection::open(self.dir.path().join("billd.sqlite3")).expect("open db")
    }

    /// Whether the book is on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs one SQL query (literals only, no parameters: see [`lit`]; SQL both stores take) on the book, SQLite or
    /// PostgreSQL: its rows, each value as text (integers in decimal), `None` for NULL. An error (no such table
    /// before billd has created the book, say) is returned, not a failure.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        match &self.postgres {
            Some(pg) => pg.query(sql),
            None => book::sqlite_query(&self.db(), sql),
        }
    }

    /// [`World::query`]'s rows, failing the test on an error.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The integer in the first column of the first row (`None`: NULL or no row), failing the test on an error.
    pub fn int(&self, sql: &str) -> Option<i64> {
        self.rows(sql).first().and_then(|r| r.first().cloned().flatten()).map(|v| v.parse().expect("an integer"))
    }

    pub fn status_of(&self, sub: &str) -> String {
        let rows = self.rows(&format!("SELECT status FROM subscriptions WHERE id = {}", lit(sub)));
        rows.first().and_then(|r| r[0].clone()).unwrap_or_else(|| panic!("no subscription {sub}"))
    }

    /// Local due dates of a subscription's periods, in order.
    pub fn due_dates(&self, sub: &str, tz: chrono_tz::Tz) -> Vec<String> {
        self.rows(&format!("SELECT due_at FROM periods WHERE subscription_id = {} ORDER BY period", lit(sub)))
            .into_iter()
            .map(|r| {
                let t: i64 = r[0].as_deref().expect("due_at").parse().unwrap();
                chrono::DateTime::from_timestamp(t, 0).unwrap().with_timezone(&tz).to_rfc3339()
            })
            .collect()
    }

    /// Asserts the database and the gateway agree: every paid attempt is a paid payment with the same imp_uid,
    /// at most one paid attempt per period, and nothing is left unresolved.
    pub fn assert_consistent(&self) {
        let paid = self.paid_by_merchant_uid();
        let rows: Vec<(String, String)> = self
            .rows("SELECT merchant_uid, imp_uid FROM attempts WHERE status = 'paid'")
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect();
        if rows.len() != paid.len() {
            // Name the payments billd did not record as paid, with the rows it has for them.
            let recorded: std::collections::BTreeSet<&str> = rows.iter().map(|(m, _)| m.as_str()).collect();
            let mut detail = String::new();
            for m in paid.keys().filter(|m| !recorded.contains(m.as_str())) {
                let attempts: Vec<String> = self
                    .rows(&format!(
                        "SELECT attempt, status, failure, fail_reason, check_at FROM attempts WHERE merchant_uid = {}",
                        lit(m)
                    ))
                    .into_iter()
                    .map(|r| format!("attempt {:?} {:?} {:?} {:?} check_at {:?}", r[0], r[1], r[2], r[3], r[4]))
                    .collect();
                detail += &format!("  {m}: {attempts:?}\n");
            }
            panic!(
                "paid attempts in the db ({}) vs paid payments at the gateway ({}); not recorded as paid:\n{detail}",
                rows.len(),
                paid.len()
            );
        }
        for (m, imp) in rows {
            let e = paid.get(&m).unwrap_or_else(|| panic!("db says {m} paid, the gateway does not"));
            assert_eq!(e.imp_uid, imp, "imp_uid of {m}");
        }
        let unresolved = self.int("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')");
        assert_eq!(unresolved, Some(0), "unresolved attempts left");
        if self.on_postgres() {
            // The book was on PostgreSQL all along: billd never fell back to a SQLite file.
            let file = self.dir.path().join("billd.sqlite3");
            assert!(!file.exists(), "{} exists, but this world's book is on PostgreSQL", file.display());
        }
    }

    pub fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        match self.repeats_expected.borrow().as_deref() {
            Some(why) => {
                let log = self.requests();
                if log.iter().any(|r| r.at_arrival != AtArrival::New) {
                    println!("repeat requests, expected ({why}):\n{}", describe_repeats(&log));
                }
            }
            None => self.assert_no_repeat_requests(),
        }
    }
}

/// Every request for `merchant_uid`, with its arrival in ms after the first request of the log.
pub fn describe_requests_for(log: &[RequestLogEntry], merchant_uid: &str) -> String {
    let t0 = log.first().map_or(0, |f| f.arrived_at_ms);
    log.iter()
        .filter(|e| e.merchant_uid.as_deref() == Some(merchant_uid))
        .map(|e| format!("  #{} {:?} +{} ms at_arrival={:?}\n", e.seq, e.endpoint, e.arrived_at_ms - t0, e.at_arrival))
        .collect()
}

/// Each request that was not `new`, after the requests for the same merchant_uid that came before it.
pub fn describe_repeats(log: &[RequestLogEntry]) -> String {
    let mut out = String::new();
    for r in log.iter().filter(|r| r.at_arrival != AtArrival::New) {
        out += &format!(
            "  #{} {:?} {} {} at_arrival={:?}; before it:\n",
            r.seq,
            r.endpoint,
            r.merchant_uid.as_deref().unwrap_or("-"),
            r.customer_uid.as_deref().unwrap_or("-"),
            r.at_arrival
        );
        let t0 = log.first().map_or(0, |f| f.arrived_at_ms);
        for e in log.iter().filter(|e| e.seq < r.seq && e.merchant_uid == r.merchant_uid) {
            out += &format!(
                "      #{} {:?} +{} ms at_arrival={:?}\n",
                e.seq,
                e.endpoint,
                e.arrived_at_ms - t0,
                e.at_arrival
            );
        }
        out += &format!("      (#{} came +{} ms after the first request of the log)\n", r.seq, r.arrived_at_ms - t0);
    }
    out
}

/// A test that cannot run here (a tool it needs is missing) says so with `SKIPPED: <reason>` and returns; under
/// CI (`CI=true`), where `.ci/run` installs everything the tests need, it fails instead: a skip there would hide
/// a missing install step.
pub fn skip(reason: &str) {
    println!("SKIPPED: {reason}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "SKIPPED under CI=true, where nothing may be skipped: {reason} (.ci/run must install what this test needs)"
    );
}

/// Waits (at most 30 s, polling every 20 ms) until `cond` holds; fails naming `what` otherwise.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A process (a daemon) killed when the test ends, passed or failed.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether an RFC 3339 instant is ahead of the real time (a tick at it needs `--simulate`).
pub fn future(as_of: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(as_of).is_ok_and(|t| t > chrono::Utc::now())
}

/// A `[[subscriptions]]` entry with `catch_up = true`: its start may lie more than one period back (every period
/// since is charged when it is added). For tests that replay history or catch up on purpose; without it such a start
/// is refused when the entry is added (issue 21, 2).
pub fn sub_catch_up(id: &str, customer: &str, plan: &str, start: &str) -> String {
    format!("{}catch_up = true\n", sub(id, customer, plan, start))
}

/// A `[[subscriptions]]` entry.
pub fn sub(id: &str, customer: &str, plan: &str, start: &str) -> String {
    format!(
        "\n[[subscriptions]]\nid = \"{id}\"\ncustomer_uid = \"{customer}\"\nplan = \"{plan}\"\nstart = \"{start}\"\n"
    )
}

/// A small deterministic PRNG (xorshift64*) seeded from `BILLD_TEST_SEED` or the clock; the seed is printed, so
/// a failing run can be replayed. `below(n)` is in `0..n` (0 when `n` is 0).
pub struct Rng(u64);

impl Rng {
    /// A generator drawing from `seed` (one derived from the test's, say).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn from_env() -> Rng {
        let seed = std::env::var("BILLD_TEST_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("seed: {seed} (rerun with BILLD_TEST_SEED={seed})");
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// A card as the card commands read it from stdin (JSON).
pub fn card_json(number: &str) -> String {
    format!(r#"{{"card_number": "{number}", "expiry": "2031-12", "birth": "900101", "pwd_2digit": "12"}}"#)
}

/// Runs billd with `card` (see [`card_json`]) on stdin.
pub fn with_card(w: &World, args: &[&str], card: &str) -> Output {
    use std::io::Write;
    let mut child = w
        .billd()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits before reading the card: a broken pipe is its answer, not an error.
    match child.stdin.take().unwrap().write_all(card.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.unwrap(),
    }
    child.wait_with_output().unwrap()
}

/// A command's stdout and stderr, together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): the status code and the whole answer, if it answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}
