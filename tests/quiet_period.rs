//! Issue 20, 1: the quiet period in real time, whatever the clocks say. The billing clock (`--as-of`, or the wall
//! clock) decides what falls due; elapsed real time since a request may have left decides when it may be resent
//! (or given up). A pass in the past, a wall clock stepped forward under `billd run` (libfaketime), and a restart
//! inside the quiet period each find a charge whose request is still being charged at the gateway: none sends it
//! again. (The gateway takes longer than billd's timeout but less than the quiet period, twice the timeout.)

mod common;

use common::{MONTHLY, Setup, World, cards, skip, sub, text, wait_for};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Paid payments at the gateway for one merchant_uid.
fn paid_count(w: &World, merchant_uid: &str) -> usize {
    w.ledger().iter().filter(|e| e.merchant_uid == merchant_uid && e.status == "paid").count()
}

fn attempt_status(w: &World, merchant_uid: &str) -> String {
    w.db()
        .query_row("SELECT status FROM attempts WHERE merchant_uid = ?1", [merchant_uid], |r| r.get(0))
        .unwrap_or_default()
}

/// A subscription whose first period fell due yesterday (`billd run` bills by the wall clock), with a 2 s gateway
/// timeout (quiet period 4 s) and a gateway that charges c1's first request 3 s after it arrives, answering only
/// then: billd gives up on the answer at 2 s, and the charge is made at 3 s, within the quiet period.
fn world_in_flight() -> World {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", &yesterday.to_string()));
    let w = World::new(Setup { body: &body, timeout: "2s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("c1".into()),
        fault: billd_sandbox::Fault::ChargeLater { after: Duration::from_millis(3000) },
        times: Some(1),
    });
    w
}

/// libfaketime's multi-threaded preload library (Debian's `faketime`), if installed.
fn faketime() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/lib").ok()?.flatten().find_map(|d| {
        let p = d.path().join("faketime/libfaketimeMT.so.1");
        p.exists().then_some(p)
    });
    if found.is_none() {
        skip("libfaketime is not installed (apt-get install faketime)");
    }
    found
}

/// `billd run` whose wall clock is offset by the seconds written in `offset_file` (`+0`, then `+18000`), read at
/// every clock call; the monotonic and boot clocks stay real.
fn run_under_faketime(w: &World, lib: &PathBuf, offset_file: &PathBuf) -> Child {
    w.billd()
        .arg("run")
        .env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// Stops a daemon with SIGTERM and returns its log.
fn stop(child: Child) -> String {
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "billd run exited {}: {}", out.status, World::stderr(&out));
    World::stderr(&out)
}

/// A pass at an `--as-of` in the past (allowed without `--simulate`: "the past is fine"), or a wall clock that
/// stepped back, used to time its quiet period from that instant, not from the real time the request left: the
/// next pass at the real time, a second later, found the check time long past and no record yet, and resent the
/// same merchant_uid while the first request was still in progress: the gateway charged both.
#[test]
fn a_pass_in_the_past_never_shortens_the_real_quiet_period_of_a_request_in_flight() {
    let seoul = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
    let yesterday = (chrono::Utc::now().with_timezone(&seoul) - chrono::Duration::days(1)).date_naive();
    let due = format!("{yesterday}T10:00:00+09:00");
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", &yesterday.to_string()));
    // timeout 3 s: quiet period 6 s. The gateway takes 5 s to charge (within the quiet period billd assumes).
    let w = World::new(Setup { body: &body, timeout: "3s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("c1".into()),
        fault: billd_sandbox::Fault::ChargeLater { after: Duration::from_millis(5000) },
        times: Some(1),
    });
    let sent_at = Instant::now();
    let first = w.tick(&due);
    assert!(text(&first).contains("charge.unknown"), "{}", text(&first));
    // The very next pass at the real time: 3-4 s after the request left, within its quiet period.
    let out = w.billd().arg("tick").output().unwrap();
    let resent_within = sent_at.elapsed();
    assert!(text(&out).contains("charge.wait"), "{}", text(&out));
    wait_for("the first request's charge", || paid_count(&w, "billd-s1-0") >= 1);
    std::thread::sleep(Duration::from_millis(6000)); // a resend in progress would be charged by now
    let requests = w.sent("billd-s1-0");
    assert_eq!(
        (requests, paid_count(&w, "billd-s1-0")),
        (1, 1),
        "billd-s1-0 was sent {requests} times, the second within {resent_within:?} of real time of the first \
         (quiet period: 6 s); paid at the gateway: {:?}\n{}",
        w.ledger(),
        text(&out)
    );
    // After the quiet period, a pass settles it by lookup.
    w.billd().arg("tick").output().unwrap();
    assert_eq!(attempt_status(&w, "billd-s1-0"), "paid");
    w.assert_consistent();
}

