//! SIGKILL aimed at the exactly-once protocol in a busy pass (`billd tick`) and in the daemon (`billd run`), with
//! gateway latency and faults (HTTP 500, lost and dropped answers, charges still in progress at the gateway for up
//! to twice the gateway timeout, made even after billd is killed): each kill lands 0-60 ms after a process commits
//! its first intent (a claim, or a resend) of a billing day whose quota of kills has room, and is classified by the
//! protocol state it interrupted. Never two paid charges for a period, never a request for a merchant_uid the gateway
//! had paid or was still charging (checked by the harness), every due period paid or given up by the dunning
//! policy, nothing left unresolved after recovery. The seed is printed (`BILLD_TEST_SEED` replays it, the sandbox's
//! delays included); `BILLD_CRASH_KILLS=500` asks for more kills. Each test runs on SQLite and on PostgreSQL
//! (`…_on_postgres`: a database of the throwaway cluster of `tests/common/pg.rs`; issue 27).

mod common;
#[path = "common/pg.rs"]
mod pg;

use billd_sandbox::{Fault, FaultRule};
// Entries here replay history or catch up on purpose: `catch_up = true` (issue 21, 2).
use common::{MONTHLY, Rng, Setup, World, cards, lit, sub_catch_up as sub};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

/// The longest a charge stays in progress at the gateway under `charge_later_random`: twice billd's 1 s timeout.
const IN_FLIGHT_MAX: Duration = Duration::from_secs(2);

/// A random gateway fault for the next 1-3 matching charges: nothing charged (HTTP 500), charged with the answer
/// lost (held past billd's 1 s timeout) or the connection dropped, or charged after a random delay of up to
/// [`IN_FLIGHT_MAX`] (even if billd has given up or been killed meanwhile).
fn random_fault(customer: Option<String>, rand: &mut impl FnMut(u64) -> u64) -> FaultRule {
    let fault = match rand(4) {
        0 => Fault::Http500,
        1 => Fault::DropAfterCharge,
        2 => Fault::ChargeLaterRandom { max: IN_FLIGHT_MAX },
        _ => Fault::LoseResponseAfterCharge { hold: Duration::from_millis(1500) },
    };
    FaultRule { customer_uid: customer, fault, times: Some(1 + rand(3) as u32) }
}

/// Where the kills landed in the exactly-once protocol, judged from the database and the gateway after each kill:
/// an attempt the killed process claimed and left pending whose request never reached the gateway ("intent
/// committed, not sent"), whose request the gateway was still charging ("sent, no answer"), or which the gateway
/// had charged (and answered, or was about to) without billd recording it ("answered, not recorded").
#[derive(Debug, Default)]
struct Hits {
    not_sent: usize,
    no_answer: usize,
    not_recorded: usize,
    /// Kills aimed at a resend (an attempt sent before, by a process killed earlier or with its answer lost).
    at_resend: usize,
}

/// An intent a process committed and recorded no outcome for: a pending attempt, a claim or a resend (its `tries`
/// tell a resend from the attempt as it was pending before: a process that finds an attempt pending looks it up,
/// records it unknown, one more try, and marks it pending again when it resends it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Intent {
    merchant_uid: String,
    subscription: String,
    period: i64,
    tries: i64,
}

/// The pending attempts (none before the database exists).
fn pending(w: &World) -> BTreeSet<Intent> {
    let Ok(rows) =
        w.query("SELECT merchant_uid, subscription_id, period, tries FROM attempts WHERE status = 'pending'")
    else {
        return Default::default();
    };
    let int = |v: &Option<String>| v.as_deref().unwrap().parse().unwrap();
    rows.iter()
        .map(|r| Intent {
            merchant_uid: r[0].clone().unwrap(),
            subscription: r[1].clone().unwrap(),
            period: int(&r[2]),
            tries: int(&r[3]),
        })
        .collect()
}

/// What the gateway and the database held before a process started: its requests, its ledger, and the intents
/// already pending (the ones a process commits, as a new claim or a resend, are the others).
struct Before(usize, usize, BTreeSet<Intent>);

