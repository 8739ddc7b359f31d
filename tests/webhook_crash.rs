//! Webhooks under stress (issue 26): `billd run` SIGKILLed at random instants through a simulated year of charging
//! and delivering, and an app that answers 500, hangs, then is down for a day before it recovers. The real binary,
//! the sandbox, and the receiver of `common/receiver.rs`, which verifies every delivery's signature. Billing time
//! comes from `--as-of` (and `--speed`); real sleeps only where the protocol counts real time (the quiet period of a
//! charge in doubt, a delivery's timeout).

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use common::{KillOnDrop, Rng, Setup, World, cards, sub};
use receiver::{Answer, Got, Receiver, SECRET};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

type Time = chrono::DateTime<chrono::FixedOffset>;

fn t(s: &str) -> Time {
    chrono::DateTime::parse_from_rfc3339(s).unwrap()
}

fn billd(w: &World, args: &[&str]) -> std::process::Output {
    w.billd().env("BILLD_WEBHOOKS__SECRET", SECRET).args(args).output().unwrap()
}

fn tick(w: &World, at: Time) {
    let out = billd(w, &["tick", "--as-of", &at.to_rfc3339(), "--simulate"]);
    assert!(out.status.success(), "tick {at}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One row of the outbox.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    kind: String,
    subscription: String,
    sequence: u64,
    state: String,
    last_error: Option<String>,
    last_attempt_at: Option<i64>,
}

/// The outbox, in the order events were written (empty before the daemon has made the book).
fn outbox(w: &World) -> Vec<Row> {
    let db = w.db();
    let Ok(mut st) = db.prepare(
        "SELECT id, type, coalesce(subscription_id, ''), sequence, state, last_error, last_attempt_at FROM outbox
         ORDER BY seq",
    ) else {
        return Vec::new();
    };
    st.query_map([], |r| {
        Ok(Row {
            id: r.get(0)?,
            kind: r.get(1)?,
            subscription: r.get(2)?,
            sequence: r.get::<_, i64>(3)? as u64,
            state: r.get(4)?,
            last_error: r.get(5)?,
            last_attempt_at: r.get(6)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Adds the outbox's rows to `all` (a row seen again replaces its older copy): delivered events are pruned `retain`
/// (90 days) after they were delivered, so over a simulated year the outbox at the end holds only the last months.
fn seen(all: &mut BTreeMap<String, Row>, rows: &[Row]) {
    for row in rows {
        all.insert(row.id.clone(), row.clone());
    }
}

/// The charges' intents committed with no outcome recorded yet (merchant_uid, tries).
fn pending(w: &World) -> BTreeSet<(String, i64)> {
    let db = w.db();
    let Ok(mut st) = db.prepare("SELECT merchant_uid, tries FROM attempts WHERE status = 'pending'") else {
        return BTreeSet::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// Attempts still unresolved (pending or unknown).
fn unresolved(w: &World) -> i64 {
    w.db()
        .query_row("SELECT count(*) FROM attempts WHERE status IN ('pending', 'unknown')", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Each subscription's first delivery of each of its events, in the order they arrived, must come in sequence order;
/// and no delivery of an event (answered or not) may arrive before its elder in the stream was answered 2xx (the app
/// saw the elder first). Returns the first deliveries per subscription.
fn assert_in_order(got: &[Got]) -> BTreeMap<String, Vec<u64>> {
    let mut first: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut accepted: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, g) in got.iter().enumerate() {
        let (sub, n) = g.stream();
        assert!(
            n == 1 || accepted.contains(&(sub.clone(), n - 1)),
            "delivery #{i}: {sub} event {n} ({}) sent before event {} was accepted",
            g.kind(),
            n - 1
        );
        if seen.insert(g.id.clone()) {
            let firsts = first.entry(sub.clone()).or_default();
            assert!(
                firsts.last().is_none_or(|last| *last < n),
                "{sub}: event {n} first arrived after event {} (first deliveries: {firsts:?})",
                firsts.last().unwrap()
            );
            firsts.push(n);
        }
        if (200..300).contains(&g.status) {
            accepted.insert((sub, n));
        }
    }
    first
}

/// Every delivery verified; every delivery of one id carried the same bytes, and the event's own id.
fn assert_signed_and_stable(got: &[Got]) {
    let bad: Vec<&Got> = got.iter().filter(|g| !g.verified).collect();
    assert!(bad.is_empty(), "{} deliveries whose signature does not verify: {bad:#?}", bad.len());
    let mut body: BTreeMap<&str, &str> = BTreeMap::new();
    for g in got {
        assert_eq!(g.body["id"].as_str(), Some(g.id.as_str()), "webhook-id is not the event's id: {g:?}");
        let first = *body.entry(g.id.as_str()).or_insert(g.raw.as_str());
        assert_eq!(first, g.raw, "two deliveries of {} with different bodies", g.id);
    }
}

/// How many kills `BILLD_CRASH_KILLS` asks for (default [`KILLS`]).
fn kills_wanted() -> usize {
    std::env::var("BILLD_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(KILLS)
}

/// The default number of kills (`BILLD_CRASH_KILLS` asks for another).
const KILLS: usize = 300;
/// The mean real lifetime of a daemon between two kills, when `--speed` can stretch the year over the kills.
const MEAN_LIFE: Duration = Duration::from_millis(120);

/// SIGKILL `billd run --as-of T --simulate --speed N` at random instants through a simulated year (by default
/// [`KILLS`] = 300 deaths, about 45 s on two cores; `BILLD_CRASH_KILLS=600` asks for more, about 90 s; the seed is
/// printed and `BILLD_TEST_SEED` replays it): 30 subscriptions of twelve monthly periods, starting on different days, three
/// with a card that always declines (dunned to a cancel), three whose card declines twice then pays (past_due, then
/// active again); a sandbox with 5-40 ms latency; an app that answers after 2-30 ms, with a 500 one time in ten. Each
/// daemon lives a random 0-2x the mean life, then is killed (one in eight instead dies by the failpoint
/// `webhook_after_send`: right after its first delivery is sent, before it is recorded); the next one starts where
/// the billing clock of the last one had got to. A last tick (after the quiet period) drains everything. Then:
/// every event written was delivered and reached the app (answered 2xx at least once; the outbox is read after each
/// death, as it prunes delivered events after 90 days of billing time); every delivery was
/// signed right; every delivery of one `webhook-id` carried the same bytes; each subscription's first deliveries came
/// in sequence order; the `charge.paid` events are exactly the gateway's paid charges, one each; each subscription
/// ended as its card says, with its event.
#[test]
fn sigkill_of_the_daemon_loses_no_event_and_signs_every_delivery() {
    let mut rng = Rng::from_env();
    let mut rand = move |n: u64| rng.below(n);
    let wanted = kills_wanted();
    let (start, end) = (t("2029-12-31T12:00:00+09:00"), t("2031-01-05T12:00:00+09:00"));
    let span = (end - start).to_std().unwrap();
    // The year over the kills: each daemon lives MEAN_LIFE on average, unless the clock would have to run faster
    // than `--speed` allows (then longer).
    let speed = (span.as_secs_f64() / (wanted as f64 * MEAN_LIFE.as_secs_f64())).clamp(1.0, 1_000_000.0) as u32;
    let mean_life = span.div_f64(wanted as f64 * speed as f64);

    let r = Receiver::seeded(rand(u64::MAX));
    r.latency(2, 30);
    r.answer(Answer::Flaky(10));
    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Random { min: Duration::from_millis(5), max: Duration::from_millis(40) },
        seed: Some(rand(u64::MAX)),
        ..Default::default()
    };
    const N: usize = 30;
    let card = |i: usize| match i % 10 {
        3 => cards::DECLINE_INSUFFICIENT_FUNDS.to_string(),
        6 => cards::decline_first(2),
        _ => cards::APPROVE.to_string(),
    };
    // Monthly, a fixed term of twelve periods: a year of billing, then `completed` (nothing left to charge at the end).
    let mut body = format!("{}periods = 12\n", common::MONTHLY);
    for i in 0..N {
        body += &sub(&format!("s{i:02}"), &format!("c{i:02}"), "monthly", &format!("2030-01-{:02}", 1 + i % 28));
    }
    // max_age is billing time: at this speed the default 3 days is a fraction of a real second, and this test is
    // about kills, not giving up.
    body += &format!("\n[webhooks]\nurl = \"{}\"\ntimeout = \"2s\"\nmax_age = \"365d\"\n", r.url());
    let w = World::new(Setup { sandbox, body: &body, timeout: "1s", ..Default::default() });
    for i in 0..N {
        w.sandbox.register_customer(&format!("c{i:02}"), &card(i)).unwrap();
    }

    let began = Instant::now();
    // The last daemon's log.
    let log = w.dir.path().join("run.log");
    let (mut as_of, mut kills, mut aborts) = (start, 0, 0);
    // Deaths that left a charge's intent committed and its outcome not recorded, and an event the app had accepted
    // and billd had not recorded.
    let (mut mid_charge, mut after_send) = (0, 0);
    // Every event written, by id, as last seen (the outbox is read after each kill, before any could be pruned).
    let mut all: BTreeMap<String, Row> = BTreeMap::new();
    while as_of < end {
        let failpoint = rand(8) == 0;
        let mut cmd = w.billd();
        cmd.env("BILLD_WEBHOOKS__SECRET", SECRET)
            .args(["run", "--as-of", &as_of.to_rfc3339(), "--simulate", "--speed", &speed.to_string()])
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        if failpoint {
            cmd.env("BILLD_FAILPOINT", "webhook_after_send");
        }
        let (pending_before, got_before) = (pending(&w), r.got().len());
        let spawned = Instant::now();
        let mut daemon = KillOnDrop(cmd.spawn().unwrap());
        let life = mean_life.mul_f64(rand(2001) as f64 / 1000.0);
        while spawned.elapsed() < life && daemon.0.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        match daemon.0.try_wait().unwrap() {
            Some(status) => {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(failpoint, "billd run exited by itself: {status}: {said}");
                aborts += 1;
            }
            None => {
                daemon.0.kill().unwrap();
                daemon.0.wait().unwrap();
                kills += 1;
            }
        }
        // (Its billing clock started a little after the spawn: the next one starts a little ahead of where it got.)
        as_of += chrono::Duration::from_std(spawned.elapsed() * speed).unwrap();
        mid_charge += usize::from(!pending(&w).is_subset(&pending_before));
        let rows = outbox(&w);
        let got: BTreeSet<String> =
            r.got()[got_before..].iter().filter(|g| (200..300).contains(&g.status)).map(|g| g.id.clone()).collect();
        after_send += usize::from(rows.iter().any(|e| e.state == "pending" && got.contains(&e.id)));
        seen(&mut all, &rows);
    }
    let killing = began.elapsed();

    // Recovery: the gateway finishes what it was charging, the quiet periods pass (real time), then ticks at the
    // end of the year deliver everything (a day apart, past any 500's backoff).
    w.wait_for_gateway_idle();
    w.wait_quiet();
    let mut at = end;
    for _ in 0..10 {
        tick(&w, at);
        if unresolved(&w) == 0 && outbox(&w).iter().all(|e| e.state != "pending") {
            break;
        }
        w.wait_for_gateway_idle();
        w.wait_quiet();
        at += chrono::Duration::days(1);
    }
    let got = r.got();
    let last = outbox(&w);
    seen(&mut all, &last);
    let ids: BTreeSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
    println!(
        "{kills} kills and {aborts} failpoint aborts of `billd run` at {speed}x over {} real s (mean life {} ms): \
         {mid_charge} left a charge in doubt, {after_send} an event the app had and billd had not recorded; {} events \
         ({} left in the outbox), {} deliveries ({} again)",
        killing.as_secs(),
        mean_life.as_millis(),
        all.len(),
        last.len(),
        got.len(),
        got.len() - ids.len()
    );

    // (a) Every event was delivered (those still in the outbox say so; the others were pruned after they were
    // delivered), and the app accepted each at least once.
    let undelivered: Vec<&Row> = last.iter().filter(|e| e.state != "delivered").collect();
    assert!(undelivered.is_empty(), "events not delivered after recovery: {undelivered:#?}");
    let accepted: BTreeSet<&str> =
        got.iter().filter(|g| (200..300).contains(&g.status)).map(|g| g.id.as_str()).collect();
    let lost: Vec<&Row> = all.values().filter(|e| !accepted.contains(e.id.as_str())).collect();
    assert!(lost.is_empty(), "{} events the app never accepted: {lost:#?}", lost.len());
    let unknown: Vec<&&str> = ids.iter().filter(|id| !all.contains_key(**id)).collect();
    assert!(unknown.is_empty(), "deliveries of events never seen in the outbox: {unknown:?}");
    // (b), (c) Signed right; a duplicate is the same event, byte for byte.
    assert_signed_and_stable(&got);
    // (d) In order per subscription.
    let first = assert_in_order(&got);
    for (sub, firsts) in &first {
        let n = all.values().filter(|e| &e.subscription == sub).count() as u64;
        assert_eq!(firsts, &(1..=n).collect::<Vec<_>>(), "{sub}: its events' first deliveries");
    }
    // (e) The charge.paid events are the gateway's paid charges, one each.
    let mut announced: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for e in all.values().filter(|e| e.kind == "charge.paid") {
        let g = got.iter().find(|g| g.id == e.id).unwrap();
        let m = g.body["data"]["merchant_uid"].as_str().unwrap_or_default().to_owned();
        announced.entry(m).or_default().push(&e.id);
    }
    let twice: Vec<_> = announced.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "charges announced paid more than once: {twice:?}");
    let paid = w.paid_by_merchant_uid();
    let announced: BTreeSet<&String> = announced.keys().collect();
    assert_eq!(announced, paid.keys().collect::<BTreeSet<_>>(), "charge.paid events vs the gateway's paid charges");
    // The ledger a year implies: twelve periods paid for each card that pays, a cancel for each that never does.
    let kinds = |sub: &str| -> Vec<&str> {
        let mut rows: Vec<&Row> = all.values().filter(|e| e.subscription == sub).collect();
        rows.sort_by_key(|e| e.sequence);
        rows.into_iter().map(|e| e.kind.as_str()).collect()
    };
    for i in 0..N {
        let (s, c) = (format!("s{i:02}"), format!("c{i:02}"));
        let k = kinds(&s);
        if i % 10 == 3 {
            assert!(w.paid_for(&c).is_empty(), "{s}");
            assert_eq!(w.status_of(&s), "canceled", "{s}");
            assert!(k.contains(&"subscription.past_due") && k.ends_with(&["subscription.canceled"]), "{s}: {k:?}");
        } else {
            assert_eq!(w.paid_for(&c).len(), 12, "{s}: twelve periods paid");
            assert_eq!(w.status_of(&s), "completed", "{s}");
            assert_eq!(k.iter().filter(|k| **k == "charge.paid").count(), 12, "{s}: {k:?}");
            assert!(k.ends_with(&["subscription.completed"]), "{s}: {k:?}");
            if i % 10 == 6 {
                assert!(k.contains(&"subscription.past_due") && k.contains(&"subscription.active"), "{s}: {k:?}");
            }
        }
    }
    w.assert_consistent();
    // The kills hit what they were aimed at.
    assert!(kills + aborts >= wanted / 2, "only {kills} kills and {aborts} aborts of {wanted} wanted");
    assert!(mid_charge > 0, "no kill left a charge in doubt");
    assert!(after_send > 0 && aborts > 0, "no kill came between a delivery and its record");
}

/// Which way the app is broken, by billing instant: it answers 500 on the first day, never answers on the second,
/// is down (its port closed) on the third, and is well from the fourth on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Fails,
    Hangs,
    Down,
    Well,
}

/// An app that answers 500 for a day, then hangs for a day, then is down for a day gets everything once it recovers,
/// exactly once and in per-subscription order, and nothing is given up (default max_age, 3 days): passes (`billd
/// tick --as-of`) at each billing day's charge time, at each delivery's retry time (the backoff schedule: 5 s, 5
/// min, 30 min, 2 h, 5 h, 10 h, ...) and at each change of the app's state, for nine days (a declining card's last
/// retry is the ninth). While the app is broken billd charges on time, sends only each subscription's oldest event
/// and records why it failed; a subscription added during the outage gets its own stream.
#[test]
fn an_app_that_fails_hangs_or_is_down_for_a_day_gets_everything_in_order_once_it_recovers() {
    let r = Receiver::start();
    let day = |d: u32| t(&format!("2030-01-{d:02}T00:00:00+09:00"));
    let billing = |d: u32| day(d) + chrono::Duration::hours(10);
    let phase = |at: Time| match at {
        at if at < day(2) => Phase::Fails,
        at if at < day(3) => Phase::Hangs,
        at if at < day(4) => Phase::Down,
        _ => Phase::Well,
    };
    let subs = [
        ("a1", "c-a1", cards::APPROVE.to_string(), 1),
        ("d1", "c-d1", cards::DECLINE_INSUFFICIENT_FUNDS.to_string(), 1),
        ("a2", "c-a2", cards::APPROVE.to_string(), 2),
        ("r2", "c-r2", cards::decline_first(1), 2),
        ("a3", "c-a3", cards::APPROVE.to_string(), 3),
    ];
    let mut body = common::MONTHLY.to_string();
    for (id, c, _, d) in &subs {
        body += &sub(id, c, "monthly", &format!("2030-01-{d:02}"));
    }
    body += &format!("\n[webhooks]\nurl = \"{}\"\ntimeout = \"1s\"\n", r.url());
    let w = World::new(Setup { body: &body, ..Default::default() });
    for (_, c, card, _) in &subs {
        w.sandbox.register_customer(c, card).unwrap();
    }
    w.sandbox.register_customer("c-late", cards::APPROVE).unwrap();
    // A subscription added while the app hangs (its events: a stream of their own, on their own schedule).
    let added = day(2) + chrono::Duration::hours(15);

    // The passes' instants: each billing day's charge time, each change of the app's state, the subscription added
    // during the outage, and each delivery's retry.
    let mut fixed: BTreeSet<Time> = (1..=9).map(billing).collect();
    fixed.extend([day(2), day(3), day(4), added]);
    let (mut at, mut now_phase, mut passes) = (billing(1), Phase::Well, 0);
    // Why billd's attempts failed, by the app's state at the pass that made them.
    let mut errors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    loop {
        let p = phase(at);
        if p != now_phase {
            match p {
                Phase::Fails => r.answer(Answer::Status(500)),
                Phase::Hangs => r.answer(Answer::Hang),
                Phase::Down => r.down(),
                Phase::Well => {
                    r.up();
                    r.answer(Answer::Ok);
                }
            }
            now_phase = p;
        }
        if at == added {
            let args = ["subscriptions", "add", "--id", "late", "--customer-uid", "c-late", "--plan", "monthly"];
            let when = ["--start", "2030-01-03", "--as-of", &at.to_rfc3339(), "--simulate"];
            let out = billd(&w, &[&args[..], &when[..]].concat());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        tick(&w, at);
        passes += 1;
        let events = outbox(&w);
        assert!(
            events.iter().all(|e| e.state != "failed"),
            "given up at {at}: {:#?}",
            events.iter().filter(|e| e.state == "failed").collect::<Vec<_>>()
        );
        // (The attempts of this pass.)
        for e in events.iter().filter(|e| e.state == "pending" && e.last_attempt_at >= Some(at.timestamp())) {
            errors.entry(format!("{p:?}")).or_default().insert(e.last_error.clone().unwrap_or_default());
        }
        if p == Phase::Down {
            // billd goes on charging while the app is down.
            assert!(at < billing(3) || w.paid_for("c-a3") == ["billd-a3-0"], "a3 not charged on its day");
        }
        // The next pass: the next fixed instant or delivery retry, whichever comes first.
        let retry: Option<i64> = w
            .db()
            .query_row("SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending' AND attempts > 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        let retry = retry.map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap().fixed_offset());
        let next = fixed.iter().copied().chain(retry).filter(|t| *t > at).min();
        match next {
            Some(next) => at = next,
            None => break,
        }
        assert!(passes < 200, "still passing at {at}");
    }
    let events = outbox(&w);
    let got = r.got();
    println!(
        "{passes} passes, {} events, {} deliveries; billd's errors by the app's state: {errors:?}",
        events.len(),
        got.len()
    );
    // Everything delivered, nothing given up; each event accepted exactly once.
    let left: Vec<&Row> = events.iter().filter(|e| e.state != "delivered").collect();
    assert!(left.is_empty(), "{left:#?}");
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    for g in got.iter().filter(|g| g.status == 200) {
        *accepted.entry(&g.id).or_default() += 1;
    }
    for e in &events {
        assert_eq!(accepted.get(e.id.as_str()), Some(&1), "{} {} {}: accepted", e.subscription, e.sequence, e.kind);
    }
    assert_signed_and_stable(&got);
    // In order: each stream's first deliveries in sequence order; nothing sent before its elder was accepted.
    let first = assert_in_order(&got);
    for id in subs.iter().map(|s| s.0).chain(["late"]) {
        let n = events.iter().filter(|e| e.subscription == id).count() as u64;
        assert!(n > 1, "{id}: {n} events");
        assert_eq!(first.get(id), Some(&(1..=n).collect::<Vec<_>>()), "{id}");
    }
    // The outage held no charge back: each period was charged on its day.
    for (id, c, _, d) in &subs {
        let made: i64 = w
            .db()
            .query_row("SELECT min(created_at) FROM attempts WHERE subscription_id = ?1", [id], |r| r.get(0))
            .unwrap();
        let late = chrono::DateTime::from_timestamp(made, 0).unwrap().fixed_offset() - billing(*d);
        // (The pass's clock runs on from its --as-of while it works.)
        assert!(
            late >= chrono::Duration::zero() && late < chrono::Duration::minutes(1),
            "{id} ({c}): charged {late} late"
        );
    }
    assert_eq!(w.status_of("d1"), "canceled");
    w.assert_consistent();
    // Each way of failing was met, and recorded as such; once the app was well, no attempt failed.
    let expected = [("Down", "no connection"), ("Fails", "HTTP 500"), ("Hangs", "no answer within 1s")];
    let expected = expected.map(|(p, e)| (p.to_owned(), BTreeSet::from([e.to_owned()])));
    assert_eq!(errors, BTreeMap::from(expected), "why billd's attempts failed, by the app's state");
}