/// `billd run` whose wall clock steps five hours forward while a charge is in flight (its answer lost at 2 s, the
/// gateway charging it at 3 s): the pass that SIGHUP starts at once finds the check time long past on the (wall =
/// billing) clock and no record at the gateway yet; it neither resends nor gives up (`charge.wait`), and once the
/// quiet period has passed in real time a lookup finds the payment. One request, one payment.
#[test]
fn run_with_its_wall_clock_stepped_forward_never_resends_a_charge_in_flight() {
    let Some(lib) = faketime() else { return };
    let w = world_in_flight();
    let offset = w.dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let child = run_under_faketime(&w, &lib, &offset);
    wait_for("the lost answer", || attempt_status(&w, "billd-s1-0") == "unknown");
    // Five hours later on the wall clock, a fraction of a second later in real time; SIGHUP starts a pass now.
    std::fs::write(&offset, "+18000\n").unwrap();
    signal(&child, "-HUP");
    wait_for("the first request's charge", || paid_count(&w, "billd-s1-0") >= 1);
    wait_for("the payment recorded by lookup", || attempt_status(&w, "billd-s1-0") == "paid");
    std::thread::sleep(Duration::from_millis(500));
    let log = stop(child);
    assert_eq!(w.sent("billd-s1-0"), 1, "resent while the first request was in progress: {:?}\n{log}", w.requests());
    assert!(log.contains("charge.wait"), "the stepped pass never saw it waiting: {log}");
    w.assert_consistent();
}

/// `billd run` killed (SIGKILL) while a charge is in flight (its answer lost), and restarted at once with its wall
/// clock five hours ahead, so the lost answer's next look is long past: the restarted process reads, with the attempt, when its request may have left on the boot clock that all
/// processes of this boot share, so its start-up reconciliation and passes neither resend nor give up before the
/// quiet period has passed in real time.
#[test]
fn run_killed_and_restarted_inside_the_quiet_period_does_not_resend() {
    let Some(lib) = faketime() else { return };
    let w = world_in_flight();
    let offset = w.dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut first = run_under_faketime(&w, &lib, &offset);
    // Killed right after recording the lost answer (its next look a minute later on the wall clock), before the
    // gateway charges it.
    wait_for("the lost answer", || attempt_status(&w, "billd-s1-0") == "unknown");
    first.kill().unwrap();
    first.wait().unwrap();
    std::fs::write(&offset, "+18000\n").unwrap();
    let second = run_under_faketime(&w, &lib, &offset);
    wait_for("the first request's charge", || paid_count(&w, "billd-s1-0") >= 1);
    wait_for("the payment recorded by lookup", || attempt_status(&w, "billd-s1-0") == "paid");
    std::thread::sleep(Duration::from_millis(500));
    let log = stop(second);
    assert_eq!(w.sent("billd-s1-0"), 1, "resent while the first request was in progress: {:?}\n{log}", w.requests());
    w.assert_consistent();
}

