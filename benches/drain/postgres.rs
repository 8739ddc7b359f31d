//! Phase 6 (issue 27): billd on a PostgreSQL book (the tests' throwaway cluster, durable settings): 1, 2 and 3 daemons
//! sharing one book against a 50 ms gateway, a billd-bound tick next to SQLite's, a large book idle and starting.

use super::{
    AS_OF, BILLING_DAY, CONCURRENCY, DB_FILE, Daemon, Figure, Goal, Res, Sizes, World, bare_client, cpu_seconds,
    median, memory, pg, report, sandbox,
};
use billd_sandbox::{Endpoint, Latency, SandboxConfig};
use chrono::{DateTime, Duration as Days, FixedOffset, Utc};
use std::time::{Duration, Instant};

/// The phase: skipped (saying so; failing under `CI=true`) where PostgreSQL is not installed.
pub(super) fn phase(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let Some(probe) = pg::database() else { return Ok(()) };
    durable(&probe)?;
    println!(
        "   PostgreSQL {} in {} (fsync, synchronous_commit and full_page_writes on)",
        probe.cluster().version(),
        place(&probe).display()
    );
    // `--pg-parts daemons,bound,book`: some of the three (all by default).
    let args: Vec<String> = std::env::args().collect();
    let parts = args.iter().position(|a| a == "--pg-parts").and_then(|i| args.get(i + 1));
    let part = |name: &str| parts.is_none_or(|p| p.split(',').any(|x| x.trim() == name));
    if part("daemons") {
        daemons(sizes, out)?;
    }
    if part("bound") {
        billd_bound(sizes, &place(&probe), out)?;
    }
    if part("book") {
        large_book(sizes, out)?;
    }
    Ok(())
}

/// The folder the cluster's private directory is in (`/dev/shm` when it is a tmpfs with room): the SQLite book
/// compared with it is put there too.
fn place(db: &pg::PgDb) -> std::path::PathBuf {
    db.cluster().dir().parent().map_or_else(std::env::temp_dir, |p| p.to_path_buf())
}

/// The tests' cluster runs with durability off; a benchmark compares durable writes, as billd's SQLite makes them
/// (`synchronous=FULL`).
fn durable(db: &pg::PgDb) -> Res<()> {
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        db.sql(&format!("ALTER SYSTEM SET {setting} = on"));
    }
    db.sql("SELECT pg_reload_conf()");
    // pg_reload_conf() only signals the postmaster: wait until a new session sees the settings.
    let t = Instant::now();
    while db.sql("SELECT current_setting('fsync') || current_setting('synchronous_commit')") != "onon" {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("the cluster did not take fsync = on within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn fresh_database() -> Res<pg::PgDb> {
    pg::database().ok_or_else(|| "the PostgreSQL cluster went away".to_string())
}

/// The billing day's due instant (10:00 in Seoul).
fn due_instant() -> Res<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(&format!("{BILLING_DAY}T10:00:00+09:00")).map_err(|e| e.to_string())
}

