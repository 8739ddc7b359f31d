//! SIGKILL at random instants of a busy pass: never two paid charges for a period, never a lost period.

mod common;

use common::{MONTHLY, Setup, World, cards, sub};
use std::time::Duration;

const N: usize = 150;

#[test]
fn sigkill_during_a_batch_never_double_charges_or_loses_a_period() {
    let seed = std::env::var("BILLD_TEST_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("seed: {seed} (rerun with BILLD_TEST_SEED={seed})");
    let kills_wanted: usize = std::env::var("BILLD_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut state = seed | 1;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };

    let sandbox = billd_sandbox::SandboxConfig {
        latency: billd_sandbox::Latency::Random { min: Duration::from_millis(5), max: Duration::from_millis(40) },
        ..Default::default()
    };
    let mut body = MONTHLY.to_string();
    for i in 0..N {
        body += &sub(&format!("s{i:02}"), &format!("c{i:02}"), "monthly", "2025-01-01");
    }
    let w = World::new(Setup { sandbox, body: &body, concurrency: 4, ..Default::default() });
    for i in 0..N {
        let card = if i % 10 == 0 { cards::DECLINE_INSUFFICIENT_FUNDS.to_string() } else { cards::APPROVE.to_string() };
        w.sandbox.register_customer(&format!("c{i:02}"), &card).unwrap();
    }
    // Three months of billing days (and the retry days in between), each pass killed at random until one finishes.
    let days = [
        "2025-01-01",
        "2025-01-02",
        "2025-01-04",
        "2025-01-08",
        "2025-02-01",
        "2025-02-02",
        "2025-02-04",
        "2025-03-01",
    ];
    let mut kills = 0;
    for day in days {
        let as_of = format!("{day}T10:00:00+09:00");
        loop {
            let mut child =
                w.billd().args(["tick", "--as-of", &as_of]).stderr(std::process::Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rand(150)));
            if child.try_wait().unwrap().is_some() || kills >= kills_wanted {
                assert!(child.wait().unwrap().success());
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        w.tick(&as_of);
    }
    println!("{kills} kills");
    assert!(kills >= kills_wanted.min(20), "only {kills} kills landed mid-pass");
    // Nine in ten customers approve: 3 periods each; the declining ones were canceled after their retries.
    let paid = w.paid_by_merchant_uid();
    assert_eq!(paid.len(), (N - N / 10) * 3);
    for i in (0..N).filter(|i| i % 10 != 0) {
        for k in 0..3 {
            assert!(paid.contains_key(&format!("billd-s{i:02}-{k}")), "s{i:02} period {k} not paid");
        }
    }
    for i in (0..N).step_by(10) {
        assert_eq!(w.status_of(&format!("s{i:02}")), "canceled");
        assert_eq!(w.attempts_for(&format!("c{i:02}")).len(), 4, "c{i:02}: exactly 4 declined attempts");
    }
    w.assert_consistent();
}