impl Before {
    fn take(w: &World) -> Before {
        Before(w.sandbox.requests().len(), w.ledger().len(), pending(w))
    }

    /// The intents the process started since has committed and not recorded yet.
    fn new_intents(&self, w: &World) -> Vec<Intent> {
        pending(w).into_iter().filter(|i| !self.2.contains(i)).collect()
    }
}

/// How long [`aim`] watches a process for an intent before it gives up on it (a bound, not an assertion).
const PATIENCE: Duration = Duration::from_secs(10);

/// Aims a kill at the protocol: waits until the process has committed an intent that `wanted` accepts (watching the
/// database every 2 ms), then 0-60 ms more, while it sends and records, and returns that intent; the caller kills
/// the process then if it is still running. `None` if it exits first, `idle()` says it has nothing to do at once,
/// or [`PATIENCE`] runs out.
fn aim(
    child: &mut Child,
    w: &World,
    before: &Before,
    wanted: impl Fn(&Intent) -> bool,
    idle: impl Fn() -> bool,
    rand: &mut impl FnMut(u64) -> u64,
) -> Option<Intent> {
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if let Some(intent) = before.new_intents(w).into_iter().find(&wanted) {
            std::thread::sleep(Duration::from_millis(rand(60)));
            return Some(intent);
        }
        if idle() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

impl Hits {
    /// Counts which protocol states a kill aimed at `aimed` left behind (each kill counts once per state it hit).
    fn count(&mut self, w: &World, before: &Before, aimed: &Intent) {
        self.at_resend += usize::from(aimed.tries > 0);
        let requests = w.sandbox.requests();
        let requests = &requests[before.0.min(requests.len())..];
        let ledger = w.ledger();
        let ledger = &ledger[before.1.min(ledger.len())..];
        let (mut a, mut b, mut c) = (false, false, false);
        for i in before.new_intents(w) {
            let m = i.merchant_uid.as_str();
            let sent = requests.iter().any(|r| r.merchant_uid.as_deref() == Some(m));
            let charged = ledger.iter().any(|e| e.merchant_uid == m);
            match (sent, charged) {
                (false, _) => a = true,
                (true, false) => b = true,
                (true, true) => c = true,
            }
        }
        self.not_sent += usize::from(a);
        self.no_answer += usize::from(b);
        self.not_recorded += usize::from(c);
    }

    /// Prints the classes and fails if a kill never landed in one of them.
    fn report(&self, what: &str) {
        println!(
            "{what}: kills that hit 'intent committed, not sent' {}, 'sent, no answer' {}, 'answered, not recorded' {} \
             ({} aimed at a resend)",
            self.not_sent, self.no_answer, self.not_recorded, self.at_resend
        );
        assert!(
            self.not_sent > 0 && self.no_answer > 0 && self.not_recorded > 0,
            "{what}: a protocol state no kill landed in: {self:?}"
        );
    }
}

/// Attempts still unresolved (pending or unknown).
fn unresolved(w: &World) -> i64 {
    let sql = "SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')";
    w.query(sql).ok().and_then(|r| r.first()?.first()?.clone()).map_or(0, |n| n.parse().unwrap())
}

/// Subscriptions in the batch; the long mode (`BILLD_CRASH_KILLS` above 20) scales it up so passes last long
/// enough for that many kills to land mid-pass.
const N: usize = 150;

#[test]
fn sigkill_during_a_batch_never_double_charges_or_loses_a_period() {
    sigkill_during_a_batch(None);
}

#[test]
fn sigkill_during_a_batch_never_double_charges_or_loses_a_period_on_postgres() {
    let Some(db) = pg::database() else { return };
    sigkill_during_a_batch(Some(db.url()));
}

/// The tick test's body, on SQLite or on the PostgreSQL book at `postgres`.
fn sigkill_during_a_batch(postgres: Option<&str>) {
    let kills_wanted: usize = std::env::var("BILLD_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let n = N * (kills_wanted / 20).max(1);
    let mut rng = Rng::from_env();
    let mut rand = move |n: u64| rng.below(n);

    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Random { min: Duration::from_millis(5), max: Duration::from_millis(40) },
        seed: Some(rand(u64::MAX)),
        ..Default::default()
    };
    let mut body = MONTHLY.to_string();
    for i in 0..n {
        body += &sub(&format!("s{i:02}"), &format!("c{i:02}"), "monthly", "2025-01-01");
    }
    let w = World::new(Setup { sandbox, body: &body, concurrency: 4, timeout: "1s", postgres, ..Default::default() });
    for i in 0..n {
        let card = if i % 10 == 0 { cards::DECLINE_INSUFFICIENT_FUNDS.to_string() } else { cards::APPROVE.to_string() };
        w.sandbox.register_customer(&format!("c{i:02}"), &card).unwrap();
    }
    // Three months of billing days (and the retry days in between), each pass killed at random until one finishes.
    let days = [
        "2025-01-01",
        "2025-01-02",
        "2025-01-04",
        "2025-01-08",
        "2025-02-01",
        "2025-02-02",
        "2025-02-04",
        "2025-03-01",
    ];
    let mut kills = 0;
    let mut faults = 0;
    let mut mid_charge = 0;
    let mut hits = Hits::default();
    for (d, day) in days.iter().enumerate() {
        let start: chrono::DateTime<chrono::FixedOffset> =
            chrono::DateTime::parse_from_rfc3339(&format!("{day}T10:00:00+09:00")).unwrap();
        let mut as_of = start.to_rfc3339();
        // This day's share of the kills still wanted.
        let quota = (kills_wanted - kills.min(kills_wanted)).div_ceil(days.len() - d);
        let (mut day_kills, mut passes) = (0, 0);
        // A day passes: billd's clock jumps past every quiet period, so the gateway finishes what it is charging
        // first, as it would in a day. (Passes on the same day are at the same `--as-of`: billd's clock runs no
        // faster than real time there, and the quiet period is what keeps it from resending a charge in progress.)
        w.wait_for_gateway_idle();
        loop {
            // Gateway trouble for customers whose cards approve (the declining ones keep their exact schedule).
            if rand(3) == 0 {
                let i = 1 + rand(n as u64 - 1) as usize;
                let i = if i.is_multiple_of(10) { i - 1 } else { i };
                w.sandbox.add_fault(random_fault(Some(format!("c{i:02}")), &mut rand));
                faults += 1;
            }
            // And often a charge still in progress at the gateway when the pass is killed: for one of the first
            // customers a pass sends to, so that it is under way when the kill comes.
            if rand(2) == 0 {
                let i = 1 + rand(4) as usize;
                let fault = Fault::ChargeLaterRandom { max: IN_FLIGHT_MAX };
                w.sandbox.add_fault(FaultRule { customer_uid: Some(format!("c{i:02}")), fault, times: Some(1) });
                faults += 1;
            }
            let before = Before::take(&w);
            let mut child =
                w.billd().args(["tick", "--as-of", &as_of]).stderr(std::process::Stdio::null()).spawn().unwrap();
            // Aimed at the protocol: from the first intent this pass commits (a claim, or a resend), a kill soon
            // after, while it sends and records.
            let aimed =
                if day_kills < quota { aim(&mut child, &w, &before, |_| true, || false, &mut rand) } else { None };
            let Some(aimed) = aimed.filter(|_| child.try_wait().unwrap().is_none()) else {
                assert!(child.wait().unwrap().success());
                passes += 1;
                // Done for the day once its kills are in, or nothing is left unresolved (or, as a bound, after
                // many passes); else a minute later (past the first unresolved backoff), when resends go out.
                if day_kills >= quota || unresolved(&w) == 0 || passes > 40 {
                    break;
                }
                w.wait_for_gateway_idle();
                w.wait_quiet();
                as_of = (chrono::DateTime::parse_from_rfc3339(&as_of).unwrap() + chrono::Duration::seconds(61))
                    .to_rfc3339();
                continue;
            };
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            day_kills += 1;
            mid_charge += usize::from(w.sandbox.requests_in_progress() > 0);
            hits.count(&w, &before, &aimed);
            // The next pass of the day comes after the quiet period (twice the 1 s timeout, rounded up, on the
            // billing clock; and in real time, waited out), so it resends what the gateway never saw; the gateway
            // first finishes what it is charging, as it would have by then.
            w.wait_for_gateway_idle();
            w.wait_quiet();
            as_of = (chrono::DateTime::parse_from_rfc3339(&as_of).unwrap() + chrono::Duration::seconds(3)).to_rfc3339();
        }
        w.wait_for_gateway_idle();
        w.wait_quiet();
        w.tick(&(chrono::DateTime::parse_from_rfc3339(&as_of).unwrap() + chrono::Duration::seconds(3)).to_rfc3339());
    }
    // Settle what the faults left unknown (checked a minute or two later), with the gateway healthy again.
    w.sandbox.clear_faults();
    w.wait_for_gateway_idle();
    w.wait_quiet();
    w.tick("2025-03-01T10:30:00+09:00");
    println!("{kills} kills ({mid_charge} while the gateway was still charging), {faults} fault rules");
    assert!(kills >= kills_wanted.min(20), "only {kills} kills landed mid-pass");
    hits.report("billd tick");
    // Nine in ten customers approve: 3 periods each; the declining ones were canceled after their retries.
    let paid = w.paid_by_merchant_uid();
    assert_eq!(paid.len(), (n - n / 10) * 3);
    for i in (0..n).filter(|i| i % 10 != 0) {
        for k in 0..3 {
            assert!(paid.contains_key(&format!("billd-s{i:02}-{k}")), "s{i:02} period {k} not paid");
        }
    }
    for i in (0..n).step_by(10) {
        assert_eq!(w.status_of(&format!("s{i:02}")), "canceled");
        assert_eq!(w.attempts_for(&format!("c{i:02}")).len(), 4, "c{i:02}: exactly 4 declined attempts");
    }
    w.assert_consistent();
}

/// Whether a daemon has work in hand: a subscription of the config not in the database yet (the daemon syncs it at
/// start), a period to open, a charge to send, an attempt a killed process left pending, or an unknown one whose
/// check comes within the quiet period (a restart's lookup found nothing; twice the 1 s timeout). An unknown attempt
/// whose check is a minute away (the backoff after a lost answer) is not work in hand.
fn work_left(w: &World, subscriptions: usize) -> bool {
    let now = chrono::Utc::now().timestamp();
    let sql = format!(
        "SELECT (SELECT count(*) FROM subscriptions s WHERE status IN ('active', 'past_due') AND next_due_at <= {now}
                   AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = s.id AND p.state = 'open'))
              + (SELECT count(*) FROM periods WHERE state = 'open' AND next_attempt_at <= {now})
              + (SELECT count(*) FROM attempts WHERE status = 'pending')
              + (SELECT count(*) FROM attempts WHERE status = 'unknown' AND check_at <= {now} + 3)
              + {subscriptions} - (SELECT count(*) FROM subscriptions)"
    );
    let n: i64 = w.query(&sql).ok().and_then(|r| r.first()?.first()?.clone()).map_or(1, |n| n.parse().unwrap());
    n > 0
}