/// Target 8a: N daemons (1, 2, 3), 64 in flight each at 50 ms, can do at most N × 1,280 charges/s. N × `latency_subs`
/// due; the daemons start a few seconds before the due instant (each one's billing clock where the first one's is),
/// so the day begins on all of them. The figure is the gateway's: charges over the time from the first request's
/// arrival to the last one's answer.
fn daemons(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let latency = Duration::from_millis(50);
    let lead = Duration::from_secs(8);
    for n in 1..=3usize {
        let db = fresh_database()?;
        let sandbox = sandbox(SandboxConfig { latency: Latency::Fixed(latency), ..SandboxConfig::default() })?;
        let w = World::with_book(&sandbox, None, db.url(), &std::env::temp_dir())?;
        let total = sizes.latency_subs * n;
        w.import(total, "s", |_| BILLING_DAY.to_string())?;
        let start = due_instant()? - Days::from_std(lead).map_err(|e| e.to_string())?;
        let began = Instant::now();
        let mut running = Vec::new();
        for _ in 0..n {
            let as_of = start + Days::from_std(began.elapsed()).map_err(|e| e.to_string())?;
            running.push(Daemon::start_at(&w, &as_of.to_rfc3339())?);
        }
        if began.elapsed() + Duration::from_secs(1) > lead {
            return Err(format!("{n} daemons were not all READY a second before the due instant"));
        }
        let mut sent = vec![0usize; n];
        let deadline = Instant::now() + Duration::from_secs(600);
        while sent.iter().sum::<usize>() < total {
            for (k, d) in running.iter_mut().enumerate() {
                sent[k] += d.pass_done(Duration::from_millis(50)).unwrap_or(0);
            }
            if Instant::now() > deadline {
                return Err(format!("{n} daemons sent {sent:?} of {total} within 10 minutes"));
            }
        }
        for d in &mut running {
            d.stop()?;
        }
        let arrivals: Vec<i64> =
            sandbox.requests().iter().filter(|r| r.endpoint == Endpoint::Again).map(|r| r.arrived_at_ms).collect();
        let paid = sandbox.ledger().iter().filter(|e| e.status == "paid").count();
        if arrivals.len() != total || paid != total {
            return Err(format!("{total} due: {} requests, {paid} paid at the gateway", arrivals.len()));
        }
        let (first, last) = (arrivals.iter().min().copied().unwrap_or(0), arrivals.iter().max().copied().unwrap_or(0));
        let window = (last - first) as f64 / 1e3 + latency.as_secs_f64();
        let rate = total as f64 / window;
        println!("   {n} daemon(s): {total} charges in {window:.2} s (each sent {sent:?}): {rate:.0}/s");
        report(
            out,
            Figure {
                target: "8",
                what: format!(
                    "{n} daemon{} on one PostgreSQL book: {total} due, 50 ms, concurrency 64 each",
                    if n == 1 { "" } else { "s" }
                ),
                measured: rate,
                limit: (n * CONCURRENCY) as f64 / latency.as_secs_f64(),
                unit: "charges/s",
                goal: Goal::AtLeast(0.90),
            },
        );
    }
    Ok(())
}

