//! SIGKILL at random instants of a busy pass (`billd tick`) and of the daemon (`billd run`), with gateway latency
//! and faults (HTTP 500, lost and dropped answers, charges still in progress at the gateway for up to twice the
//! gateway timeout, made even after billd is killed): never two paid charges for a period, never a request for a
//! merchant_uid the gateway had paid or was still charging (checked by the harness), every due period paid or
//! given up by the dunning policy, nothing left unresolved after recovery. The seed is printed
//! (`BILLD_TEST_SEED` replays it, the sandbox's delays included); `BILLD_CRASH_KILLS=500` asks for more kills.

mod common;

use billd_sandbox::{Fault, FaultRule};
use common::{MONTHLY, Rng, Setup, World, cards, sub};
use std::collections::BTreeMap;
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
}

/// What the gateway and the database held before a process started: its requests, its ledger, and the attempts
/// already pending (the ones a process commits, as a new claim or a resend, are the others).
struct Before(usize, usize, std::collections::BTreeSet<String>);

/// The merchant_uids of pending attempts (none before the database exists).
fn pending(w: &World) -> std::collections::BTreeSet<String> {
    let db = w.db();
    match db.prepare("SELECT merchant_uid FROM attempts WHERE status = 'pending'") {
        Ok(mut st) => st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect(),
        Err(_) => Default::default(),
    }
}

impl Before {
    fn take(w: &World) -> Before {
        Before(w.sandbox.requests().len(), w.ledger().len(), pending(w))
    }

    /// Whether the process started since has committed an intent (claimed, or marked a resend).
    fn intent_committed(&self, w: &World) -> bool {
        pending(w).iter().any(|m| !self.2.contains(m))
    }
}

impl Hits {
    /// Counts which protocol states a kill left behind (each kill counts once per state it hit).
    fn count(&mut self, w: &World, before: &Before) {
        let requests = w.sandbox.requests();
        let requests = &requests[before.0.min(requests.len())..];
        let ledger = w.ledger();
        let ledger = &ledger[before.1.min(ledger.len())..];
        let (mut a, mut b, mut c) = (false, false, false);
        for m in pending(w).iter().filter(|m| !before.2.contains(*m)) {
            let sent = requests.iter().any(|r| r.merchant_uid.as_deref() == Some(m.as_str()));
            let charged = ledger.iter().any(|e| &e.merchant_uid == m);
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
            "{what}: kills that hit 'intent committed, not sent' {}, 'sent, no answer' {}, 'answered, not recorded' {}",
            self.not_sent, self.no_answer, self.not_recorded
        );
        assert!(
            self.not_sent > 0 && self.no_answer > 0 && self.not_recorded > 0,
            "{what}: a protocol state no kill landed in: {self:?}"
        );
    }
}

