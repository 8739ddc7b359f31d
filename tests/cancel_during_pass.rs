//! Issue 20, 2: no charge leaves after a cancel, a pause or a reload that removes a subscription has been
//! confirmed, even while a pass is busy sending (its claimed page queued behind slow answers). The moment a request
//! leaves is a conditional write that checks the subscription is still billed; a status change voids claimed
//! attempts that have not left, and its confirmation says so, or says that one already sent will be settled.

mod common;

use common::{MONTHLY, Setup, World, cards, sub, text, wait_for};
use std::process::{Child, Stdio};
use std::time::Duration;

/// Ten subscriptions due `start`, sent one at a time (concurrency 1) by a gateway that answers each request 300 ms
/// after it arrives: a pass is busy for some 3 s, its page claimed, s0 first and s9 last.
fn slow_world(start: &str) -> World {
    let mut body = MONTHLY.to_string();
    for i in 0..10 {
        body += &sub(&format!("s{i}"), &format!("c{i}"), "monthly", start);
    }
    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Fixed(Duration::from_millis(300)),
        ..Default::default()
    };
    let w = World::new(Setup { sandbox, body: &body, concurrency: 1, ..Default::default() });
    for i in 0..10 {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
    }
    w
}

/// The merchant_uid of the latest charge request that reached the gateway (with concurrency 1: the one in flight).
fn latest_sent(w: &World) -> String {
    w.requests().last().and_then(|r| r.merchant_uid.clone()).unwrap_or_default()
}

/// Runs `billd ARGS` and returns what it printed, with the time it had exited (after its confirmation).
fn confirm(w: &World, args: &[&str]) -> (String, usize) {
    let out = w.billd().args(args).output().unwrap();
    assert!(out.status.success(), "billd {args:?}: {}", text(&out));
    (String::from_utf8_lossy(&out.stdout).into_owned(), w.requests().len())
}

/// Requests for `merchant_uid` that reached the gateway after the first `seen` requests of the log.
fn sent_after(w: &World, seen: usize, merchant_uid: &str) -> usize {
    w.requests().iter().skip(seen).filter(|r| r.merchant_uid.as_deref() == Some(merchant_uid)).count()
}

#[test]
fn cancel_and_pause_during_a_busy_tick_send_nothing_after_their_confirmation() {
    let w = slow_world("2025-01-01");
    let tick = w
        .billd()
        .args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the pass's first request", || !w.requests().is_empty());
    // The one in flight now: its cancel says it will be settled, not repeated.
    let in_flight = latest_sent(&w);
    let sub_in_flight = in_flight.trim_start_matches("billd-").trim_end_matches("-0").to_string();
    let (said, seen_in_flight) = confirm(&w, &["cancel", &sub_in_flight]);
    assert!(said.contains("one charge already sent will be settled, not repeated"), "{said}");
    // Queued behind it, claimed by the pass: withdrawn, and never sent.
    let (said_cancel, seen_cancel) = confirm(&w, &["cancel", "s9"]);
    assert!(said_cancel.contains("will never be charged again"), "{said_cancel}");
    assert!(!said_cancel.contains("already sent"), "{said_cancel}");
    let (said_pause, seen_pause) = confirm(&w, &["pause", "s8"]);
    assert!(!said_pause.contains("already sent"), "{said_pause}");
    let out = tick.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    assert_eq!(sent_after(&w, seen_cancel, "billd-s9-0"), 0, "s9 charged after its cancel: {:?}", w.requests());
    assert_eq!(sent_after(&w, seen_pause, "billd-s8-0"), 0, "s8 charged after its pause: {:?}", w.requests());
    assert_eq!(w.sent("billd-s9-0") + w.sent("billd-s8-0"), 0, "{:?}", w.requests());
    assert_eq!(sent_after(&w, seen_in_flight, &in_flight), 0, "the in-flight charge was repeated");
    // The in-flight one is settled as the gateway answered (paid), the other seven paid, the two withdrawn never.
    assert_eq!(w.paid_by_merchant_uid().len(), 8, "{:?}", w.ledger());
    assert!(said_cancel.contains("withdrawn") || said_pause.contains("withdrawn"), "{said_cancel}\n{said_pause}");
    w.assert_consistent();
}

fn signal(child: &Child, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// Under `billd run`, a pause, a cancel and a SIGHUP reload whose file no longer lists a subscription, each during
/// a busy pass: nothing for them reaches the gateway after the confirmation (for the reload: after its log line).
#[test]
fn cancel_pause_and_a_reload_removing_a_subscription_during_a_busy_run_send_nothing_after() {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let w = slow_world(&yesterday);
    let run = w.billd().arg("run").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the pass's first request", || !w.requests().is_empty());
    let (_, seen_cancel) = confirm(&w, &["cancel", "s9"]);
    let (_, seen_pause) = confirm(&w, &["pause", "s8"]);
    // s7 removed from the file, and the daemon told to reload.
    let mut body = MONTHLY.to_string();
    for i in (0..10).filter(|&i| i != 7) {
        body += &sub(&format!("s{i}"), &format!("c{i}"), "monthly", &yesterday);
    }
    w.write_config(&Setup { body: &body, concurrency: 1, ..Default::default() });
    signal(&run, "-HUP");
    // The reload is applied when the subscription is canceled in the book.
    wait_for("the reload", || w.status_of("s7") == "canceled");
    let seen_reload = w.requests().len();
    wait_for("the other seven charges", || w.paid_by_merchant_uid().len() >= 7);
    std::thread::sleep(Duration::from_millis(1000));
    signal(&run, "-TERM");
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    assert_eq!(sent_after(&w, seen_cancel, "billd-s9-0"), 0, "s9 charged after its cancel: {:?}", w.requests());
    assert_eq!(sent_after(&w, seen_pause, "billd-s8-0"), 0, "s8 charged after its pause: {:?}", w.requests());
    assert_eq!(sent_after(&w, seen_reload, "billd-s7-0"), 0, "s7 charged after the reload removed it");
    assert_eq!(w.sent("billd-s9-0") + w.sent("billd-s8-0") + w.sent("billd-s7-0"), 0, "{:?}", w.requests());
    w.assert_consistent();
}

/// A review found that the go write came before the request waited for its rate-limit turn (and its token): a
/// cancel confirmed "one charge already sent will be settled" while the request was still queued in billd, and it
/// left seconds later and was paid. The gateway now asks for the go right before it sends.
#[test]
fn a_request_waiting_for_its_rate_limit_turn_is_stopped_by_a_cancel() {
    let mut body = MONTHLY.to_string();
    for i in 0..6 {
        body += &sub(&format!("s{i}"), &format!("c{i}"), "monthly", "2025-01-01");
    }
    let w = World::new(Setup { body: &body, concurrency: 4, ..Default::default() });
    for i in 0..6 {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
    }
    // One request a second (tokens included): the senders hold s0..s3 and wait for their turns.
    let tick = w
        .billd()
        .args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"])
        .env("BILLD_GATEWAY__RATE_LIMIT", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the pass's first charge", || !w.requests().is_empty());
    let mut seen = Vec::new();
    for id in ["s5", "s4", "s3"] {
        let (said, at) = confirm(&w, &["cancel", id]);
        seen.push((id, said, at));
    }
    let out = tick.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    for (id, said, at) in &seen {
        let m = format!("billd-{id}-0");
        assert_eq!(sent_after(&w, *at, &m), 0, "{m} reached the gateway after `cancel {id}` said: {said}");
        assert!(!said.contains("already sent"), "{id}: nothing of it had left, yet: {said}");
    }
    w.assert_consistent();
}
