//! Issue 24, refunds: `billd refund` and `billd refunds` against the sandbox, with the real binary. A refund is made
//! at most once: its intent is committed before its request, a refund larger than what remains (or of a charge that
//! is not paid, or unknown) is refused before anything is sent, a lost answer is settled by a lookup of the payment
//! and never sent again, a crash in the middle and two refunds at once never refund more than the charge, and a
//! refund made outside billd (i'mport's console) is found by `billd refunds --sync` and shown by `billd charges`.

mod common;

use billd_sandbox::{Endpoint, Fault, FaultRule};
use common::{MONTHLY, Setup, World, cards, sub, text};
use serde_json::Value;
use std::process::Output;

const DUE: &str = "2025-01-01T10:00:00+09:00";
/// The first period of s1: 9900 KRW, paid by the first tick.
const CHARGE: &str = "billd-s1-0";

/// s1 (c1, approved) paid once; s2 (c2, declined) not paid. A 1 s gateway timeout: the quiet period is 2 s.
fn world() -> World {
    let body =
        format!("{MONTHLY}{}{}", sub("s1", "c1", "monthly", "2025-01-01"), sub("s2", "c2", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.tick(DUE);
    assert!(w.paid_by_merchant_uid().contains_key(CHARGE));
    w
}

fn refund(w: &World, args: &[&str]) -> Output {
    w.billd().arg("refund").args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Cancel requests that reached the gateway.
fn cancels(w: &World) -> usize {
    w.requests().iter().filter(|r| r.endpoint == Endpoint::Cancel).count()
}

/// The charge's payment at the gateway: (cancel_amount, status).
fn at_gateway(w: &World, merchant_uid: &str) -> (i64, String) {
    let e = w.ledger().into_iter().find(|e| e.merchant_uid == merchant_uid && e.paid_at > 0).expect("paid");
    (e.cancel_amount, e.status)
}

/// `billd charges --json`: the refunded amount of a charge.
fn refunded_in_charges(w: &World, merchant_uid: &str) -> i64 {
    let out = w.billd().args(["charges", "--json"]).output().unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["merchant_uid"] == merchant_uid && r["status"] == "paid");
    row.expect("listed")["refunded"].as_i64().unwrap()
}

/// (amount, status, source) of every refund row, in order.
fn refund_rows(w: &World) -> Vec<(i64, String, String)> {
    let db = w.db();
    let mut st = db.prepare("SELECT amount, status, source FROM refunds ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

/// Sleeps until every refund in doubt may be looked at and settled: its check time has come and its real quiet
/// period is over.
fn wait_refunds_quiet(w: &World) {
    let until: Option<i64> = w
        .db()
        .query_row(
            "SELECT max(max(doubt_wall_ms + 2 * timeout_ms, 1000 * check_at)) FROM refunds
              WHERE status IN ('pending', 'unknown')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if let Some(until) = until {
        let wait = until - chrono::Utc::now().timestamp_millis() + 50;
        assert!(wait < 30_000, "a wait of {wait} ms");
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_millis(wait as u64));
        }
    }
}

#[test]
fn a_charge_is_refunded_in_parts_until_nothing_remains() {
    let w = world();
    let first = refund(&w, &[CHARGE, "--amount", "3000", "--reason", "late delivery"]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    assert!(text(&first).contains("6900 can still be refunded"), "{}", text(&first));
    assert_eq!(at_gateway(&w, CHARGE), (3000, "paid".into()));
    assert_eq!(refunded_in_charges(&w, CHARGE), 3000);
    let table = text(&w.billd().arg("charges").output().unwrap());
    assert!(table.lines().next().unwrap().contains("REFUNDED"), "{table}");
    let line = table.lines().find(|l| l.contains(CHARGE)).unwrap().to_string();
    assert!(line.contains(" 3000 paid"), "{table}");

    // More than remains: refused with what remains, nothing sent.
    let sent = cancels(&w);
    let too_much = refund(&w, &[CHARGE, "--amount", "7000", "--reason", "x"]);
    assert_eq!(code(&too_much), 1, "{}", text(&too_much));
    let said = text(&too_much);
    assert!(said.contains("paid 9900 KRW; 3000 refunded; 6900 can still be refunded"), "{said}");
    assert_eq!(cancels(&w), sent, "a refund larger than what remains was sent");

    // The rest, then nothing remains.
    let rest = refund(&w, &[CHARGE, "--reason", "cancelled order"]);
    assert_eq!(code(&rest), 0, "{}", text(&rest));
    assert_eq!(at_gateway(&w, CHARGE), (9900, "cancelled".into()));
    let none = refund(&w, &[CHARGE, "--amount", "1", "--reason", "x"]);
    assert_eq!(code(&none), 1, "{}", text(&none));
    assert!(text(&none).contains("0 can still be refunded"), "{}", text(&none));
    assert_eq!(cancels(&w), sent + 1);
    assert_eq!(refunded_in_charges(&w, CHARGE), 9900);

    let listed: Value =
        serde_json::from_slice(&w.billd().args(["refunds", "--json"]).output().unwrap().stdout).unwrap();
    let rows: Vec<(i64, &str, &str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["amount"].as_i64().unwrap(),
                r["status"].as_str().unwrap(),
                r["source"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(3000, "refunded", "billd", "late delivery"), (6900, "refunded", "billd", "cancelled order")]);
    assert!(listed[0]["made_at"].as_str().unwrap().ends_with("+09:00"), "{listed}");
    let events: i64 =
        w.db().query_row("SELECT count(*) FROM events WHERE kind = 'charge.refunded'", [], |r| r.get(0)).unwrap();
    assert_eq!(events, 2);
}

#[test]
fn refunds_of_unknown_or_unpaid_charges_are_refused_before_anything_is_sent() {
    let w = world();
    for (args, says) in [
        (vec!["billd-nope-0", "--reason", "x"], "no charge of billd has merchant_uid"),
        // The merchant_uid as stored, not another case of it.
        (vec!["BILLD-S1-0", "--reason", "x"], "no charge of billd has merchant_uid"),
        (vec!["billd-s2-0", "--reason", "x"], "is not paid (failed)"),
    ] {
        let out = refund(&w, &args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    let bad = refund(&w, &[CHARGE, "--amount", "0", "--reason", "x"]);
    assert_eq!(code(&bad), 1, "{}", text(&bad));
    let blank = refund(&w, &[CHARGE, "--reason", " "]);
    assert_eq!(code(&blank), 1, "{}", text(&blank));
    assert_eq!(cancels(&w), 0, "a refused refund was sent");
    assert!(refund_rows(&w).is_empty());
}

/// The cancel is made but its answer is lost: the refund is unknown (exit 3) and nothing is sent again; a pass
/// after the quiet period settles it by looking the payment up. A second lost answer is settled by the rerun of the
/// same refund, which finds it at the gateway and sends nothing.
#[test]
fn a_refund_whose_answer_is_lost_is_settled_by_lookup_and_never_sent_again() {
    let w = world();
    let lose = || {
        w.sandbox.add_fault(FaultRule {
            customer_uid: Some("c1".into()),
            fault: Fault::DropAfterCancel,
            times: Some(1),
        })
    };
    lose();
    let lost = refund(&w, &[CHARGE, "--amount", "1000", "--reason", "lost answer"]);
    assert_eq!(code(&lost), 3, "{}", text(&lost));
    assert!(text(&lost).contains("outcome unknown"), "{}", text(&lost));
    assert_eq!(refund_rows(&w), [(1000, "unknown".into(), "billd".into())]);
    assert_eq!(at_gateway(&w, CHARGE).0, 1000, "the gateway made the refund");
    let listed = String::from_utf8_lossy(&w.billd().arg("refunds").output().unwrap().stdout).to_string();
    assert!(listed.contains("unknown"), "{listed}");
    wait_refunds_quiet(&w);
    w.tick(&chrono::Utc::now().to_rfc3339());
    assert_eq!(refund_rows(&w), [(1000, "refunded".into(), "billd".into())]);
    assert_eq!(cancels(&w), 1, "a refund in doubt was sent again");
    assert_eq!(refunded_in_charges(&w, CHARGE), 1000);

    lose();
    let args = [CHARGE, "--amount", "500", "--reason", "lost again"];
    assert_eq!(code(&refund(&w, &args)), 3);
    let rerun = refund(&w, &args);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun));
    assert!(text(&rerun).contains("already made"), "{}", text(&rerun));
    assert_eq!(cancels(&w), 2, "a refund in doubt was sent again");
    assert_eq!(at_gateway(&w, CHARGE).0, 1500);
}

/// kill -9 after the gateway made the refund, before billd recorded it; the rerun finds it by lookup and sends
/// nothing: one refund at the gateway.
#[test]
fn a_refund_killed_in_the_middle_is_made_once() {
    let w = world();
    let args = [CHARGE, "--amount", "2500", "--reason", "crash"];
    let crashed = w.billd().arg("refund").args(args).env("BILLD_FAILPOINT", "refund_after_response").output().unwrap();
    assert!(
        !crashed.status.success() && text(&crashed).contains("failpoint refund_after_response"),
        "{}",
        text(&crashed)
    );
    assert_eq!(refund_rows(&w), [(2500, "pending".into(), "billd".into())], "the intent was not committed first");
    let rerun = refund(&w, &args);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun));
    assert!(text(&rerun).contains("already made"), "{}", text(&rerun));
    assert_eq!(cancels(&w), 1, "the refund was sent twice");
    assert_eq!(at_gateway(&w, CHARGE), (2500, "paid".into()));
    assert_eq!(refund_rows(&w), [(2500, "refunded".into(), "billd".into())]);
}

/// kill -9 after the intent, before anything is sent: a rerun leaves it to the command that began it until that one
/// is surely over (its check time), then finds nothing at the gateway and keeps it in doubt for a quiet period, then
/// a rerun refunds it: one refund at the gateway, never two.
#[test]
fn a_refund_killed_before_sending_is_sent_once_after_the_quiet_period() {
    let w = world();
    let args = [CHARGE, "--amount", "2500", "--reason", "crash"];
    let crashed = w.billd().arg("refund").args(args).env("BILLD_FAILPOINT", "refund_after_intent").output().unwrap();
    assert!(!crashed.status.success(), "{}", text(&crashed));
    let early = refund(&w, &args);
    assert_eq!(code(&early), 1, "{}", text(&early));
    assert!(text(&early).contains("in progress"), "{}", text(&early));
    wait_refunds_quiet(&w);
    let looked = refund(&w, &args);
    assert_eq!(code(&looked), 3, "{}", text(&looked));
    assert_eq!(cancels(&w), 0);
    wait_refunds_quiet(&w);
    let later = refund(&w, &args);
    assert_eq!(code(&later), 0, "{}", text(&later));
    assert_eq!(cancels(&w), 1);
    assert_eq!(at_gateway(&w, CHARGE).0, 2500);
    assert_eq!(refund_rows(&w), [(2500, "failed".into(), "billd".into()), (2500, "refunded".into(), "billd".into())]);
}

/// Two `billd refund` processes of one charge at once: the second is refused while the first is in flight (held
/// after its intent), and in any order they never refund more than the charge.
#[test]
fn two_refunds_of_one_charge_at_once_never_refund_more_than_the_charge() {
    let w = world();
    let gate = w.dir.path().join("gate");
    let mut first = w
        .billd()
        .args(["refund", CHARGE, "--amount", "6000", "--reason", "first"])
        .env("BILLD_PAUSEPOINT", format!("refund_after_intent:{}", gate.display()))
        .spawn()
        .unwrap();
    let reached = w.dir.path().join("gate.reached");
    common::wait_for("the first refund's intent", || reached.exists());
    let second = refund(&w, &[CHARGE, "--amount", "6000", "--reason", "second"]);
    // The first goes on whatever the second did (a failed assertion must not leave it waiting).
    std::fs::write(&gate, b"").unwrap();
    let first_done = first.wait().unwrap().success();
    assert_eq!(code(&second), 1, "{}", text(&second));
    assert!(text(&second).contains("in progress"), "{}", text(&second));
    assert!(first_done);
    assert_eq!(at_gateway(&w, CHARGE).0, 6000);

    // Both at once, unpaused, for the rest and more: whatever the order, never more than the charge.
    // Both started before either is waited for.
    let start = |n: u32| {
        w.billd()
            .args(["refund", CHARGE, "--amount", "3900", "--reason", &format!("race {}", n)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (start(1), start(2));
    let (a, b) = (pa.wait_with_output().unwrap(), pb.wait_with_output().unwrap());
    assert_eq!([code(&a), code(&b)].iter().filter(|c| **c == 0).count(), 1, "{}\n{}", text(&a), text(&b));
    assert_eq!(at_gateway(&w, CHARGE), (9900, "cancelled".into()));
}

/// A refund made in i'mport's console is found by `billd refunds --sync` and shown by `billd charges`; the next
/// `billd refund` counts it.
#[test]
fn a_refund_made_outside_billd_is_found_by_sync() {
    let w = world();
    let imp_uid = w.paid_by_merchant_uid()[CHARGE].imp_uid.clone();
    w.sandbox.refund_in_console(&imp_uid, Some(2000), "console \u{1b}[31mrefund").unwrap();
    assert_eq!(refunded_in_charges(&w, CHARGE), 0, "not looked up yet");
    let synced = w.billd().args(["refunds", "--sync"]).output().unwrap();
    assert!(synced.status.success(), "{}", text(&synced));
    let out = String::from_utf8_lossy(&synced.stdout).to_string();
    assert!(out.contains("external") && out.contains("2000 KRW"), "{out}");
    assert!(!out.contains('\u{1b}'), "the gateway's reason printed as it is: {out}");
    assert_eq!(refunded_in_charges(&w, CHARGE), 2000);
    // Once, however often it is synced.
    assert!(w.billd().args(["refunds", "--sync"]).output().unwrap().status.success());
    assert_eq!(refund_rows(&w), [(2000, "refunded".into(), "external".into())]);
    let too_much = refund(&w, &[CHARGE, "--amount", "8000", "--reason", "x"]);
    assert_eq!(code(&too_much), 1, "{}", text(&too_much));
    assert!(text(&too_much).contains("7900 can still be refunded"), "{}", text(&too_much));
    assert_eq!(cancels(&w), 0);
    // A billd reason holding a terminal escape would not come back unchanged (issue 24, second review, F2):
    // refused at input, nothing sent.
    let odd = refund(&w, &[CHARGE, "--amount", "100", "--reason", "goodwill \u{1b}[2J"]);
    assert_eq!(code(&odd), 1, "{}", text(&odd));
    assert!(!text(&odd).contains('\u{1b}'), "{}", text(&odd));
    assert_eq!(cancels(&w), 0);
}

/// Issue 24 review, R1: a refund is identified by (merchant_uid, amount, reason). Rerunning the same command after
/// its refund was made (answered, or settled by `refunds --sync` after a lost answer) sends nothing and exits 0,
/// saying when it was made; the rest without --amount likewise; another --reason refunds the same amount again.
#[test]
fn a_rerun_of_a_refund_already_made_sends_nothing() {
    let w = world();
    let args = [CHARGE, "--amount", "1000", "--reason", "partial"];
    assert_eq!(code(&refund(&w, &args)), 0);
    for _ in 0..2 {
        let again = refund(&w, &args);
        assert_eq!(code(&again), 0, "{}", text(&again));
        assert!(text(&again).contains("already made"), "{}", text(&again));
        assert!(text(&again).contains("another --reason"), "{}", text(&again));
    }
    assert_eq!(cancels(&w), 1, "a rerun refunded again");
    assert_eq!(at_gateway(&w, CHARGE).0, 1000);
    // On purpose: another reason.
    assert_eq!(code(&refund(&w, &[CHARGE, "--amount", "1000", "--reason", "partial, second"])), 0);
    assert_eq!(cancels(&w), 2);

    // A lost answer (exit 3) settled by `refunds --sync`: the rerun sends nothing.
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: Fault::DropAfterCancel, times: Some(1) });
    let lost_args = [CHARGE, "--amount", "700", "--reason", "lost"];
    let lost = refund(&w, &lost_args);
    assert_eq!(code(&lost), 3, "{}", text(&lost));
    assert!(text(&lost).contains("rerun of this same command sends nothing"), "{}", text(&lost));
    wait_refunds_quiet(&w);
    assert!(w.billd().args(["refunds", "--sync"]).output().unwrap().status.success());
    let rerun = refund(&w, &lost_args);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun));
    assert!(text(&rerun).contains("already made"), "{}", text(&rerun));
    assert_eq!(cancels(&w), 3, "a refund settled by --sync was sent again");

    // The rest, twice: made once.
    let rest = [CHARGE, "--reason", "order cancelled"];
    assert_eq!(code(&refund(&w, &rest)), 0);
    let again = refund(&w, &rest);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(text(&again).contains("already made"), "{}", text(&again));
    assert_eq!(cancels(&w), 4);
    assert_eq!(at_gateway(&w, CHARGE), (9900, "cancelled".into()));
}

/// Issue 24 review, R2: free text an operator gives that is sent or kept (--reason, --name) is refused when it holds
/// a card number, the imp_secret, or nothing visible: the error names the flag, nothing is sent or written.
#[test]
fn a_reason_holding_a_card_number_a_secret_or_nothing_visible_is_refused() {
    let w = world();
    for (reason, says) in [
        ("card 4242 4242 4242 4242 refund", "card number"),
        ("key imp_sandbox_secret", "imp_secret"),
        ("\u{200b}", "nothing visible"),
        (" \u{200b}\u{feff} ", "nothing visible"),
    ] {
        let out = refund(&w, &[CHARGE, "--amount", "100", "--reason", reason]);
        assert_eq!(code(&out), 1, "{reason:?}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains("--reason") && said.contains(says), "{reason:?}: {said}");
        assert!(!said.contains("4242 4242 4242 4242") && !said.contains("imp_sandbox_secret"), "{said}");
    }
    assert_eq!(cancels(&w), 0, "a refused reason was sent");
    assert!(refund_rows(&w).is_empty());
    let logged: String = w.db().query_row("SELECT group_concat(detail, ' ') FROM events", [], |r| r.get(0)).unwrap();
    assert!(!logged.contains("4242 4242"), "{logged}");
    // The same rule for charge-once --name.
    let out = common::with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-1", "--amount", "1000", "--name", "4242424242424242"],
        &common::card_json(cards::APPROVE),
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("--name") && text(&out).contains("card number"), "{}", text(&out));
}

/// Issue 24 review, R8 and R9: a wrong secret, or a gateway that cannot be reached for the payment's lookup, refuses
/// the refund before its intent: exit 1, nothing written, nothing sent ("rerun later"), no quiet period to wait.
#[test]
fn a_refund_whose_lookup_or_credentials_fail_is_refused_before_its_intent() {
    let w = world();
    let args = [CHARGE, "--amount", "1000", "--reason", "r"];
    let wrong = w.billd().arg("refund").args(args).env("BILLD_GATEWAY__IMP_SECRET", "not-the-secret").output().unwrap();
    assert_eq!(code(&wrong), 1, "{}", text(&wrong));
    assert!(text(&wrong).contains("nothing was sent"), "{}", text(&wrong));
    assert!(refund_rows(&w).is_empty(), "a refund refused for its credentials was written");
    let down =
        w.billd().arg("refund").args(args).env("BILLD_GATEWAY__BASE_URL", "http://127.0.0.1:9").output().unwrap();
    assert_eq!(code(&down), 1, "{}", text(&down));
    assert!(text(&down).contains("rerun later"), "{}", text(&down));
    assert!(refund_rows(&w).is_empty(), "a refund was begun without the payment's lookup");
    assert_eq!(cancels(&w), 0);
    // Nothing to wait for: the refund goes at once.
    assert_eq!(code(&refund(&w, &args)), 0);
}

/// Issue 24 review, R4: one charge that cannot be settled (its payment's amount differs from billd's) does not stop
/// `refunds --sync`: the other charges are looked up, the failure is reported at the end (exit 1).
#[test]
fn one_bad_charge_does_not_stop_refunds_sync() {
    let w = world();
    // A second paid charge (a one-time charge) with a console refund.
    let once = common::with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-1", "--amount", "5000", "--name", "goods"],
        &common::card_json(cards::APPROVE),
    );
    assert_eq!(code(&once), 0, "{}", text(&once));
    let imp_uid = w.ledger().into_iter().find(|e| e.merchant_uid == "once-1" && e.paid_at > 0).unwrap().imp_uid;
    w.sandbox.refund_in_console(&imp_uid, Some(1000), "console").unwrap();
    // billd's record of the first charge disagrees with the gateway.
    w.db().execute("UPDATE attempts SET amount = 9800 WHERE merchant_uid = ?1", [CHARGE]).unwrap();
    let synced = w.billd().args(["refunds", "--sync"]).output().unwrap();
    assert_eq!(code(&synced), 1, "{}", text(&synced));
    assert!(text(&synced).contains(CHARGE), "{}", text(&synced));
    assert_eq!(refund_rows(&w), [(1000, "refunded".into(), "external".into())], "{}", text(&synced));
}