/// `billd run` killed with SIGKILL and restarted, each kill aimed at the protocol as in the tick test. Subscriptions
/// start two days ago, daily (the daemon bills by the wall clock; the test harness sets the start dates), so each
/// batch of 25 has three billing days to catch up: periods 0, 1 and 2 (the day before yesterday, yesterday, today).
/// The kills are planned over batches added one after the other, each batch's share spread over its three billing
/// days by quota: each process is watched for the first intent it commits (a claim, or a resend after a restart's
/// quiet period) of a billing day of the current batch whose quota has room, and killed 0-60 ms after it. When no
/// day of the batch has room or work left, the daemon is stopped (SIGTERM) and the next batch added. Each kill is
/// classified as in the tick test (the test fails if a class got none). One card always declines, under a policy
/// with no retries that skips the period: each of its periods is given up after one decline. At the end a healthy
/// pass settles what the faults left unknown; then every due period is paid exactly once or given up after exactly
/// one decline, and nothing is unresolved.
#[test]
fn sigkill_of_the_daemon_aimed_at_each_billing_day_never_double_charges_or_loses_a_period() {
    sigkill_of_the_daemon(None);
}

#[test]
fn sigkill_of_the_daemon_aimed_at_each_billing_day_never_double_charges_or_loses_a_period_on_postgres() {
    let Some(db) = pg::database() else { return };
    sigkill_of_the_daemon(Some(db.url()));
}

