//! Webhooks end to end (issue 26): the real binary, the sandbox, and a real HTTP receiver on 127.0.0.1 that
//! verifies every delivery's Standard Webhooks signature. Billing time comes from `--as-of`.

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use common::{KillOnDrop, MONTHLY, Setup, World, cards, sub};
use receiver::{Got, Receiver, SECRET};
use serde_json::Value;

fn world(receiver: &Receiver, body: &str) -> World {
    let body = format!("{MONTHLY}{body}\n[webhooks]\nurl = \"{}\"\ntimeout = \"2s\"\n", receiver.url());
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    w.sandbox.register_customer("cust-b", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w
}

fn billd(w: &World, args: &[&str]) -> std::process::Output {
    w.billd().env("BILLD_WEBHOOKS__SECRET", SECRET).args(args).output().unwrap()
}

fn tick(w: &World, as_of: &str) {
    let out = billd(w, &["tick", "--as-of", as_of, "--simulate"]);
    assert!(out.status.success(), "tick {as_of}: {}", String::from_utf8_lossy(&out.stderr));
}

fn list(w: &World, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["webhooks", "--json"];
    a.extend(args);
    let out = billd(w, &a);
    assert!(out.status.success(), "webhooks: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// A tick's events reach the app signed, in order per subscription, each with the charge or subscription as the
/// listings show them.
#[test]
fn a_ticks_events_are_delivered_signed_and_in_order() {
    let r = Receiver::start();
    let subs =
        format!("{}{}", sub("a", "cust-a", "monthly", "2030-01-01"), sub("b", "cust-b", "monthly", "2030-01-01"));
    let w = world(&r, &subs);
    tick(&w, "2030-01-01T10:00:00+09:00");
    let got = r.got();
    assert!(got.iter().all(|g| g.verified), "a delivery whose signature does not verify: {got:#?}");
    let of = |id: &str| -> Vec<(String, u64)> {
        r.kinds().into_iter().filter(|(_, s, _)| s == id).map(|(k, _, n)| (k, n)).collect()
    };
    assert_eq!(of("a"), [("subscription.created".into(), 1), ("charge.paid".into(), 2)]);
    assert_eq!(
        of("b"),
        [("subscription.created".into(), 1), ("charge.failed".into(), 2), ("subscription.past_due".into(), 3)]
    );
    // `data` is the charge as `billd charges --json` shows it.
    let charges: Value = serde_json::from_slice(&billd(&w, &["charges", "--json"]).stdout).unwrap();
    let paid = got.iter().find(|g| g.body["type"] == "charge.paid").unwrap();
    let listed = charges.as_array().unwrap().iter().find(|c| c["subscription_id"] == "a").unwrap();
    for (k, v) in listed.as_object().unwrap() {
        assert_eq!(&paid.body["data"][k], v, "data.{k} differs from `billd charges --json`");
    }
    let failed = got.iter().find(|g| g.body["type"] == "charge.failed").unwrap();
    assert_eq!(failed.body["data"]["next_retry"], "2030-01-02T10:00:00+09:00");
    assert_eq!(failed.body["id"].as_str(), Some(failed.id.as_str()), "webhook-id is the event's id");
    // Nothing left to deliver; the listing says so.
    let listed = list(&w, &[]);
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|e| e["state"] == "delivered" && e["attempts"] == 1), "{listed:#?}");
    // No card data, no secret.
    let all = serde_json::to_string(&got.iter().map(|g| &g.body).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(SECRET) && !all.contains(cards::APPROVE), "a secret or a card number in an event");
}

/// A failed delivery is tried again after its backoff with the same id and body, and holds back its
/// subscription's later events until then; other subscriptions' events go on.
#[test]
fn a_failed_delivery_is_retried_with_its_id_and_holds_its_subscriptions_later_events() {
    let r = Receiver::start();
    let w = world(&r, &sub("a", "cust-a", "monthly", "2030-01-01"));
    // The first delivery (a's subscription.created) fails.
    r.answer_next(&[500]);
    tick(&w, "2030-01-01T10:00:00+09:00");
    assert_eq!(r.kinds(), [("subscription.created".into(), "a".into(), 1)], "charge.paid went before its elder");
    let e = list(&w, &[]);
    assert_eq!((e[0]["state"].as_str(), e[0]["attempts"].as_u64()), (Some("pending"), Some(1)));
    assert_eq!(e[0]["last_error"], "HTTP 500");
    assert_eq!(e[0]["next_attempt_at"], "2030-01-01T10:00:05+09:00");
    // The charge's event waits for it, and the listing says so (it used to say "sent from" an instant already past).
    let head = e[0]["id"].as_str().unwrap();
    assert_eq!((e[1]["type"].as_str(), e[1]["waits_for"].as_str()), (Some("charge.paid"), Some(head)), "{e:?}");
    assert!(e[0]["waits_for"].is_null());
    let table = String::from_utf8_lossy(&billd(&w, &["webhooks"]).stdout).into_owned();
    let line = table.lines().find(|l| l.contains("charge.paid")).unwrap_or_default();
    assert!(line.contains(&format!("waits for {head}")), "{table}");
    // Before its retry: nothing is sent.
    tick(&w, "2030-01-01T10:00:04+09:00");
    assert_eq!(r.got().len(), 1);
    tick(&w, "2030-01-01T10:00:05+09:00");
    let got = r.got();
    assert_eq!(got.len(), 3, "{:?}", r.kinds());
    assert_eq!(got[0].id, got[1].id, "a retry has another webhook-id");
    assert_eq!(got[0].body, got[1].body, "a retry sends another body");
    assert_eq!(got[2].body["type"], "charge.paid");
}

/// Subscription `a`'s events, which `r` answers 503 until they are given up (on 2030-01-05).
fn given_up(r: &Receiver) -> World {
    let w = world(r, &sub("a", "cust-a", "monthly", "2030-01-01"));
    r.answer_next(&[503; 20]);
    tick(&w, "2030-01-01T10:00:00+09:00");
    // Past its retries' schedule and max_age (3 days): the next failure gives it up.
    tick(&w, "2030-01-05T10:00:00+09:00");
    w
}

/// An event not delivered within max_age is given up (kept, listed by --failed) and a replay sends it again.
#[test]
fn an_event_given_up_is_listed_and_replayed() {
    let r = Receiver::start();
    let w = given_up(&r);
    // Given up, the first event no longer holds its subscription's next one, which is tried (once, however old)
    // and given up too.
    let failed = list(&w, &["--failed"]);
    let kinds: Vec<_> =
        failed.iter().map(|e| (e["type"].as_str().unwrap(), e["last_error"].as_str().unwrap())).collect();
    assert_eq!(kinds, [("subscription.created", "HTTP 503"), ("charge.paid", "HTTP 503")], "{failed:#?}");
    assert_eq!(failed[1]["attempts"], 1);
    let id = failed[0]["id"].as_str().unwrap().to_owned();
    // The table says what to do.
    let table = String::from_utf8_lossy(&billd(&w, &["webhooks", "--failed"]).stdout).into_owned();
    assert!(table.contains(&format!("`billd webhooks replay {id}` sends it again")), "{table}");
    assert!(table.contains("(last: HTTP 503)"), "{table}");
    r.clear_script();
    let out = billd(&w, &["webhooks", "replay", &id, "--as-of", "2030-01-05T10:00:00+09:00", "--simulate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Replayed on the billing clock: its max_age counts from the replay, so a failure is tried again, not given up.
    r.answer_next(&[500]);
    tick(&w, "2030-01-05T10:00:00+09:00");
    let e = list(&w, &[]).into_iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert_eq!(
        (e["state"].as_str(), e["next_attempt_at"].as_str()),
        (Some("pending"), Some("2030-01-05T10:00:05+09:00"))
    );
    tick(&w, "2030-01-05T10:00:05+09:00");
    let last = r.got().pop().unwrap();
    assert_eq!((last.id.as_str(), last.verified), (id.as_str(), true));
    assert_eq!(list(&w, &["--failed"]).len(), 1);
    let out = billd(
        &w,
        &["webhooks", "replay", "--since", "2030-01-01", "--as-of", "2030-01-05T10:00:06+09:00", "--simulate"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tick(&w, "2030-01-05T10:00:06+09:00");
    assert_eq!(r.got().pop().unwrap().body["type"], "charge.paid");
    assert!(list(&w, &["--failed"]).is_empty());
}

/// With webhooks off (`[webhooks]` removed after events were given up), the listing does not suggest a replay,
/// which would be refused: it says webhooks are off.
#[test]
fn a_given_up_event_listed_with_webhooks_off_suggests_no_replay() {
    let r = Receiver::start();
    let w = given_up(&r);
    let id = list(&w, &["--failed"])[0]["id"].as_str().unwrap().to_owned();
    let body = format!("{MONTHLY}{}", sub("a", "cust-a", "monthly", "2030-01-01"));
    w.write_config(&Setup { body: &body, ..Default::default() });
    // (No secret either: one without webhooks.url is refused.)
    let off = |args: &[&str]| w.billd().args(args).output().unwrap();
    let listed = off(&["webhooks", "--failed"]);
    let table = common::text(&listed);
    let line = table.lines().find(|l| l.contains(&id)).unwrap_or_default();
    assert!(line.contains("given up") && line.contains("webhooks are off"), "{table}");
    assert!(!table.contains("webhooks replay"), "a replay suggested, which is refused: {table}");
    let replay = off(&["webhooks", "replay", &id]);
    assert!(common::text(&replay).contains("webhooks are off"), "{}", common::text(&replay));
    assert_eq!(replay.status.code(), Some(1));
}

/// A delivery whose process is killed after the app got it and before it was recorded is delivered again, with
/// the same webhook-id (at least once; the app dedupes by id). Nothing is lost.
#[test]
fn a_kill_after_sending_delivers_again_with_the_same_id() {
    let r = Receiver::start();
    let w = world(&r, &sub("a", "cust-a", "monthly", "2030-01-01"));
    let out = billd(&w, &["tick", "--as-of", "2030-01-01T10:00:00+09:00", "--simulate"]);
    assert!(out.status.success());
    let first = r.got();
    // A new event, then a tick killed right after sending it.
    let out = billd(&w, &["pause", "a", "--as-of", "2030-01-01T10:00:30+09:00", "--simulate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = w
        .billd()
        .env("BILLD_WEBHOOKS__SECRET", SECRET)
        .env("BILLD_FAILPOINT", "webhook_after_send")
        .args(["tick", "--as-of", "2030-01-01T10:01:00+09:00", "--simulate"])
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the failpoint did not fire");
    tick(&w, "2030-01-01T10:02:00+09:00");
    let got = r.got();
    let after: Vec<&Got> = got[first.len()..].iter().collect();
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_eq!(after[0].id, after[1].id);
    assert_eq!(after[1].body["type"], "subscription.suspended");
    assert!(list(&w, &[]).iter().all(|e| e["state"] == "delivered"));
}

/// `billd run` delivers events by itself, subscriptions in parallel; an app that never answers holds back only
/// its own subscription's events, never a charge.
#[test]
fn the_daemon_delivers_and_a_hanging_app_holds_back_no_charge() {
    let r = Receiver::start();
    let subs =
        format!("{}{}", sub("hang", "cust-a", "monthly", "2030-01-01"), sub("b", "cust-a", "monthly", "2030-01-01"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let body = format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n{MONTHLY}{subs}\n[webhooks]\nurl = \"{}\"\ntimeout = \"60s\"\n",
        r.url()
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    // No delivery of subscription "hang"'s events ever gets an answer.
    let (pid, _daemon) = daemon(&w, true, &["--as-of", "2030-01-01T10:00:00+09:00", "--simulate"]);
    let outbox = |sub: &str| -> Vec<(String, String, i64)> {
        let db = w.db();
        // (Empty until the daemon has made the book.)
        let Ok(mut st) =
            db.prepare("SELECT type, state, attempts FROM outbox WHERE subscription_id = ?1 ORDER BY sequence")
        else {
            return Vec::new();
        };
        st.query_map([sub], |r| Ok((r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap())))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // Both periods are paid, and the other subscription's events are all delivered, while the hanging delivery
    // is still out (its event not yet attempted as far as the book knows).
    common::wait_for("both charges paid and b's events delivered", || {
        let b = outbox("b");
        b.len() == 2 && b.iter().all(|(_, state, _)| state == "delivered")
    });
    let a = outbox("hang");
    let hanging = a.iter().filter(|(_, state, attempts)| state == "pending" && *attempts == 0).count();
    assert_eq!(hanging, 2, "the hanging subscription's events: {a:?}");
    assert_eq!(a[1].0, "charge.paid", "its charge was held back: {a:?}");
    // Its later events wait for its first (sent at least once: never one of sequence 2 before 1 is answered).
    let sent: Vec<u64> = r.kinds().iter().filter(|(_, s, _)| s == "hang").map(|(_, _, n)| *n).collect();
    assert!(!sent.is_empty() && sent.iter().all(|n| *n == 1), "its second event went before the first: {sent:?}");
    // The backlog gauge counts them while the delivery hangs (inputs review: it read 0 until the round ended).
    common::wait_for("the backlog gauge at 2", || {
        common::http_get(port, "/metrics").is_some_and(|(_, m)| m.lines().any(|l| l == "billd_webhook_backlog 2"))
    });
    // Deliveries run on a thread of their own, 10 nicer than the charging (the drain benchmark: delivering at full
    // speed beside a pass took 40% of its charges/s on two cores).
    let nice = |task: &str| -> Option<(String, i64)> {
        let dir = format!("/proc/{pid}/task/{task}");
        let comm = std::fs::read_to_string(format!("{dir}/comm")).ok()?.trim().to_owned();
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        Some((comm, stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()?))
    };
    let tasks: Vec<(String, i64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| nice(t.ok()?.file_name().to_str()?))
        .collect();
    let main = nice(&pid.to_string()).expect("the daemon's main thread").1;
    let delivery = tasks.iter().find(|(comm, _)| comm == "billd-webhooks").map(|(_, n)| *n);
    assert_eq!(
        delivery,
        Some((main + 10).min(19)),
        "the delivery thread's nice value (the main's is {main}): {tasks:?}"
    );
}

/// A reload whose webhook secret cannot be read is refused, and the running config (and delivery) stays in force.
#[test]
fn a_reload_with_an_unreadable_secret_is_refused() {
    let r = Receiver::start();
    let body = format!(
        "{MONTHLY}{}\n[webhooks]\nurl = \"{}\"\nsecret_file = \"whsec\"\n",
        sub("a", "cust-a", "monthly", "2030-01-01"),
        r.url()
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    let secret = w.dir.path().join("whsec");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let log = w.dir.path().join("run.log");
    let daemon = w
        .billd()
        .args(["run", "--as-of", "2029-12-31T10:00:00+09:00", "--simulate"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = daemon.id().to_string();
    let _daemon = KillOnDrop(daemon);
    common::wait_for("the created event delivered", || r.kinds().iter().any(|(k, _, _)| k == "subscription.created"));
    std::fs::remove_file(&secret).unwrap();
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    common::wait_for("the reload refused", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("config.reload: new config refused")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("webhooks.secret_file"), "the refusal names the key: {text}");
    assert!(!text.contains("config.reload: applied"), "{text}");
}

/// A tick delivering to an app that never answers has let go of the book: the next tick runs meanwhile.
#[test]
fn a_tick_delivering_to_a_hanging_app_holds_back_no_other_tick() {
    let r = Receiver::start();
    let body = format!(
        "{MONTHLY}{}\n[webhooks]\nurl = \"{}\"\ntimeout = \"5s\"\n",
        sub("hang", "cust-a", "monthly", "2030-01-01"),
        r.url()
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    let first = w
        .billd()
        .env("BILLD_WEBHOOKS__SECRET", SECRET)
        .args(["tick", "--as-of", "2030-01-01T10:00:00+09:00", "--simulate"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _first = KillOnDrop(first);
    common::wait_for("the first tick delivering", || !r.kinds().is_empty());
    let second = billd(&w, &["tick", "--as-of", "2030-01-02T10:00:00+09:00", "--simulate"]);
    assert!(second.status.success(), "the next tick was held up: {}", String::from_utf8_lossy(&second.stderr));
}

/// README review, 8: `charge-key`, `charge-once` and `refund` had no `--as-of`: in a timeline simulated with
/// `tick --as-of`, their events were stamped with the real clock (years before), so their deliveries counted
/// `max_age` from then and a first failure gave them up at once. They take `--as-of` (and `--simulate`) as the other
/// commands that write "now" do: their events carry the simulated instant, and a failed delivery is retried.
#[test]
fn commands_that_charge_or_refund_follow_a_simulated_timeline() {
    let r = Receiver::start();
    let w = world(&r, &sub("a", "cust-a", "monthly", "2030-01-01"));
    tick(&w, "2030-01-01T10:00:00+09:00");
    let at = "2030-01-02T10:00:00+09:00";
    let args = ["charge-key", "cust-a", "--merchant-uid", "addon-1", "--amount", "500", "--name", "add-on"];
    let out = billd(&w, &[&args[..], &["--as-of", at, "--simulate"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        billd(&w, &["refund", "billd-a-0", "--amount", "100", "--reason", "goodwill", "--as-of", at, "--simulate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = list(&w, &["--since", "2030-01-02"]);
    let stamped: Vec<(&str, &str)> =
        events.iter().map(|e| (e["type"].as_str().unwrap(), e["created_at"].as_str().unwrap())).collect();
    assert_eq!(stamped.len(), 2, "{events:#?}");
    assert!(stamped.iter().all(|(_, t)| t.starts_with("2030-01-02T10:00:0")), "{stamped:?}");
    // A failed first delivery is retried (max_age counts from the simulated instant), not given up.
    r.answer_next(&[500, 500]);
    tick(&w, "2030-01-02T10:00:05+09:00");
    assert!(list(&w, &["--failed"]).is_empty(), "given up at the first failure");
    tick(&w, "2030-01-02T10:10:00+09:00");
    assert!(list(&w, &[]).iter().all(|e| e["state"] == "delivered"), "{:#?}", list(&w, &[]));
    // A future instant needs --simulate, as for tick.
    let out = billd(&w, &["refund", "billd-a-0", "--amount", "100", "--reason", "again", "--as-of", at]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An outside review: with webhooks off the delivery service no longer looks every few seconds, and its backlog
/// gauges froze at their first reading (50 while 340 events were kept unsent). They are read after every pass.
#[test]
fn with_webhooks_off_the_backlog_gauge_follows_the_passes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let subs =
        format!("{}{}", sub("a", "cust-a", "monthly", "2030-01-01"), sub("b", "cust-a", "monthly", "2030-01-01"));
    let body = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{MONTHLY}{subs}");
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    let (_, _daemon) = daemon(&w, false, &["--as-of", "2029-12-31T10:00:00+09:00", "--simulate", "--speed", "86400"]);
    // Two subscription.created, then (a simulated day later) two charge.paid: four kept unsent.
    common::wait_for("both charges paid", || {
        w.db()
            .query_row("SELECT count(*) FROM attempts WHERE status = 'paid'", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|n| n == 2)
    });
    common::wait_for("the backlog gauge at 4", || {
        common::http_get(port, "/metrics").is_some_and(|(_, m)| m.lines().any(|l| l == "billd_webhook_backlog 4"))
    });
}

/// An outside review: a SIGHUP that moved `webhooks.url` (or turned webhooks off, or rotated the secret) was taken
/// only once the whole backlog had gone to the old url, signed with the old secret (572 requests over 30 s). A
/// round now stops sending when the settings change; the new url gets the rest.
#[test]
fn a_reload_moving_the_url_is_taken_at_once_not_after_the_backlog() {
    let (old, new) = (Receiver::start(), Receiver::start());
    old.latency(500, 500);
    let subs: String = (0..60).map(|i| sub(&format!("s{i:02}"), "cust-a", "monthly", "2030-01-01")).collect();
    let body = format!("{MONTHLY}{subs}\n[webhooks]\nurl = \"{}\"\nconcurrency = 1\n", old.url());
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    let (pid, _daemon) = daemon(&w, true, &["--as-of", "2030-01-01T10:00:00+09:00", "--simulate"]);
    // 120 events at half a second each, one at a time: a minute of backlog for the old url.
    common::wait_for("the old url getting events", || !old.got().is_empty());
    let config = std::fs::read_to_string(&w.config).unwrap().replace(&old.url(), &new.url());
    std::fs::write(&w.config, config).unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    common::wait_for("the new url getting events", || !new.got().is_empty());
    assert!(old.got().len() < 60, "the old url got {} events", old.got().len());
    assert!(new.got().iter().all(|g| g.verified));
}

/// An outside review: one subscription's hung delivery held other subscriptions' next events for its whole
/// timeout when those were behind the read cursor (written before delivery began): the read started again from
/// the beginning only once nothing was out. It now starts again at once.
#[test]
fn a_hung_delivery_does_not_hold_another_subscriptions_next_event_written_before_it() {
    let r = Receiver::start();
    let b = sub("b", "cust-a", "monthly", "2030-01-01");
    let w = World::new(Setup { body: &format!("{MONTHLY}{b}"), ..Default::default() });
    w.sandbox.register_customer("cust-a", cards::APPROVE).unwrap();
    // Webhooks off: b's created and charge.paid are written, then "hang"'s (after them): none sent.
    w.tick("2030-01-01T10:00:00+09:00");
    let hang = sub("hang", "cust-a", "monthly", "2030-01-01");
    std::fs::write(&w.config, format!("{}{hang}", std::fs::read_to_string(&w.config).unwrap())).unwrap();
    w.tick("2030-01-01T10:00:01+09:00");
    let on = format!(
        "{}\n[webhooks]\nurl = \"{}\"\ntimeout = \"60s\"\nmax_age = \"30d\"\n",
        std::fs::read_to_string(&w.config).unwrap(),
        r.url()
    );
    std::fs::write(&w.config, on).unwrap();
    let (_, _daemon) = daemon(&w, true, &["--as-of", "2030-01-01T10:00:05+09:00", "--simulate"]);
    // The first read finds b's first event and "hang"'s first (b's second waits for b's first): once b's first is
    // delivered, b's second is behind the cursor, while "hang"'s first is out for 60 s.
    common::wait_for("both of b's events delivered", || {
        r.kinds().iter().filter(|(_, s, _)| s == "b").map(|(_, _, n)| *n).collect::<Vec<_>>() == [1, 2]
    });
}

/// `billd run ARGS` in `w` (with the receiver's secret when `secret`), killed when the test ends: its pid and guard.
fn daemon(w: &World, secret: bool, args: &[&str]) -> (u32, KillOnDrop) {
    let mut c = w.billd();
    if secret {
        c.env("BILLD_WEBHOOKS__SECRET", SECRET);
    }
    let child = c.arg("run").args(args).stderr(std::process::Stdio::null()).spawn().unwrap();
    (child.id(), KillOnDrop(child))
}
