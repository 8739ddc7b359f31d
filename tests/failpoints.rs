//! Crashes at each step of the exactly-once protocol (`BILLD_FAILPOINT`, which aborts the process like `kill -9`):
//! after the intent commit, after sending and before the answer, after the answer and before the outcome commit.
//! Each test checks the state at the crash (intent rows committed before anything reached the gateway), recovers
//! with plain reruns (one at once, one after the quiet period), and checks the gateway's ledger: one paid charge per
//! period, a decline counted once, nothing left unresolved, no second `again` for a period the gateway had already
//! seen.

mod common;

use common::{MONTHLY, Setup, World, cards, sub};
use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

const DUE: &str = "2025-01-01T10:00:00+09:00";

fn world(latency_ms: u64) -> World {
    let mut body = MONTHLY.to_string();
    for i in 0..4 {
        body += &sub(&format!("s{i}"), &format!("c{i}"), "monthly", "2025-01-01");
    }
    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Fixed(Duration::from_millis(latency_ms)),
        ..Default::default()
    };
    // A 1 s gateway timeout: the quiet period is 2 s, in real time (tests wait it out).
    let w = World::new(Setup { sandbox, body: &body, concurrency: 4, timeout: "1s", ..Default::default() });
    for i in 0..3 {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
    }
    // c3's card is declined (insufficient funds): a decline must be counted once, never re-sent by recovery.
    w.sandbox.register_customer("c3", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w
}

/// Runs a tick armed with the failpoint and asserts it died abnormally at that point.
fn crash_at(w: &World, point: &str) -> Output {
    let out = w.billd().args(["tick", "--as-of", DUE]).env("BILLD_FAILPOINT", point).output().unwrap();
    let stderr = World::stderr(&out);
    assert!(!out.status.success(), "the tick with BILLD_FAILPOINT={point} exited normally: {stderr}");
    assert!(stderr.contains(&format!("failpoint {point}: aborting")), "{stderr}");
    out
}

