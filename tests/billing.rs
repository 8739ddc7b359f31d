//! End-to-end billing behaviour: the real `billd` binary, `tick --as-of`, against the sandbox's ledger.

mod common;

use billd_sandbox::{Fault, FaultRule};
use common::{MONTHLY, Setup, World, cards, sub};
use std::time::Duration;

fn world_with(body: &str, customers: &[(&str, &str)]) -> World {
    with_customers(World::new(Setup { body, ..Default::default() }), customers)
}

/// A world with a 1 s gateway timeout: a resend waits a real quiet period of 2 s ([`World::wait_quiet`]).
fn quick_world(body: &str, customers: &[(&str, &str)]) -> World {
    with_customers(World::new(Setup { body, timeout: "1s", ..Default::default() }), customers)
}

fn with_customers(w: World, customers: &[(&str, &str)]) -> World {
    for (c, card) in customers {
        w.sandbox.register_customer(c, card).unwrap();
    }
    w
}

#[test]
fn month_end_anchor_clamps_and_comes_back() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-31"));
    let w = world_with(&body, &[("c1", cards::APPROVE)]);
    w.tick_daily("2025-01-30", "2025-06-01", "10:00:00+09:00");
    assert_eq!(
        w.due_dates("s1", chrono_tz::Asia::Seoul),
        [
            "2025-01-31T10:00:00+09:00",
            "2025-02-28T10:00:00+09:00",
            "2025-03-31T10:00:00+09:00",
            "2025-04-30T10:00:00+09:00",
            "2025-05-31T10:00:00+09:00",
        ]
    );
    assert_eq!(w.paid_for("c1").len(), 5);
    w.assert_consistent();
}

#[test]
fn leap_year_february_and_yearly_leap_day() {
    let body = format!(
        "{MONTHLY}\n[[plans]]\nid = \"yearly\"\nname = \"Yearly\"\namount = 99000\ninterval = \"1 year\"\n{}{}",
        sub("m", "c1", "monthly", "2024-01-31"),
        sub("y", "c2", "yearly", "2024-02-29")
    );
    let w = world_with(&body, &[("c1", cards::APPROVE), ("c2", cards::APPROVE)]);
    for t in ["2024-01-31", "2024-02-29", "2025-02-28", "2028-02-29"] {
        w.tick(&format!("{t}T10:00:00+09:00"));
    }
    let seoul = chrono_tz::Asia::Seoul;
    assert_eq!(w.due_dates("m", seoul)[1], "2024-02-29T10:00:00+09:00");
    assert_eq!(
        w.due_dates("y", seoul),
        [
            "2024-02-29T10:00:00+09:00",
            "2025-02-28T10:00:00+09:00",
            "2026-02-28T10:00:00+09:00",
            "2027-02-28T10:00:00+09:00",
            "2028-02-29T10:00:00+09:00",
        ]
    );
    w.assert_consistent();
}

#[test]
fn due_at_charge_time_in_the_billing_timezone_not_before() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-03-01"));
    let w = world_with(&body, &[("c1", cards::APPROVE)]);
    // 10:00 in Seoul is 01:00 UTC.
    w.tick("2025-03-01T00:59:59Z");
    assert!(w.paid_for("c1").is_empty(), "charged before 10:00 Asia/Seoul");
    w.tick("2025-03-01T01:00:00Z");
    assert_eq!(w.paid_for("c1"), ["billd-s1-0"]);
}

