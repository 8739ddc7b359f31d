//! Issue 23, point 8: every command that depends on "now" takes `--as-of` (a future one only with `--simulate`, and
//! `--simulate` only against a sandbox on this machine), and `billd run --as-of T --simulate --speed N` bills on a
//! simulated clock. Billing time comes from `--as-of` (and, for `run`, from `--speed`), never from sleeps.

mod common;

use common::{MONTHLY, Setup, World, cards, sub, text};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn run(w: &World, args: &[&str]) -> (i32, String) {
    let out = w.billd().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

/// `subscriptions add` took today from the wall clock: on a timeline simulated with `tick --as-of`, its default start
/// was the real date (a year after the simulated one) and a start on the simulated day was refused as "more than one
/// period back". With `--as-of`, the start, that rule and `--charge-now` follow the simulated day.
#[test]
fn subscriptions_add_as_of_dates_the_first_charge_from_the_simulated_day() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::APPROVE).unwrap();
    let add = |id: &str, customer: &str, more: &[&str]| {
        let mut args = vec!["subscriptions", "add", "--id", id, "--customer-uid", customer, "--plan", "monthly"];
        args.extend_from_slice(more);
        run(&w, &args)
    };
    let (code, said) = add("m1", "c1", &["--as-of", "2025-01-15T12:00:00+09:00"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("first due 2025-01-15 10:00 +09:00"), "the default start is the simulated day: {said}");
    // A start a month before the simulated day is one period back, not more: accepted (refused against the real date).
    let (code, said) = add("m2", "c2", &["--start", "2024-12-20", "--as-of", "2025-01-15T12:00:00+09:00"]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = add("m3", "c2", &["--start", "2024-12-20"]);
    assert!(code == 1 && said.contains("more than one period"), "{said}");
    // --charge-now charges at the simulated instant; the next period keeps the start's anchor (2025-03-01).
    let (code, said) =
        add("m4", "c1", &["--start", "2025-02-01", "--charge-now", "--as-of", "2025-01-20T12:00:00+09:00"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("first charge paid: billd-m4-0"), "{said}");
    w.tick("2025-02-15T10:00:00+09:00");
    let paid: Vec<String> = w.paid_by_merchant_uid().into_keys().collect();
    assert_eq!(paid, ["billd-m1-0", "billd-m1-1", "billd-m2-0", "billd-m2-1", "billd-m4-0"]);
    // A future instant is refused without --simulate (with --charge-now it would charge for real).
    let (code, said) = add("m5", "c1", &["--as-of", "2099-01-01T00:00:00+09:00"]);
    assert!(code == 1 && said.contains("--simulate"), "{said}");
    w.assert_consistent();
}

/// `sync` judged the config's starts against the real date: on a simulated timeline a subscription starting on the
/// simulated day was refused as backdated. `sync --as-of` applies the file as on that day.
#[test]
fn sync_as_of_applies_the_file_as_on_the_simulated_day() {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-31")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let (code, said) = run(&w, &["sync", "--dry-run"]);
    assert!(code == 0 && said.contains("refused") && said.contains("more than one period"), "{said}");
    let (code, said) = run(&w, &["sync", "--as-of", "2025-01-30T09:00:00+09:00"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("add     s1") && !said.contains("refused"), "{said}");
    assert_eq!(w.status_of("s1"), "active");
    w.tick("2025-01-31T10:00:00+09:00");
    assert_eq!(w.paid_for("c1"), ["billd-s1-0"]);
    let (code, said) = run(&w, &["sync", "--as-of", "2099-01-01T00:00:00+09:00"]);
    assert!(code == 1 && said.contains("--simulate"), "{said}");
    w.assert_consistent();
}

/// `import` judged starts against the real date too.
#[test]
fn import_as_of_judges_starts_on_the_simulated_day() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    let csv = w.dir.path().join("subs.csv");
    std::fs::write(&csv, "id,customer_uid,plan,start\ni1,c1,monthly,2025-01-31\n").unwrap();
    let file = csv.to_str().unwrap();
    let (code, said) = run(&w, &["import", file]);
    assert!(code == 1 && said.contains("more than one"), "{said}");
    let (code, said) = run(&w, &["import", file, "--as-of", "2025-01-30T09:00:00+09:00"]);
    assert!(code == 0 && said.contains("imported 1 subscription"), "{said}");
}

/// The listings' "today": the config's subscriptions not synced yet are listed as a sync on the `--as-of` day would
/// add them (`subscriptions`, `upcoming`), and `check` warns as a pass on that day would refuse. A listing writes
/// nothing, so a future `--as-of` needs no `--simulate`.
#[test]
fn listings_and_check_follow_as_of() {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-31")),
        ..Default::default()
    });
    let as_of = "2025-01-30T09:00:00+09:00";
    let listed = |args: &[&str]| {
        let (code, said) = run(&w, args);
        assert_eq!(code, 0, "{said}");
        said.lines().any(|l| l.starts_with("s1 ") && l.contains("not synced"))
    };
    assert!(!listed(&["subscriptions"]), "refused against the real date, so not listed");
    assert!(listed(&["subscriptions", "--as-of", as_of]), "a sync on the simulated day adds it");
    let (_, up) = run(&w, &["upcoming", "--as-of", as_of, "--days", "5"]);
    assert!(up.contains("s1") && up.contains("not synced") && up.contains("2025-01-31 (Asia/Seoul)"), "{up}");
    let (code, said) = run(&w, &["check"]);
    assert!(code == 0 && said.contains("a pass now would refuse it"), "{said}");
    let (code, said) = run(&w, &["check", "--as-of", as_of]);
    assert!(code == 0 && !said.contains("would refuse"), "{said}");
    // Read only: a future instant is fine, and nothing was written.
    let (code, said) = run(&w, &["subscriptions", "--as-of", "2099-01-01T00:00:00+09:00"]);
    assert_eq!(code, 0, "{said}");
    // Read only: no book is created by a listing (it lists an empty one, and says there is none yet).
    assert!(!w.dir.path().join("billd.sqlite3").exists(), "a listing created the database");
}