/// (merchant_uid → status) of every attempt row in the database.
fn attempts(w: &World) -> Vec<(String, String)> {
    let db = w.db();
    let mut st = db.prepare("SELECT merchant_uid, status FROM attempts ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// The protocol's core: nothing reaches the gateway without its intent row committed first.
fn assert_every_charge_had_its_intent(w: &World) {
    let intents: Vec<String> = attempts(w).into_iter().map(|(m, _)| m).collect();
    for e in w.ledger() {
        assert!(intents.contains(&e.merchant_uid), "{} reached the gateway with no committed intent", e.merchant_uid);
    }
}

/// After recovery: s0..s2 paid once with one `again` each, c3 declined once (a retry scheduled), nothing unresolved.
/// The rerun settles by lookup what the gateway had seen and resends nothing yet: a request of the process that died
/// may still be in progress, so what has no record at the gateway is looked up again after a quiet period (twice
/// the 1 s gateway timeout, in real time) and only then resent.
fn assert_recovered(w: &World) {
    let seen: Vec<String> = w.ledger().into_iter().map(|e| e.merchant_uid).collect();
    let sent = w.requests();
    let out = w.tick(DUE);
    let stderr = World::stderr(&out);
    assert!(!stderr.contains("reconciled=0"), "the rerun reconciled nothing: {stderr}");
    assert_eq!(w.requests(), sent, "the rerun sent a charge before the quiet period: {stderr}");
    let held: Vec<(i64, i64)> = {
        let db = w.db();
        let mut st = db.prepare("SELECT tries, check_at FROM attempts WHERE status IN ('pending', 'unknown')").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let due = chrono::DateTime::parse_from_rfc3339(DUE).unwrap().timestamp();
    // The quiet period runs from the look in the pass (a fraction of a second after its instant), rounded up.
    assert!(
        held.iter().all(|&(tries, at)| tries == 1 && (due + 2..=due + 3).contains(&at)),
        "looked up again after 2 s: {held:?}"
    );
    assert_eq!(held.len(), attempts(w).len() - seen.len(), "everything the gateway never saw waits: {held:?}");
    // Not yet at the end of the quiet period; then resent.
    w.tick("2025-01-01T10:00:01+09:00");
    assert_eq!(w.requests(), sent, "resent within the quiet period");
    w.wait_quiet();
    w.tick("2025-01-01T10:00:03+09:00");
    let paid = w.paid_by_merchant_uid();
    assert_eq!(paid.keys().cloned().collect::<Vec<_>>(), ["billd-s0-0", "billd-s1-0", "billd-s2-0"]);
    let per_uid: BTreeMap<String, usize> = w.sent_by_merchant_uid();
    assert_eq!(per_uid.len(), 4, "{per_uid:?}");
    for (m, n) in &per_uid {
        assert_eq!(*n, 1, "{m} was sent to the gateway {n} times (a lookup should have settled it)");
    }
    let c3 = w.attempts_for("c3");
    assert_eq!(c3.len(), 1, "c3's declined first attempt: {c3:?}");
    assert_eq!(c3[0].status, "failed");
    let declines: i64 = w
        .db()
        .query_row("SELECT declines FROM periods WHERE subscription_id = 's3' AND period = 0", [], |r| r.get(0))
        .unwrap();
    assert_eq!(declines, 1, "the decline is counted exactly once");
    assert_eq!(w.status_of("s3"), "past_due");
    w.assert_consistent();
    // A day later the retry goes out as the policy says: a second attempt, same merchant_uid.
    w.tick("2025-01-02T10:00:11+09:00");
    assert_eq!(w.attempts_for("c3").len(), 2);
    assert!(w.attempts_for("c3").iter().all(|e| e.merchant_uid == "billd-s3-0"));
    assert_eq!(w.paid_by_merchant_uid().len(), 3);
    w.assert_consistent();
}

#[test]
fn crash_after_the_intent_commit_sends_nothing_and_recovers() {
    let w = world(0);
    crash_at(&w, "after_intent_commit");
    let rows = attempts(&w);
    assert_eq!(rows.len(), 4, "all four intents committed before the crash: {rows:?}");
    assert!(rows.iter().all(|(_, s)| s == "pending"), "{rows:?}");
    assert!(w.requests().is_empty(), "nothing may be sent before the crash point: {:?}", w.requests());
    assert_recovered(&w);
}

#[test]
fn crash_after_sending_before_the_answer_recovers_by_lookup() {
    // The sandbox records each charge, then holds the answer 300 ms: billd aborts 50 ms after sending.
    let w = world(300);
    crash_at(&w, "after_send");
    let rows = attempts(&w);
    assert!(!rows.is_empty() && rows.iter().all(|(_, s)| s == "pending"), "{rows:?}");
    assert_every_charge_had_its_intent(&w);
    println!("at the crash: {} intents, {} charges at the gateway", rows.len(), w.ledger().len());
    assert_recovered(&w);
}

#[test]
fn crash_after_the_answer_before_recording_it_recovers_by_lookup() {
    let w = world(0);
    crash_at(&w, "after_response");
    let rows = attempts(&w);
    assert!(rows.iter().all(|(_, s)| s == "pending"), "no outcome can be recorded before the crash: {rows:?}");
    assert!(!w.ledger().is_empty(), "the answer was read, so the gateway charged at least one");
    assert_every_charge_had_its_intent(&w);
    assert_recovered(&w);
}

#[test]
fn the_daemon_crashing_after_its_intent_commit_recovers_on_restart() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let body = format!("{MONTHLY}{}{}", sub("s0", "c0", "monthly", &yesterday), sub("s1", "c1", "monthly", &yesterday));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c0", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let out = w.billd().arg("run").env("BILLD_FAILPOINT", "after_intent_commit").output().unwrap();
    assert!(!out.status.success(), "{}", World::stderr(&out));
    assert!(World::stderr(&out).contains("failpoint after_intent_commit: aborting"));
    assert_eq!(attempts(&w).len(), 2);
    assert!(w.requests().is_empty());

    let mut child = w.billd().arg("run").stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while w.paid_by_merchant_uid().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "the restarted daemon did not charge: {:?}", w.ledger());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let sent = w.sent_by_merchant_uid();
    assert!(sent.len() == 2 && sent.values().all(|&n| n == 1), "one `again` per period: {sent:?}");
    w.assert_consistent();
}

/// A subscription paused while a killed run had its charge in flight (the gateway refused it with a 500 and
/// charged nothing, but billd died before reading that): the pause says a charge already sent will be settled; the
/// charge is not closed as "never reached the gateway" at the first lookup that finds nothing (its request may
/// still be in progress there), only at a look after the quiet period; the other periods recover as usual.
#[test]
fn an_in_flight_charge_of_a_paused_subscription_is_abandoned_only_after_the_quiet_period() {
    let w = world(300); // the answers come 300 ms after the requests; billd dies 50 ms after sending

    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("c0".into()),
        fault: billd_sandbox::Fault::Http500,
        times: Some(1),
    });
    crash_at(&w, "after_send");
    let out = w.billd().args(["pause", "s0"]).output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("one charge already sent will be settled, not repeated"), "{said}");
    let s0 = |w: &World| -> (String, Option<String>) {
        w.db()
            .query_row("SELECT status, failure FROM attempts WHERE subscription_id = 's0'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
    };
    w.tick(DUE);
    assert_eq!(s0(&w), ("unknown".to_string(), None), "given up while its request may be in progress");
    // The listings say what happens next for it: a lookup, paused or not (found by the new-operator review).
    let list = w.billd().arg("subscriptions").output().unwrap();
    let line =
        String::from_utf8_lossy(&list.stdout).lines().find(|l| l.starts_with("s0")).unwrap_or_default().to_owned();
    assert!(line.contains("lookup"), "{line}");
    let show = w.billd().args(["subscriptions", "show", "s0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("look up billd-s0-0"), "{}", common::text(&show));
    w.wait_quiet();
    w.tick("2025-01-01T10:00:03+09:00");
    assert_eq!(s0(&w), ("failed".to_string(), Some("abandoned".to_string())));
    assert_eq!(w.sent("billd-s0-0"), 1, "the paused subscription's charge was sent again");
    assert_eq!(w.paid_by_merchant_uid().len(), 2, "s1 and s2 paid");
}

/// A subscription paused after a killed run committed its intents but before any request left: the pause
/// withdraws its claimed charge at once (nothing for it can be in flight), and nothing is ever sent for it.
#[test]
fn a_claimed_charge_of_a_paused_subscription_that_never_left_is_withdrawn() {
    let w = world(0);
    crash_at(&w, "after_intent_commit");
    let out = w.billd().args(["pause", "s0"]).output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("one charge claimed by a pass was withdrawn before it was sent"), "{said}");
    assert!(!said.contains("already sent"), "{said}");
    let left: i64 =
        w.db().query_row("SELECT count(*) FROM attempts WHERE subscription_id = 's0'", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "the unsent attempt is voided");
    w.tick(DUE);
    w.wait_quiet();
    w.tick("2025-01-01T10:00:03+09:00");
    assert_eq!(w.sent("billd-s0-0"), 0, "a paused subscription's charge was sent");
    assert_eq!(w.paid_by_merchant_uid().len(), 2, "s1 and s2 paid after the quiet period");
}

/// The hazard the quiet period is for: billd dies while the gateway is still making a charge. The sandbox charges
/// c0's card 1.5 s after the request arrives, even with billd gone, and (as i'mport refuses a merchant_uid only once
/// it is paid) would charge a second request for the same merchant_uid that came meanwhile. The rerun right after
/// the crash finds nothing and must not send it again; once the quiet period is over, the lookup finds the payment.
#[test]
fn a_charge_still_in_progress_at_the_gateway_when_billd_died_is_not_sent_again() {
    let w = world(0);
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("c0".into()),
        fault: billd_sandbox::Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
    crash_at(&w, "after_send");
    let s0 = |w: &World| w.ledger().into_iter().filter(|e| e.merchant_uid == "billd-s0-0").count();
    assert_eq!(s0(&w), 0, "the charge is still in progress at the crash");
    w.tick(DUE);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s0(&w), 1, "the first request's charge was made, billd gone");
    w.wait_quiet();
    w.tick("2025-01-01T10:00:03+09:00");
    assert_eq!(s0(&w), 1, "billd-s0-0 charged twice");
    assert_eq!(w.sent("billd-s0-0"), 1, "billd-s0-0 was sent again: {:?}", w.requests());
    assert_eq!(w.paid_by_merchant_uid().len(), 3);
    w.assert_consistent();
}
