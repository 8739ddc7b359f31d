//! Issue 26, i'mport's notifications: `billd run` with `[notices] listen` and the sandbox posting to it
//! (`notice_url`), end to end with the real binary. A late approval is settled by its notification before its next
//! lookup is due; a console cancel becomes a refund once, however often it is notified; a forged notification (an
//! imp_uid the gateway does not know, or a payment under another merchant_uid), one for a merchant_uid billd does
//! not know, and a decline while its request may still be in progress change nothing.

mod common;

use billd_sandbox::{Fault, FaultRule, SandboxConfig};
use common::{MONTHLY, Setup, World, cards, sub, wait_for};
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A port nobody listens on now (for billd's receiver).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `billd run` on a world, its stderr collected; stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(w: &World) -> Daemon {
        let mut child = w.billd().arg("run").stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (mut stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let d = Daemon { child, log };
        d.wait_line("the receiver listening", |l| l.contains("notices.listening"));
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log lines that satisfy `pick`.
    fn lines(&self, pick: impl Fn(&str) -> bool) -> Vec<String> {
        self.log().lines().filter(|l| pick(l)).map(str::to_owned).collect()
    }

    /// Waits for a log line that satisfies `pick`; returns it.
    fn wait_line(&self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        self.wait_lines(what, 1, pick).pop().unwrap()
    }

    /// Waits for `n` log lines that satisfy `pick`.
    fn wait_lines(&self, what: &str, n: usize, pick: impl Fn(&str) -> bool) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let found = self.lines(&pick);
            if found.len() >= n {
                return found;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no log line for {what} within 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A notification posted to billd's receiver as i'mport posts it (JSON); the HTTP status of the answer.
fn post(port: u16, body: &str) -> u16 {
    post_raw(port, "application/json", body.as_bytes())
}

fn post_raw(port: u16, content_type: &str, body: &[u8]) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /iamport/notice HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = s.write_all(body);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no answer: {answer:?}"))
}

/// A log line saying what came of a notification about `merchant_uid` (settled or ignored).
fn looked_at(merchant_uid: &str) -> impl Fn(&str) -> bool + '_ {
    move |l| (l.contains("notice.settled") || l.contains("notice.ignored")) && l.contains(merchant_uid)
}

fn notice(imp_uid: &str, merchant_uid: &str, status: &str) -> String {
    format!(r#"{{"imp_uid":"{imp_uid}","merchant_uid":"{merchant_uid}","status":"{status}"}}"#)
}

fn due_yesterday() -> String {
    (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string()
}

/// A world whose subscriptions (`ids`, customers `c-ID`, all due yesterday) bill on the sandbox, with billd's
/// receiver on `port`; the sandbox posts its notifications there when `sandbox_posts`.
fn world(port: u16, ids: &[&str], timeout: &'static str, sandbox_posts: bool) -> World {
    let notice_url = sandbox_posts.then(|| format!("http://127.0.0.1:{port}/iamport/notice"));
    let mut body = format!("[notices]\nlisten = \"127.0.0.1:{port}\"\n{MONTHLY}");
    for id in ids {
        body += &sub(id, &format!("c-{id}"), "monthly", &due_yesterday());
    }
    let sandbox = SandboxConfig { notice_url, ..Default::default() };
    World::new(Setup { sandbox, timeout, body: &body, ..Default::default() })
}

/// (status, imp_uid, tries, resolved_at) of the one attempt of `merchant_uid` (status `none` before there is one).
fn attempt(w: &World, merchant_uid: &str) -> (String, Option<String>, i64, Option<i64>) {
    let row = w.db().query_row(
        "SELECT status, imp_uid, tries, resolved_at FROM attempts WHERE merchant_uid = ?1",
        [merchant_uid],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    );
    match row {
        Err(rusqlite::Error::QueryReturnedNoRows) => ("none".into(), None, 0, None),
        other => other.unwrap(),
    }
}

fn events(w: &World) -> i64 {
    w.db().query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap()
}

/// The payment the sandbox holds for `merchant_uid` (its imp_uid), waiting for it.
fn imp_uid_at_gateway(w: &World, merchant_uid: &str) -> String {
    wait_for(&format!("a payment of {merchant_uid} at the gateway"), || {
        w.ledger().iter().any(|e| e.merchant_uid == merchant_uid)
    });
    w.ledger().into_iter().find(|e| e.merchant_uid == merchant_uid).unwrap().imp_uid
}

/// The answer to a charge is lost (the connection dropped after the sandbox charged the card): billd records it
/// unknown, with its next lookup two minutes away (twice a 60 s timeout). The sandbox's notification of the approval
/// is looked up and settles it paid at once: recorded before that lookup was due, by the notification (its log line),
/// sent once, never resent.
#[test]
fn a_lost_answer_is_settled_paid_by_its_notification_before_its_next_lookup() {
    let port = free_port();
    let w = world(port, &["s1"], "60s", true);
    w.sandbox.register_customer("c-s1", cards::APPROVE).unwrap();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c-s1".into()), fault: Fault::DropAfterCharge, times: Some(1) });
    let d = Daemon::start(&w);
    let m = "billd-s1-0";
    wait_for("s1 recorded paid", || attempt(&w, m).0 == "paid");
    let (_, imp_uid, tries, resolved_at) = attempt(&w, m);
    let imp_uid = imp_uid.unwrap();
    // The answer was lost: recorded unknown first, with a check time.
    let check_at: String = w
        .db()
        .query_row(
            "SELECT json_extract(detail, '$.check_at') FROM events WHERE kind = 'charge.unknown'
              AND json_extract(detail, '$.merchant_uid') = ?1",
            [m],
            |r| r.get(0),
        )
        .expect("the lost answer was recorded unknown");
    let check_at = chrono::DateTime::parse_from_rfc3339(&check_at).unwrap().timestamp();
    let resolved_at = resolved_at.expect("a resolved instant");
    assert!(resolved_at < check_at, "settled at {resolved_at}, not before its next lookup at {check_at}");
    let settled = d.wait_line("the notification settling it", |l| l.contains("notice.settled") && l.contains(m));
    assert!(settled.contains(&imp_uid), "{settled}");
    assert!(d.lines(|l| l.contains("charge.resend")).is_empty(), "resent:\n{}", d.log());
    let sent = w.sandbox.notices();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].status.as_str(), sent[0].http_status), ("paid", Some(200)), "{sent:?}");
    assert_eq!((w.sent(m), tries), (1, 1), "sent once, never resent");
    drop(d);
    w.assert_consistent();
}

