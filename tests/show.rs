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

/// Issue 15, points 4 and 5: `subscriptions` says what happens next (a past-due one's retry, not its next period),
/// how many retries are left and why a subscription stopped; `charges` lists attempts in the order they were made
/// with self-explaining columns; every human time is in the billing time zone with its offset, `--json` is RFC 3339
/// with that offset, and log lines carry UTC to the millisecond with rounded numbers.
#[test]
fn listings_say_what_happens_next_in_one_time_format() {
    let body = format!(
        "{MONTHLY}{}{}{}",
        sub("late", "c1", "monthly", "2025-01-01"),
        sub("ok", "c2", "monthly", "2025-01-01"),
        sub("gone", "c3", "monthly", "2025-01-01")
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.register_customer("c2", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c3", cards::DECLINE_LOST).unwrap();
    let out = w.tick("2025-01-01T10:00:00+09:00");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let first = log.lines().next().unwrap_or_default();
    let stamp = first.split_whitespace().next().unwrap_or_default();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "log time not UTC RFC 3339 to the millisecond: {first}"
    );
    let pass_ms = log.split("pass_ms=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default();
    assert!(pass_ms.split('.').nth(1).is_none_or(|d| d.len() <= 2), "pass_ms={pass_ms} is not rounded");

    let text = String::from_utf8_lossy(&w.billd().arg("subscriptions").output().unwrap().stdout).to_string();
    let line =
        |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} in {text}")).to_string();
    assert!(
        text.lines().next().unwrap().contains("NEXT CHARGE") && text.contains("RETRIES LEFT") && text.contains("WHY")
    );
    // A soft decline: past due, its retry a day later, 3 retries left of 3 (none used yet: the one shown as NEXT
    // CHARGE included, as the README says; the 4th attempt is made).
    let late = line("late");
    assert!(late.contains("past_due") && late.contains("2025-01-02 10:00 +09:00 retry"), "{late}");
    assert!(late.split_whitespace().any(|c| c == "3"), "{late}");
    // Paid: next month's charge.
    assert!(line("ok").contains("2025-02-01 10:00 +09:00 charge"), "{}", line("ok"));
    let json = w.billd().args(["subscriptions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let late = v.as_array().unwrap().iter().find(|s| s["id"] == "late").unwrap();
    assert_eq!(late["next_charge"]["at"], "2025-01-02T10:00:00+09:00");
    assert_eq!(late["retries_left"], 3);

    assert!(w.billd().args(["cancel", "gone"]).output().unwrap().status.success());
    let text = String::from_utf8_lossy(&w.billd().arg("subscriptions").output().unwrap().stdout).to_string();
    let gone = text.lines().find(|l| l.starts_with("gone")).unwrap();
    assert!(gone.contains("canceled") && gone.contains("canceled by operator"), "{gone}");

    let charges = String::from_utf8_lossy(&w.billd().arg("charges").output().unwrap().stdout).to_string();
    let header = charges.lines().next().unwrap();
    assert!(header.contains("MADE") && header.contains("PERIOD") && header.contains("ATTEMPT"), "{header}");
    assert!(!header.contains("PER ") && !header.contains("TRY"), "{header}");
    assert!(charges.contains("2025-01-01 10:00 +09:00"), "{charges}");
    w.tick("2025-01-02T10:00:00+09:00");
    let charges = String::from_utf8_lossy(&w.billd().arg("charges").output().unwrap().stdout).to_string();
    let made: Vec<&str> = charges.lines().skip(1).map(|l| &l[..23]).collect();
    let mut sorted = made.clone();
    sorted.sort();
    assert_eq!(made, sorted, "not in the order the attempts were made:\n{charges}");
    let json = w.billd().args(["charges", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().all(|r| r["made_at"].as_str().unwrap().ends_with("+09:00")), "{v}");
}

/// Issue 23, 7: `billd upcoming | head` panicked with "Broken pipe" (exit 101). A listing whose reader goes away
/// ends quietly, as Unix tools do.
#[test]
fn a_listing_whose_reader_goes_away_ends_quietly() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.tick("2024-12-31T10:00:00+09:00");
    // `webhooks` too (it printed with println!: exit 101).
    let listings = [&["upcoming", "--days", "400"][..], &["subscriptions"][..], &["charges"][..], &["webhooks"][..]];
    for args in listings.into_iter().chain([&["webhooks", "--json"][..]]) {
        let mut child = w
            .billd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before billd writes
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "billd {args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "billd {args:?} panicked: {stderr}");
    }
}
