//! A hostile gateway: HTML error pages, non-JSON, truncated JSON, missing or mistyped fields, a 20 MiB body, an
//! answer that trickles in byte by byte, a connection reset mid-body, a `paid` answer for another merchant_uid or
//! amount. Each is classified as transient or unknown (the attempt stays `unknown` with a clear reason and a
//! `charge.unknown` line), billd never panics and exits 0, and once the fault is gone the next pass settles the
//! period by lookup: exactly one paid charge, and no second `again` when the gateway had already charged.

mod common;

use billd_sandbox::{Fault, FaultRule};
use common::{MONTHLY, Setup, World, cards, sub};
use std::time::Duration;

const DUE: &str = "2025-01-01T10:00:00+09:00";
const LATER: &str = "2025-01-01T10:05:00+09:00";

fn world() -> World {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w
}

fn attempt(w: &World) -> (String, String) {
    w.db()
        .query_row(
            "SELECT status, coalesce(fail_reason, '') FROM attempts WHERE merchant_uid = 'billd-s1-0'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// Injects `fault` once for c1, runs the due pass, and checks the classification; then the next pass recovers.
/// `charged`: whether the sandbox records the charge before answering badly (decided after charging).
fn hostile(fault: Fault, charged: bool, reason: &str) {
    assert_eq!(fault.before_charge(), !charged, "{fault:?}");
    let w = world();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: fault.clone(), times: Some(1) });
    let out = w.tick(DUE);
    let stderr = World::stderr(&out);
    assert!(!stderr.contains("panicked"), "{fault:?}: {stderr}");
    let (status, fail_reason) = attempt(&w);
    assert_eq!(status, "unknown", "{fault:?} must leave the outcome unknown, got {status} ({fail_reason})");
    assert!(fail_reason.contains(reason), "{fault:?}: reason {fail_reason:?} lacks {reason:?}");
    let line =
        stderr.lines().find(|l| l.contains("charge.unknown")).unwrap_or_else(|| panic!("no charge.unknown: {stderr}"));
    assert!(line.contains("merchant_uid=billd-s1-0") && line.contains(reason), "{fault:?}: unclear log line: {line}");
    println!("{fault:?}: {line}");
    assert!(!stderr.contains("charge.paid"), "{fault:?} was taken for a payment: {stderr}");
    assert_eq!(w.ledger().len(), usize::from(charged), "{fault:?}: charged at the gateway");

    // The fault is gone; the check is due 1 minute later (and after the real quiet period): a lookup settles it.
    w.wait_quiet();
    let out = w.tick(LATER);
    let stderr = World::stderr(&out);
    assert!(stderr.contains("charge.paid"), "{fault:?}: {stderr}");
    assert_eq!(attempt(&w).0, "paid");
    let ledger = w.ledger();
    assert_eq!(ledger.len(), 1, "{fault:?}: exactly one charge at the card company: {ledger:?}");
    assert_eq!(ledger[0].status, "paid");
    // Resent only when the first request charged nothing.
    let want = if charged { 1 } else { 2 };
    assert_eq!(w.sent("billd-s1-0"), want, "{fault:?}: `again` requests: {:?}", w.requests());
    if charged {
        assert!(!stderr.contains("charge.resend"), "{fault:?}: resent although the gateway had charged: {stderr}");
    } else {
        assert!(stderr.contains("charge.resend"), "{fault:?}: the gateway never saw it, so it is resent: {stderr}");
    }
    w.assert_consistent();
}

#[test]
fn html_502_error_page_is_transient() {
    hostile(Fault::Html502, false, "transient: HTTP 502: <!DOCTYPE html>");
}

#[test]
fn http_500_is_transient() {
    hostile(Fault::Http500, false, "transient: HTTP 500");
}

#[test]
fn non_json_body_is_unknown() {
    hostile(Fault::Garbage, false, "HTTP 200 with an unreadable body: <html>");
}

#[test]
fn truncated_json_is_unknown() {
    hostile(Fault::TruncatedJson, true, "HTTP 200 with an unreadable body: {\"code\":0");
}

#[test]
fn missing_fields_are_unknown() {
    hostile(Fault::MissingFields, true, "code 0 without a readable payment");
}

#[test]
fn mistyped_fields_are_unknown() {
    hostile(Fault::MistypedFields, true, "code 0 without a readable payment");
}

