//! Issue 27, several `billd run` daemons on one PostgreSQL book (the real binary, the sandbox, a throwaway cluster of
//! `tests/common/pg.rs`): three daemons under SIGKILL, SIGSTOP/SIGCONT and a gateway losing answers charge every due
//! period exactly once; a daemon stopped past its lease with a request in flight is fenced off its late outcome.
//!
//! Billing time comes from `run --as-of T --simulate --speed N`; the real waits are for processes, leases and quiet
//! periods, which are real time by design.

mod common;
#[path = "common/pg.rs"]
mod pg;

use billd_sandbox::{AtArrival, Fault, FaultRule, Latency, SandboxConfig};
use common::{KillOnDrop, MONTHLY, Rng, Setup, World, cards, describe_repeats, lit, sub, text, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

type Rfc3339 = chrono::DateTime<chrono::FixedOffset>;

fn t(s: &str) -> Rfc3339 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap()
}

/// Sends `sig` to a child process.
fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill({}, {sig}): {}", child.id(), std::io::Error::last_os_error());
}

/// Sets `billing.lease` in the world's config (every daemon and command reads the same file).
fn set_lease(w: &World, lease: &str) {
    let config = std::fs::read_to_string(&w.config).unwrap();
    let with = config.replacen("[billing]\n", &format!("[billing]\nlease = \"{lease}\"\n"), 1);
    assert_ne!(config, with, "no [billing] table in {config}");
    std::fs::write(&w.config, with).unwrap();
}

/// `billd run --as-of AS_OF --simulate [--speed N]`, its log (stderr) in `log`.
fn spawn_daemon(w: &World, as_of: &str, speed: Option<u32>, log: &Path) -> KillOnDrop {
    let mut cmd = w.billd();
    cmd.args(["run", "--as-of", as_of, "--simulate"]);
    if let Some(speed) = speed {
        cmd.args(["--speed", &speed.to_string()]);
    }
    let child = cmd
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// `billd status --json`: the daemons of the book.
fn status(w: &World) -> Vec<serde_json::Value> {
    let out = w.billd().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "billd status --json: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("billd status --json: {e}: {}", text(&out)))
}

/// The daemon a process joined the book as (from `billd status --json`).
fn daemon_of(w: &World, child: &Child) -> serde_json::Value {
    let mut found = None;
    wait_for("the daemon to join the book", || {
        found = status(w).into_iter().find(|d| d["pid"].as_u64() == Some(child.id() as u64));
        found.is_some()
    });
    found.unwrap()
}

/// The database server's clock, in ms (leases are on it).
fn db_now_ms(w: &World) -> i64 {
    w.int("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").unwrap()
}

/// Sessions of billd idle inside a write transaction for at least `ms`, holding the book's write lock (a process
/// stopped between such a BEGIN and its COMMIT holds it for as long as it is stopped). The lock (`store/postgres`:
/// `pg_advisory_xact_lock(book's lock_key, WRITE_LOCK = 1)`) shows in `pg_locks` as classid = the key's 32 bits,
/// objid = 1, objsubid = 2.
fn frozen_writes(w: &World, ms: u64) -> i64 {
    w.int(&format!(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
          WHERE a.datname = current_database() AND a.application_name = 'billd'
            AND a.state LIKE 'idle in transaction%' AND clock_timestamp() - a.state_change > interval '{ms} milliseconds'
            AND l.locktype = 'advisory' AND l.granted AND l.objid = 1 AND l.objsubid = 2
            AND l.classid::bigint = ((SELECT lock_key FROM schema_version)::bigint & 4294967295)"
    ))
    .unwrap_or(0)
}

/// Stops a daemon (SIGSTOP) outside a write transaction: one left open would hold the book's write lock while it is
/// stopped, and every other daemon's writes with it.
fn stop_outside_a_write(w: &World, child: &Child, who: &str) {
    for _ in 0..50 {
        signal(child, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(30));
        if frozen_writes(w, 20) == 0 {
            return;
        }
        signal(child, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("{who} is always stopped inside a write transaction");
}

/// One log line of a daemon: its instant (ms since the epoch), its event and its `key=value` fields.
struct Line {
    ms: i64,
    event: String,
    fields: BTreeMap<String, String>,
    text: String,
}

/// The lines of a daemon's log (lines cut short by a SIGKILL, or not billd's, are skipped).
fn lines(log: &Path) -> Vec<Line> {
    let said = std::fs::read_to_string(log).unwrap_or_default();
    said.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ms = chrono::DateTime::parse_from_rfc3339(words.next()?).ok()?.timestamp_millis();
            let fields: BTreeMap<String, String> = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            Some(Line { ms, event: fields.get("event")?.clone(), fields, text: l.to_string() })
        })
        .collect()
}

/// Subscriptions, periods of each, daemons, and how long the chaos lasts in real time (the simulated year is spread
/// over it by `--speed`).
const SUBS: usize = 200;
const PERIODS: usize = 12;
const DAEMONS: usize = 3;
const CHAOS: Duration = Duration::from_secs(100);
/// The chaos test's `billing.lease`, and its stops shorter and longer than the lease (ms).
const LEASE: Duration = Duration::from_secs(2);
const SHORT_STOP: (u64, u64) = (20, 500);
const LONG_STOP: (u64, u64) = (2_600, 4_000);
/// The least time between the starts of two long stops.
const LONG_STOP_EVERY: Duration = Duration::from_secs(10);

/// A random gateway fault for the next 1-3 charges: nothing charged (HTTP 500), charged with the answer lost (held
/// past the 1 s timeout) or the connection dropped, or charged after up to 1.5 s (still in progress when billd gives
/// up, finished within the 2 s quiet period).
fn random_fault(rand: &mut impl FnMut(u64) -> u64) -> FaultRule {
    let fault = match rand(4) {
        0 => Fault::Http500,
        1 => Fault::LoseResponseAfterCharge { hold: Duration::from_millis(1500) },
        2 => Fault::DropAfterCharge,
        _ => Fault::ChargeLaterRandom { max: Duration::from_millis(1500) },
    };
    FaultRule { customer_uid: None, fault, times: Some(1 + rand(3) as u32) }
}

/// A daemon slot: its process (a new one after each death), and whether the test holds it stopped.
struct Slot {
    child: KillOnDrop,
    log: PathBuf,
    /// SIGSTOPped by the test until then; `true`: for longer than the lease.
    stopped: Option<(Instant, bool)>,
    /// When the last stop ended (a lease.lost exit follows one that was long), and the last long one.
    continued: Option<Instant>,
    long_continued: Option<Instant>,
}

/// What the chaos did and saw.
#[derive(Debug, Default)]
struct Chaos {
    kills: usize,
    short_stops: usize,
    long_stops: usize,
    /// Long stops that held the book's write lock (in a write transaction) for as long as they lasted.
    long_stops_holding_the_write_lock: usize,
    faults: usize,
    /// Daemons that exited on their own: for losing their lease (`lease.lost`) after a long stop of their own, or
    /// otherwise (while a daemon was or lately had been stopped); or for a write that timed out waiting for the book's
    /// write lock (held by a stopped daemon).
    lost_after_its_long_stop: usize,
    lost_otherwise: usize,
    write_lock_timeouts: usize,
    /// Pokes (SIGHUP) in the end phase, when nothing moved for a while (an idle daemon otherwise wakes once a minute).
    pokes: usize,
}

/// The daemon slots, every life's log, the billing clock every new life starts on.
struct Fleet<'w> {
    w: &'w World,
    slots: Vec<Slot>,
    logs: Vec<PathBuf>,
    start: Rfc3339,
    t0: Instant,
    speed: u32,
}