/// `charge-once` follows the same rule: its answer lost, a rerun whose wall clock is five hours ahead looks the
/// payment up, finds nothing yet, and sends nothing: it says when it will be safe to try again.
#[test]
fn a_charge_once_rerun_with_the_wall_clock_ahead_sends_nothing_within_the_quiet_period() {
    let Some(lib) = faketime() else { return };
    let w = World::new(Setup { body: MONTHLY, timeout: "2s", ..Default::default() });
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: None,
        fault: billd_sandbox::Fault::ChargeLater { after: Duration::from_millis(3000) },
        times: Some(1),
    });
    let args = ["charge-once", "--merchant-uid", "order-5", "--amount", "5000", "--name", "Setup fee"];
    let first = common::with_card(&w, &args, &common::card_json(cards::APPROVE));
    assert!(text(&first).contains("outcome unknown"), "{}", text(&first));
    let offset = w.dir.path().join("faketime-offset");
    std::fs::write(&offset, "+18000\n").unwrap();
    use std::io::Write;
    let mut rerun = w
        .billd()
        .args(args)
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = rerun.stdin.take().unwrap().write_all(common::card_json(cards::APPROVE).as_bytes());
    let rerun = rerun.wait_with_output().unwrap();
    assert!(!rerun.status.success(), "{}", text(&rerun));
    assert!(text(&rerun).contains("do not retry before"), "{}", text(&rerun));
    wait_for("the first request's charge", || paid_count(&w, "order-5") >= 1);
    std::thread::sleep(Duration::from_millis(3500)); // a second request in progress would be charged by now
    assert_eq!(w.sent("order-5"), 1, "sent again within the quiet period: {:?}", w.requests());
    assert_eq!(paid_count(&w, "order-5"), 1);
}

/// A pass ahead of the real time (`tick --simulate --as-of` an hour on) that finds a charge still in its quiet
/// period puts its next look off to the end of the quiet period in real time, not an hour on: passes at the real
/// time look again as soon as the wait is over (found by the new-operator review).
#[test]
fn a_pass_ahead_of_real_time_puts_the_next_look_off_in_real_time() {
    let w = world_in_flight();
    let out = w.billd().arg("tick").output().unwrap();
    assert!(text(&out).contains("charge.unknown"), "{}", text(&out));
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let out = w.billd().args(["tick", "--simulate", "--as-of", &ahead]).output().unwrap();
    assert!(text(&out).contains("charge.wait") && text(&out).contains("next_look="), "{}", text(&out));
    let check_at: i64 =
        w.db().query_row("SELECT check_at FROM attempts WHERE merchant_uid = 'billd-s1-0'", [], |r| r.get(0)).unwrap();
    let lag = check_at - chrono::Utc::now().timestamp();
    assert!(lag <= 61, "the next look was put off {lag} s into the real future (the simulated pass's hour)");
    wait_for("the first request's charge", || paid_count(&w, "billd-s1-0") >= 1);
    assert_eq!(w.sent("billd-s1-0"), 1);
}

/// A review found that a `charge-once` killed while its request waited for a token was closed "abandoned: nothing
/// was charged" by the next pass (its quiet period counted from before the wait), and the gateway then charged it.
/// A one-time charge its command left `pending` is never given up at the first look that finds nothing: it becomes
/// unknown, looked at again a full quiet period later.
#[test]
fn a_pending_one_time_charge_is_not_given_up_at_the_first_look() {
    let w = World::new(Setup { body: MONTHLY, timeout: "1s", ..Default::default() });
    assert!(w.billd().arg("sync").status().unwrap().success()); // creates the database
    // As a charge-once killed mid-request an hour ago would leave it (its quiet period long over on the clocks).
    let hour_ago = chrono::Utc::now().timestamp() - 3600;
    w.db()
        .execute(
            "INSERT INTO one_time_charges (merchant_uid, name, amount, currency, card_masked, status, tries,
               created_at, updated_at, check_at, timeout_ms, doubt_wall_ms)
             VALUES ('once-9', 'Setup fee', 5000, 'KRW', '424242******4242', 'pending', 1, ?1, ?1, ?1, 1000, ?2)",
            rusqlite::params![hour_ago, hour_ago * 1000],
        )
        .unwrap();
    let status = |w: &World| -> (String, Option<String>) {
        w.db()
            .query_row("SELECT status, failure FROM one_time_charges WHERE merchant_uid = 'once-9'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
    };
    let out = w.billd().arg("tick").output().unwrap();
    assert!(text(&out).contains("charge.wait"), "{}", text(&out));
    assert_eq!(status(&w), ("unknown".to_string(), None), "given up at the first look: {}", text(&out));
    w.wait_quiet();
    std::thread::sleep(Duration::from_millis(1100)); // its check time is stored rounded up to the second
    w.billd().arg("tick").output().unwrap();
    assert_eq!(status(&w), ("failed".to_string(), Some("abandoned".to_string())));
}