#[test]
fn a_20_mib_body_is_not_buffered_and_is_unknown() {
    hostile(Fault::HugeBody, true, "the answer is larger than 1024 KiB; not read");
}

#[test]
fn an_answer_trickling_in_byte_by_byte_times_out_as_unknown() {
    hostile(Fault::Trickle { every: Duration::from_millis(20) }, true, "no answer within 1s");
}

#[test]
fn a_connection_reset_mid_body_is_unknown() {
    hostile(Fault::ResetMidBody, true, "unknown outcome: connection failed");
}

#[test]
fn a_dropped_connection_is_unknown() {
    hostile(Fault::DropAfterCharge, true, "unknown outcome: connection failed");
}

#[test]
fn paid_for_another_merchant_uid_is_unknown() {
    hostile(
        Fault::WrongMerchantUid,
        true,
        "the answer is for another merchant_uid than billd asked for (merchant_uid billd-s1-0, amount 9900 KRW)",
    );
}

#[test]
fn paid_for_another_amount_is_unknown() {
    hostile(Fault::WrongAmount, true, "another amount than billd asked for (merchant_uid billd-s1-0, amount 9900 KRW)");
}

/// A gateway that keeps failing before charging: every check resends the same merchant_uid (backing off), never
/// a new one, never a decline; once it recovers, one payment.
#[test]
fn a_gateway_that_stays_broken_is_retried_with_the_same_merchant_uid_only() {
    let w = world();
    w.sandbox.add_fault(FaultRule { customer_uid: None, fault: Fault::Html502, times: None });
    let mut t: chrono::DateTime<chrono::FixedOffset> = DUE.parse().unwrap();
    for _ in 0..3 {
        let stderr = World::stderr(&w.tick(&t.to_rfc3339()));
        assert!(stderr.contains("charge.unknown"), "{stderr}");
        t += chrono::Duration::hours(1);
        w.wait_quiet();
    }
    let (status, reason) = attempt(&w);
    assert_eq!(status, "unknown");
    assert!(reason.contains("HTTP 502"), "{reason}");
    let (tries, declines, attempts): (i64, i64, i64) = w
        .db()
        .query_row(
            "SELECT a.tries, p.declines, (SELECT count(*) FROM attempts) FROM attempts a
             JOIN periods p ON p.subscription_id = a.subscription_id AND p.period = a.period",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(tries >= 3, "tries {tries}");
    assert_eq!(declines, 0, "gateway trouble never uses up a dunning retry");
    assert_eq!(attempts, 1, "one attempt row, resent under the same merchant_uid");
    assert_eq!(w.status_of("s1"), "active");
    assert!(w.ledger().is_empty());
    let sent = w.requests();
    assert!(sent.len() >= 3, "each pass resends: {sent:?}");
    assert!(sent.iter().all(|r| r.merchant_uid.as_deref() == Some("billd-s1-0")), "a new merchant_uid: {sent:?}");
    w.sandbox.clear_faults();
    w.tick(&t.to_rfc3339());
    assert_eq!(w.paid_for("c1"), ["billd-s1-0"]);
    w.assert_consistent();
}

/// A token endpoint whose answer is cut off mid-token: the pass treats it as gateway trouble (nothing sent, no
/// decline), and no part of the access token reaches the logs.
#[test]
fn a_mangled_token_answer_is_transient_and_never_logged() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 65536];
            let _ = conn.read(&mut buf);
            let body = r#"{"code":0,"message":null,"response":{"access_token":"tok_LEAKED_0123456789abcdef","now":17"#;
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = conn.write_all(format!("{head}{body}").as_bytes());
        }
    });
    let w = world();
    let text = std::fs::read_to_string(&w.config).unwrap().replace(&w.sandbox.base_url(), &format!("http://{addr}"));
    std::fs::write(&w.config, text).unwrap();
    let out = w.billd().env("BILLD_LOG", "trace").args(["tick", "--as-of", DUE]).output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("LEAKED"), "the access token was logged: {all}");
    assert!(!all.contains("panicked"), "{all}");
    let (status, reason) = attempt(&w);
    assert_eq!(status, "unknown");
    assert!(reason.contains("transient: getToken: HTTP 200 with an unreadable body"), "{reason}");
}
