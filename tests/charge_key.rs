//! Issue 24, one-off charges on a stored billing key: `billd charge-key CUSTOMER_UID --merchant-uid M --amount N
//! --name TEXT [--subscription ID]`, against the real binary and the sandbox. The money path is exactly once: paid,
//! declined, a rerun that sends nothing, refusals before anything is sent (an unknown key, billd's own namespace in
//! any case, a merchant_uid held in another case, other arguments on a rerun, the rails), a kill -9 in the middle of
//! a charge, and a lost answer settled by lookup after the quiet period only (by a rerun, and by a `tick`).

mod common;

use billd_sandbox::{Endpoint, Fault, FaultRule};
// Entries here start in the past on purpose: `catch_up = true` (issue 21, 2).
use common::{MONTHLY, Setup, World, cards, sub_catch_up as sub, text, wait_for};
use std::process::{Output, Stdio};
use std::time::Duration;

/// A world with the billing keys `c1` (approves) and `c2` (declines), and a 1 s gateway timeout (a quiet period of
/// 2 s, in real time). `body`: more config (`[limits]`, plans, subscriptions).
fn world(body: &str) -> World {
    let w = World::new(Setup { body, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w
}

fn charge_key(w: &World, args: &[&str]) -> Output {
    w.billd().arg("charge-key").args(args).output().unwrap()
}

/// `again` requests that reached the gateway for `merchant_uid` (any case).
fn agains(w: &World, merchant_uid: &str) -> usize {
    w.requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Again)
        .filter(|r| r.merchant_uid.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(merchant_uid)))
        .count()
}

/// The one-time charge row: (status, kind, customer_uid, imp_uid).
fn row(w: &World, merchant_uid: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    use rusqlite::OptionalExtension;
    w.db()
        .query_row(
            "SELECT status, kind, customer_uid, imp_uid FROM one_time_charges WHERE merchant_uid = ?1",
            [merchant_uid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .unwrap()
}

/// The imp_uid of the paid payment at the gateway for `merchant_uid`, asserting there is exactly one.
fn paid_once(w: &World, merchant_uid: &str) -> String {
    let paid: Vec<_> =
        w.ledger().into_iter().filter(|e| e.merchant_uid == merchant_uid && e.status == "paid").collect();
    assert_eq!(paid.len(), 1, "paid payments for {merchant_uid}: {paid:?}");
    paid[0].imp_uid.clone()
}

const ADDON: [&str; 7] = ["c1", "--merchant-uid", "addon-1", "--amount", "3000", "--name", "Add-on"];

#[test]
fn a_stored_key_is_charged_once_and_a_rerun_answers_paid_without_sending() {
    let w = world(MONTHLY);
    let first = charge_key(&w, &ADDON);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("paid: addon-1 3000 KRW with billing key c1"), "{}", text(&first));
    let sent = w.sent_for("c1");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].endpoint, sent[0].merchant_uid.as_deref()), (Endpoint::Again, Some("addon-1")));
    let imp = paid_once(&w, "addon-1");
    assert_eq!(row(&w, "addon-1"), Some(("paid".into(), "key".into(), Some("c1".into()), Some(imp.clone()))));
    // A rerun: the recorded outcome, exit 0, nothing sent.
    let rerun = charge_key(&w, &ADDON);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert!(text(&rerun).contains("already paid") && text(&rerun).contains("nothing sent"), "{}", text(&rerun));
    assert_eq!(agains(&w, "addon-1"), 1, "a rerun of a paid charge-key was sent");
    // A rerun with other arguments is refused, nothing sent.
    for (what, args) in [
        ("another amount", ["c1", "--merchant-uid", "addon-1", "--amount", "4000", "--name", "Add-on"]),
        ("another name", ["c1", "--merchant-uid", "addon-1", "--amount", "3000", "--name", "Other"]),
        ("another key", ["c2", "--merchant-uid", "addon-1", "--amount", "3000", "--name", "Add-on"]),
    ] {
        let out = charge_key(&w, &args);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains("a rerun must ask for the same"), "{what}: {}", text(&out));
    }
    assert_eq!(w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count(), 1, "sent on a refused rerun");
    // Listed with the key-in one-time charges, as a charge of a key; its event names the key.
    let json: serde_json::Value =
        serde_json::from_slice(&w.billd().args(["charges", "--one-time", "--json"]).output().unwrap().stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!((rows[0]["kind"].as_str(), rows[0]["customer_uid"].as_str()), (Some("one-time-key"), Some("c1")));
    let table = text(&w.billd().arg("charges").output().unwrap());
    assert!(table.lines().any(|l| l.contains("one-time-key") && l.contains("addon-1")), "{table}");
    let event: String = w
        .db()
        .query_row("SELECT detail FROM events WHERE kind = 'charge.paid'", [], |r| r.get(0))
        .expect("a charge.paid event");
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!((event["merchant_uid"].as_str(), event["customer_uid"].as_str()), (Some("addon-1"), Some("c1")));
    assert_eq!(event["kind"].as_str(), Some("key"));
}