/// A review found two paid payments for one `charge-once`: a pass ahead of real time took over the pending charge
/// (its command still waiting for its turn to send), and a rerun later sent it again while the first command's
/// request was still coming. Now the command's request leaves only through a go write that a pass's takeover
/// refuses: it sends nothing and says so.
#[test]
fn a_charge_once_waiting_for_its_turn_sends_nothing_once_a_pass_took_it_over() {
    let w = World::new(Setup { body: MONTHLY, timeout: "2s", ..Default::default() });
    use std::io::Write;
    // One request every 5 s: the token goes at once, the payment waits for its turn.
    let mut first = w
        .billd()
        .args(["charge-once", "--merchant-uid", "once-1", "--amount", "5000", "--name", "Setup fee"])
        .env("BILLD_GATEWAY__RATE_LIMIT", "0.2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = first.stdin.take().unwrap().write_all(common::card_json(cards::APPROVE).as_bytes());
    wait_for("the intent", || {
        w.db().query_row("SELECT count(*) FROM one_time_charges", [], |r| r.get::<_, i64>(0)).unwrap_or(0) == 1
    });
    // A pass an hour ahead takes the pending charge over (unknown, looked at again after a quiet period).
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let pass = w.billd().args(["tick", "--simulate", "--as-of", &ahead]).output().unwrap();
    assert!(text(&pass).contains("charge.wait"), "{}", text(&pass));
    let first = first.wait_with_output().unwrap();
    assert!(!first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("not sent"), "{}", text(&first));
    assert_eq!(w.sent("once-1"), 0, "the first command sent after the takeover: {:?}", w.requests());
}

/// A review found two paid payments for one `charge-once` merchant_uid whose first try was declined: the second
/// try's answer was lost, its settling lookup found the first try's decline and took it for its own ("not paid"),
/// and a third run then sent again while the second was still being charged. An earlier try's decline is never
/// this try's outcome.
#[test]
fn an_earlier_decline_never_settles_a_charge_once_in_flight() {
    let w = World::new(Setup { body: MONTHLY, timeout: "1s", ..Default::default() });
    let args = ["charge-once", "--merchant-uid", "once-2", "--amount", "5000", "--name", "Setup fee"];
    let declined = common::with_card(&w, &args, &common::card_json(cards::DECLINE_INSUFFICIENT_FUNDS));
    assert!(text(&declined).contains("not paid (declined)"), "{}", text(&declined));
    // The second try (a good card) is charged 1.5 s after it arrives: its answer is lost at 1 s.
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: None,
        fault: billd_sandbox::Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
    let second = common::with_card(&w, &args, &common::card_json(cards::APPROVE));
    assert!(text(&second).contains("outcome unknown"), "settled by the first try's decline: {}", text(&second));
    let third = common::with_card(&w, &args, &common::card_json(cards::APPROVE));
    assert!(!third.status.success() && text(&third).contains("do not retry before"), "{}", text(&third));
    wait_for("the second try's charge", || paid_count(&w, "once-2") >= 1);
    std::thread::sleep(Duration::from_millis(2000)); // a third request in progress would be charged by now
    assert_eq!(paid_count(&w, "once-2"), 1, "{:?}", w.ledger());
    assert_eq!(w.sent("once-2"), 2, "{:?}", w.requests());
}