#[test]
fn dst_gap_in_new_york_charges_once_at_the_first_valid_time() {
    let w = World::new(Setup {
        timezone: "America/New_York",
        charge_time: "02:30",
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-02-09")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    // 2025-03-09 02:30 does not exist in New York (clocks jump 02:00 -> 03:00 EDT = 07:00 UTC).
    for t in ["2025-02-09T07:30:00Z", "2025-03-09T06:59:00Z"] {
        w.tick(t);
    }
    assert_eq!(w.paid_for("c1").len(), 1);
    w.tick("2025-03-09T07:00:00Z");
    w.tick("2025-03-09T08:00:00Z");
    assert_eq!(w.paid_for("c1"), ["billd-s1-0", "billd-s1-1"]);
    assert_eq!(w.due_dates("s1", chrono_tz::America::New_York)[1], "2025-03-09T03:00:00-04:00");
}

#[test]
fn declined_twice_then_paid_on_the_second_retry() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-15"));
    let w = world_with(&body, &[("c1", &cards::decline_first(2))]);
    w.tick("2025-01-15T10:00:00+09:00");
    assert_eq!(w.status_of("s1"), "past_due");
    // The first retry is 1 day after the first attempt, not earlier.
    w.tick("2025-01-16T09:59:59+09:00");
    assert_eq!(w.attempts_for("c1").len(), 1);
    w.tick("2025-01-16T10:00:00+09:00");
    assert_eq!(w.attempts_for("c1").len(), 2);
    // The second retry 2 days after the previous attempt.
    w.tick("2025-01-17T10:00:00+09:00");
    assert_eq!(w.attempts_for("c1").len(), 2);
    w.tick("2025-01-18T10:00:00+09:00");
    let attempts = w.attempts_for("c1");
    assert_eq!(attempts.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(), ["failed", "failed", "paid"]);
    // Every attempt of the period uses the period's merchant_uid: the gateway itself prevents a second payment.
    assert!(attempts.iter().all(|e| e.merchant_uid == "billd-s1-0"));
    assert_eq!(w.status_of("s1"), "active");
    w.assert_consistent();
}

fn always_declined(on_exhausted: &str) -> World {
    let dunning = format!("retry_after = [\"1d\", \"2d\", \"4d\"]\non_exhausted = \"{on_exhausted}\"");
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { dunning: &dunning, body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.tick_daily("2025-01-01", "2025-01-10", "10:00:00+09:00");
    let attempts = w.attempts_for("c1");
    assert_eq!(attempts.len(), 4, "first attempt and three retries");
    assert!(attempts.iter().all(|e| e.status == "failed"));
    w
}

#[test]
fn always_declined_is_canceled_after_the_last_retry() {
    let w = always_declined("cancel");
    assert_eq!(w.status_of("s1"), "canceled");
    w.tick_daily("2025-01-31", "2025-03-05", "10:00:00+09:00");
    assert_eq!(w.attempts_for("c1").len(), 4, "a canceled subscription is never charged again");
}

#[test]
fn always_declined_is_suspended_after_the_last_retry() {
    let w = always_declined("suspend");
    assert_eq!(w.status_of("s1"), "suspended");
    w.tick("2025-03-05T10:00:00+09:00");
    assert_eq!(w.attempts_for("c1").len(), 4, "a suspended subscription is not charged");
}

#[test]
fn always_declined_with_skip_gives_the_period_up_and_bills_the_next() {
    let w = always_declined("skip");
    assert_eq!(w.status_of("s1"), "active");
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-02-01T10:00:00+09:00");
    assert_eq!(w.paid_for("c1"), ["billd-s1-1"], "period 0 given up, period 1 charged");
    let given_up: String = w
        .db()
        .query_row("SELECT state FROM periods WHERE subscription_id = 's1' AND period = 0", [], |r| r.get(0))
        .unwrap();
    assert_eq!(given_up, "given_up");
}

#[test]
fn unregistered_customer_is_a_hard_failure_without_retries() {
    let body = format!("{MONTHLY}{}", sub("s1", "nobody", "monthly", "2025-01-01"));
    let w = world_with(&body, &[]);
    let out = w.tick("2025-01-01T10:00:00+09:00");
    assert_eq!(w.attempts_for("nobody").len(), 0, "the gateway stores nothing for an unregistered key");
    assert_eq!(w.status_of("s1"), "canceled");
    let stderr = World::stderr(&out);
    let line = stderr.lines().find(|l| l.contains("charge.failed")).expect("a charge.failed line");
    for needle in ["s1", "nobody", "billd-s1-0", "9900", "등록되지 않은 구매자입니다", "attempt=1", "cancel"]
    {
        assert!(line.contains(needle), "{needle:?} missing from the log line: {line}");
    }
    w.tick_daily("2025-01-02", "2025-01-10", "10:00:00+09:00");
    let attempts: i64 = w.db().query_row("SELECT count(*) FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(attempts, 1, "no retries after a rejection");
}

#[test]
fn catch_up_after_downtime_charges_every_missed_period_once_oldest_first() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-10"));
    let w = world_with(&body, &[("c1", cards::APPROVE)]);
    w.tick("2025-01-10T10:00:00+09:00");
    // Down from January 11 to April 20.
    w.tick("2025-04-20T10:00:00+09:00");
    assert_eq!(w.paid_for("c1"), ["billd-s1-0", "billd-s1-1", "billd-s1-2", "billd-s1-3"]);
    w.tick("2025-04-20T10:00:00+09:00");
    assert_eq!(w.paid_for("c1").len(), 4);
    assert!(w.sent_by_merchant_uid().values().all(|&n| n == 1), "one `again` per period: {:?}", w.requests());
    w.assert_consistent();
}

#[test]
fn lost_response_after_the_charge_is_resolved_by_lookup_not_resent() {
    let w = World::new(Setup {
        timeout: "1s",
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.add_fault(FaultRule {
        customer_uid: Some("c1".into()),
        fault: Fault::LoseResponseAfterCharge { hold: Duration::from_secs(3) },
        times: Some(1),
    });
    let out = w.tick("2025-01-01T10:00:00+09:00");
    assert!(World::stderr(&out).contains("charge.unknown"));
    assert_eq!(w.paid_for("c1").len(), 1, "the gateway charged");
    let status: String = w.db().query_row("SELECT status FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "unknown");
    // Timed from the outcome (a 1 s timeout into the pass), not from the pass's start: the next look is a minute
    // after billd gave up on the answer.
    let check_at: i64 = w.db().query_row("SELECT check_at FROM attempts", [], |r| r.get(0)).unwrap();
    let due = chrono::DateTime::parse_from_rfc3339("2025-01-01T10:00:00+09:00").unwrap().timestamp();
    assert!(check_at >= due + 61, "looked at again {} s after the pass began", check_at - due);
    // A pass after the backoff (a minute after the outcome, which came a timeout into the pass) and the real
    // quiet period looks the merchant_uid up and records the payment.
    w.wait_quiet();
    w.tick("2025-01-01T10:02:00+09:00");
    assert_eq!(w.paid_for("c1").len(), 1, "never charged twice");
    assert_eq!(w.sent("billd-s1-0"), 1, "not even sent twice: {:?}", w.requests());
    w.assert_consistent();
    assert_eq!(w.status_of("s1"), "active");
}

#[test]
fn dropped_connection_after_the_charge_is_resolved_by_lookup() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = quick_world(&body, &[("c1", cards::APPROVE)]);
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: Fault::DropAfterCharge, times: Some(1) });
    w.tick("2025-01-01T10:00:00+09:00");
    w.wait_quiet();
    w.tick("2025-01-01T10:05:00+09:00");
    assert_eq!(w.sent("billd-s1-0"), 1, "settled by lookup, not resent: {:?}", w.requests());
    w.assert_consistent();
}

#[test]
fn gateway_500_is_not_a_decline_and_is_retried_within_minutes() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = quick_world(&body, &[("c1", cards::APPROVE)]);
    w.sandbox.add_fault(FaultRule { customer_uid: None, fault: Fault::Http500, times: Some(2) });
    w.tick("2025-01-01T10:00:00+09:00");
    assert_eq!(w.status_of("s1"), "active", "a 500 is not a decline");
    assert!(w.paid_for("c1").is_empty());
    // Second try at most 5 minutes later (and the real quiet period after the first): still a 500.
    w.wait_quiet();
    w.tick("2025-01-01T10:05:00+09:00");
    assert!(w.paid_for("c1").is_empty());
    w.wait_quiet();
    w.tick("2025-01-01T11:00:00+09:00");
    assert_eq!(w.paid_for("c1"), ["billd-s1-0"]);
    assert_eq!(w.sent("billd-s1-0"), 3, "two refused with a 500 (nothing charged), then one paid");
    let (declines, attempt): (i64, i64) = w
        .db()
        .query_row(
            "SELECT p.declines, a.attempt FROM periods p JOIN attempts a USING (subscription_id, period)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((declines, attempt), (0, 1), "transient errors never use up a dunning retry");
    w.assert_consistent();
}

#[test]
fn garbage_answer_is_unknown_and_reconciled() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = quick_world(&body, &[("c1", cards::APPROVE)]);
    w.sandbox.add_fault(FaultRule { customer_uid: None, fault: Fault::Garbage, times: Some(1) });
    w.tick("2025-01-01T10:00:00+09:00");
    assert!(w.paid_for("c1").is_empty());
    w.wait_quiet();
    w.tick("2025-01-01T10:02:00+09:00");
    assert_eq!(w.paid_for("c1"), ["billd-s1-0"]);
    assert_eq!(w.sent("billd-s1-0"), 2, "resent once: the garbage answer charged nothing");
    w.assert_consistent();
}

#[test]
fn tokens_shorter_than_the_pass_are_renewed() {
    let sandbox = billd_sandbox::SandboxConfig {
        token_ttl: Duration::from_secs(2),
        latency: billd_sandbox::Latency::Fixed(Duration::from_millis(300)),
        ..Default::default()
    };
    let mut body = MONTHLY.to_string();
    for i in 0..12 {
        body.push_str(&sub(&format!("s{i}"), "c1", "monthly", "2025-01-01"));
    }
    let w = World::new(Setup { sandbox, concurrency: 1, body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    // 12 charges x 300 ms at concurrency 1 outlive a 2 s token.
    w.tick("2025-01-01T10:00:00+09:00");
    assert_eq!(w.paid_for("c1").len(), 12);
    w.assert_consistent();
}

#[test]
fn secrets_never_reach_the_logs() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = world_with(&body, &[("c1", cards::APPROVE)]);
    let out =
        w.billd().env("BILLD_LOG", "trace").args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"]).output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("charge.paid"));
    assert!(!all.contains("imp_sandbox_secret"), "the secret was logged");
    assert!(!all.to_lowercase().contains("bearer"), "an Authorization header was logged");
}

/// Subscription s1 (monthly from 2025-01-01, `gateway.timeout` 45 s) whose first charge gets an HTTP 500: an
/// outcome billd cannot know, looked at again after the quiet period (90 s).
fn first_charge_answered_500() -> World {
    let w = World::new(Setup {
        timeout: "45s",
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: Fault::Http500, times: Some(1) });
    w
}

/// An unresolved outcome is looked at again no sooner than twice `gateway.timeout` after it on the billing clock,
/// even when the unresolved backoff is shorter (a margin for a request still in progress at the gateway); and
/// when the billing clock gets there before real time does (here 91 billing seconds are a fraction of a real
/// second), the look is put off again (`charge.wait`): nothing is resent before 90 real seconds.
#[test]
fn an_unresolved_outcome_waits_at_least_twice_the_gateway_timeout() {
    let w = first_charge_answered_500(); // quiet period: 90 s
    w.tick("2025-01-01T10:00:00+09:00");
    let (status, check_at): (String, i64) =
        w.db().query_row("SELECT status, check_at FROM attempts", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let due = chrono::DateTime::parse_from_rfc3339("2025-01-01T10:00:00+09:00").unwrap().timestamp();
    assert_eq!(status, "unknown");
    assert!(check_at >= due + 90, "looked at again after {} s, before twice the 45 s timeout", check_at - due);
    let out = w.tick("2025-01-01T10:01:29+09:00");
    assert!(!World::stderr(&out).contains("charge.wait"), "looked at before its check time: {}", World::stderr(&out));
    assert_eq!(w.sent("billd-s1-0"), 1, "resent within the quiet period: {:?}", w.requests());
    let out = w.tick("2025-01-01T10:01:31+09:00");
    assert!(World::stderr(&out).contains("charge.wait"), "{}", World::stderr(&out));
    assert_eq!(w.sent("billd-s1-0"), 1, "resent within the real quiet period: {:?}", w.requests());
    // (Left unresolved: settling it would take 90 real seconds.)
}

/// The quiet period is not cut short by rounding: billd's clock is not on whole seconds (a pass's `now` is when it
/// began, to the nanosecond), so a check due at 10:01:30.9 must not run at 10:01:30.1 (the pass would consider it,
/// and put it off in real time: `charge.wait`).
#[test]
fn an_unresolved_outcome_is_not_looked_at_a_fraction_of_a_second_early() {
    let w = first_charge_answered_500(); // quiet period: 90 s
    // The outcome is unknown at 10:00:00.9 and a bit: its look is due 90 s later, at 10:01:30.9 and a bit.
    w.tick("2025-01-01T10:00:00.900+09:00");
    let out = w.tick("2025-01-01T10:01:30.100+09:00");
    assert!(!World::stderr(&out).contains("charge.wait"), "looked at 89.2 s after: {}", World::stderr(&out));
    assert_eq!(w.sent("billd-s1-0"), 1, "resent 89.2 s after the outcome, within the 90 s quiet period");
    let out = w.tick("2025-01-01T10:01:33+09:00");
    assert!(World::stderr(&out).contains("charge.wait"), "{}", World::stderr(&out));
    assert_eq!(w.sent("billd-s1-0"), 1);
}

/// The open period's next attempt and counted declines, as the book holds them (next attempt in Seoul time).
fn next_retry(w: &World, id: &str) -> (String, i64) {
    let (at, declines): (i64, i64) = w
        .db()
        .query_row(
            "SELECT next_attempt_at, declines FROM periods WHERE subscription_id = ?1 AND state = 'open'",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let at = chrono::DateTime::from_timestamp(at, 0).unwrap().with_timezone(&chrono_tz::Asia::Seoul);
    (at.to_rfc3339(), declines)
}

/// Issue 23, point 4: a retry of whole days lands at `charge_time` that many days after the failed attempt's day,
/// in `billing.timezone` (a decline at 14:21 after a downtime used to retry at 14:21); one of hours counts from
/// the attempt.
#[test]
fn scheduled_retries_of_whole_days_land_at_charge_time() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-15"));
    let dunning = "retry_after = [\"1d\", \"6h\", \"2d\"]\non_exhausted = \"cancel\"";
    let w = World::new(Setup { dunning, body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", &cards::decline_first(3)).unwrap();
    // billd was down at 10:00: the first charge leaves at 14:21.
    w.tick("2025-01-15T14:21:00+09:00");
    assert_eq!(next_retry(&w, "s1"), ("2025-01-16T10:00:00+09:00".to_string(), 1), "1d: the next day at 10:00");
    w.tick("2025-01-16T10:00:30+09:00");
    assert_eq!(next_retry(&w, "s1"), ("2025-01-16T16:00:30+09:00".to_string(), 2), "6h: from the attempt");
    w.tick("2025-01-16T16:00:30+09:00");
    assert_eq!(next_retry(&w, "s1"), ("2025-01-18T10:00:00+09:00".to_string(), 3), "2d: two days on, at 10:00");
    w.tick("2025-01-18T10:00:00+09:00");
    assert_eq!(w.attempts_for("c1").iter().filter(|e| e.status == "paid").count(), 1);
    assert_eq!(w.status_of("s1"), "active");
    w.assert_consistent();
}

/// Issue 23, point 4: `billd retry` is the operator's extra attempt. Declined, it costs the customer none of the
/// scheduled retries (RETRIES LEFT unchanged) and the scheduled retry stays where it was.
#[test]
fn an_operators_retry_costs_no_scheduled_retry() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-15"));
    let w = world_with(&body, &[("c1", &cards::decline_first(3))]);
    w.tick("2025-01-15T10:00:00+09:00");
    let scheduled = ("2025-01-16T10:00:00+09:00".to_string(), 1);
    assert_eq!(next_retry(&w, "s1"), scheduled);
    let retries_left = || {
        let o = w.billd().args(["subscriptions", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["retries_left"].as_i64().unwrap()
    };
    // None of the 3 scheduled retries used yet (the first is NEXT CHARGE).
    assert_eq!(retries_left(), 3);
    let o = w.billd().args(["retry", "s1", "--as-of", "2025-01-15T18:00:00+09:00"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "declined: {}", common::text(&o));
    assert_eq!(w.attempts_for("c1").len(), 2, "the operator's retry was sent");
    assert_eq!(next_retry(&w, "s1"), scheduled, "the scheduled retry moved, or the decline was counted");
    assert_eq!(retries_left(), 3, "the operator's retry cost a scheduled one");
    // The scheduled retries follow as if the operator had not retried: the 3rd attempt (1st scheduled retry) is
    // declined, the 4th (2 days later) paid.
    w.tick("2025-01-16T10:00:00+09:00");
    assert_eq!(next_retry(&w, "s1"), ("2025-01-18T10:00:00+09:00".to_string(), 2));
    assert_eq!(retries_left(), 2, "the 2nd and 3rd scheduled retries are left");
    w.tick("2025-01-18T10:00:00+09:00");
    assert_eq!(w.status_of("s1"), "active");
    w.assert_consistent();
}

/// A `billd retry` whose pass cannot send (the gateway refuses the credentials) says that the retry stays due and a
/// later pass makes it (an attacker was told only "nothing was sent", and a later pass then made the charge).
#[test]
fn a_retry_that_cannot_be_sent_now_says_it_stays_due() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-15"));
    let w = world_with(&body, &[("c1", &cards::decline_first(1))]);
    w.tick("2025-01-15T10:00:00+09:00");
    let o = w
        .billd()
        .args(["retry", "s1", "--as-of", "2025-01-15T18:00:00+09:00"])
        .env("BILLD_GATEWAY__IMP_SECRET", "not-the-secret")
        .output()
        .unwrap();
    let said = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("stays due") && said.contains("next pass"), "{said}");
    assert_eq!(w.attempts_for("c1").len(), 1, "nothing sent");
    // And so it is: the next pass makes it, as the operator's extra attempt.
    w.tick("2025-01-15T18:30:00+09:00");
    assert_eq!(w.paid_for("c1").len(), 1);
}

/// An operator's retry is extra as of when it is made, not when it is settled (an attacker's finding): its answer
/// lost and settled by a lookup only after the scheduled retry's time, its decline is still not counted, and the
/// scheduled retry, which could not be made while it was in doubt, is made at once.
#[test]
fn an_operators_retry_settled_after_the_scheduled_time_still_costs_no_retry() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-15"));
    let w = quick_world(&body, &[("c1", &cards::decline_first(2))]);
    w.tick("2025-01-15T10:00:00+09:00");
    w.sandbox.add_fault(FaultRule {
        customer_uid: Some("c1".into()),
        fault: Fault::LoseResponseAfterCharge { hold: Duration::from_secs(2) },
        times: Some(1),
    });
    let o = w.billd().args(["retry", "s1", "--as-of", "2025-01-15T20:00:00+09:00"]).output().unwrap();
    assert!(common::text(&o).contains("unknown"), "{}", common::text(&o));
    w.wait_quiet();
    // billd was down overnight: the lookup settles the operator's (declined) attempt after the scheduled 10:00.
    w.tick("2025-01-16T10:00:00+09:00");
    let attempts = w.attempts_for("c1");
    assert_eq!(attempts.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(), ["failed", "failed", "paid"]);
    let declines: i64 =
        w.db().query_row("SELECT declines FROM periods WHERE subscription_id = 's1'", [], |r| r.get(0)).unwrap();
    assert_eq!(declines, 1, "the operator's decline was counted");
    assert_eq!(w.status_of("s1"), "active");
    w.assert_consistent();
}