/// The daemon test's body, on SQLite or on the PostgreSQL book at `postgres`.
fn sigkill_of_the_daemon(postgres: Option<&str>) {
    let mut rng = Rng::from_env();
    let mut rand = move |n: u64| rng.below(n);
    let kills_wanted: usize = std::env::var("BILLD_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    const BATCH: usize = 25;
    /// Billing days per batch: its periods 0, 1 and 2.
    const DAYS: usize = 3;
    // The kills are planned over this many batches; if some days could not take their share, more batches come.
    let planned = kills_wanted.div_ceil(8).max(2);
    let start = (chrono::Utc::now() - chrono::Duration::days(2)).date_naive();
    let daily = "\n[[plans]]\nid = \"daily\"\nname = \"Daily\"\namount = 1000\ninterval = \"1 day\"\n";
    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Random { min: Duration::from_millis(5), max: Duration::from_millis(40) },
        seed: Some(rand(u64::MAX)),
        ..Default::default()
    };
    let setup = |body: &str| -> String { format!("{daily}{body}") };
    let mut book = sub("decl", "c-decl", "daily", &start.to_string());
    let mut subs = vec!["decl".to_string()];
    let add_batch = |book: &mut String, subs: &mut Vec<String>| {
        let base = subs.len();
        for i in base..base + BATCH {
            *book += &sub(&format!("r{i:03}"), &format!("c{i:03}"), "daily", &start.to_string());
            subs.push(format!("r{i:03}"));
        }
    };
    // The batch a subscription came with (`decl` came with the first).
    let batch_of =
        |sub: &str| sub.strip_prefix('r').and_then(|n| n.parse::<usize>().ok()).map_or(0, |i| (i - 1) / BATCH);
    add_batch(&mut book, &mut subs);
    let text = setup(&book);
    let w = World::new(Setup {
        sandbox,
        timezone: "UTC",
        charge_time: "00:00",
        timeout: "1s",
        concurrency: 4,
        dunning: "retry_after = []\non_exhausted = \"skip\"",
        body: &text,
        postgres,
    });
    w.sandbox.register_customer("c-decl", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    let register = |w: &World, subs: &[String]| {
        for s in subs.iter().filter(|s| s.starts_with('r')) {
            w.sandbox.register_customer(&s.replacen('r', "c", 1), cards::APPROVE).unwrap();
        }
    };
    register(&w, &subs);

    let (mut kills, mut faults, mut stops, mut mid_charge) = (0, 0, 0, 0);
    let mut hits = Hits::default();
    // Kills per batch and billing day, for the report.
    let mut per_day: Vec<Vec<usize>> = Vec::new();
    let mut batch = 0;
    while kills < kills_wanted {
        assert!(batch < planned + 20, "only {kills} of {kills_wanted} aimed kills landed in {batch} batches");
        if batch > 0 {
            add_batch(&mut book, &mut subs);
            register(&w, &subs);
            w.write_config(&Setup {
                timezone: "UTC",
                charge_time: "00:00",
                timeout: "1s",
                concurrency: 4,
                dunning: "retry_after = []\non_exhausted = \"skip\"",
                body: &setup(&book),
                ..Default::default()
            });
        }
        // This batch's share of the kills still wanted, spread over its billing days.
        let share = (kills_wanted - kills).div_ceil(planned.saturating_sub(batch).max(1));
        let quota: Vec<usize> = (0..DAYS).map(|d| share / DAYS + usize::from(d < share % DAYS)).collect();
        let mut taken = vec![0; DAYS];
        while kills < kills_wanted {
            if rand(3) == 0 {
                w.sandbox.add_fault(random_fault(None, &mut rand));
                faults += 1;
            }
            // And often charges still in progress at the gateway when the daemon is killed.
            if rand(2) == 0 {
                let fault = Fault::ChargeLaterRandom { max: IN_FLIGHT_MAX };
                w.sandbox.add_fault(FaultRule { customer_uid: None, fault, times: Some(1 + rand(2) as u32) });
                faults += 1;
            }
            let before = Before::take(&w);
            let mut child = w.billd().arg("run").stderr(std::process::Stdio::null()).spawn().unwrap();
            let room = |i: &Intent| {
                let day = i.period as usize;
                batch_of(&i.subscription) == batch && day < DAYS && taken[day] < quota[day]
            };
            let aimed = aim(&mut child, &w, &before, room, || !work_left(&w, subs.len()), &mut rand);
            if let Some(status) = child.try_wait().unwrap() {
                panic!("billd run exited by itself: {status}");
            }
            let Some(intent) = aimed else {
                // Nothing of this batch left to aim at: the daemon is stopped as an operator would stop it.
                let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                assert!(term.unwrap().success());
                assert!(child.wait().unwrap().success(), "billd run did not exit 0 on SIGTERM");
                stops += 1;
                break;
            };
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            taken[intent.period as usize] += 1;
            mid_charge += usize::from(w.sandbox.requests_in_progress() > 0);
            hits.count(&w, &before, &intent);
        }
        per_day.push(taken);
        batch += 1;
    }
    // Recovery: a healthy gateway, then passes late enough for every unknown outcome's check to be due (the clock
    // jumps two hours ahead: the gateway first finishes what it is charging, as it would have by then).
    w.sandbox.clear_faults();
    w.wait_for_gateway_idle();
    // (Real quiet periods are waited out: no billing instant shortens them.)
    w.wait_quiet();
    let settle = chrono::Utc::now() + chrono::Duration::hours(2);
    w.tick(&settle.to_rfc3339());
    w.wait_quiet();
    w.tick(&(settle + chrono::Duration::minutes(1)).to_rfc3339());
    let days: Vec<String> =
        per_day.iter().map(|d| d.iter().map(usize::to_string).collect::<Vec<_>>().join("/")).collect();
    println!(
        "{kills} kills of `billd run` ({mid_charge} while the gateway was still charging), {faults} fault rules, \
         {batch} batches of {BATCH} subscriptions, {stops} daemons stopped when their batch had nothing left to aim \
         at; kills per billing day (day 0/1/2 of each batch): {}",
        days.join(", ")
    );
    hits.report("billd run");

    let paid = w.paid_by_merchant_uid();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for e in w.ledger().into_iter().filter(|e| e.status == "failed") {
        *failed.entry(e.merchant_uid).or_default() += 1;
    }
    // Every subscription starts on `start`, daily at 00:00 UTC.
    let mut due_periods = Vec::new();
    let mut d = start;
    while d.and_hms_opt(0, 0, 0).unwrap().and_utc() <= settle {
        due_periods.push(due_periods.len() as u64);
        d = d.succ_opt().unwrap();
    }
    let mut expected = 0;
    for s in &subs {
        for &p in &due_periods {
            let m = format!("billd-{s}-{p}");
            let state = w.rows(&format!("SELECT state FROM periods WHERE merchant_uid = {}", lit(&m)));
            let state =
                state.first().and_then(|r| r[0].clone()).unwrap_or_else(|| panic!("{m} was due and never opened"));
            if s == "decl" {
                assert_eq!(state, "given_up", "{m}");
                assert_eq!(failed.get(&m), Some(&1), "{m}: exactly one declined attempt");
                assert!(!paid.contains_key(&m));
            } else {
                assert_eq!(state, "paid", "{m}");
                assert!(paid.contains_key(&m), "{m} not paid at the gateway");
                expected += 1;
            }
        }
    }
    assert_eq!(paid.len(), expected, "paid charges for periods that were not due");
    w.assert_consistent();
}