impl Fleet<'_> {
    /// A new life in slot `i` (its billing clock where the others' are now).
    fn spawn(&mut self, i: usize) -> (KillOnDrop, PathBuf) {
        let log = self.w.dir.path().join(format!("daemon{i}-life{}.log", self.logs.len()));
        let as_of = self.start + chrono::Duration::from_std(self.t0.elapsed() * self.speed).unwrap();
        let child = spawn_daemon(self.w, &as_of.to_rfc3339(), Some(self.speed), &log);
        self.logs.push(log.clone());
        (child, log)
    }

    fn start(&mut self) {
        for i in 0..DAEMONS {
            let (child, log) = self.spawn(i);
            self.slots.push(Slot { child, log, stopped: None, continued: None, long_continued: None });
        }
    }

    fn restart(&mut self, i: usize) {
        let (child, log) = self.spawn(i);
        let slot = &mut self.slots[i];
        (slot.child, slot.log, slot.stopped) = (child, log, None);
    }

    /// Whether a daemon is stopped, or one was lately (within 8 s).
    fn stopped_lately(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.stopped.is_some() || s.continued.is_some_and(|c| c.elapsed() < Duration::from_secs(8)))
    }

    /// Continues the stops that are over; restarts the daemons that exited. Each must have exited 1 for losing its
    /// lease (`lease.lost`), or, while another daemon is or was lately stopped past its lease, for a write that
    /// timed out waiting for the book's write lock (held by the stopped one).
    fn tend(&mut self, chaos: &mut Chaos) {
        for i in 0..self.slots.len() {
            if let Some((until, long)) = self.slots[i].stopped
                && Instant::now() >= until
            {
                if long && frozen_writes(self.w, 1000) > 0 {
                    chaos.long_stops_holding_the_write_lock += 1;
                }
                signal(&self.slots[i].child.0, libc::SIGCONT);
                self.slots[i].stopped = None;
                self.slots[i].continued = Some(Instant::now());
                if long {
                    self.slots[i].long_continued = Some(Instant::now());
                }
            }
            if self.slots[i].stopped.is_some() {
                continue;
            }
            let Some(status) = self.slots[i].child.0.try_wait().unwrap() else { continue };
            let said = std::fs::read_to_string(&self.slots[i].log).unwrap_or_default();
            let stalled = self.stopped_lately();
            let after_long_stop = self.slots[i].long_continued.is_some_and(|c| c.elapsed() < LEASE * 2);
            match () {
                _ if status.code() != Some(1) => panic!("daemon {i} exited by itself ({status}):\n{said}"),
                _ if said.contains("lease.lost") && after_long_stop => chaos.lost_after_its_long_stop += 1,
                _ if said.contains("lease.lost") && stalled => chaos.lost_otherwise += 1,
                _ if said.contains("lock timeout") && stalled => chaos.write_lock_timeouts += 1,
                _ => panic!("daemon {i} exited 1 while no daemon was stopped or lately:\n{said}"),
            }
            self.restart(i);
        }
    }

    /// SIGKILL of slot `i`, and a new life at once (as systemd restarts it).
    fn kill(&mut self, i: usize) {
        let _ = self.slots[i].child.0.kill();
        self.slots[i].child.0.wait().unwrap();
        self.restart(i);
    }

    fn stop(&mut self, i: usize, length: Duration, long: bool) {
        signal(&self.slots[i].child.0, libc::SIGSTOP);
        self.slots[i].stopped = Some((Instant::now() + length, long));
    }

    fn signal_all(&self, sig: i32) {
        for s in &self.slots {
            signal(&s.child.0, sig);
        }
    }
}