/// Sends SIGSTOP or SIGCONT to a child.
fn signal(child: &std::process::Child, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// Holds the next cancel of c1's payment `secs` at the gateway before it is made (as a proxy in front of i'mport).
fn hold_cancel(w: &World, secs: u64) {
    w.sandbox.add_fault(FaultRule {
        customer_uid: Some("c1".into()),
        fault: Fault::CancelLater { after: std::time::Duration::from_secs(secs) },
        times: Some(1),
    });
}

/// Issue 24, second review, F1: a cancel that reaches the gateway late (held 9 s), after billd's refund was settled
/// as failed, is billd's refund (its row becomes refunded, not an external one) and a rerun of the same command
/// sends nothing: one refund at the gateway, never two.
#[test]
fn a_refund_that_lands_after_it_was_settled_failed_is_billds_and_never_sent_again() {
    let w = world();
    hold_cancel(&w, 9);
    let args = [CHARGE, "--amount", "2000", "--reason", "damaged item"];
    let first = refund(&w, &args);
    assert_eq!(code(&first), 3, "{}", text(&first));
    wait_refunds_quiet(&w);
    let synced = w.billd().args(["refunds", "--sync"]).output().unwrap();
    assert!(synced.status.success(), "{}", text(&synced));
    assert_eq!(refund_rows(&w), [(2000, "failed".into(), "billd".into())]);
    assert_eq!(at_gateway(&w, CHARGE).0, 0, "the held cancel landed before the sync: nothing tested");
    common::wait_for("the held cancel to land", || at_gateway(&w, CHARGE).0 == 2000);
    w.wait_for_gateway_idle();
    let synced = w.billd().args(["refunds", "--sync"]).output().unwrap();
    assert!(synced.status.success(), "{}", text(&synced));
    assert_eq!(refund_rows(&w), [(2000, "refunded".into(), "billd".into())], "the late refund is not billd's");
    let rerun = refund(&w, &args);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun));
    assert!(text(&rerun).contains("already made"), "{}", text(&rerun));
    assert_eq!(cancels(&w), 1, "the same refund was sent twice");
    assert_eq!(at_gateway(&w, CHARGE).0, 2000, "refunded twice");
}

