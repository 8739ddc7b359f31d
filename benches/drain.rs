//! Billing-day benchmark: the real `billd` binary against the in-process i'mport sandbox (loopback only).
//!
//! ```text
//! cargo bench --bench drain --features failpoints               # the full run (a few minutes): BENCHMARKS.md
//! cargo bench --bench drain --features failpoints -- --quick    # the same phases, small (seconds); CI runs it
//! cargo test --bench drain -- --quick       # as a test (debug build, only checks that every phase still works)
//! cargo bench --bench drain -- --only 1,2   # some phases: 1 latency, 2 billd-bound, 3 rate limit, 4 large book,
//!                                           # 5 webhooks to a slow app, 6 PostgreSQL
//! cargo bench --bench drain -- --only 6 --pg-parts book    # phase 6's parts: daemons, bound, book (all by default)
//! cargo bench --bench drain -- --only 2 --rounds 6   # phase 2 with 6 rounds (3 by default, 1 with --quick)
//! cargo bench --bench drain -- --store-only # phase 2's store-alone figure only (to profile the store)
//! ```
//!
//! Phase 4 crashes a tick with `BILLD_FAILPOINT`: a release build has that hook only with `--features failpoints`
//! (a debug build always has it).
//!
//! Webhooks (issue 26): the app is a receiver in this process (`drain/receiver.rs`, 127.0.0.1). Phase 2 also runs
//! `billd tick` and then `billd run --simulate --as-of …` with webhooks off and on (a receiver answering 200 at
//! once; `[webhooks] concurrency = 8`, the default), alternating which goes first by round, and reports on / off of
//! charges/s (`charge_ms` of `pass.done`). Events are written either way, so the ratio is delivery's cost. Phase 5
//! charges a billing day with webhooks off (the tick gives up the import's `subscription.created`, older than
//! `max_age` on the simulated clock, so only the day's `charge.paid` are pending), then starts `billd run` with
//! webhooks on to a receiver that answers each delivery after 50 ms, at most C at a time (C = `[webhooks]
//! concurrency` = 8, then 64): figure = events / (first arrival to last answer at the receiver), limit = C / 50 ms.
//!
//! Phase 6 (issue 27) runs billd on PostgreSQL: the tests' throwaway cluster (`tests/common/pg.rs`: the machine's
//! PostgreSQL, started by this process, skipped where it is not installed and failing then under `CI=true`), turned
//! durable (fsync, synchronous_commit, full_page_writes on). 1, 2 and 3 daemons on one book, 50 ms, 64 in flight each,
//! up before the due instant: charges/s at the gateway against N × 1,280; a billd-bound tick on PostgreSQL and on
//! SQLite (the two books in the same folder) next to the bare client; a large book's idle pass, start-up and idle CPU.
//!
//! Each phase starts its own sandbox with the latency or rate limit it needs, writes a `schedules.toml`, imports
//! the book with `billd import`, and runs `billd tick --as-of …` or `billd run`. Figures are printed next to
//! their limits, measured in the same run. No figure is asserted: a missed target is reported, not failed; only
//! broken behaviour (a charge missing, a 429, a crash) fails the run. Phase 2 also times the store alone (the SQLite
//! writes billd makes for each charge, on a copy of its database; one thread, no HTTP) and prints the ceiling that
//! leaves next to billd's own CPU a charge.

use billd::billing::dunning::Decision;
use billd::realtime::{RealClock, SystemClock};
use billd::store::sqlite;
use billd::store::{AttemptResult, Ledger, NewPeriod, Recorded, from_ts};
use billd_sandbox::{Latency, Sandbox, SandboxConfig, cards};
use chrono::{Duration as Days, Utc};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BILLD: &str = env!("CARGO_BIN_EXE_billd");
/// Billing keys in the sandbox; subscription `i` charges key `i % CUSTOMERS`.
const CUSTOMERS: usize = 1000;
const CONCURRENCY: usize = 64;
/// Local due dates in these phases are in the future (so `import` needs no `--catch-up`); ticks use `--as-of`.
const BILLING_DAY: &str = "2031-03-01";
const AS_OF: &str = "2031-03-01T10:00:30+09:00";
/// The database file in a world's folder (`billing.database`).
const DB_FILE: &str = "billd.sqlite3";
/// Where billd reads the webhook secret from (`config::webhooks::SECRET_VAR`).
const SECRET_VAR: &str = "BILLD_WEBHOOKS__SECRET";

#[path = "drain/receiver.rs"]
mod receiver;
use receiver::Receiver;

/// The throwaway PostgreSQL cluster of the tests (initdb and pg_ctl of the machine's PostgreSQL, started by this
/// process and stopped when it exits).
#[path = "../tests/common/pg.rs"]
mod pg;
#[path = "drain/postgres.rs"]
mod postgres;

/// What `pg` takes from the tests' common module: a phase whose tool is missing says so, and fails under `CI=true`.
mod common {
    pub fn skip(reason: &str) {
        println!("   SKIPPED: {reason}");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "SKIPPED under CI=true, where nothing may be skipped");
    }
}

type Res<T> = Result<T, String>;
type Phase = fn(&Sizes, &mut Vec<Figure>) -> Res<()>;