/// Three `billd run` share one PostgreSQL book (lease 2 s, gateway timeout 1 s): 200 monthly subscriptions of 12
/// periods (one in ten declined twice, then paid at its second retry), a simulated year at `--speed` over 100 s; a
/// sandbox with 5-40 ms latency and random faults (HTTP 500, answers lost or dropped after the charge, charges still
/// in progress when billd gives up). Every 200-600 ms a random daemon is killed (SIGKILL, restarted at once, as
/// systemd does) or stopped (SIGSTOP, then SIGCONT) for 0.02-0.5 s, or for 2.6-4 s, past its lease (at most one such
/// stop every 10 s: a stopped daemon in a write transaction holds the book's write lock as long as it is stopped): a
/// few hundred events, seeded (`BILLD_TEST_SEED` replays the choices, not the timing). A daemon that exits by itself
/// must have exited 1, for losing its lease (`lease.lost`) or for a write that timed out behind a stopped daemon, and
/// is restarted. At the end the daemons catch up and go idle, and are stopped (SIGTERM, exit 0). Then:
///
/// - the gateway's ledger has exactly one paid charge for each due period of every subscription, and no other;
/// - no charge request reached the gateway while another request for its merchant_uid was in progress there, nor
///   for one it had paid (the sandbox's request log keeps each request's arrival instant, not its end, and classifies
///   it on arrival against the requests still in progress for its merchant_uid, i.e. arrived and not yet charged or
///   refused: `at_arrival`);
/// - the book agrees: every period paid once, with the gateway's imp_uid, every subscription completed, nothing
///   unresolved;
/// - the fence, from the daemons' logs and the book: a daemon is fenced (`charge.fenced`) only after its lease ended,
///   and every `charge.paid` a daemon logs is of a charge it owns in the book (no daemon records another's).
#[test]
fn three_daemons_sharing_a_book_charge_every_due_period_exactly_once() {
    let Some(db) = pg::database() else { return };
    let began = Instant::now();
    let mut rng = Rng::from_env();
    let mut rand = move |n: u64| rng.below(n);
    let sandbox = SandboxConfig {
        latency: Latency::Random { min: Duration::from_millis(5), max: Duration::from_millis(40) },
        seed: Some(rand(u64::MAX)),
        ..Default::default()
    };
    let mut body = format!("{MONTHLY}periods = {PERIODS}\n");
    for i in 0..SUBS {
        body += &sub(&format!("s{i:03}"), &format!("c{i:03}"), "monthly", &format!("2030-01-{:02}", 1 + i % 28));
    }
    let w = World::new(Setup { sandbox, body: &body, timeout: "1s", postgres: Some(db.url()), ..Default::default() });
    set_lease(&w, &format!("{}s", LEASE.as_secs()));
    for i in 0..SUBS {
        let card = if i % 10 == 5 { cards::decline_first(2) } else { cards::APPROVE.to_string() };
        w.sandbox.register_customer(&format!("c{i:03}"), &card).unwrap();
    }
    // The year: the first due date is 2030-01-01, the last paid retry 2030-12-31.
    let (start, end) = (t("2029-12-31T12:00:00+09:00"), t("2031-01-05T12:00:00+09:00"));
    let speed = ((end - start).num_seconds() as f64 / CHAOS.as_secs_f64()) as u32;
    let mut fleet = Fleet { w: &w, slots: Vec::new(), logs: Vec::new(), start, t0: Instant::now(), speed };
    fleet.start();

    let mut chaos = Chaos::default();
    let (mut next_event, mut next_fault) = (Instant::now(), Instant::now());
    let mut last_long = None;
    while fleet.t0.elapsed() < CHAOS {
        fleet.tend(&mut chaos);
        let now = Instant::now();
        if now >= next_fault {
            w.sandbox.add_fault(random_fault(&mut rand));
            chaos.faults += 1;
            next_fault = now + Duration::from_millis(100 + rand(500));
        }
        if now >= next_event {
            next_event = now + Duration::from_millis(200 + rand(400));
            let free: Vec<usize> = (0..DAEMONS).filter(|&i| fleet.slots[i].stopped.is_none()).collect();
            if !free.is_empty() {
                let i = free[rand(free.len() as u64) as usize];
                match rand(20) {
                    0..=10 => {
                        fleet.kill(i);
                        chaos.kills += 1;
                    }
                    11..=13 if last_long.is_none_or(|l: Instant| l.elapsed() >= LONG_STOP_EVERY) => {
                        let ms = LONG_STOP.0 + rand(LONG_STOP.1 - LONG_STOP.0);
                        fleet.stop(i, Duration::from_millis(ms), true);
                        chaos.long_stops += 1;
                        last_long = Some(now);
                    }
                    _ => {
                        let ms = SHORT_STOP.0 + rand(SHORT_STOP.1 - SHORT_STOP.0);
                        fleet.stop(i, Duration::from_millis(ms), false);
                        chaos.short_stops += 1;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let chaos_took = fleet.t0.elapsed();
    let paid_in_chaos = w.int("SELECT count(*) FROM periods WHERE state = 'paid'").unwrap_or(0);

    // The end: a healthy gateway, every daemon continued; they catch up (a life lost meanwhile is restarted).
    w.sandbox.clear_faults();
    for s in &mut fleet.slots {
        if let Some((until, _)) = s.stopped.as_mut() {
            *until = Instant::now();
        }
    }
    let paid_periods = || w.int("SELECT count(*) FROM periods WHERE state = 'paid'").unwrap_or(0) as usize;
    let unresolved = || w.int("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')").unwrap_or(0);
    let settle = Instant::now();
    let (mut last, mut moved) = ((0, 0, 0), Instant::now());
    loop {
        fleet.tend(&mut chaos);
        let now = (paid_periods(), unresolved(), w.requests().len());
        if now.0 == SUBS * PERIODS && now.1 == 0 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(240),
            "the daemons did not catch up in 240 s: {} of {} periods paid, {} attempts unresolved",
            now.0,
            SUBS * PERIODS,
            now.1
        );
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > Duration::from_secs(5) {
            // Nothing moved for 5 s: an idle daemon's next look at the book is its minute's wake-up (or a due
            // instant); a reload makes it look now.
            fleet.signal_all(libc::SIGHUP);
            chaos.pokes += 1;
            moved = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Idle: the three daemons run (as the book has it) and hold nothing, and nothing more is sent.
    let idle = Instant::now();
    let running = loop {
        fleet.tend(&mut chaos);
        let ours: BTreeSet<u64> = fleet.slots.iter().map(|s| u64::from(s.child.0.id())).collect();
        let running: Vec<serde_json::Value> =
            status(&w).into_iter().filter(|d| d["running"].as_bool() == Some(true)).collect();
        if running.len() == DAEMONS && running.iter().all(|d| d["pid"].as_u64().is_some_and(|p| ours.contains(&p))) {
            break running;
        }
        assert!(idle.elapsed() < Duration::from_secs(30), "not the {DAEMONS} daemons running after 30 s: {running:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(running.iter().all(|d| d["charges_held"].as_u64() == Some(0)), "{running:#?}");
    let sent = w.requests().len();
    std::thread::sleep(LEASE);
    fleet.tend(&mut chaos);
    assert_eq!(w.requests().len(), sent, "requests sent after every period was paid");
    let settled_in = settle.elapsed();
    fleet.signal_all(libc::SIGTERM);
    for s in &mut fleet.slots {
        let status = s.child.0.wait().unwrap();
        assert!(
            status.success(),
            "a daemon stopped by SIGTERM: {status}\n{}",
            std::fs::read_to_string(&s.log).unwrap()
        );
    }

    // The daemons' logs: outcomes, fences, leases lost.
    let lives: Vec<Vec<Line>> = fleet.logs.iter().map(|l| lines(l)).collect();
    let count = |event: &str| lives.iter().flatten().filter(|l| l.event == event).count();
    println!(
        "{chaos:?}; {} lives; speed {speed}x; chaos {} s ({paid_in_chaos} of {} periods paid by its end), catching up \
         {} ms, whole test {} s; log lines: charge.paid {}, charge.unknown {}, charge.fenced {}, charge.late {}, \
         lease.lost {}, pass.error {}",
        fleet.logs.len(),
        chaos_took.as_secs(),
        SUBS * PERIODS,
        settled_in.as_millis(),
        began.elapsed().as_secs(),
        count("charge.paid"),
        count("charge.unknown"),
        count("charge.fenced"),
        count("charge.late"),
        count("lease.lost"),
        count("pass.error"),
    );
    assert!(chaos.kills + chaos.short_stops + chaos.long_stops >= 150, "too few events: {chaos:?}");

    // (1) The gateway: exactly one paid charge per due period (a second one for a merchant_uid fails here).
    let paid = w.paid_by_merchant_uid();
    let expected: BTreeSet<String> =
        (0..SUBS).flat_map(|i| (0..PERIODS).map(move |k| format!("billd-s{i:03}-{k}"))).collect();
    let lost: Vec<&String> = expected.iter().filter(|m| !paid.contains_key(*m)).collect();
    assert!(lost.is_empty(), "{} due periods never paid: {lost:?}", lost.len());
    let extra: Vec<&String> = paid.keys().filter(|m| !expected.contains(*m)).collect();
    assert!(extra.is_empty(), "paid charges for periods that were not due: {extra:?}");

    // (2) No request while another for its merchant_uid was in progress, nor for one already paid.
    let log = w.requests();
    let overlapping = log.iter().filter(|r| r.at_arrival == AtArrival::InFlight).count();
    let after_paid = log.iter().filter(|r| r.at_arrival == AtArrival::Paid).count();
    assert!(
        overlapping + after_paid == 0,
        "{overlapping} request(s) arrived while another for the same merchant_uid was in progress, {after_paid} for \
         one already paid:\n{}",
        describe_repeats(&log)
    );

    // (3) The book.
    assert_eq!(paid_periods(), SUBS * PERIODS);
    assert_eq!(w.int("SELECT count(*) FROM periods"), Some((SUBS * PERIODS) as i64), "periods beyond the term");
    assert_eq!(w.int("SELECT count(*) FROM subscriptions WHERE status <> 'completed'"), Some(0));
    w.assert_consistent();

    // (4) The fence. Each daemon's lease ended (lapsed, or ended when it left or was found gone) at…
    let ended: BTreeMap<String, i64> = w
        .rows("SELECT id, least(lease_until_ms, coalesce(left_ms, lease_until_ms)) FROM daemons")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].as_deref().unwrap().parse().unwrap()))
        .collect();
    let owner: BTreeMap<String, String> = w
        .rows("SELECT merchant_uid, owner FROM attempts WHERE status = 'paid'")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
        .collect();
    let mut violations = Vec::new();
    for (life, lines) in fleet.logs.iter().zip(&lives) {
        let Some(me) = lines.iter().find(|l| l.event == "daemon.joined").and_then(|l| l.fields.get("daemon")) else {
            continue; // killed before it joined
        };
        for l in lines {
            match l.event.as_str() {
                "charge.fenced" if l.ms < ended[me] => violations.push(format!(
                    "{}: daemon {me} was fenced {} ms before its lease ended: {}",
                    life.display(),
                    ended[me] - l.ms,
                    l.text
                )),
                "charge.paid" => {
                    let m = &l.fields["merchant_uid"];
                    if owner.get(m) != Some(me) {
                        violations.push(format!(
                            "{}: daemon {me} recorded {m} paid, a charge daemon {:?} owns: {}",
                            life.display(),
                            owner.get(m),
                            l.text
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "{} fence violation(s), the first ones:\n{}",
        violations.len(),
        violations[..violations.len().min(20)].join("\n")
    );
}

/// Rounds of the fence test (each a new daemon A stopped with a request in flight; whether its late outcome or its
/// heartbeat comes first after SIGCONT is a race, so each round is one more chance to exercise the fence).
const ROUNDS: usize = 3;

/// Daemon A sends a charge; the gateway charges it at once and holds the answer (30 s, past the 2 s timeout and the
/// 5 s lease); A is stopped (SIGSTOP) while the request is in flight. Daemon B joins: its first pass charges another
/// subscription (due on B's clock only: B runs a day ahead) and leaves A's charge alone while A's lease lives. Once
/// A's lease has lapsed, B's next pass takes the charge over and looks it up: the gateway has it, so B records it
/// paid and sends nothing. Then A is continued: it must record nothing (its late outcome is fenced,
/// `charge.fenced`, or it finds its lease lost first), and it exits 1 (`lease.lost`). One request and one paid
/// charge at the gateway, the book as B left it (the charge, the events, the outbox). Then B is stopped (SIGTERM) and
/// the next round begins, two days later in billing time, with new daemons.
#[test]
fn a_daemon_stopped_past_its_lease_with_a_request_in_flight_is_fenced() {
    let Some(db) = pg::database() else { return };
    let began = Instant::now();
    // Round k: a{k} is due on day 10 + 2k (A's clock), b{k} a day later (B's clock).
    let day = |k: usize, plus: usize| format!("2025-01-{:02}", 10 + 2 * k + plus);
    let mut body = MONTHLY.to_string();
    for k in 0..ROUNDS {
        body += &sub(&format!("a{k}"), &format!("ca{k}"), "monthly", &day(k, 0));
        body += &sub(&format!("b{k}"), &format!("cb{k}"), "monthly", &day(k, 1));
    }
    let w = World::new(Setup { body: &body, timeout: "2s", postgres: Some(db.url()), ..Default::default() });
    set_lease(&w, "5s");
    let mut fenced = 0;
    for k in 0..ROUNDS {
        w.sandbox.register_customer(&format!("ca{k}"), cards::APPROVE).unwrap();
        w.sandbox.register_customer(&format!("cb{k}"), cards::APPROVE).unwrap();
        let slow = Fault::Latency(Duration::from_secs(30));
        w.sandbox.add_fault(FaultRule { customer_uid: Some(format!("ca{k}")), fault: slow, times: Some(1) });
        fenced += usize::from(fence_round(&w, k, &day(k, 0), &day(k, 1)));
    }
    println!(
        "{ROUNDS} rounds: A's late outcome came before its heartbeat (charge.fenced) in {fenced}; {} ms",
        began.elapsed().as_millis()
    );
    w.assert_consistent();
}

/// One round of the fence test (`a_day`: A's billing day, `b_day`: B's); whether A's late outcome was fenced (else
/// its heartbeat found its lease lost first).
fn fence_round(w: &World, k: usize, a_day: &str, b_day: &str) -> bool {
    let m = format!("billd-a{k}-0");
    let attempt = || {
        let rows = w.rows(&format!(
            "SELECT status, owner, imp_uid, tries, check_at, updated_at, fail_reason, doubt_wall_ms FROM attempts
              WHERE merchant_uid = {}",
            lit(&m)
        ));
        assert_eq!(rows.len(), 1, "one attempt for {m}: {rows:?}");
        rows.into_iter().next().unwrap()
    };

    // A charges a{k} (due on its clock; b{k} is due a day later), and is stopped while the gateway holds the answer.
    let a_log = w.dir.path().join(format!("a{k}.log"));
    let mut a = spawn_daemon(w, &format!("{a_day}T10:00:00+09:00"), None, &a_log);
    wait_for("A's request to reach the gateway", || w.sent(&m) == 1);
    stop_outside_a_write(w, &a.0, "A");
    assert_eq!(w.ledger().iter().filter(|e| e.merchant_uid == m && e.status == "paid").count(), 1);
    let a_daemon = daemon_of(w, &a.0)["daemon"].clone();
    let a_id = a_daemon.to_string();
    let a_until = w.int(&format!("SELECT lease_until_ms FROM daemons WHERE id = {a_id}")).unwrap();
    assert_eq!(attempt()[0].as_deref(), Some("pending"));
    assert_eq!(attempt()[1].as_deref(), Some(a_id.as_str()), "A owns its charge");

    // B joins while A's lease lives: its first pass charges b{k} and leaves A's charge in flight alone.
    let b_log = w.dir.path().join(format!("b{k}.log"));
    let mut b = spawn_daemon(w, &format!("{b_day}T10:00:00+09:00"), None, &b_log);
    let probe = format!("SELECT count(*) FROM attempts WHERE merchant_uid = 'billd-b{k}-0' AND status = 'paid'");
    wait_for("B's first pass to charge its own due subscription", || w.int(&probe) == Some(1));
    let b_id = daemon_of(w, &b.0)["daemon"].to_string();
    let row = attempt();
    assert!(
        db_now_ms(w) < a_until,
        "(the harness) B's first pass ended after A's lease had lapsed: no test of a live lease; a longer lease?"
    );
    assert_eq!(
        (row[0].as_deref(), row[1].as_deref()),
        (Some("pending"), Some(a_id.as_str())),
        "B's pass took over the charge of daemon {a_id}, whose lease lives:\n{}",
        std::fs::read_to_string(&b_log).unwrap()
    );
    assert_eq!(w.sent(&m), 1, "B sent {m} while A's request was in flight");

    // A's lease lapses; B's next pass (now, on a reload, rather than at its minute's wake-up) takes the charge over,
    // finds it paid at the gateway and records it.
    wait_for("A's lease to lapse", || {
        status(w).iter().any(|d| d["daemon"] == a_daemon && d["running"].as_bool() == Some(false))
    });
    signal(&b.0, libc::SIGHUP);
    wait_for("B to take the charge over and record it paid", || attempt()[0].as_deref() == Some("paid"));
    let recorded = attempt();
    assert_eq!(recorded[1].as_deref(), Some(b_id.as_str()), "the charge was recorded paid by its new owner, B");
    let imp_uid = w.ledger().into_iter().find(|e| e.merchant_uid == m && e.status == "paid").unwrap().imp_uid;
    assert_eq!(recorded[2].as_deref(), Some(imp_uid.as_str()));
    let events = || w.rows("SELECT * FROM events ORDER BY id");
    let outbox = || w.rows("SELECT * FROM outbox ORDER BY seq");
    let (events_before, outbox_before) = (events(), outbox());

    // A is continued: its late outcome is fenced, or it finds its lease lost first; either way it exits 1.
    let said_before = std::fs::read_to_string(&a_log).unwrap().len();
    signal(&a.0, libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status_a = loop {
        if let Some(s) = a.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "A still runs 20 s after it was continued, its lease lapsed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(&a_log).unwrap();
    let late = &said[said_before..];
    assert_eq!(status_a.code(), Some(1), "A: {status_a}\n{said}");
    assert!(late.contains("lease.lost"), "A did not say it lost its lease:\n{late}");
    let recorded_late: Vec<&str> = late
        .lines()
        .filter(|l| l.contains(m.as_str()) && !l.contains("charge.fenced"))
        .filter(|l| ["charge.paid", "charge.unknown", "charge.failed", "charge.mismatch"].iter().any(|e| l.contains(e)))
        .collect();
    assert!(recorded_late.is_empty(), "A recorded its late outcome of {m}:\n{}", recorded_late.join("\n"));

    // Nothing A did late landed: the charge, the events and the outbox are as B left them.
    assert_eq!(attempt(), recorded, "A's late outcome changed the charge B recorded");
    assert_eq!(events(), events_before, "A wrote events late");
    assert_eq!(outbox(), outbox_before, "A published events late");
    // One request (B found the charge at the gateway and sent nothing), one payment.
    assert_eq!(w.sent(&m), 1, "{m} was sent again although the gateway had it");
    assert_eq!(w.paid_for(&format!("ca{k}")), std::slice::from_ref(&m));
    signal(&b.0, libc::SIGTERM);
    let status_b = b.0.wait().unwrap();
    assert!(status_b.success(), "B: {status_b}\n{}", std::fs::read_to_string(&b_log).unwrap());
    late.contains("charge.fenced")
}

/// Found measuring issue 27's throughput: a daemon without the one-at-a-time jobs put off every wake by a minute,
/// even for a billing day still ahead, so the day began on one daemon and the others joined a minute late; and the
/// first daemon to wake claimed 1024 charges at once, a whole small day. Two daemons, up before a day's due instant
/// (the second's billing clock started where the first's is): each takes part in the day (the gateway answers in
/// 100 ms, 4 at a time per daemon: a few seconds of work for one). Fails with either fault back.
#[test]
fn every_daemon_wakes_when_a_billing_day_begins() {
    let Some(db) = pg::database() else { return };
    const N: usize = 160;
    let mut body = MONTHLY.to_string();
    for i in 0..N {
        body += &sub(&format!("s{i}"), &format!("c{i}"), "monthly", "2025-02-01");
    }
    let sandbox = SandboxConfig { latency: Latency::Fixed(Duration::from_millis(100)), ..SandboxConfig::default() };
    let w = World::new(Setup { body: &body, sandbox, postgres: Some(db.url()), ..Default::default() });
    for i in 0..N {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
    }
    // Ten seconds before the due instant (10:00 in Seoul) on the first daemon's clock.
    let start = t("2025-02-01T09:59:50+09:00");
    let (a_log, b_log) = (w.dir.path().join("a.log"), w.dir.path().join("b.log"));
    let spawned = Instant::now();
    let a = spawn_daemon(&w, &start.to_rfc3339(), None, &a_log);
    let synced = "SELECT count(*) FROM subscriptions";
    wait_for("A to apply the config", || {
        w.query(synced).is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some(&*N.to_string()))
    });
    let b_start = start + chrono::Duration::from_std(spawned.elapsed()).unwrap();
    let b = spawn_daemon(&w, &b_start.to_rfc3339(), None, &b_log);
    let (a_id, b_id) = (daemon_of(&w, &a.0)["daemon"].to_string(), daemon_of(&w, &b.0)["daemon"].to_string());
    assert!(
        spawned.elapsed() < Duration::from_secs(8),
        "(the harness) both daemons should be up well before the due instant, 10 s after A started"
    );
    let paid = "SELECT count(*) FROM attempts WHERE status = 'paid'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.int(paid) != Some(N as i64) {
        assert!(Instant::now() < deadline, "{N} charges were not all paid within a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
    let by = |id: &str| w.int(&format!("SELECT count(*) FROM attempts WHERE owner = {id}")).unwrap();
    let (by_a, by_b) = (by(&a_id), by(&b_id));
    println!("A charged {by_a}, B {by_b} (of {N})");
    assert_eq!(by_a + by_b, N as i64);
    assert!(
        by_b > 0 && by_a > 0,
        "one daemon charged the whole day (A {by_a}, B {by_b}):\nA:\n{}\nB:\n{}",
        std::fs::read_to_string(&a_log).unwrap(),
        std::fs::read_to_string(&b_log).unwrap()
    );
    assert_eq!(w.ledger().iter().filter(|e| e.status == "paid").count(), N);
    w.assert_no_repeat_requests();
    drop((a, b));
}

/// An outside review: the daemon doing the jobs ran pass after pass (5,000 in 93 s) beside a stopped daemon whose
/// charge in doubt had its check time behind it while its lease lived (the book's next wake is the earliest check
/// time of every charge in doubt, another live daemon's too). A past instant never wakes a daemon at once: here, at
/// 20 billing seconds a second, one pass a billing minute (three real seconds), where J ran one pass after another
/// (about two a second in a debug build). Passes are counted by the `STATUS=` each sends to systemd's notify socket.
#[test]
fn a_daemon_never_spins_on_another_daemons_charge_in_doubt() {
    let Some(db) = pg::database() else { return };
    let body = MONTHLY.to_string() + &sub("lost", "c-lost", "monthly", "2025-02-01");
    let w = World::new(Setup { body: &body, timeout: "1s", postgres: Some(db.url()), ..Default::default() });
    w.sandbox.register_customer("c-lost", cards::APPROVE).unwrap();
    let lost = Fault::LoseResponseAfterCharge { hold: Duration::from_secs(3) };
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c-lost".into()), fault: lost, times: Some(1) });
    // Two billing minutes (six real seconds) before the charge is due.
    let start = t("2025-02-01T09:58:00+09:00");
    let (j_log, n_log) = (w.dir.path().join("j.log"), w.dir.path().join("n.log"));
    let notify = w.dir.path().join("j-notify.sock");
    let passes = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    passes.set_nonblocking(true).unwrap();
    let spawned = Instant::now();
    let j = KillOnDrop(
        w.billd()
            .args(["run", "--as-of", &start.to_rfc3339(), "--simulate", "--speed", "20"])
            .env("NOTIFY_SOCKET", &notify)
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&j_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("J to make the book", || w.query("SELECT count(*) FROM daemons").is_ok());
    let j_id = daemon_of(&w, &j.0)["daemon"].to_string();
    wait_for("J to do the jobs", || {
        w.query(&format!("SELECT jobs FROM daemons WHERE id = {j_id}"))
            .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some("1"))
    });
    std::thread::sleep(Duration::from_millis(500));
    // J stopped, N charges the day: the answer is lost, the charge in doubt (N's, its lease alive).
    stop_outside_a_write(&w, &j.0, "J");
    let n_start = start + chrono::Duration::from_std(spawned.elapsed() * 20).unwrap();
    let n = spawn_daemon(&w, &n_start.to_rfc3339(), Some(20), &n_log);
    let in_doubt = "SELECT count(*) FROM attempts WHERE status = 'unknown'";
    wait_for("N's charge to be in doubt", || w.query(in_doubt).is_ok_and(|r| r[0][0].as_deref() == Some("1")));
    stop_outside_a_write(&w, &n.0, "N");
    signal(&j.0, libc::SIGCONT);
    // J's clock passes the charge's check time (a billing minute after it was sent) within three real seconds; then
    // J's passes over eight seconds.
    std::thread::sleep(Duration::from_secs(4));
    let mut buf = [0u8; 4096];
    while passes.recv(&mut buf).is_ok() {}
    std::thread::sleep(Duration::from_secs(8));
    let mut n_passes = 0;
    while let Ok(n) = passes.recv(&mut buf) {
        n_passes += usize::from(String::from_utf8_lossy(&buf[..n]).contains("STATUS="));
    }
    println!("J ran {n_passes} passes in 8 s beside N's charge in doubt");
    assert!(n_passes <= 5, "J spun: {n_passes} passes in 8 s:\n{}", std::fs::read_to_string(&j_log).unwrap());
    assert_eq!(w.int("SELECT count(*) FROM attempts WHERE status = 'unknown'"), Some(1), "(the harness) N's charge");
    assert_eq!(w.sent("billd-lost-0"), 1, "the charge in doubt was sent again");
    drop((j, n));
}