/// A cancel made in i'mport's console is notified (`cancelled`): billd records it as a refund made outside billd,
/// as `billd refunds --sync` would. The same notification again records nothing, and `refunds --sync` afterwards
/// finds nothing new.
#[test]
fn a_console_cancel_becomes_one_refund_however_often_it_is_notified() {
    let port = free_port();
    let w = world(port, &["s1"], "5s", true);
    w.sandbox.register_customer("c-s1", cards::APPROVE).unwrap();
    let d = Daemon::start(&w);
    let m = "billd-s1-0";
    wait_for("s1 paid", || attempt(&w, m).0 == "paid");
    let imp_uid = attempt(&w, m).1.unwrap();
    let refunds = |w: &World| -> Vec<(i64, String, String)> {
        let db = w.db();
        let mut st = db.prepare("SELECT amount, status, source FROM refunds ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    };
    assert!(refunds(&w).is_empty());
    w.sandbox.refund_in_console(&imp_uid, Some(3000), "refunded in the console").unwrap();
    wait_for("the console refund recorded", || !refunds(&w).is_empty());
    d.wait_line("its notification settled", |l| l.contains("notice.settled") && l.contains(m));
    assert_eq!(refunds(&w), [(3000, "refunded".to_string(), "external".to_string())]);
    let cancelled = w.sandbox.notices().into_iter().find(|n| n.status == "cancelled").expect("a cancel notified");
    assert_eq!(cancelled.http_status, Some(200));
    // The same notification again (i'mport may deliver one twice).
    let again = format!(
        r#"{{"imp_uid":"{imp_uid}","merchant_uid":"{m}","status":"cancelled","cancellation_id":"{}"}}"#,
        cancelled.cancellation_id.unwrap()
    );
    assert_eq!(post(port, &again), 200);
    d.wait_line("the duplicate looked at", |l| {
        l.contains("notice.ignored") && l.contains(m) && l.contains("no refund billd has not recorded")
    });
    assert_eq!(refunds(&w), [(3000, "refunded".to_string(), "external".to_string())], "recorded twice");
    drop(d);
    assert!(w.billd().args(["refunds", "--sync"]).output().unwrap().status.success());
    assert_eq!(refunds(&w).len(), 1, "refunds --sync found it again: {:?}", refunds(&w));
}

/// Notifications are not signed: one naming an imp_uid the gateway does not know, or a real payment under another
/// merchant_uid than the one it names, settles nothing (a charge whose answer was lost stays unknown); the genuine
/// one, afterwards, settles it.
#[test]
fn a_forged_notification_changes_nothing() {
    let port = free_port();
    // The sandbox posts nothing itself: every notification here is the test's.
    let w = world(port, &["s1", "s2"], "60s", false);
    w.sandbox.register_customer("c-s1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c-s2", cards::APPROVE).unwrap();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c-s1".into()), fault: Fault::DropAfterCharge, times: Some(1) });
    let d = Daemon::start(&w);
    let (m1, m2) = ("billd-s1-0", "billd-s2-0");
    wait_for("s1 unknown and s2 paid", || attempt(&w, m1).0 == "unknown" && attempt(&w, m2).0 == "paid");
    let (x, y) = (imp_uid_at_gateway(&w, m1), attempt(&w, m2).1.unwrap());
    let before = events(&w);
    // An imp_uid the gateway does not know; s2's real payment named as s1's.
    assert_eq!(post(port, &notice("imp_999999999999", m1, "paid")), 200);
    assert_eq!(post(port, &notice(&y, m1, "paid")), 200);
    let seen = d.wait_lines("both forged notifications looked at", 2, looked_at(m1));
    assert!(seen.iter().all(|l| l.contains("notice.ignored")), "a forged notification settled something: {seen:?}");
    let ignored = seen;
    assert!(ignored.iter().any(|l| l.contains("no such payment")), "{ignored:?}");
    assert!(ignored.iter().any(|l| l.contains("another merchant_uid")), "{ignored:?}");
    assert_eq!(attempt(&w, m1).0, "unknown", "a forged notification settled s1");
    assert_eq!(attempt(&w, m2).1.as_deref(), Some(y.as_str()));
    assert_eq!(events(&w), before, "a forged notification wrote to the book");
    // The genuine notification settles it, with the gateway's payment.
    assert_eq!(post(port, &notice(&x, m1, "paid")), 200);
    wait_for("s1 settled by the genuine notification", || attempt(&w, m1).0 == "paid");
    assert_eq!(attempt(&w, m1).1.as_deref(), Some(x.as_str()));
    drop(d);
    w.assert_consistent();
}

/// A notification for a merchant_uid no charge of billd has (another system's order on the same i'mport account)
/// is logged and ignored, even when it names a real payment; a body that is not a notification is refused (never
/// quoted), and the receiver goes on.
#[test]
fn a_notification_for_a_merchant_uid_billd_does_not_know_is_ignored() {
    let port = free_port();
    let w = world(port, &["s1"], "5s", false);
    w.sandbox.register_customer("c-s1", cards::APPROVE).unwrap();
    let d = Daemon::start(&w);
    wait_for("s1 paid", || attempt(&w, "billd-s1-0").0 == "paid");
    let real = attempt(&w, "billd-s1-0").1.unwrap();
    let before = events(&w);
    assert_eq!(post(port, &notice(&real, "shop-order-77", "paid")), 200);
    let line = d.wait_line("the notification looked at", looked_at("shop-order-77"));
    assert!(line.contains("notice.ignored") && line.contains("no charge of billd has this merchant_uid"), "{line}");
    assert_eq!(events(&w), before, "the book changed");
    // Not notifications: refused, unquoted, and the receiver still answers.
    assert_eq!(post(port, r#"{"imp_uid":"4242424242424242","merchant_uid":"m"}"#), 400);
    assert_eq!(post_raw(port, "application/x-www-form-urlencoded", b"imp_uid=imp_1&merchant_uid=shop-2"), 200);
    d.wait_line("the form read", looked_at("shop-2"));
    assert!(!d.log().contains("4242424242424242"), "a card number reached the log");
    assert_eq!(events(&w), before);
}

/// A declined payment is not taken from a notification while a request of its charge may still be in progress
/// (its real quiet period, twice a 60 s timeout, is not over): nothing is recorded, no retry is scheduled, the
/// subscription stays active.
#[test]
fn a_decline_is_not_taken_from_a_notification_before_the_quiet_period() {
    let port = free_port();
    let w = world(port, &["s1"], "60s", false);
    w.sandbox.register_customer("c-s1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c-s1".into()), fault: Fault::DropAfterCharge, times: Some(1) });
    let d = Daemon::start(&w);
    let m = "billd-s1-0";
    wait_for("s1 unknown", || attempt(&w, m).0 == "unknown");
    let failed = imp_uid_at_gateway(&w, m);
    let before = events(&w);
    assert_eq!(post(port, &notice(&failed, m, "failed")), 200);
    let line = d.wait_line("the notification looked at", looked_at(m));
    assert!(line.contains("notice.ignored") && line.contains("quiet period"), "{line}");
    assert_eq!(attempt(&w, m).0, "unknown", "a decline taken from a notification");
    assert_eq!((events(&w), w.status_of("s1")), (before, "active".to_string()));
}

/// Once the quiet period is over (a 1 s timeout: 2 s), a notification of a declined payment is settled as a pass's
/// lookup settles it: the pass's lookups by merchant_uid are made and the decline is recorded, with the dunning
/// retry, before the charge's own next lookup (a minute away).
#[test]
fn after_the_quiet_period_a_decline_is_settled_by_the_passs_own_lookups() {
    let port = free_port();
    let w = world(port, &["s1"], "1s", false);
    w.sandbox.register_customer("c-s1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.add_fault(FaultRule { customer_uid: Some("c-s1".into()), fault: Fault::DropAfterCharge, times: Some(1) });
    let d = Daemon::start(&w);
    let m = "billd-s1-0";
    wait_for("s1 unknown", || attempt(&w, m).0 == "unknown");
    let failed = imp_uid_at_gateway(&w, m);
    w.wait_quiet();
    assert_eq!(post(port, &notice(&failed, m, "failed")), 200);
    let line = d.wait_line("the notification looked at", looked_at(m));
    assert!(line.contains("notice.settled"), "{line}");
    let (status, imp_uid, _, _) = attempt(&w, m);
    assert_eq!((status.as_str(), imp_uid.as_deref()), ("failed", Some(failed.as_str())));
    assert_eq!(w.status_of("s1"), "past_due");
    assert_eq!(w.sent(m), 1, "never resent");
}

/// Notices review, F1 and F2: a charge whose answer was lost, then refunded in i'mport's console before billd
/// looked. Its cancel notification (the payment now `cancelled`, or `paid` with part of it refunded) used to be
/// ignored ("neither paid nor failed"), and a full refund left the pass's lookups finding nothing. Now the
/// notification settles the charge paid with its payment and records the console's refund with it: a full refund of
/// s1, a partial one of s2.
#[test]
fn a_cancel_notification_of_a_lost_answer_settles_it_paid_and_records_the_refund() {
    let port = free_port();
    let w = world(port, &["s1", "s2"], "60s", false);
    for c in ["c-s1", "c-s2"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
        w.sandbox.add_fault(FaultRule { customer_uid: Some(c.into()), fault: Fault::DropAfterCharge, times: Some(1) });
    }
    let d = Daemon::start(&w);
    let (m1, m2) = ("billd-s1-0", "billd-s2-0");
    wait_for("both unknown", || attempt(&w, m1).0 == "unknown" && attempt(&w, m2).0 == "unknown");
    for (m, amount) in [(m1, None), (m2, Some(2000))] {
        let imp_uid = imp_uid_at_gateway(&w, m);
        w.sandbox.refund_in_console(&imp_uid, amount, "refunded by phone").unwrap();
        assert_eq!(post(port, &notice(&imp_uid, m, "cancelled")), 200);
        let line = d.wait_line("the notification looked at", looked_at(m));
        assert!(line.contains("notice.settled"), "{line}");
        let (status, imp, _, _) = attempt(&w, m);
        assert_eq!((status.as_str(), imp.as_deref()), ("paid", Some(imp_uid.as_str())), "{m}");
    }
    let refunds: Vec<(String, i64, String)> = {
        let db = w.db();
        let mut st = db.prepare("SELECT merchant_uid, amount, source FROM refunds ORDER BY merchant_uid").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(refunds, [(m1.into(), 9900, "external".into()), (m2.into(), 2000, "external".into())]);
    assert_eq!((w.sent(m1), w.sent(m2)), (1, 1), "never resent");
    drop(d);
    assert_eq!((w.status_of("s1"), w.status_of("s2")), ("active".into(), "active".into()));
}