#[test]
fn a_declined_key_charge_exits_1_and_is_recorded_declined() {
    let w = world(MONTHLY);
    let out = charge_key(&w, &["c2", "--merchant-uid", "addon-2", "--amount", "3000", "--name", "Add-on"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not paid (declined)"), "{}", text(&out));
    assert!(text(&out).contains(cards::REASON_INSUFFICIENT_FUNDS), "{}", text(&out));
    let (status, kind, key, imp) = row(&w, "addon-2").expect("recorded");
    assert_eq!((status.as_str(), kind.as_str(), key.as_deref()), ("failed", "key", Some("c2")));
    assert!(imp.is_some(), "the decline's imp_uid is kept (a later lookup must not take it for a new one)");
    let failed = text(&w.billd().args(["charges", "--failed"]).output().unwrap());
    assert!(failed.contains("addon-2") && failed.contains("one-time-key"), "{failed}");
}

#[test]
fn refusals_send_nothing_and_record_nothing() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = world(&body);
    // An unknown billing key: the gateway is asked first.
    let out = charge_key(&w, &["nokey", "--merchant-uid", "addon-3", "--amount", "100", "--name", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no billing key nokey at the gateway"), "{}", text(&out));
    assert_eq!(row(&w, "addon-3"), None, "an intent recorded for a key that does not exist");
    // billd's own namespace (subscription periods, `billd-`), in any case.
    for m in ["billd-s1-0", "BILLD-S1-0", "Billd-anything"] {
        let out = charge_key(&w, &["c1", "--merchant-uid", m, "--amount", "100", "--name", "x"]);
        assert_eq!(out.status.code(), Some(1), "{m}: {}", text(&out));
        assert!(text(&out).contains("are billd's own"), "{m}: {}", text(&out));
    }
    // A merchant_uid another one-time charge holds in another case.
    assert!(charge_key(&w, &ADDON).status.success());
    for args in [
        ["c1", "--merchant-uid", "ADDON-1", "--amount", "3000", "--name", "Add-on"],
        ["c1", "--merchant-uid", "Addon-1", "--amount", "100", "--name", "x"],
    ] {
        let out = charge_key(&w, &args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("is taken (compared without case) by a one-time charge"), "{}", text(&out));
    }
    // A subscription that does not exist, or charges another key (or this one spelled otherwise).
    assert!(w.billd().arg("sync").output().unwrap().status.success());
    for (sub_id, key, says) in [
        ("nope", "c1", "no such subscription"),
        ("s1", "c2", "it charges billing key \"c1\", not \"c2\""),
        ("s1", "C1", "spell it as stored"),
    ] {
        let out = charge_key(
            &w,
            &[key, "--merchant-uid", "addon-9", "--amount", "100", "--name", "x", "--subscription", sub_id],
        );
        assert_eq!(out.status.code(), Some(1), "{sub_id}: {}", text(&out));
        assert!(text(&out).contains(says), "{sub_id}: {}", text(&out));
    }
    assert_eq!(
        w.requests().iter().filter(|r| r.endpoint == Endpoint::Again).count(),
        1,
        "a refused charge-key was sent: {:?}",
        w.requests()
    );
    let rows: i64 = w.db().query_row("SELECT count(*) FROM one_time_charges", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1, "a refused charge-key left an intent");
}

#[test]
fn subscription_ties_the_charge_so_that_subscriptions_show_lists_it() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = world(&body);
    assert!(w.billd().arg("sync").output().unwrap().status.success());
    let out = charge_key(
        &w,
        &["c1", "--merchant-uid", "overage-1", "--amount", "1200", "--name", "Overage", "--subscription", "s1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&w.billd().args(["subscriptions", "show", "s1"]).output().unwrap());
    assert!(shown.lines().any(|l| l.contains("overage-1") && l.contains("1200 KRW") && l.contains("paid")), "{shown}");
    let json: serde_json::Value =
        serde_json::from_slice(&w.billd().args(["subscriptions", "show", "s1", "--json"]).output().unwrap().stdout)
            .unwrap();
    let tied = json["one_time_charges"].as_array().expect("one_time_charges");
    assert_eq!(tied.len(), 1, "{json}");
    assert_eq!((tied[0]["merchant_uid"].as_str(), tied[0]["status"].as_str()), (Some("overage-1"), Some("paid")));
    // `charges --subscription s1` lists it too; a rerun must name the same subscription.
    let listed = text(&w.billd().args(["charges", "--subscription", "s1"]).output().unwrap());
    assert!(listed.contains("overage-1"), "{listed}");
    let untied = charge_key(&w, &["c1", "--merchant-uid", "overage-1", "--amount", "1200", "--name", "Overage"]);
    assert_eq!(untied.status.code(), Some(1), "{}", text(&untied));
    assert_eq!(agains(&w, "overage-1"), 1);
}

#[test]
fn the_rails_refuse_above_max_amount_and_while_stopped_unless_the_operator_says_so() {
    let mut body = format!("\n[limits]\nmax_amount = 50000\nmax_charges_per_pass = 1\n{MONTHLY}");
    body += &sub("s1", "c1", "monthly", "2025-01-01");
    body += &sub("s2", "c3", "monthly", "2025-01-01");
    let w = world(&body);
    w.sandbox.register_customer("c3", cards::APPROVE).unwrap();
    // Above limits.max_amount.
    let big = ["c1", "--merchant-uid", "big-1", "--amount", "60000", "--name", "Big"];
    let out = charge_key(&w, &big);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("limits.max_amount (50000)"), "{}", text(&out));
    assert_eq!(agains(&w, "big-1"), 0);
    let out = w.billd().arg("charge-key").args(big).arg("--above-max-amount").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(agains(&w, "big-1"), 1);
    // A safety stop: two charges due, a limit of one per pass.
    let tick = w.billd().args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"]).output().unwrap();
    assert_eq!(tick.status.code(), Some(1), "{}", text(&tick));
    let stopped = ["c1", "--merchant-uid", "addon-5", "--amount", "100", "--name", "x"];
    let out = charge_key(&w, &stopped);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("billing is stopped by a safety rail"), "{}", text(&out));
    assert_eq!(agains(&w, "addon-5"), 0);
    let out = w.billd().arg("charge-key").args(stopped).arg("--despite-safety-stop").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(agains(&w, "addon-5"), 1);
}

/// kill -9 while the charge is at the gateway (its answer not back): a rerun at once sends nothing; the charge is
/// looked up after the quiet period only (a pass makes it unknown, a full quiet period from its look, then a rerun
/// finds it paid): one charge at the gateway.
#[test]
fn a_charge_key_killed_mid_request_is_charged_exactly_once() {
    let w = world(MONTHLY);
    w.sandbox.add_fault(FaultRule {
        customer_uid: None,
        fault: Fault::ChargeLater { after: Duration::from_millis(1500) },
        times: Some(1),
    });
    let mut child =
        w.billd().arg("charge-key").args(ADDON).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the request at the gateway", || agains(&w, "addon-1") == 1);
    child.kill().unwrap(); // SIGKILL
    let killed = child.wait_with_output().unwrap();
    assert!(!killed.status.success(), "it finished before the kill: {}", text(&killed));
    assert_eq!(row(&w, "addon-1").map(|r| r.0), Some("pending".into()), "the intent was not committed first");
    // At once: the gateway has no record yet; nothing is sent.
    let rerun = charge_key(&w, &ADDON);
    assert_eq!(rerun.status.code(), Some(1), "{}", text(&rerun));
    assert!(text(&rerun).contains("do not retry before"), "{}", text(&rerun));
    assert_eq!(agains(&w, "addon-1"), 1, "resent before the quiet period");
    w.wait_for_gateway_idle();
    // A pass: left by a command that died, it becomes unknown with a full quiet period from this look.
    w.wait_quiet();
    w.tick(&(chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339());
    w.wait_quiet();
    let last = charge_key(&w, &ADDON);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last));
    assert!(text(&last).contains("already paid"), "{}", text(&last));
    assert_eq!(agains(&w, "addon-1"), 1, "charged twice");
    let imp = paid_once(&w, "addon-1");
    assert_eq!(row(&w, "addon-1").and_then(|r| r.3), Some(imp));
}

/// A lost answer (the charge made after the client gave up): unknown, the time before which not to retry said; a
/// rerun before it sends nothing; after the quiet period a rerun settles it by lookup (paid, exit 0), and for another
/// charge a `tick` does. Never sent twice.
#[test]
fn a_lost_answer_stays_unknown_until_a_lookup_after_the_quiet_period() {
    let w = world(MONTHLY);
    for m in ["lost-1", "lost-2"] {
        w.sandbox.add_fault(FaultRule {
            customer_uid: None,
            fault: Fault::ChargeLater { after: Duration::from_millis(2500) },
            times: Some(1),
        });
        let args = ["c1", "--merchant-uid", m, "--amount", "700", "--name", "Add-on"];
        let first = charge_key(&w, &args);
        assert_eq!(first.status.code(), Some(1), "{}", text(&first));
        assert!(
            text(&first).contains("outcome unknown") && text(&first).contains("do not retry before"),
            "{}",
            text(&first)
        );
        assert_eq!(row(&w, m).map(|r| r.0), Some("unknown".into()));
        let early = charge_key(&w, &args);
        assert_eq!(early.status.code(), Some(1), "{}", text(&early));
        assert!(text(&early).contains("do not retry before"), "{}", text(&early));
        assert_eq!(agains(&w, m), 1, "{m} resent before the quiet period");
        w.wait_for_gateway_idle();
        w.wait_quiet();
        if m == "lost-1" {
            let settled = charge_key(&w, &args);
            assert_eq!(settled.status.code(), Some(0), "{}", text(&settled));
            assert!(text(&settled).contains("was already paid"), "{}", text(&settled));
        } else {
            w.tick(&(chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339());
            let rerun = charge_key(&w, &args);
            assert!(rerun.status.success() && text(&rerun).contains("is already paid"), "{}", text(&rerun));
        }
        let imp = paid_once(&w, m);
        assert_eq!(row(&w, m), Some(("paid".into(), "key".into(), Some("c1".into()), Some(imp))));
        assert_eq!(agains(&w, m), 1, "{m} sent twice");
    }
}

/// A crash (abort, as kill -9) right after the intent is committed, before anything is sent: the rerun at once sends
/// nothing; a pass makes it unknown, the next one after the quiet period closes it as abandoned (no record at the
/// gateway); then a rerun looks it up and sends it: one charge.
#[test]
fn a_crash_after_the_intent_sends_nothing_until_settled_then_once() {
    let w = world(MONTHLY);
    let crashed =
        w.billd().arg("charge-key").args(ADDON).env("BILLD_FAILPOINT", "one_time_after_intent").output().unwrap();
    assert!(text(&crashed).contains("failpoint one_time_after_intent: aborting"), "{}", text(&crashed));
    assert_eq!(row(&w, "addon-1").map(|r| r.0), Some("pending".into()), "the intent was not committed first");
    assert_eq!(agains(&w, "addon-1"), 0, "sent though it crashed before sending");
    let rerun = charge_key(&w, &ADDON);
    assert!(text(&rerun).contains("do not retry before"), "{}", text(&rerun));
    assert_eq!(agains(&w, "addon-1"), 0, "sent before the charge was settled");
    let later = || (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    w.tick(&later());
    assert_eq!(row(&w, "addon-1").map(|r| r.0), Some("unknown".into()));
    w.wait_quiet();
    w.tick(&later());
    let abandoned: Option<String> = w
        .db()
        .query_row("SELECT failure FROM one_time_charges WHERE merchant_uid = 'addon-1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(abandoned.as_deref(), Some("abandoned"));
    let sent = charge_key(&w, &ADDON);
    assert!(sent.status.success() && text(&sent).contains("paid: addon-1"), "{}", text(&sent));
    assert_eq!(agains(&w, "addon-1"), 1);
    paid_once(&w, "addon-1");
}

/// Someone else's payment under the merchant_uid (another system of the merchant's charged key c2 with it): the
/// gateway refuses billd's request, and the lookup finds a payment of another billing key. Never taken as paid: held
/// as a mismatch, exit 1; a rerun sends nothing and says it is held.
#[test]
fn a_payment_of_another_key_under_the_merchant_uid_is_never_taken_as_paid() {
    let w = world(MONTHLY);
    let base = w.sandbox.base_url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::new();
        let token: serde_json::Value = http
            .post(format!("{base}/users/getToken"))
            .json(&serde_json::json!({"imp_key": "imp_sandbox_key", "imp_secret": "imp_sandbox_secret"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["response"]["access_token"].as_str().unwrap().to_string();
        w.sandbox.register_customer("c3", cards::APPROVE).unwrap();
        let paid: serde_json::Value = http
            .post(format!("{base}/subscribe/payments/again"))
            .bearer_auth(token)
            .json(
                &serde_json::json!({"customer_uid": "c3", "merchant_uid": "addon-1", "amount": 3000, "name": "other"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(paid["response"]["status"], "paid", "{paid}");
    });
    w.expect_repeat_requests("billd's charge-key of a merchant_uid another system paid first (refused by the gateway)");
    let out = charge_key(&w, &ADDON);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not paid (mismatch)") && text(&out).contains("another customer_uid"),
        "{}",
        text(&out)
    );
    let (status, failure): (String, Option<String>) = w
        .db()
        .query_row("SELECT status, failure FROM one_time_charges WHERE merchant_uid = 'addon-1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), failure.as_deref()), ("failed", Some("mismatch")));
    let rerun = charge_key(&w, &ADDON);
    assert!(!rerun.status.success() && text(&rerun).contains("is held"), "{}", text(&rerun));
    assert_eq!(agains(&w, "addon-1"), 2, "the other system's and billd's one request");
}

/// An outsider's reproduction (critical): a card that declines its first charge; each try's answer lost (the gateway
/// makes the charge 1.9 s later, inside the quiet period). The rerun after the quiet period finds try 1's decline and
/// sends try 2; try 2's answer is lost too, and the lookup right after it must not take try 1's decline (already
/// recorded) for try 2's outcome: try 2 stays unknown, nothing is sent before its quiet period, and it settles as
/// paid. One payment at the gateway, and billd knows it.
#[test]
fn a_rerun_never_takes_an_earlier_decline_for_its_own_outcome() {
    let w = world(MONTHLY);
    w.sandbox.register_customer("c3", &cards::decline_first(1)).unwrap();
    w.sandbox.add_fault(FaultRule {
        customer_uid: Some("c3".into()),
        fault: Fault::ChargeLater { after: Duration::from_millis(1900) },
        times: Some(3),
    });
    let args = ["c3", "--merchant-uid", "dd1", "--amount", "100", "--name", "Add-on"];
    let first = charge_key(&w, &args);
    assert!(text(&first).contains("outcome unknown"), "{}", text(&first));
    w.wait_for_gateway_idle();
    w.wait_quiet();
    // Finds try 1 declined, sends try 2 (answer lost: it is made, and paid, 1.9 s later).
    let second = charge_key(&w, &args);
    assert!(text(&second).contains("outcome unknown"), "try 2 settled by try 1's decline: {}", text(&second));
    let early = charge_key(&w, &args);
    assert!(text(&early).contains("do not retry before"), "resent inside try 2's quiet period: {}", text(&early));
    w.wait_for_gateway_idle();
    w.wait_quiet();
    let settled = charge_key(&w, &args);
    assert_eq!(settled.status.code(), Some(0), "{}", text(&settled));
    let imp = paid_once(&w, "dd1");
    assert_eq!(row(&w, "dd1"), Some(("paid".into(), "key".into(), Some("c3".into()), Some(imp))));
    assert_eq!(agains(&w, "dd1"), 2);
}

/// A payment found at the gateway is recorded even where billd had recorded a failure (a decline taken for the
/// outcome of a try in flight, by an older billd): the rerun that finds it says paid only once the book says so.
#[test]
fn a_payment_found_replaces_a_recorded_failure() {
    let w = world(MONTHLY);
    let args = ["c1", "--merchant-uid", "ff1", "--amount", "100", "--name", "Add-on"];
    assert!(charge_key(&w, &args).status.success());
    let imp = paid_once(&w, "ff1");
    // As the bug left it: the payment made, the row failed (declined).
    w.db()
        .execute(
            "UPDATE one_time_charges SET status = 'failed', failure = 'declined', imp_uid = 'imp_000000000001'
             WHERE merchant_uid = 'ff1'",
            [],
        )
        .unwrap();
    let rerun = charge_key(&w, &args);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(row(&w, "ff1"), Some(("paid".into(), "key".into(), Some("c1".into()), Some(imp))));
    assert_eq!(agains(&w, "ff1"), 1);
}

/// Money review 2, A1: with `--as-of` on charge-key, a rerun at a later billing instant (59 s ahead: no --simulate
/// needed) was let through the quiet period of the first request, which the gateway was still making: two paid
/// charges. The quiet period is real time whatever `--as-of` says: the rerun is refused, nothing is sent again.
#[test]
fn a_rerun_at_a_later_as_of_is_still_held_by_the_real_quiet_period() {
    let w = world("");
    let later = Fault::ChargeLater { after: Duration::from_millis(1500) };
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c1".into()), fault: later, times: Some(1) });
    let first = charge_key(&w, &ADDON);
    assert!(text(&first).contains("outcome unknown"), "{}", text(&first));
    let ahead = (chrono::Utc::now() + chrono::Duration::seconds(59)).to_rfc3339();
    let rerun = charge_key(&w, &[&ADDON[..], &["--as-of", &ahead]].concat());
    assert!(!rerun.status.success(), "{}", text(&rerun));
    assert!(text(&rerun).contains("do not retry before"), "{}", text(&rerun));
    wait_for("the first request charged", || w.ledger().iter().any(|e| e.merchant_uid == "addon-1"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agains(&w, "addon-1"), 1, "sent again inside the quiet period");
    paid_once(&w, "addon-1");
}
