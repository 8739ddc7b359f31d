//! `billd subscriptions show ID`: one subscription's whole story and what happens next (issue 15, point 6).

mod common;

use common::{MONTHLY, Setup, World, cards, sub};

#[test]
fn show_tells_each_period_each_attempt_and_the_next_step() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", &cards::decline_first(1)).unwrap();
    w.tick("2025-01-01T10:00:00+09:00");
    let out = w.billd().args(["subscriptions", "show", "s1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("status   past_due"), "{text}");
    // Past due: the next step is the retry, a day after the decline, in the billing time zone with its offset.
    assert!(text.contains("next     retry period 0 (billd-s1-0) at 2025-01-02 10:00 +09:00"), "{text}");
    assert!(text.contains("due 2025-01-01 10:00 +09:00"), "{text}");
    assert!(text.contains("attempt 1  made 2025-01-01 10:00 +09:00  failed (declined)"), "{text}");

    w.tick("2025-01-02T10:00:00+09:00");
    let json = w.billd().args(["subscriptions", "show", "s1", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["status"], "active");
    assert_eq!(v["periods"][0]["state"], "paid");
    assert_eq!(v["periods"][0]["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(v["periods"][0]["attempts"][1]["status"], "paid");
    assert_eq!(v["next"]["action"], "charge");
    assert_eq!(v["next"]["at"], "2025-02-01T10:00:00+09:00");

    // Canceled: says why, and that nothing comes next.
    assert!(w.billd().args(["cancel", "s1"]).output().unwrap().status.success());
    let out = w.billd().args(["subscriptions", "show", "s1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("status   canceled (canceled by operator)"), "{text}");
    assert!(text.contains("next     none: canceled"), "{text}");

    let missing = w.billd().args(["subscriptions", "show", "nope"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no subscription \"nope\""));
}