/// F1, the rerun alone (no sync after the late cancel landed): its lookup finds billd's failed refund made.
#[test]
fn a_rerun_after_a_late_refund_landed_sends_nothing() {
    let w = world();
    hold_cancel(&w, 9);
    let args = [CHARGE, "--amount", "2000", "--reason", "damaged item"];
    assert_eq!(code(&refund(&w, &args)), 3);
    wait_refunds_quiet(&w);
    assert!(w.billd().args(["refunds", "--sync"]).output().unwrap().status.success());
    assert_eq!(refund_rows(&w), [(2000, "failed".into(), "billd".into())]);
    assert_eq!(at_gateway(&w, CHARGE).0, 0, "the held cancel landed before the sync: nothing tested");
    common::wait_for("the held cancel to land", || at_gateway(&w, CHARGE).0 == 2000);
    w.wait_for_gateway_idle();
    let rerun = refund(&w, &args);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun));
    assert!(text(&rerun).contains("already made"), "{}", text(&rerun));
    assert_eq!(cancels(&w), 1, "the same refund was sent twice");
    assert_eq!(at_gateway(&w, CHARGE).0, 2000, "refunded twice");
    assert_eq!(refund_rows(&w), [(2000, "refunded".into(), "billd".into())]);
}

/// F2: a reason the gateway-text cleaner would change (a long digit run, an invisible character, a %-encoded
/// sequence, a control character) is refused at input, naming --reason and why: nothing sent, nothing written. A
/// console refund whose reason differs from billd's only in an invisible character is not billd's.
#[test]
fn a_reason_that_would_not_come_back_unchanged_is_refused() {
    let w = world();
    for reason in ["goodwill, ticket 20241107", "good\u{200b}will", "goodwill %41", "goodwill \u{1b}[2J"] {
        let out = refund(&w, &[CHARGE, "--amount", "100", "--reason", reason]);
        assert_eq!(code(&out), 1, "{reason:?}: {}", text(&out));
        assert!(text(&out).contains("--reason") && text(&out).contains("unchanged"), "{reason:?}: {}", text(&out));
    }
    assert_eq!(cancels(&w), 0, "a refused reason was sent");
    assert!(refund_rows(&w).is_empty());
    // billd's refund of 2000 "goodwill" begun, never sent (killed); an operator refunds 2000 "good\u{200b}will" in
    // the console at that balance: not billd's refund.
    let args = [CHARGE, "--amount", "2000", "--reason", "goodwill"];
    let crashed = w.billd().arg("refund").args(args).env("BILLD_FAILPOINT", "refund_after_intent").output().unwrap();
    assert!(!crashed.status.success(), "{}", text(&crashed));
    let imp_uid = w.paid_by_merchant_uid()[CHARGE].imp_uid.clone();
    w.sandbox.refund_in_console(&imp_uid, Some(2000), "good\u{200b}will").unwrap();
    wait_refunds_quiet(&w);
    assert!(w.billd().args(["refunds", "--sync"]).output().unwrap().status.success());
    let rows = refund_rows(&w);
    assert_ne!(rows[0], (2000, "refunded".into(), "billd".into()), "the console's refund taken as billd's: {rows:?}");
}