/// Target 8b: a tick on a PostgreSQL book next to the same tick on a SQLite book in the same folder (`bound_subs`
/// due, zero latency, concurrency 64, fresh sandbox and book each), alternating, and the bare client loop.
fn billd_bound(sizes: &Sizes, place: &std::path::Path, out: &mut Vec<Figure>) -> Res<()> {
    let n = sizes.bound_subs;
    let (mut on_pg, mut on_sqlite, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=sizes.rounds {
        let order = if round % 2 == 1 { [true, false] } else { [false, true] };
        for postgres in order {
            let db = if postgres { Some(fresh_database()?) } else { None };
            let sandbox = sandbox(SandboxConfig::default())?;
            let book = db.as_ref().map_or(DB_FILE, |d| d.url());
            let w = World::with_book(&sandbox, None, book, place)?;
            w.import(n, "s", |_| BILLING_DAY.to_string())?;
            let pass = w.tick(AS_OF, &[])?;
            pass.expect_all_paid(n)?;
            let rate = pass.sent as f64 / pass.charge_s;
            let store = if postgres { "PostgreSQL" } else { "SQLite" };
            println!(
                "   round {round}: {store}: {n} charges in {:.2} s: {rate:.0}/s (CPU of billd {:.0} µs a charge)",
                pass.charge_s,
                pass.cpu_s * 1e6 / n as f64
            );
            if postgres { &mut on_pg } else { &mut on_sqlite }.push(rate);
        }
        let (b, _) = bare_client(n, Latency::None)?;
        println!("   round {round}: bare client: {b:.0}/s");
        bare.push(b);
    }
    let (pg_rate, sqlite_rate, bare_rate) = (median(&mut on_pg), median(&mut on_sqlite), median(&mut bare));
    let runs = sizes.rounds;
    report(
        out,
        Figure {
            target: "8",
            what: format!(
                "billd-bound on PostgreSQL: {n} due, 0 ms, concurrency 64, vs a bare client (medians of {runs})"
            ),
            measured: pg_rate,
            limit: bare_rate,
            unit: "charges/s",
            goal: Goal::Info,
        },
    );
    report(
        out,
        Figure {
            target: "8",
            what: format!(
                "  the same, PostgreSQL vs SQLite (both durable, books in the same folder; medians of {runs})"
            ),
            measured: pg_rate,
            limit: sqlite_rate,
            unit: "charges/s",
            goal: Goal::Info,
        },
    );
    Ok(())
}

/// What `billd import` writes of the large book (the rest is cloned in SQL).
const IMPORTED: usize = 20_000;

/// Target 8c: a large book on PostgreSQL (`book` subscriptions falling due over the four weeks after tomorrow): an
/// idle pass, the daemon's start-up (exec to READY), its idle CPU and memory.
fn large_book(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let db = fresh_database()?;
    let sandbox = sandbox(SandboxConfig::default())?;
    let w = World::with_book(&sandbox, None, db.url(), &std::env::temp_dir())?;
    let today = Utc::now().with_timezone(&chrono_tz::Asia::Seoul).date_naive();
    // `billd import` writes a row at a time (a few hundred rows/s here): it imports up to IMPORTED, and the rest of
    // the book is those rows cloned in SQL under new ids (`…-c2`, `…-c3`, …), falling due on the same days.
    let imported = sizes.book.min(IMPORTED);
    let t = Instant::now();
    w.import(imported, "b", |i| (today + Days::days(1 + (i % 28) as i64)).to_string())?;
    let import_s = t.elapsed().as_secs_f64();
    let copies = sizes.book.div_ceil(imported);
    if copies > 1 {
        let columns = db.sql(
            "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position) FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = 'subscriptions' AND is_generated = 'NEVER'",
        );
        let values = columns.replacen("id, ", "id || '-c' || g, ", 1);
        if !columns.starts_with("id, ") {
            return Err(format!("subscriptions' first column is not id: {columns}"));
        }
        db.sql(&format!(
            "INSERT INTO subscriptions ({columns}) SELECT {values} FROM subscriptions, generate_series(2, {copies}) g"
        ));
    }
    let rows: usize = db.sql("SELECT count(*) FROM subscriptions").parse().map_err(|e| format!("count: {e}"))?;
    println!(
        "   imported {imported} subscriptions in {import_s:.1} s ({:.0} rows/s), {rows} after cloning; database {}",
        imported as f64 / import_s,
        db.sql("SELECT pg_size_pretty(pg_database_size(current_database()))")
    );
    db.sql("VACUUM ANALYZE");
    let idle_pass = w.idle_pass()?;
    report(
        out,
        Figure {
            target: "8",
            what: format!("PostgreSQL: a pass with {rows} subscriptions, none due (median of 3)"),
            measured: idle_pass,
            limit: 200.0,
            unit: "ms",
            goal: Goal::Below,
        },
    );
    let mut starts = Vec::new();
    let mut cpu = 0.0;
    let mut hwm = 0.0;
    for k in 0..3 {
        let mut d = Daemon::start(&w)?;
        starts.push(d.ready_s);
        if k == 0 {
            std::thread::sleep(Duration::from_secs(1));
            let (cpu0, at0) = (cpu_seconds(d.pid())?, Instant::now());
            std::thread::sleep(sizes.idle);
            cpu = (cpu_seconds(d.pid())? - cpu0) / at0.elapsed().as_secs_f64();
            hwm = memory(d.pid())?.1;
        }
        d.stop()?;
    }
    println!("   daemon: READY after {starts:.2?} s; idle CPU {:.3}% of a core, RSS peak {hwm:.1} MB", cpu * 100.0);
    report(
        out,
        Figure {
            target: "8",
            what: format!("PostgreSQL: exec to READY, {rows} subscriptions (median of 3)"),
            measured: median(&mut starts),
            limit: 2.0,
            unit: "s",
            goal: Goal::Below,
        },
    );
    report(
        out,
        Figure {
            target: "8",
            what: format!("PostgreSQL: idle daemon CPU over {:.0} s, {rows} subscriptions", sizes.idle.as_secs_f64()),
            measured: cpu * 100.0,
            limit: 1.0,
            unit: "% of a core",
            goal: Goal::Below,
        },
    );
    Ok(())
}