/// Attempts still unresolved (pending or unknown).
fn unresolved(w: &World) -> i64 {
    w.db()
        .query_row("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Subscriptions in the batch; the long mode (`BILLD_CRASH_KILLS` above 20) scales it up so passes last long
/// enough for that many kills to land mid-pass.
const N: usize = 150;

#[test]
fn sigkill_during_a_batch_never_double_charges_or_loses_a_period() {
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
    let w = World::new(Setup { sandbox, body: &body, concurrency: 4, timeout: "1s", ..Default::default() });
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
            let started = Instant::now();
            let mut armed = false;
            while day_kills < quota && started.elapsed() < Duration::from_secs(10) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if before.intent_committed(&w) {
                    armed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if armed {
                std::thread::sleep(Duration::from_millis(rand(60)));
            }
            if !armed || child.try_wait().unwrap().is_some() {
                assert!(child.wait().unwrap().success());
                passes += 1;
                // Done for the day once its kills are in, or nothing is left unresolved (or, as a bound, after
                // many passes); else a minute later (past the first unresolved backoff), when resends go out.
                if day_kills >= quota || unresolved(&w) == 0 || passes > 40 {
                    break;
                }
                w.wait_for_gateway_idle();
                as_of = (chrono::DateTime::parse_from_rfc3339(&as_of).unwrap() + chrono::Duration::seconds(61))
                    .to_rfc3339();
                continue;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            day_kills += 1;
            mid_charge += usize::from(w.sandbox.requests_in_progress() > 0);
            hits.count(&w, &before);
            // The next pass of the day comes after the quiet period (twice the 1 s timeout, rounded up), so it
            // resends what the gateway never saw; the gateway first finishes what it is charging, as it would
            // have by then.
            w.wait_for_gateway_idle();
            as_of = (chrono::DateTime::parse_from_rfc3339(&as_of).unwrap() + chrono::Duration::seconds(3)).to_rfc3339();
        }
        w.wait_for_gateway_idle();
        w.tick(&(chrono::DateTime::parse_from_rfc3339(&as_of).unwrap() + chrono::Duration::seconds(3)).to_rfc3339());
    }
    // Settle what the faults left unknown (checked a minute or two later), with the gateway healthy again.
    w.sandbox.clear_faults();
    w.wait_for_gateway_idle();
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

/// Whether the database still has work a daemon would do at once: a period to open, a charge to send, or an attempt
/// a killed process left pending. (An `unknown` attempt waits a minute for its check: not work at once.)
fn work_left(w: &World) -> bool {
    let now = chrono::Utc::now().timestamp();
    let n: i64 = w
        .db()
        .query_row(
            "SELECT (SELECT count(*) FROM subscriptions s WHERE status IN ('active', 'past_due') AND next_due_at <= ?1
                       AND NOT EXISTS (SELECT 1 FROM periods p WHERE p.subscription_id = s.id AND p.state = 'open'))
                  + (SELECT count(*) FROM periods WHERE state = 'open' AND next_attempt_at <= ?1)
                  + (SELECT count(*) FROM attempts WHERE status = 'pending')",
            [now],
            |r| r.get(0),
        )
        .unwrap_or(1);
    n > 0
}

/// `billd run` killed with SIGKILL at random instants and restarted, with latency and faults. Subscriptions start
/// two days ago (the daemon bills by the wall clock), daily, so each has three periods to catch up; whenever the
/// book is all charged, a new batch is added, so every kill lands on a daemon with work in hand. One card always
/// declines, under a policy with no retries that skips the period: each of its periods is given up after one
/// decline. At the end a healthy pass settles what the faults left unknown; then every due period is paid exactly
/// once or given up after exactly one decline, and nothing is unresolved.
#[test]
fn sigkill_of_the_daemon_at_random_instants_never_double_charges_or_loses_a_period() {
    let mut rng = Rng::from_env();
    let mut rand = move |n: u64| rng.below(n);
    let kills_wanted: usize = std::env::var("BILLD_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    const BATCH: usize = 25;
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
    });
    w.sandbox.register_customer("c-decl", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    let register = |w: &World, subs: &[String]| {
        for s in subs.iter().filter(|s| s.starts_with('r')) {
            w.sandbox.register_customer(&s.replacen('r', "c", 1), cards::APPROVE).unwrap();
        }
    };
    register(&w, &subs);

    let (mut kills, mut faults, mut batches, mut mid_charge) = (0, 0, 1, 0);
    let mut hits = Hits::default();
    let started = Instant::now();
    while kills < kills_wanted {
        if !work_left(&w) {
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
            batches += 1;
        }
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
        std::thread::sleep(Duration::from_millis(30 + rand(400)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("billd run exited by itself: {status}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        mid_charge += usize::from(w.sandbox.requests_in_progress() > 0);
        hits.count(&w, &before);
        assert!(started.elapsed() < Duration::from_secs(60 + kills_wanted as u64 * 2), "too slow");
    }
    // Recovery: a healthy gateway, then passes late enough for every unknown outcome's check to be due (the clock
    // jumps two hours ahead: the gateway first finishes what it is charging, as it would have by then).
    w.sandbox.clear_faults();
    w.wait_for_gateway_idle();
    let settle = chrono::Utc::now() + chrono::Duration::hours(2);
    w.tick(&settle.to_rfc3339());
    w.tick(&(settle + chrono::Duration::minutes(1)).to_rfc3339());
    println!(
        "{kills} kills of `billd run` ({mid_charge} while the gateway was still charging), {faults} fault rules, \
         {batches} batches of {BATCH} subscriptions"
    );
    hits.report("billd run");

    let paid = w.paid_by_merchant_uid();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for e in w.ledger().into_iter().filter(|e| e.status == "failed") {
        *failed.entry(e.merchant_uid).or_default() += 1;
    }
    let db = w.db();
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
            let state: String = db
                .query_row("SELECT state FROM periods WHERE merchant_uid = ?1", [&m], |r| r.get(0))
                .unwrap_or_else(|_| panic!("{m} was due and never opened"));
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