/// `billd run --as-of T --simulate --speed 86400`: the daemon's billing clock starts at T and runs a day a second,
/// so a subscription due a simulated day after T is charged within seconds (polled, not timed), at its simulated
/// instant; the start-up line, STATUS and /healthz say time is simulated.
#[test]
fn run_simulates_time_at_speed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let body =
        format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-03-02"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let notify_path = w.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = w
        .billd()
        .args(["run", "--as-of", "2025-03-01T09:00:00+09:00", "--simulate", "--speed", "86400"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = None;
    while ready.is_none() {
        assert!(Instant::now() < deadline, "no READY");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("billd run exited {status} before READY: {}", text(&child.wait_with_output().unwrap()));
        }
        let mut buf = [0u8; 4096];
        if let Ok(n) = notify.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            ready = msg.contains("READY=1").then_some(msg);
        }
    }
    let ready = ready.unwrap();
    assert!(ready.contains("simulated time 2025-03-0") && ready.contains("86400x real speed"), "{ready}");
    common::wait_for("s1's first period paid", || !w.paid_for("c1").is_empty());
    assert_eq!(w.paid_for("c1")[0], "billd-s1-0");
    // Made on the simulated clock, not the real one.
    let made: i64 = w
        .db()
        .query_row("SELECT created_at FROM attempts WHERE merchant_uid = 'billd-s1-0'", [], |r| r.get(0))
        .unwrap();
    let made = chrono::DateTime::from_timestamp(made, 0).unwrap();
    assert!(made.to_rfc3339().starts_with("2025-03"), "the charge was made at {made}, not on the simulated clock");
    let mut health = None;
    common::wait_for("/healthz", || {
        health = common::http_get(port, "/healthz");
        health.is_some()
    });
    let (code, health) = health.unwrap();
    assert!(code == 200 && health.contains("simulated time 2025-"), "{health}");
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let started = log.lines().find(|l| l.contains("daemon.started")).unwrap_or_else(|| panic!("{log}"));
    assert!(started.contains("SIMULATING time from 2025-03-01T00:00:00+00:00 at 86400x"), "{started}");
    w.assert_consistent();
}

/// A future `run --as-of` needs `--simulate`, `--speed` needs `--simulate`, and `--simulate` runs only against a
/// gateway on this machine: refused before anything is sent.
#[test]
fn run_refuses_a_future_instant_without_simulate_and_simulate_against_a_real_gateway() {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-03-02")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let (code, said) = run(&w, &["run", "--as-of", "2099-01-01T00:00:00+09:00"]);
    assert!(code == 1 && said.contains("--simulate") && said.contains("nothing was done"), "{said}");
    let (code, said) = run(&w, &["run", "--speed", "10"]);
    assert!(code == 2 && said.contains("--simulate"), "{said}");
    let local = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, local.replace(&w.sandbox.base_url(), "https://api.iamport.kr")).unwrap();
    // Even from the past: at --speed it overtakes the real time.
    for args in [
        &["run", "--simulate", "--as-of", "2025-03-01T09:00:00+09:00", "--speed", "86400"][..],
        &["run", "--simulate"][..],
    ] {
        let (code, said) = run(&w, args);
        assert!(code == 1 && said.contains("not a loopback address"), "{args:?}: {said}");
    }
    assert!(w.requests().is_empty() && w.ledger().is_empty(), "something was sent");
}

/// Under simulated time, a charge whose outcome is unknown waits for its quiet period in real time, but its next look
/// is put off in billing time (the earlier of the two clocks), which a fast simulated clock reaches at once: the
/// loop looked it up again and again (some hundred looks in half a second) until the real wait was over. It now
/// pauses a second between such looks; the charge is settled by lookup and sent once.
#[test]
fn run_on_a_simulated_clock_waits_for_the_quiet_period_without_spinning() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-03-02"));
    let w = World::new(Setup { body: &body, timeout: "2s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    // The gateway charges 3 s after the request, which times out after 2 s: unknown, quiet for 4 s of real time.
    w.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("c1".into()),
        fault: billd_sandbox::Fault::ChargeLater { after: Duration::from_millis(3000) },
        times: Some(1),
    });
    let child = w
        .billd()
        .args(["run", "--as-of", "2025-03-01T09:00:00+09:00", "--simulate", "--speed", "86400"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("the charge found paid by lookup", || {
        let paid = "SELECT count(*) FROM attempts WHERE merchant_uid = 'billd-s1-0' AND status = 'paid'";
        w.db().query_row(paid, [], |r| r.get::<_, i64>(0)).unwrap_or(0) == 1
    });
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let looks = log.lines().filter(|l| l.contains("charge.wait")).count();
    assert!((1..20).contains(&looks), "{looks} looks during a 4 s quiet period (the loop spun):\n{log}");
    assert_eq!(w.sent("billd-s1-0"), 1);
    w.assert_consistent();
}
