//! A year of daily `billd tick --as-of` passes over a mixed book, with and without SIGKILL mid-pass (and then
//! charges still in progress at the gateway when billd dies): exactly the charges the calendar and the dunning
//! policy call for, never two for one period, never a request for a merchant_uid the gateway had paid or was
//! still charging (checked by the harness). Each test runs on SQLite and on PostgreSQL (`…_on_postgres`: a
//! database of the throwaway cluster of `tests/common/pg.rs`; issue 27).

mod common;
#[path = "common/pg.rs"]
mod pg;

use billd_sandbox::{Fault, FaultRule};
use common::{MONTHLY, Rng, Setup, World, cards, sub};
use std::collections::BTreeSet;
use std::time::Duration;

fn book() -> String {
    let mut body = format!(
        "{MONTHLY}\n[[plans]]\nid = \"weekly\"\nname = \"Weekly\"\namount = 15000\ninterval = \"1 week\"\n\
         \n[[plans]]\nid = \"yearly\"\nname = \"Yearly\"\namount = 99000\ninterval = \"1 year\"\n"
    );
    body += &sub("m31", "c-m31", "monthly", "2025-01-31");
    body += &sub("wk", "c-wk", "weekly", "2025-01-06");
    body += &sub("yr", "c-yr", "yearly", "2024-02-29");
    body += &sub("d2", "c-d2", "monthly", "2025-01-15");
    body += &sub("dx", "c-dx", "monthly", "2025-02-01");
    body += &sub("nx", "c-nobody", "monthly", "2025-03-01");
    body
}

fn register(w: &World) {
    for (c, card) in [
        ("c-m31", cards::APPROVE.to_string()),
        ("c-wk", cards::APPROVE.to_string()),
        ("c-yr", cards::APPROVE.to_string()),
        ("c-d2", cards::decline_first(2)),
        ("c-dx", cards::DECLINE_INSUFFICIENT_FUNDS.to_string()),
    ] {
        w.sandbox.register_customer(c, &card).unwrap();
    }
}

fn expected_paid() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |sub: &str, n: u32| {
        for k in 0..n {
            out.insert(format!("billd-{sub}-{k}"));
        }
    };
    add("m31", 12); // Jan 31, Feb 28, Mar 31, ... Dec 31
    add("wk", 52); // every Monday from Jan 6 to Dec 29
    add("yr", 2); // 2024-02-29 (due before the first pass: caught up), 2025-02-28
    add("d2", 12); // period 0 paid on its second retry, the rest at once
    out
}

fn check_year(w: &World) {
    let paid: BTreeSet<String> = w.paid_by_merchant_uid().into_keys().collect();
    assert_eq!(paid, expected_paid());
    let d2 = w.attempts_for("c-d2");
    assert_eq!(d2.iter().filter(|e| e.status == "failed").count(), 2, "decline-twice card");
    let dx = w.attempts_for("c-dx");
    assert_eq!(dx.len(), 4, "always-declined card: first attempt and three retries");
    assert!(dx.iter().all(|e| e.merchant_uid == "billd-dx-0" && e.status == "failed"));
    assert_eq!(w.status_of("dx"), "canceled");
    assert_eq!(w.status_of("nx"), "canceled");
    assert!(w.attempts_for("c-nobody").is_empty());
    for s in ["m31", "wk", "yr", "d2"] {
        assert_eq!(w.status_of(s), "active", "{s}");
    }
    w.assert_consistent();
}

#[test]
fn a_year_of_daily_passes_charges_exactly_what_is_due() {
    a_year_of_daily_passes(None);
}

#[test]
fn a_year_of_daily_passes_charges_exactly_what_is_due_on_postgres() {
    let Some(db) = pg::database() else { return };
    a_year_of_daily_passes(Some(db.url()));
}

/// On SQLite, or on the PostgreSQL book at `postgres`.
fn a_year_of_daily_passes(postgres: Option<&str>) {
    let body = book();
    let w = World::new(Setup { body: &body, postgres, ..Default::default() });
    register(&w);
    w.tick_daily("2025-01-01", "2025-12-31", "10:00:00+09:00");
    check_year(&w);
}

/// On the days a pass is killed, the gateway takes a random time of up to twice billd's gateway timeout (1 s) to
/// make the killed pass's first charge or two, and makes them even with billd gone.
#[test]
fn a_year_with_sigkill_mid_pass_still_charges_exactly_what_is_due() {
    a_year_with_sigkill(None);
}

#[test]
fn a_year_with_sigkill_mid_pass_still_charges_exactly_what_is_due_on_postgres() {
    let Some(db) = pg::database() else { return };
    a_year_with_sigkill(Some(db.url()));
}

/// On SQLite, or on the PostgreSQL book at `postgres`.
fn a_year_with_sigkill(postgres: Option<&str>) {
    let mut rng = Rng::from_env();
    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Fixed(Duration::from_millis(15)),
        seed: Some(rng.below(u64::MAX)),
        ..Default::default()
    };
    let body = book();
    let w = World::new(Setup { sandbox, body: &body, concurrency: 2, timeout: "1s", postgres, ..Default::default() });
    register(&w);
    let mut kills = 0;
    let mut recovered = 0;
    let mut mid_charge = 0;
    let mut day: chrono::NaiveDate = "2025-01-01".parse().unwrap();
    let end: chrono::NaiveDate = "2025-12-31".parse().unwrap();
    while day <= end {
        let as_of = format!("{day}T10:00:00+09:00");
        // A day passed since the last pass: the gateway has finished what it was charging.
        w.wait_for_gateway_idle();
        // On about one day in four, start a pass and kill it at a random instant, then let the next one finish.
        if rng.below(4) == 0 {
            let times = 1 + rng.below(2) as u32;
            let fault = Fault::ChargeLaterRandom { max: Duration::from_secs(2) };
            w.sandbox.add_fault(FaultRule { customer_uid: None, fault, times: Some(times) });
            let mut child =
                w.billd().args(["tick", "--as-of", &as_of]).stderr(std::process::Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
            child.wait().unwrap();
            mid_charge += usize::from(w.sandbox.requests_in_progress() > 0);
        }
        let out = World::stderr(&w.tick(&as_of));
        w.sandbox.clear_faults();
        if out.contains("reconciled=") && !out.contains("reconciled=0") {
            recovered += 1;
        }
        day = day.succ_opt().unwrap();
    }
    // A charge a killed pass left pending with no record at the gateway is resent by the first pass after its quiet
    // period (twice the 1 s gateway timeout): for a kill on the last day, that is this one.
    // (The billing clock runs a day a pass; the real quiet periods are waited out: no billing instant shortens them.)
    w.wait_for_gateway_idle();
    w.wait_quiet();
    w.tick("2025-12-31T10:00:10+09:00");
    // And an answer a pass of the last day lost (its charge in progress past the 1 s timeout) is looked up after
    // the unresolved backoff (a minute, then two, ...): half an hour later, as the other days' outcomes are by the
    // next day's pass.
    w.wait_for_gateway_idle();
    w.wait_quiet();
    w.tick("2025-12-31T10:30:00+09:00");
    println!(
        "{kills} passes killed ({mid_charge} while the gateway was still charging), {recovered} later passes \
         reconciled attempts a killed one left"
    );
    assert!(kills >= 20, "only {kills} kills landed");
    assert!(recovered >= 1, "no kill landed between an intent commit and its outcome");
    check_year(&w);
}