/// F3: after a refund whose answer was lost, the rest (no --amount, same reason) refunds the rest; only once
/// nothing remains is it a rerun ("already made").
#[test]
fn the_rest_after_a_refund_in_doubt_refunds_the_rest() {
    let w = world();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: Fault::DropAfterCancel, times: Some(1) });
    let lost = refund(&w, &[CHARGE, "--amount", "3000", "--reason", "R"]);
    assert_eq!(code(&lost), 3, "{}", text(&lost));
    let rest = refund(&w, &[CHARGE, "--reason", "R"]);
    assert_eq!(code(&rest), 0, "{}", text(&rest));
    assert!(text(&rest).contains("refunded 6900"), "{}", text(&rest));
    assert_eq!(at_gateway(&w, CHARGE), (9900, "cancelled".into()));
    let again = refund(&w, &[CHARGE, "--reason", "R"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(text(&again).contains("already made"), "{}", text(&again));
    assert_eq!(cancels(&w), 2);
}

/// F4: a `billd refund` frozen (SIGSTOP) while its cancel is held at the gateway; other processes' syncs settle its
/// row unknown, then failed; the cancel lands; the process resumes: its request did leave, so it exits 0 (made) or
/// 3 (not known), never 1 "not made"; the next sync records the refund as billd's and a rerun sends nothing.
#[test]
fn a_refund_frozen_while_its_cancel_is_held_never_says_not_made() {
    let w = world();
    hold_cancel(&w, 14);
    let child = w
        .billd()
        .args(["refund", CHARGE, "--amount", "2000", "--reason", "frozen"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("the cancel to reach the gateway", || cancels(&w) == 1);
    signal(&child, "-STOP");
    // Settled by other processes while it is frozen: unknown, then failed.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        wait_refunds_quiet(&w);
        let synced = w.billd().args(["refunds", "--sync"]).output().unwrap();
        statuses.push((refund_rows(&w)[0].1.clone(), synced.status.success()));
    }
    let landed_early = at_gateway(&w, CHARGE).0 != 0;
    common::wait_for("the held cancel to land", || at_gateway(&w, CHARGE).0 == 2000);
    signal(&child, "-CONT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(statuses, [("unknown".to_string(), true), ("failed".to_string(), true)]);
    assert!(!landed_early, "the held cancel landed before the syncs: nothing tested");
    assert!(matches!(code(&out), 0 | 3), "a sent refund said not made: {}", text(&out));
    if code(&out) == 3 {
        assert!(text(&out).contains("request left"), "{}", text(&out));
    }
    w.wait_for_gateway_idle();
    assert!(w.billd().args(["refunds", "--sync"]).output().unwrap().status.success());
    assert_eq!(refund_rows(&w), [(2000, "refunded".into(), "billd".into())]);
    let rerun = refund(&w, &[CHARGE, "--amount", "2000", "--reason", "frozen"]);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun));
    assert_eq!(cancels(&w), 1);
    assert_eq!(at_gateway(&w, CHARGE).0, 2000);
}

/// Lesser: two refunds of one charge where the first's lookup is older than the second's write: the first is
/// refused, saying another refund was recorded meanwhile and nothing was sent (not a ledger mismatch).
#[test]
fn a_refund_whose_lookup_is_older_than_another_refund_sends_nothing_and_says_so() {
    let w = world();
    let gate = w.dir.path().join("gate");
    let first = w
        .billd()
        .args(["refund", CHARGE, "--amount", "2000", "--reason", "first"])
        .env("BILLD_PAUSEPOINT", format!("refund_lookup_before_settle:{}", gate.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reached = w.dir.path().join("gate.reached");
    common::wait_for("the first refund's lookup", || reached.exists());
    let second = refund(&w, &[CHARGE, "--amount", "4000", "--reason", "second"]);
    std::fs::write(&gate, b"").unwrap();
    let first = first.wait_with_output().unwrap();
    assert_eq!(code(&second), 0, "{}", text(&second));
    assert_eq!(code(&first), 1, "{}", text(&first));
    let said = text(&first);
    assert!(
        said.contains("another refund of this charge was recorded meanwhile") && said.contains("nothing was sent"),
        "{said}"
    );
    assert_eq!(cancels(&w), 1);
    assert_eq!(at_gateway(&w, CHARGE).0, 4000);
    // The rerun goes.
    assert_eq!(code(&refund(&w, &[CHARGE, "--amount", "2000", "--reason", "first"])), 0);
    assert_eq!(at_gateway(&w, CHARGE).0, 6000);
}

/// F1: the "same refund" rule sees a refund the gateway lists whatever its source: after a console refund of 2000
/// with the reason billd is given, `billd refund --amount 2000 --reason` that reason sends nothing and says it was
/// made outside billd; another reason refunds.
#[test]
fn a_refund_the_gateway_lists_with_the_same_amount_and_reason_is_not_sent_again() {
    let w = world();
    let imp_uid = w.paid_by_merchant_uid()[CHARGE].imp_uid.clone();
    w.sandbox.refund_in_console(&imp_uid, Some(2000), "damaged item").unwrap();
    let same = refund(&w, &[CHARGE, "--amount", "2000", "--reason", "damaged item"]);
    assert_eq!(code(&same), 0, "{}", text(&same));
    assert!(text(&same).contains("already made outside billd"), "{}", text(&same));
    assert_eq!(cancels(&w), 0, "a refund the gateway lists was sent again");
    assert_eq!(code(&refund(&w, &[CHARGE, "--amount", "2000", "--reason", "damaged item, second"])), 0);
    assert_eq!(at_gateway(&w, CHARGE).0, 4000);
}

/// Notices review, F1: a charge whose answer was lost and which was then refunded in full in i'mport's console (its
/// payment `cancelled`) before billd looked it up. The lookups used to ask for `paid` and `failed` only: nothing
/// found, the charge was resent (refused: the merchant_uid was paid), recorded rejected, and dunning went on to
/// cancel a customer who had paid. It is recorded paid with its payment, the console refund is recorded on the way,
/// nothing is sent again, and the subscription stays active.
#[test]
fn a_lost_answer_refunded_in_the_console_before_its_lookup_is_recorded_paid_and_refunded() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: Fault::DropAfterCharge, times: Some(1) });
    w.tick(DUE);
    let imp_uid = w.paid_by_merchant_uid()[CHARGE].imp_uid.clone();
    w.sandbox.refund_in_console(&imp_uid, None, "refunded by phone").unwrap();
    assert_eq!(at_gateway(&w, CHARGE), (9900, "cancelled".into()));
    w.wait_quiet();
    w.tick("2025-01-01T10:05:00+09:00");
    assert_eq!(w.sent(CHARGE), 1, "sent again: {:?}", w.requests());
    let (status, imp): (String, Option<String>) = w
        .db()
        .query_row("SELECT status, imp_uid FROM attempts WHERE merchant_uid = ?1", [CHARGE], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), imp.as_deref()), ("paid", Some(imp_uid.as_str())));
    assert_eq!(refund_rows(&w), [(9900, "refunded".into(), "external".into())]);
    assert_eq!(refunded_in_charges(&w, CHARGE), 9900);
    assert_eq!(w.status_of("s1"), "active");
    // Later periods bill as usual.
    w.tick("2025-02-01T10:00:00+09:00");
    assert!(w.paid_by_merchant_uid().contains_key("billd-s1-1"));
}