struct Sizes {
    latency_subs: usize,
    bound_subs: usize,
    rate_charges: usize,
    book: usize,
    book_due: usize,
    unresolved: usize,
    idle: Duration,
    /// Runs of billd and of the bare client in phase 2.
    rounds: usize,
    /// Phase 5: the `charge.paid` events of one billing day delivered to a slow app.
    webhook_events: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4, 5, 6]);
    let rounds: Option<usize> =
        args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok());
    let mut sizes = if quick {
        Sizes {
            latency_subs: 2_000,
            bound_subs: 5_000,
            rate_charges: 150,
            book: 20_000,
            book_due: 2_000,
            unresolved: 100,
            idle: Duration::from_secs(3),
            rounds: 1,
            webhook_events: 500,
        }
    } else {
        Sizes {
            latency_subs: 20_000,
            bound_subs: 50_000,
            rate_charges: 3_000,
            book: 1_000_000,
            book_due: 100_000,
            unresolved: 1_000,
            idle: Duration::from_secs(65),
            rounds: 3,
            webhook_events: 20_000,
        }
    };
    sizes.rounds = rounds.unwrap_or(sizes.rounds);
    println!("billd drain benchmark ({}), binary {BILLD}", if quick { "quick" } else { "full" });
    println!("machine: {}", machine());
    println!("load average at start: {}", load());
    if quick {
        println!(
            "quick mode: small sizes (a debug build under `cargo test`): the figures only show that every phase works"
        );
    }
    if args.iter().any(|a| a == "--store-only") {
        // Only phase 2's store-alone figure (for profiling the store: `perf record` this process).
        if let Err(e) = store_only(&sizes) {
            println!("store alone FAILED: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut results: Vec<Figure> = Vec::new();
    let mut failed = Vec::new();
    let phases: [(u32, &str, Phase); 6] = [
        (1, "latency-bound", latency_bound),
        (2, "billd-bound, webhooks off and on", billd_bound),
        (3, "rate-limited", rate_limited),
        (4, "large book, idle, start-up", large_book),
        (5, "webhooks: a billing day's events to a slow app", webhook_drain),
        (6, "PostgreSQL: 1, 2 and 3 daemons on one book, billd-bound next to SQLite, a large book", postgres::phase),
    ];
    for (n, name, phase) in phases {
        if !only.contains(&n) {
            continue;
        }
        println!("\n== phase {n}: {name}");
        let t = Instant::now();
        if let Err(e) = phase(&sizes, &mut results) {
            println!("phase {n} FAILED: {e}");
            failed.push(n);
        }
        println!("   (phase {n} took {:.1} s)", t.elapsed().as_secs_f64());
    }
    println!("\nload average at end: {}", load());
    println!("\n| # | target | measured | limit | ratio | goal | |");
    println!("|---|---|---|---|---|---|---|");
    for f in &results {
        println!("{}", f.row());
    }
    if !failed.is_empty() {
        println!("\nphases that could not run: {failed:?}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------------------------------------- results

/// One reported figure: `measured` next to `limit`, and the goal for `measured / limit`.
struct Figure {
    target: &'static str,
    what: String,
    measured: f64,
    limit: f64,
    unit: &'static str,
    goal: Goal,
}

enum Goal {
    /// measured / limit ≥ x
    AtLeast(f64),
    /// measured ≤ limit
    Below,
    /// |measured / limit - 1| ≤ x
    Within(f64),
    /// reported only
    Info,
}

impl Figure {
    fn ratio(&self) -> f64 {
        if self.limit == 0.0 { 0.0 } else { self.measured / self.limit }
    }

    fn row(&self) -> String {
        let (goal, met) = match self.goal {
            Goal::AtLeast(x) => (format!("≥ {:.0}%", x * 100.0), self.ratio() >= x),
            Goal::Below => ("< 100%".to_string(), self.ratio() < 1.0),
            Goal::Within(x) => (format!("100% ± {:.0}%", x * 100.0), (self.ratio() - 1.0).abs() <= x),
            Goal::Info => ("-".to_string(), true),
        };
        let mark = match self.goal {
            Goal::Info => "",
            _ if met => "met",
            _ => "MISSED",
        };
        format!(
            "| {} | {} | {} {} | {} {} | {:.1}% | {goal} | {mark} |",
            self.target,
            self.what,
            num(self.measured),
            self.unit,
            num(self.limit),
            self.unit,
            self.ratio() * 100.0
        )
    }
}

fn num(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

fn report(out: &mut Vec<Figure>, f: Figure) {
    println!("   {}", f.row());
    out.push(f);
}

// ------------------------------------------------------------------------------------------------- phases

/// Target 1: 64 in flight at 50 ms each can do at most 1,280 charges/s.
fn latency_bound(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let latency = Duration::from_millis(50);
    let sandbox = sandbox(SandboxConfig { latency: Latency::Fixed(latency), ..SandboxConfig::default() })?;
    let w = World::new(&sandbox, None)?;
    w.import(sizes.latency_subs, "s", |_| BILLING_DAY.to_string())?;
    let pass = w.tick(AS_OF, &[])?;
    pass.expect_all_paid(sizes.latency_subs)?;
    let rate = pass.sent as f64 / pass.charge_s;
    println!(
        "   {} charges in {:.2} s (process {:.2} s, pass {:.2} s)",
        pass.sent, pass.charge_s, pass.wall_s, pass.pass_s
    );
    let limit = CONCURRENCY as f64 / latency.as_secs_f64();
    report(
        out,
        Figure {
            target: "1",
            what: format!("latency-bound: {} due, 50 ms, concurrency 64", pass.sent),
            measured: rate,
            limit,
            unit: "charges/s",
            goal: Goal::AtLeast(0.95),
        },
    );
    report(
        out,
        Figure {
            target: "1",
            what: "  the same, whole `billd tick` process (exec to exit)".into(),
            measured: pass.sent as f64 / pass.wall_s,
            limit,
            unit: "charges/s",
            goal: Goal::Info,
        },
    );
    // What the sandbox's 50 ms (timer granularity and its own work included) lets any client reach.
    let (bare, _) = bare_client(sizes.latency_subs, Latency::Fixed(latency))?;
    report(
        out,
        Figure {
            target: "1",
            what: "  for reference: a bare client loop, same latency and concurrency, no database".into(),
            measured: bare,
            limit,
            unit: "charges/s",
            goal: Goal::Info,
        },
    );
    Ok(())
}

/// Target 2: billd against a bare client loop, zero latency, same sandbox settings and concurrency. Each round also
/// times the store alone on a copy of billd's database: the SQLite writes billd makes for each charge, nothing else.
fn billd_bound(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let n = sizes.bound_subs;
    let now = chrono::DateTime::parse_from_rfc3339(AS_OF).map_err(|e| format!("{AS_OF}: {e}"))?.timestamp();
    // Alternate the two, each time with a fresh sandbox, and compare medians (the machine is shared and noisy).
    let (mut bare, mut billd) = (Vec::new(), Vec::new());
    // CPU µs a charge: the bare rounds (client and sandbox), billd's rounds (billd, and the sandbox meanwhile), the
    // store alone.
    let (mut bare_cpu, mut billd_cpu, mut sandbox_cpu, mut store_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let us = |secs: f64| secs * 1e6 / n as f64;
    // charges/s with webhooks [off, on], of `billd tick` and of `billd run`.
    let mut hooks: [[Vec<f64>; 2]; 2] = Default::default();
    for round in 1..=sizes.rounds {
        let (b, cpu) = bare_client(n, Latency::None)?;
        println!(
            "   round {round}: bare client {n} charges: {b:.0}/s (CPU, client and sandbox: {:.0} µs a charge)",
            us(cpu)
        );
        bare.push(b);
        bare_cpu.push(us(cpu));
        let copy = {
            let sandbox = sandbox(SandboxConfig::default())?;
            let w = World::new(&sandbox, None)?;
            w.import(n, "s", |_| BILLING_DAY.to_string())?;
            let copy = w.copy_db()?;
            let pass = w.tick(AS_OF, &[])?;
            pass.expect_all_paid(n)?;
            let rate = pass.sent as f64 / pass.charge_s;
            println!(
                "   round {round}: billd {} charges in {:.2} s: {rate:.0}/s (process {:.2} s; the pass {:.2} s); CPU \
                 a charge: billd {:.0} µs, sandbox {:.0} µs",
                pass.sent,
                pass.charge_s,
                pass.wall_s,
                pass.pass_s,
                us(pass.cpu_s),
                us(pass.sandbox_cpu_s)
            );
            billd.push(rate);
            billd_cpu.push(us(pass.cpu_s));
            sandbox_cpu.push(us(pass.sandbox_cpu_s));
            copy
        };
        // The same book, the same instant, with billd's world and sandbox gone.
        let (intents, outcomes) = store_alone(&copy.path().join(DB_FILE), n, now)?;
        let (a, b) = (us(intents), us(outcomes));
        println!(
            "   round {round}: store alone: {n} charges, {:.1} µs a charge (intents {a:.1}, outcomes {b:.1}; one \
             thread, no HTTP)",
            a + b
        );
        store_cpu.push(a + b);
        // Webhooks off and on (issue 26), the same tick and then the same daemon drain, each with a fresh sandbox,
        // database and receiver; which of the two goes first alternates by round.
        let order = if round % 2 == 1 { [false, true] } else { [true, false] };
        for daemon in [false, true] {
            for on in order {
                let rate = with_webhooks(n, on, daemon)?;
                hooks[usize::from(daemon)][usize::from(on)].push(rate);
            }
        }
    }
    let (b, cpu) = bare_client(n, Latency::None)?;
    println!("   bare client once more: {b:.0}/s (CPU {:.0} µs a charge)", us(cpu));
    bare.push(b);
    bare_cpu.push(us(cpu));
    // Derived from the medians above (CPU a charge); reported only.
    let store = median(&mut store_cpu);
    let bare_total = median(&mut bare_cpu);
    println!(
        "   derived (medians): billd outside the store: {:.0} µs a charge (bare client loop: {:.0} µs)",
        median(&mut billd_cpu) - store,
        bare_total - median(&mut sandbox_cpu)
    );
    println!(
        "   derived (medians): ceiling with this store: {:.1}% of the bare client (if billd spent nothing beyond the \
         bare client's work and the store's writes)",
        bare_total / (bare_total + store) * 100.0
    );
    report(
        out,
        Figure {
            target: "2",
            what: format!(
                "billd-bound: {n} due, 0 ms, concurrency 64, vs a bare client loop (medians of {} and {} runs)",
                billd.len(),
                bare.len()
            ),
            measured: median(&mut billd),
            limit: median(&mut bare),
            unit: "charges/s",
            goal: Goal::AtLeast(0.70),
        },
    );
    for (daemon, [off, on]) in hooks.iter_mut().enumerate() {
        let (runs, how) = (on.len(), if daemon == 1 { "`billd run` drain" } else { "`billd tick`" });
        report(
            out,
            Figure {
                target: "2",
                what: format!(
                    "  {how}, webhooks on (a receiver answering 200 at once) vs off: {n} due, charges/s (medians of \
                     {runs} runs each)"
                ),
                measured: median(on),
                limit: median(off),
                unit: "charges/s",
                goal: Goal::AtLeast(0.90),
            },
        );
    }
    Ok(())
}

/// `--store-only`: phase 2's store-alone measurement alone, `rounds` times on a fresh import each.
fn store_only(sizes: &Sizes) -> Res<()> {
    let n = sizes.bound_subs;
    let now = chrono::DateTime::parse_from_rfc3339(AS_OF).map_err(|e| format!("{AS_OF}: {e}"))?.timestamp();
    for round in 1..=sizes.rounds {
        let sandbox = sandbox(SandboxConfig::default())?;
        let w = World::new(&sandbox, None)?;
        w.import(n, "s", |_| BILLING_DAY.to_string())?;
        let copy = w.copy_db()?;
        let (intents, outcomes) = store_alone(&copy.path().join(DB_FILE), n, now)?;
        let us = |secs: f64| secs * 1e6 / n as f64;
        println!(
            "   round {round}: store alone: {n} charges, {:.1} µs a charge (intents {:.1}, outcomes {:.1})",
            us(intents) + us(outcomes),
            us(intents),
            us(outcomes)
        );
    }
    Ok(())
}

/// One billd-bound run with webhooks `on` (to a receiver answering 200 at once, `[webhooks]` defaults) or off: a
/// tick, or (`daemon`) `billd run` from the same instant until its pass is done. Returns charges/s (first intent to
/// last outcome, `charge_ms` of `pass.done`). The import's `subscription.created` events and the pass's
/// `charge.paid` are written either way: with webhooks off a tick gives up the import's (older than `max_age` on
/// the simulated clock) and sends nothing; on, they are delivered, after the pass by a tick, during it by the daemon.
fn with_webhooks(n: usize, on: bool, daemon: bool) -> Res<f64> {
    let sandbox = sandbox(SandboxConfig::default())?;
    let receiver = Receiver::fast();
    let w = World::new(&sandbox, None)?;
    w.import(n, "s", |_| BILLING_DAY.to_string())?;
    if on {
        w.webhooks(Some((&receiver.url(), 8)))?;
    }
    let (how, state) = (if daemon { "billd run" } else { "billd tick" }, if on { "on" } else { "off" });
    let rate = if daemon {
        let mut d = Daemon::start_at(&w, AS_OF)?;
        let t = Instant::now();
        let done = d.next_pass(Duration::from_secs(600)).ok_or("billd run logged no pass.done within 10 minutes")?;
        let field = |k: &str| done[k].as_f64().unwrap_or(0.0);
        let (sent, paid, charge_s) = (field("sent") as usize, field("paid") as usize, field("charge_ms") / 1e3);
        if sent != n || paid != n {
            return Err(format!("{how}: expected {n} charges paid, the pass sent {sent} (paid {paid})"));
        }
        let by_done = receiver.events();
        let all = on && receiver.wait_for(2 * n, Duration::from_secs(300));
        let all_s = t.elapsed().as_secs_f64() + d.ready_s;
        d.stop()?;
        let delivery = match (on, all) {
            (false, _) => String::new(),
            (true, true) => format!(
                "; {by_done} events delivered by pass.done, all {} by {all_s:.1} s from exec ({} deliveries)",
                2 * n,
                receiver.deliveries()
            ),
            (true, false) => format!("; only {} of {} events delivered within 5 minutes", receiver.events(), 2 * n),
        };
        println!(
            "      {how}, webhooks {state}: {sent} charges in {charge_s:.2} s: {:.0}/s{delivery}",
            sent as f64 / charge_s
        );
        sent as f64 / charge_s
    } else {
        let pass = w.tick(AS_OF, &[])?;
        pass.expect_all_paid(n)?;
        let delivery = if on {
            format!(
                "; then delivered {} events ({} received) in {:.2} s",
                pass.delivered,
                receiver.events(),
                pass.wall_s - pass.pass_s
            )
        } else {
            String::new()
        };
        println!(
            "      {how}, webhooks {state}: {} charges in {:.2} s: {:.0}/s (process {:.2} s{delivery})",
            pass.sent,
            pass.charge_s,
            pass.sent as f64 / pass.charge_s,
            pass.wall_s
        );
        pass.sent as f64 / pass.charge_s
    };
    if receiver.unverified() > 0 {
        return Err(format!("{how}: {} deliveries carried no signature", receiver.unverified()));
    }
    Ok(rate)
}

/// The store's share of a billing day, on a copy of a database with `n` due at `now`: pages of intents
/// (`open_and_claim`, as billd's pass claims them, and the "go" writes before their requests leave), each recorded paid in groups of 128, one thread, no HTTP. Returns
/// the CPU seconds of this thread in the intent transactions and in the outcome transactions.
fn store_alone(db: &std::path::Path, n: usize, now: i64) -> Res<(f64, f64)> {
    let store = sqlite::open(db).map_err(|e| format!("store alone: {e:#}"))?;
    let now = from_ts(now);
    let (mut intents, mut outcomes, mut claimed) = (0u64, 0u64, 0usize);
    loop {
        let t = thread_cpu_ns()?;
        let batch = store
            .open_and_claim(now, 1024, usize::MAX, i64::MAX, 30_000, |d| NewPeriod {
                subscription_id: d.sub.id.clone(),
                period: d.sub.next_period,
                due_at: d.next_due_at,
                merchant_uid: billd::billing::model::merchant_uid("bench", &d.sub.id, d.sub.next_period),
                customer_uid: d.sub.customer_uid.clone(),
                amount: d.sub.amount,
                currency: d.sub.currency.clone(),
                name: d.sub.plan_name.clone(),
                following_period: d.sub.next_period + 1,
                skip_ahead: Vec::new(),
                following_due_at: Some(d.next_due_at + Days::days(30)),
            })
            .map_err(|e| format!("store alone: open_and_claim: {e:#}"))?
            .attempts;
        intents += thread_cpu_ns()? - t;
        if batch.is_empty() {
            break;
        }
        claimed += batch.len();
        // The "go" writes that let the requests leave, in groups as the gate makes them under load (one per
        // sender waiting; 32 here), counted with the intents.
        let t = thread_cpu_ns()?;
        for chunk in batch.chunks(32) {
            let ids: Vec<i64> = chunk.iter().map(|a| a.id).collect();
            store.begin_send(&ids, &SystemClock.now(), now).map_err(|e| format!("store alone: begin_send: {e:#}"))?;
        }
        intents += thread_cpu_ns()? - t;
        let recs: Vec<Recorded> = batch
            .into_iter()
            .map(|a| Recorded {
                result: AttemptResult::Paid { imp_uid: format!("imps_{}", a.id) },
                attempt: a,
                decision: Decision::Paid,
                doubt: None,
            })
            .collect();
        let t = thread_cpu_ns()?;
        for chunk in recs.chunks(128) {
            store.record(chunk, now).map_err(|e| format!("store alone: record: {e:#}"))?;
        }
        outcomes += thread_cpu_ns()? - t;
    }
    if claimed != n {
        return Err(format!("store alone: claimed {claimed} charges, expected {n}"));
    }
    Ok((intents as f64 / 1e9, outcomes as f64 / 1e9))
}

/// CPU time of the calling thread, ns (the first field of its schedstat).
fn thread_cpu_ns() -> Res<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").map_err(|e| format!("schedstat: {e}"))?;
    s.split_whitespace().next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("schedstat: {s:?}"))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Target 3: `gateway.rate_limit = 50` against a sandbox that refuses above 55 requests per second.
fn rate_limited(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let sandbox = sandbox(SandboxConfig {
        latency: Latency::Fixed(Duration::from_millis(50)),
        rate_limit: Some(55),
        ..SandboxConfig::default()
    })?;
    let w = World::new(&sandbox, Some(50.0))?;
    w.import(sizes.rate_charges, "s", |_| BILLING_DAY.to_string())?;
    let pass = w.tick(AS_OF, &[])?;
    let refused = w.query_i64("SELECT count(*) FROM attempts WHERE fail_reason LIKE '%429%'")?;
    let unresolved = w.query_i64("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')")?;
    // Requests per second as the gateway counted them (its ledger has whole seconds; full seconds only).
    let mut per_second = std::collections::BTreeMap::<i64, u32>::new();
    for e in sandbox.ledger() {
        *per_second.entry(e.started_at).or_default() += 1;
    }
    let inner: Vec<u32> = per_second.values().copied().collect();
    let inner = if inner.len() > 2 { &inner[1..inner.len() - 1] } else { &inner[..] };
    println!(
        "   {} charges in {:.2} s; HTTP 429s: {refused}; unresolved: {unresolved}; charges per full second: min {} max {}",
        pass.sent,
        pass.charge_s,
        inner.iter().min().unwrap_or(&0),
        inner.iter().max().unwrap_or(&0)
    );
    if refused > 0 || unresolved > 0 {
        return Err(format!("{refused} requests were refused with HTTP 429 ({unresolved} attempts unresolved)"));
    }
    pass.expect_all_paid(sizes.rate_charges)?;
    report(
        out,
        Figure {
            target: "3",
            what: format!("rate-limited: {} charges, rate_limit 50, sandbox 429 above 55/s; 0 HTTP 429", pass.sent),
            measured: pass.sent as f64 / pass.charge_s,
            limit: 50.0,
            unit: "charges/s",
            goal: Goal::Within(0.05),
        },
    );
    Ok(())
}

/// Targets 4, 5, 6: a large book (imported), an idle pass, the idle daemon, a drain of many due, start-up.
fn large_book(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let sandbox = sandbox(SandboxConfig::default())?;
    let w = World::new(&sandbox, None)?;
    // Local "today" in the billing zone; the book falls due over the 4 weeks after tomorrow.
    let today = Utc::now().with_timezone(&chrono_tz::Asia::Seoul).date_naive();
    let t = Instant::now();
    w.import(sizes.book, "b", |i| (today + Days::days(1 + (i % 28) as i64)).to_string())?;
    let import_s = t.elapsed().as_secs_f64();
    println!(
        "   imported {} subscriptions in {import_s:.1} s ({:.0} rows/s)",
        sizes.book,
        sizes.book as f64 / import_s
    );
    println!("   database: {:.0} MB", w.db_size() as f64 / 1e6);

    // 4a. A pass with nothing due (tick at the real time; the pass itself, sync included).
    let idle_pass = w.idle_pass()?;
    report(
        out,
        Figure {
            target: "4",
            what: format!("a pass with {} subscriptions, none due (median of 3)", sizes.book),
            measured: idle_pass,
            limit: 200.0,
            unit: "ms",
            goal: Goal::Below,
        },
    );

    // 4b, 5, 6 (no unresolved). The daemon with the book and nothing due: start-up, memory, CPU.
    let mut d = Daemon::start(&w)?;
    let ready0 = d.ready_s;
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, at0) = (cpu_seconds(d.pid())?, Instant::now());
    std::thread::sleep(sizes.idle);
    let cpu = (cpu_seconds(d.pid())? - cpu0) / at0.elapsed().as_secs_f64();
    let (rss, hwm) = memory(d.pid())?;
    d.stop()?;
    println!(
        "   daemon: READY after {ready0:.2} s; idle {:.0} s: CPU {:.3}% of a core, RSS {:.1} MB (peak {:.1} MB)",
        sizes.idle.as_secs_f64(),
        cpu * 100.0,
        rss,
        hwm
    );
    report(
        out,
        Figure {
            target: "4",
            what: format!("daemon RSS (peak) with {} subscriptions, none due", sizes.book),
            measured: hwm,
            limit: 64.0,
            unit: "MB",
            goal: Goal::Below,
        },
    );
    report(
        out,
        Figure {
            target: "5",
            what: format!("idle daemon CPU over {:.0} s (cron wake-ups included)", sizes.idle.as_secs_f64()),
            measured: cpu * 100.0,
            limit: 1.0,
            unit: "% of a core",
            goal: Goal::Below,
        },
    );

    // 6. Start-up with unresolved attempts: a tick that dies right after committing their intents leaves them
    // pending; READY does not wait for them: the first pass, right after it, looks each one up (finding nothing, it
    // resends them only after the quiet period, 2 × the 30 s timeout: a request of the dead process might still
    // be in progress).
    let yesterday = (today - Days::days(1)).to_string();
    w.import(sizes.unresolved, "u", |_| yesterday.clone())?;
    if !cfg!(any(debug_assertions, feature = "failpoints")) {
        return Err("this phase crashes a tick with BILLD_FAILPOINT, which a release build has only with the \
                    `failpoints` feature: cargo bench --bench drain --features failpoints"
            .into());
    }
    let crashed = w.tick_status(&[("BILLD_FAILPOINT", "after_intent_commit")])?;
    if crashed.success() {
        return Err("the failpoint tick did not stop after its intent commit".into());
    }
    let pending = w.query_i64("SELECT count(*) FROM attempts WHERE status = 'pending'")? as usize;
    if pending != sizes.unresolved {
        return Err(format!("expected {} pending attempts, found {pending}", sizes.unresolved));
    }
    let mut d = Daemon::start(&w)?;
    let ready = d.ready_s;
    let looked_up = || w.query_i64("SELECT count(*) FROM attempts WHERE status = 'unknown' AND tries = 1");
    let t = Instant::now();
    while looked_up()? as usize != sizes.unresolved {
        if t.elapsed() > Duration::from_secs(300) {
            let n = looked_up()?;
            return Err(format!("{n} of {} unresolved attempts were looked up within 5 minutes", sizes.unresolved));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reconciled = ready + t.elapsed().as_secs_f64();
    d.stop()?;
    println!(
        "   start-up: READY after {ready:.2} s with {pending} unresolved attempts (then each looked up twice, to be \
         resent after the quiet period, by {reconciled:.2} s), {ready0:.2} s with none"
    );
    report(
        out,
        Figure {
            target: "6",
            what: format!("exec to READY, {} subscriptions, no unresolved attempts", sizes.book),
            measured: ready0,
            limit: 2.0,
            unit: "s",
            goal: Goal::Below,
        },
    );
    report(
        out,
        Figure {
            target: "6",
            what: format!("exec to READY, {} unresolved attempts (looked up after it)", pending),
            measured: ready,
            limit: 2.0,
            unit: "s",
            goal: Goal::Below,
        },
    );

    // 4c. Many due at once: memory stays flat while the daemon drains them.
    w.import(sizes.book_due, "d", |_| yesterday.clone())?;
    let mut d = Daemon::start(&w)?;
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let sent = loop {
        if let Some(sent) = d.pass_done(Duration::from_millis(100)) {
            break sent;
        }
        samples.push((started.elapsed().as_secs_f64(), memory(d.pid())?.0));
        if started.elapsed() > Duration::from_secs(900) {
            return Err("the drain did not finish within 15 minutes".into());
        }
    };
    let drain_s = started.elapsed().as_secs_f64();
    let (_, hwm_drain) = memory(d.pid())?;
    d.stop()?;
    let paid = w.query_i64("SELECT count(*) FROM attempts WHERE status = 'paid'")? as usize;
    // The start-up's unresolved attempts are resent once their quiet period is over, which may or may not fall
    // within this drain.
    let waiting = w.query_i64("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')")? as usize;
    if sent != sizes.book_due || paid < sizes.book_due || paid + waiting != sizes.book_due + sizes.unresolved {
        return Err(format!(
            "the drain sent {sent}; {paid} attempts are paid and {waiting} unresolved; expected {} sent and {} paid \
             or waiting",
            sizes.book_due,
            sizes.book_due + sizes.unresolved
        ));
    }
    let at = |f: f64| samples.get(((samples.len() as f64 * f) as usize).min(samples.len().saturating_sub(1)));
    let show = |s: Option<&(f64, f64)>| s.map(|(t, m)| format!("{m:.1} MB at {t:.1} s")).unwrap_or_default();
    println!(
        "   drain of {sent} due: {drain_s:.1} s ({:.0}/s, start-up included); RSS {} / {} / {} / {}; peak {hwm_drain:.1} MB",
        sent as f64 / drain_s,
        show(at(0.1)),
        show(at(0.4)),
        show(at(0.7)),
        show(at(1.0)),
    );
    report(
        out,
        Figure {
            target: "4",
            what: format!("daemon RSS (peak) draining {sent} due in a book of {}", sizes.book + sizes.book_due),
            measured: hwm_drain,
            limit: 64.0,
            unit: "MB",
            goal: Goal::Below,
        },
    );
    // The same idle pass, now with a history of attempts and events behind it.
    let idle_pass = w.idle_pass()?;
    report(
        out,
        Figure {
            target: "4",
            what: format!("a pass, none due, after the drain ({} attempts in the history)", paid),
            measured: idle_pass,
            limit: 200.0,
            unit: "ms",
            goal: Goal::Below,
        },
    );
    Ok(())
}

/// Target 7 (issue 26): a billing day's `charge.paid` events, written by a tick with webhooks off, then delivered by
/// `billd run` to an app that answers each after 50 ms, at most C at a time, with `[webhooks] concurrency = C`:
/// the app's limit is C / 50 ms; the figure is events per second from the first delivery's arrival to the last
/// one's answer, as the app saw them.
fn webhook_drain(sizes: &Sizes, out: &mut Vec<Figure>) -> Res<()> {
    let (n, latency) = (sizes.webhook_events, Duration::from_millis(50));
    for concurrency in [8, 64] {
        let sandbox = sandbox(SandboxConfig::default())?;
        let w = World::new(&sandbox, None)?;
        w.import(n, "s", |_| BILLING_DAY.to_string())?;
        // Webhooks off: the tick writes the pass's events, sends none, and gives up the import's (older than
        // max_age on the simulated clock): what is left pending is the billing day's charge.paid.
        w.tick(AS_OF, &[])?.expect_all_paid(n)?;
        let pending = w.query_i64("SELECT count(*) FROM outbox WHERE state = 'pending' AND type = 'charge.paid'")?;
        let others = w.query_i64("SELECT count(*) FROM outbox WHERE state = 'pending' AND type != 'charge.paid'")?;
        if pending as usize != n || others != 0 {
            return Err(format!("expected {n} charge.paid pending, found {pending} (and {others} other events)"));
        }
        let receiver = Receiver::limited(concurrency, latency);
        w.webhooks(Some((&receiver.url(), concurrency)))?;
        let limit = concurrency as f64 / latency.as_secs_f64();
        let mut d = Daemon::start_at(&w, AS_OF)?;
        let within = Duration::from_secs_f64(n as f64 / limit * 4.0 + 60.0);
        if !receiver.wait_for(n, within) {
            return Err(format!("{} of {n} events delivered within {within:?}", receiver.events()));
        }
        // The last outcomes are written after the app's answers.
        let t = Instant::now();
        while w.query_i64("SELECT count(*) FROM outbox WHERE state = 'pending'")? > 0 {
            if t.elapsed() > Duration::from_secs(30) {
                return Err("events delivered but still pending 30 s later".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        d.stop()?;
        if receiver.unverified() > 0 {
            return Err(format!("{} deliveries did not verify", receiver.unverified()));
        }
        let span = receiver.span_s();
        println!(
            "   concurrency {concurrency}: {n} events in {span:.2} s ({} deliveries; at most {} answered at once)",
            receiver.deliveries(),
            receiver.peak()
        );
        report(
            out,
            Figure {
                target: "7",
                what: format!(
                    "webhooks: {n} charge.paid to an app answering in 50 ms, {concurrency} at a time, \
                     `[webhooks] concurrency = {concurrency}`"
                ),
                measured: n as f64 / span,
                limit,
                unit: "events/s",
                goal: Goal::AtLeast(0.90),
            },
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------- the world

fn sandbox(cfg: SandboxConfig) -> Res<Sandbox> {
    let s = Sandbox::start(cfg).map_err(|e| format!("sandbox: {e:#}"))?;
    for c in 0..CUSTOMERS {
        s.register_customer(&format!("cust-{c}"), cards::APPROVE).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// A temp folder with `schedules.toml` and the database, pointed at one sandbox.
struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// `schedules.toml` without `[webhooks]`.
    text: String,
    /// Webhooks on: `[webhooks]` with this url and concurrency (and the secret in billd's environment).
    hooks: std::cell::RefCell<Option<(String, usize)>>,
}

/// What `billd tick` reported.
struct Pass {
    sent: usize,
    paid: usize,
    unresolved: usize,
    /// First intent committed to last outcome recorded.
    charge_s: f64,
    /// The pass (sync included), inside the process.
    pass_s: f64,
    /// Exec to exit.
    wall_s: f64,
    /// CPU seconds of the `billd tick` process, and of this process (the sandbox) meanwhile.
    cpu_s: f64,
    sandbox_cpu_s: f64,
    /// Events the tick delivered after its pass (webhooks on).
    delivered: usize,
}

impl Pass {
    fn expect_all_paid(&self, n: usize) -> Res<()> {
        if self.sent != n || self.paid != n || self.unresolved != 0 {
            return Err(format!(
                "expected {n} charges paid, the pass sent {} (paid {}, unresolved {})",
                self.sent, self.paid, self.unresolved
            ));
        }
        Ok(())
    }
}

impl World {
    fn new(sandbox: &Sandbox, rate_limit: Option<f64>) -> Res<World> {
        World::with_book(sandbox, rate_limit, DB_FILE, &std::env::temp_dir())
    }

    /// A world whose book is `database` (a file in the world's folder, or a `postgres://` URL), its folder in `parent`.
    fn with_book(sandbox: &Sandbox, rate_limit: Option<f64>, database: &str, parent: &std::path::Path) -> Res<World> {
        let dir = tempfile::Builder::new().prefix("billd-bench-").tempdir_in(parent).map_err(|e| e.to_string())?;
        let config = dir.path().join("schedules.toml");
        let rate = rate_limit.map(|r| format!("rate_limit = {r}\n")).unwrap_or_default();
        let text = format!(
            "[billing]\ntimezone = \"Asia/Seoul\"\ncharge_time = \"10:00\"\ndatabase = \"{database}\"\n\
             merchant_uid_prefix = \"bench\"\n\n\
             [gateway]\nbase_url = \"{}\"\nimp_key = \"imp_sandbox_key\"\ntimeout = \"30s\"\nconcurrency = {CONCURRENCY}\n{rate}\n\
             [limits]\nmax_charges_per_pass = 10000000\n\n\
             [[plans]]\nid = \"monthly\"\nname = \"Monthly plan\"\namount = 9900\ninterval = \"1 month\"\n",
            sandbox.base_url()
        );
        std::fs::write(&config, &text).map_err(|e| e.to_string())?;
        Ok(World { dir, config, text, hooks: None.into() })
    }

    /// Turns webhooks on (to `url`, `concurrency` at a time) or off for the commands run from now on.
    fn webhooks(&self, hooks: Option<(&str, usize)>) -> Res<()> {
        let mut text = self.text.clone();
        if let Some((url, concurrency)) = hooks {
            text += &format!("\n[webhooks]\nurl = \"{url}\"\nconcurrency = {concurrency}\n");
        }
        std::fs::write(&self.config, text).map_err(|e| e.to_string())?;
        *self.hooks.borrow_mut() = hooks.map(|(u, c)| (u.to_owned(), c));
        Ok(())
    }

    fn billd(&self) -> Command {
        let mut c = Command::new(BILLD);
        c.arg("--config")
            .arg(&self.config)
            .arg("--log-format")
            .arg("json")
            .env("BILLD_GATEWAY__IMP_SECRET", "imp_sandbox_secret")
            .env("BILLD_LOG", "info")
            .env_remove("BILLD_CONFIG")
            .env_remove("BILLD_FAILPOINT")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove(SECRET_VAR)
            .stdin(Stdio::null());
        if self.hooks.borrow().is_some() {
            c.env(SECRET_VAR, receiver::SECRET);
        }
        c
    }

    /// Writes `n` rows (`{prefix}{i}`, key `cust-{i % CUSTOMERS}`, start `start(i)`) and runs `billd import`.
    fn import(&self, n: usize, prefix: &str, start: impl Fn(usize) -> String) -> Res<()> {
        let path = self.dir.path().join(format!("{prefix}.csv"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| e.to_string())?);
        let mut put = || -> std::io::Result<()> {
            writeln!(f, "id,customer_uid,plan,start")?;
            for i in 0..n {
                writeln!(f, "{prefix}{i},cust-{},monthly,{}", i % CUSTOMERS, start(i))?;
            }
            f.flush()
        };
        put().map_err(|e| e.to_string())?;
        let out = self.billd().arg("import").arg(&path).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("billd import failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    fn tick(&self, as_of: &str, env: &[(&str, &str)]) -> Res<Pass> {
        let mut c = self.billd();
        // The phases' due dates are ahead of the real time: allowed against the sandbox only.
        c.args(["tick", "--simulate", "--as-of", as_of]);
        self.run_tick(c, env)
    }

    fn tick_now(&self) -> Res<Pass> {
        let mut c = self.billd();
        c.arg("tick");
        self.run_tick(c, &[])
    }

    fn run_tick(&self, mut c: Command, env: &[(&str, &str)]) -> Res<Pass> {
        // Logs go to a file, as they would go to a log file or the journal (not through a pipe to this process).
        let log_path = self.dir.path().join("tick.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        c.envs(env.iter().copied()).stdout(Stdio::null()).stderr(log);
        let t = Instant::now();
        let cpu0 = self_cpu();
        let status = c.status().map_err(|e| e.to_string())?;
        let wall_s = t.elapsed().as_secs_f64();
        let cpu1 = self_cpu();
        let stderr = std::fs::read_to_string(&log_path).map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("billd tick failed ({status}): {}", tail(&stderr)));
        }
        let lines: Vec<Value> = stderr.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
        let done = lines
            .iter()
            .find(|v| v["event"] == "pass.done")
            .ok_or_else(|| format!("billd tick logged no pass.done: {}", tail(&stderr)))?;
        let delivered =
            lines.iter().find(|v| v["event"] == "webhook.round").and_then(|v| v["delivered"].as_u64()).unwrap_or(0)
                as usize;
        let n = |k: &str| done[k].as_u64().unwrap_or(0) as usize;
        let ms = |k: &str| done[k].as_f64().unwrap_or(0.0) / 1e3;
        Ok(Pass {
            sent: n("sent"),
            paid: n("paid"),
            unresolved: n("unresolved"),
            charge_s: ms("charge_ms"),
            pass_s: ms("pass_ms"),
            wall_s,
            cpu_s: cpu1.1 - cpu0.1,
            sandbox_cpu_s: cpu1.0 - cpu0.0,
            delivered,
        })
    }

    /// Median of three `billd tick` passes at the real time with nothing due, in ms.
    fn idle_pass(&self) -> Res<f64> {
        let mut passes: Vec<f64> = Vec::new();
        for _ in 0..3 {
            let pass = self.tick_now()?;
            if pass.sent != 0 {
                return Err(format!("an idle pass sent {} charges", pass.sent));
            }
            passes.push(pass.pass_s * 1e3);
        }
        println!("   idle passes (tick, nothing due): {passes:.1?} ms");
        Ok(median(&mut passes))
    }

    fn tick_status(&self, env: &[(&str, &str)]) -> Res<ExitStatus> {
        let mut c = self.billd();
        c.arg("tick").envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::null());
        c.status().map_err(|e| e.to_string())
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join(DB_FILE)
    }

    fn db_size(&self) -> u64 {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(self.db_path()) + size(self.dir.path().join(format!("{DB_FILE}-wal")))
    }

    /// A copy of the database (closed: between commands), `-wal` and `-shm` included if present, as `DB_FILE` in a
    /// temp folder of its own.
    fn copy_db(&self) -> Res<tempfile::TempDir> {
        let copy = tempfile::Builder::new().prefix("billd-bench-store-").tempdir().map_err(|e| e.to_string())?;
        for ext in ["", "-wal", "-shm"] {
            let from = self.dir.path().join(format!("{DB_FILE}{ext}"));
            if ext.is_empty() || from.exists() {
                std::fs::copy(&from, copy.path().join(format!("{DB_FILE}{ext}")))
                    .map_err(|e| format!("copy {}: {e}", from.display()))?;
            }
        }
        Ok(copy)
    }

    fn query_i64(&self, sql: &str) -> Res<i64> {
        let conn = rusqlite::Connection::open_with_flags(self.db_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(|e| e.to_string())?;
        conn.query_row(sql, [], |r| r.get(0)).map_err(|e| e.to_string())
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

// ------------------------------------------------------------------------------------------------- the daemon

/// A running `billd run` with its stderr read line by line and a NOTIFY_SOCKET.
struct Daemon {
    child: Child,
    ready_s: f64,
    events: mpsc::Receiver<Value>,
    notify: UnixDatagram,
}

impl Daemon {
    fn start(w: &World) -> Res<Daemon> {
        Daemon::spawn(w, &[])
    }

    /// `billd run --simulate --as-of AS_OF`: the billing clock starts at `as_of` and runs at the real speed.
    fn start_at(w: &World, as_of: &str) -> Res<Daemon> {
        Daemon::spawn(w, &["--simulate", "--as-of", as_of])
    }

    fn spawn(w: &World, args: &[&str]) -> Res<Daemon> {
        // Several daemons may share a world (phase 6): each has its socket and log.
        static SPAWNED: AtomicU64 = AtomicU64::new(0);
        let k = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let sock_path = w.dir.path().join(format!("notify-{}-{k}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
        let mut c = w.billd();
        c.arg("run").args(args).env("NOTIFY_SOCKET", &sock_path).stdout(Stdio::null()).stderr(Stdio::piped());
        let t = Instant::now();
        let mut child = c.spawn().map_err(|e| e.to_string())?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, events) = mpsc::channel();
        let log = w.dir.path().join(format!("daemon-{k}.log"));
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && (v["event"] == "pass.done" || v["level"] == "ERROR")
                {
                    let _ = tx.send(v);
                }
            }
        });
        let mut d = Daemon { child, ready_s: 0.0, events, notify: sock };
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = d.notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1")
            {
                d.ready_s = t.elapsed().as_secs_f64();
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!("billd run exited before READY: {status} (log in {})", w.dir.path().display()));
            }
            if t.elapsed() > Duration::from_secs(300) {
                return Err("billd run sent no READY within 5 minutes".into());
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `sent` of the next `pass.done` logged within `wait`.
    fn pass_done(&mut self, wait: Duration) -> Option<usize> {
        self.next_pass(wait).and_then(|v| v["sent"].as_u64()).map(|n| n as usize)
    }

    /// The next `pass.done` line logged within `wait`.
    fn next_pass(&mut self, wait: Duration) -> Option<Value> {
        match self.events.recv_timeout(wait) {
            Ok(v) if v["event"] == "pass.done" => Some(v),
            Ok(v) => {
                println!("   daemon error: {v}");
                None
            }
            Err(_) => None,
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(&mut self) -> Res<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() { Ok(()) } else { Err(format!("billd run exited with {status}")) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        Err("billd run did not stop within 60 s of SIGTERM".into())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (VmRSS, VmHWM) in MB.
fn memory(pid: u32) -> Res<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((ticks(11) + ticks(12)) / clock_ticks())
}

/// CPU seconds of this process (the in-process sandbox, and the bare client when it runs) and of its children that
/// have exited (the `billd` commands).
fn self_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = clock_ticks();
    ((ticks(11) + ticks(12)) / hz, (ticks(13) + ticks(14)) / hz)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ------------------------------------------------------------------------------------------------- bare client

/// Requests per second of a plain HTTP client loop: the same `again` requests, the same concurrency, a fresh
/// sandbox with the same settings, no database.
fn bare_client(n: usize, latency: Latency) -> Res<(f64, f64)> {
    let sandbox = sandbox(SandboxConfig { latency, ..SandboxConfig::default() })?;
    let cpu0 = self_cpu().0;
    let base = sandbox.base_url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let rate = rt.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let token: Value = http
            .post(format!("{base}/users/getToken"))
            .json(&serde_json::json!({"imp_key": "imp_sandbox_key", "imp_secret": "imp_sandbox_secret"}))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let token = token["response"]["access_token"].as_str().ok_or("no token")?.to_string();
        let next = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let url = format!("{base}/subscribe/payments/again");
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let (http, token, next, failed, url) =
                (http.clone(), token.clone(), next.clone(), failed.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        break;
                    }
                    let body = serde_json::json!({
                        "customer_uid": format!("cust-{}", i % CUSTOMERS),
                        "merchant_uid": format!("bare-b{i}-0"),
                        "amount": 9900,
                        "currency": "KRW",
                        "name": "Monthly plan",
                    });
                    let ok = match http.post(&url).bearer_auth(&token).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            r.bytes().await.is_ok_and(|b| b.windows(15).any(|w| w == b"\"status\":\"paid\""))
                        }
                        _ => false,
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())?;
        }
        let secs = t.elapsed().as_secs_f64();
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!("{failed} bare-client requests did not end paid"));
        }
        Ok(n as f64 / secs)
    })?;
    Ok((rate, self_cpu().0 - cpu0))
}

// ------------------------------------------------------------------------------------------------- machine

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("nproc {cores}, {cpu}, {mem} RAM")
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