/// The same for a one-time charge: a `charge-once` whose answer was lost, refunded in full in the console before a
/// pass looked it up, is recorded paid (it used to be closed as abandoned, "nothing was charged") and its refund is
/// recorded.
#[test]
fn a_one_time_charge_refunded_in_the_console_before_its_lookup_is_recorded_paid_and_refunded() {
    let w = World::new(Setup { body: MONTHLY, timeout: "1s", ..Default::default() });
    // Charged after the command gave up waiting and looked (nothing found yet): unknown.
    let later = Fault::ChargeLater { after: std::time::Duration::from_millis(1500) };
    w.sandbox.add_fault(FaultRule { customer_uid: None, fault: later, times: Some(1) });
    let once = common::with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-1", "--amount", "5000", "--name", "goods"],
        &common::card_json(cards::APPROVE),
    );
    assert!(text(&once).contains("outcome unknown"), "{}", text(&once));
    common::wait_for("the charge at the gateway", || w.ledger().iter().any(|e| e.merchant_uid == "once-1"));
    let imp_uid = w.ledger().into_iter().find(|e| e.merchant_uid == "once-1").expect("charged").imp_uid;
    w.sandbox.refund_in_console(&imp_uid, None, "refunded by phone").unwrap();
    w.wait_quiet();
    w.tick(&(chrono::Utc::now() + chrono::Duration::seconds(10)).to_rfc3339());
    let (status, imp): (String, Option<String>) = w
        .db()
        .query_row("SELECT status, imp_uid FROM one_time_charges WHERE merchant_uid = 'once-1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), imp.as_deref()), ("paid", Some(imp_uid.as_str())));
    assert_eq!(refund_rows(&w), [(5000, "refunded".into(), "external".into())]);
    assert_eq!(w.sent("once-1"), 1);
}
