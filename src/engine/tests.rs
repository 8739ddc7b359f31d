//! The engine's unit tests: a sender that panics, refused resends, a reload that must not shorten the quiet
//! period, and a billing instant that must not shorten it in real time.

use super::charge::RESEND_REFUSALS_TOLERATED;
use super::*;
use crate::gateway::{ChargeOutcome, ChargeRequest, Lookup};
use crate::store::ChargeStatus;
use crate::store::sql::SqlStore;
use crate::store::sqlite;
use crate::store::{Book, Ledger, PeriodState, Views};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The status of subscription s0's latest attempt, its period's state, and (while it is unresolved) its tries,
/// refused resends, check time and recorded timeout, read through the contract.
fn latest<G: Gateway>(
    e: &Engine<SqlStore, G>,
) -> (ChargeStatus, PeriodState, u32, u32, Option<DateTime<Utc>>, Option<u64>) {
    let s = e.store.lock().unwrap();
    let (periods, _) = s.subscription_story("s0").unwrap();
    let p = periods.last().expect("a period");
    let a = p.attempts.last().expect("an attempt");
    let open = s.unresolved(DateTime::<Utc>::MAX_UTC, 10).unwrap();
    let (tries, refused, timeout) =
        open.first().map(|u| (u.tries, u.refused_resends, u.timeout_ms)).unwrap_or((0, 0, None));
    (a.status, p.state, tries, refused, a.check_at, timeout)
}

/// Real clocks the test sets: `wall` as a wall clock that may be stepped, `boot` as the boot clock (seconds).
#[derive(Clone, Default)]
struct TestClock(Arc<Mutex<(i64, i64)>>);

impl TestClock {
    /// Both clocks at `t` (billing time and real time move together).
    fn at(t: DateTime<Utc>) -> TestClock {
        let c = TestClock::default();
        c.set(t.timestamp(), t.timestamp());
        c
    }

    fn set(&self, wall: i64, boot: i64) {
        *self.0.lock().unwrap() = (wall, boot);
    }
}

impl RealClock for TestClock {
    fn now(&self) -> crate::billing::quiet::RealInstant {
        let (wall, boot) = *self.0.lock().unwrap();
        crate::billing::quiet::RealInstant { wall_ms: wall * 1000, boot: Some(("test".into(), boot * 1000)) }
    }
}

/// A gateway whose charge panics (a bug in a sender's path).
struct Panicky;

impl Gateway for Panicky {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
    async fn authenticate(&self) -> crate::gateway::Auth {
        crate::gateway::Auth::Accepted
    }
    async fn charge(&self, _: &ChargeRequest, _: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
        panic!("a bug in a sender")
    }
    async fn refund(
        &self,
        _: &crate::gateway::RefundRequest,
        _: impl Future<Output = bool> + Send,
    ) -> Option<crate::gateway::RefundOutcome> {
        unreachable!("this test makes no refunds")
    }
    async fn refunds(&self, _: &str, _: &str) -> crate::gateway::RefundsLookup {
        unreachable!("this test makes no refunds")
    }
    async fn find(&self, _: &str, _: &str) -> Lookup {
        Lookup::NotFound
    }
    async fn payment(&self, _: &str) -> Lookup {
        Lookup::NotFound
    }
}

/// A gateway that loses the first answer, then refuses every request, and has no record of anything.
#[derive(Default)]
struct RefusesResends(AtomicUsize);

impl Gateway for RefusesResends {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
    async fn authenticate(&self) -> crate::gateway::Auth {
        crate::gateway::Auth::Accepted
    }
    async fn charge(&self, _: &ChargeRequest, go: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
        if !go.await {
            return None;
        }
        Some(match self.0.fetch_add(1, Ordering::SeqCst) {
            0 => ChargeOutcome::Unknown("no answer".into()),
            _ => ChargeOutcome::Rejected { code: 1, message: "duplicate merchant_uid".into() },
        })
    }
    async fn refund(
        &self,
        _: &crate::gateway::RefundRequest,
        _: impl Future<Output = bool> + Send,
    ) -> Option<crate::gateway::RefundOutcome> {
        unreachable!("this test makes no refunds")
    }
    async fn refunds(&self, _: &str, _: &str) -> crate::gateway::RefundsLookup {
        unreachable!("this test makes no refunds")
    }
    async fn find(&self, _: &str, _: &str) -> Lookup {
        Lookup::NotFound
    }
    async fn payment(&self, _: &str) -> Lookup {
        Lookup::NotFound
    }
}

/// A gateway that answers charges from a script (then refuses) and has no record of anything.
struct Scripted(Mutex<VecDeque<ChargeOutcome>>);

impl Gateway for Scripted {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
    async fn authenticate(&self) -> crate::gateway::Auth {
        crate::gateway::Auth::Accepted
    }
    async fn charge(&self, _: &ChargeRequest, go: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
        if !go.await {
            return None;
        }
        let next = self.0.lock().unwrap().pop_front();
        Some(next.unwrap_or(ChargeOutcome::Rejected { code: 1, message: "refused".into() }))
    }
    async fn refund(
        &self,
        _: &crate::gateway::RefundRequest,
        _: impl Future<Output = bool> + Send,
    ) -> Option<crate::gateway::RefundOutcome> {
        unreachable!("this test makes no refunds")
    }
    async fn refunds(&self, _: &str, _: &str) -> crate::gateway::RefundsLookup {
        unreachable!("this test makes no refunds")
    }
    async fn find(&self, _: &str, _: &str) -> Lookup {
        Lookup::NotFound
    }
    async fn payment(&self, _: &str) -> Lookup {
        Lookup::NotFound
    }
}

/// Issue 12, hole 5: other unresolved tries (a lost answer, then 5xx answers to two resends) do not count as
/// refused resends; the first refusal of a resend is not final (the first request may be in progress).
#[test]
fn unresolved_tries_do_not_use_up_the_tolerated_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, 1);
    let script = [
        ChargeOutcome::Unknown("no answer".into()),
        ChargeOutcome::Transient("HTTP 503".into()),
        ChargeOutcome::Transient("HTTP 503".into()),
    ];
    let gateway = Scripted(Mutex::new(script.into_iter().collect()));
    let mut at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let clock = TestClock::at(at);
    let engine = Engine::new(sqlite::open(cfg.billing.database.file().unwrap()).unwrap(), gateway, cfg)
        .with_real_clock(clock.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state = |e: &Engine<SqlStore, Scripted>| {
        let (status, state, tries, refused, _, _) = latest(e);
        (status, state, tries, refused)
    };
    rt.block_on(engine.pass(at)).unwrap();
    for _ in 0..2 {
        at += chrono::Duration::hours(2);
        clock.set(at.timestamp(), at.timestamp());
        rt.block_on(engine.pass(at)).unwrap();
    }
    assert_eq!(state(&engine), (ChargeStatus::Unknown, PeriodState::Open, 3, 0), "a lost answer and two 5xx resends");
    // The first refused resend: still unresolved, counted.
    at += chrono::Duration::hours(2);
    clock.set(at.timestamp(), at.timestamp());
    rt.block_on(engine.pass(at)).unwrap();
    assert_eq!(
        state(&engine),
        (ChargeStatus::Unknown, PeriodState::Open, 4, 1),
        "the first refusal was taken as final"
    );
    assert_eq!(
        engine.store.lock().unwrap().subscription("s0").unwrap().unwrap().status,
        crate::billing::model::Status::Active
    );
}

/// Issue 12, hole 2: a reload (SIGHUP) replaces the config, but the HTTP client keeps the timeout it was built
/// with. The quiet period after a lost answer is twice the timeout the request was sent with (35 s here), not the
/// reloaded config's (1 s): the request may be in progress at the gateway for that long.
#[test]
fn a_reload_with_a_shorter_timeout_does_not_shorten_the_quiet_period() {
    struct Slow;
    impl Gateway for Slow {
        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(35)
        }
        async fn authenticate(&self) -> crate::gateway::Auth {
            crate::gateway::Auth::Accepted
        }
        async fn charge(&self, _: &ChargeRequest, go: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
            go.await.then(|| ChargeOutcome::Unknown("no answer within 35s".into()))
        }
        async fn refund(
            &self,
            _: &crate::gateway::RefundRequest,
            _: impl Future<Output = bool> + Send,
        ) -> Option<crate::gateway::RefundOutcome> {
            unreachable!("this test makes no refunds")
        }
        async fn refunds(&self, _: &str, _: &str) -> crate::gateway::RefundsLookup {
            unreachable!("this test makes no refunds")
        }
        async fn find(&self, _: &str, _: &str) -> Lookup {
            Lookup::NotFound
        }
        async fn payment(&self, _: &str) -> Lookup {
            Lookup::NotFound
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, 1);
    let mut engine = Engine::new(sqlite::open(cfg.billing.database.file().unwrap()).unwrap(), Slow, cfg.clone());
    let mut reloaded = cfg;
    reloaded.gateway.timeout = std::time::Duration::from_secs(1);
    engine.set_config(reloaded);
    let at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    tokio::runtime::Runtime::new().unwrap().block_on(engine.pass(at)).unwrap();
    let (_, _, _, _, check_at, timeout_ms) = latest(&engine);
    let check_at = check_at.expect("a check time").timestamp();
    assert_eq!(timeout_ms, Some(35_000), "the timeout the request was sent with is recorded");
    let at = at.timestamp();
    assert!(check_at >= at + 70, "looked at again {} s after the lost answer, not 70 s", check_at - at);
}

fn config(dir: &std::path::Path, concurrency: usize, subscriptions: usize) -> Config {
    let mut text = format!(
        "[billing]\ntimezone = \"Asia/Seoul\"\ncharge_time = \"10:00\"\n\n[gateway]\nbase_url = \
         \"http://127.0.0.1:9\"\nimp_key = \"k\"\nimp_secret = \"s\"\nconcurrency = {concurrency}\n\n[[plans]]\n\
         id = \"p\"\nname = \"Plan\"\namount = 9900\ninterval = \"1 month\"\n"
    );
    for i in 0..subscriptions {
        text += &format!(
            "[[subscriptions]]\nid = \"s{i}\"\ncustomer_uid = \"c{i}\"\nplan = \"p\"\nstart = \"2025-01-01\"\n"
        );
    }
    crate::config::parse_str(&text, &dir.join("schedules.toml")).unwrap()
}

#[test]
fn a_refused_resend_is_not_final_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, 1);
    let mut at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let clock = TestClock::at(at);
    let engine =
        Engine::new(sqlite::open(cfg.billing.database.file().unwrap()).unwrap(), RefusesResends::default(), cfg)
            .with_real_clock(clock.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = |e: &Engine<SqlStore, RefusesResends>| {
        let (status, state, ..) = latest(e);
        (status, state)
    };
    rt.block_on(engine.pass(at)).unwrap();
    assert_eq!(status(&engine), (ChargeStatus::Unknown, PeriodState::Open), "the first answer was lost");
    // Each later pass finds no record and resends; the refusals are taken as final only after a few.
    let mut seen = Vec::new();
    for _ in 0..6 {
        at += chrono::Duration::hours(2);
        clock.set(at.timestamp(), at.timestamp());
        rt.block_on(engine.pass(at)).unwrap();
        seen.push(status(&engine));
    }
    let until_final = seen.iter().position(|s| s.1 != PeriodState::Open).expect("a refusal becomes final at last");
    assert_eq!(until_final as u32, RESEND_REFUSALS_TOLERATED, "{seen:?}");
    assert_eq!(seen[until_final], (ChargeStatus::Failed, PeriodState::GivenUp), "{seen:?}");
}

#[test]
fn a_pass_whose_senders_all_panic_ends_with_an_error_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    // More than a page, so the claimer is waiting for the queue to run low when the senders die.
    let cfg = config(dir.path(), 2, PAGE + 100);
    let engine = Engine::new(sqlite::open(cfg.billing.database.file().unwrap()).unwrap(), Panicky, cfg);
    let now = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result =
        rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), engine.pass(now)).await });
    let err = result.expect("the pass hung").expect_err("a pass whose senders panicked cannot succeed");
    assert!(format!("{err:#}").contains("a sender panicked"), "{err:#}");
}

/// Issue 20, 1: a pass at a billing instant hours later (a `tick --as-of`, or a wall clock stepped forward) finds
/// the lost answer's check time long past, but its request left a second ago in real time: it may be looked up
/// (harmless), but finding nothing it is neither resent nor given up until the quiet period (twice the timeout,
/// 10 s) has passed on the boot clock too; its check time is put off to the end of that wait. Then it is resent.
#[test]
fn a_later_billing_instant_never_shortens_the_real_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, 1);
    let gateway = Scripted(Mutex::new([ChargeOutcome::Unknown("no answer".into())].into_iter().collect()));
    let at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let clock = TestClock::at(at);
    let engine = Engine::new(sqlite::open(cfg.billing.database.file().unwrap()).unwrap(), gateway, cfg)
        .with_real_clock(clock.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(engine.pass(at)).unwrap();
    assert_eq!(latest(&engine).2, 1, "the first answer was lost");
    // Five hours later on the billing clock and the wall clock, one second later on the boot clock.
    let later = at + chrono::Duration::hours(5);
    clock.set(later.timestamp(), at.timestamp() + 1);
    let report = rt.block_on(engine.pass(later)).unwrap();
    assert_eq!((report.sent, report.reconciled, report.deferred), (0, 1, 1), "{report:?}");
    let (status, _, tries, _, check_at, _) = latest(&engine);
    assert_eq!((status, tries), (ChargeStatus::Unknown, 1), "not resent");
    // (The pass's instant plus what is left of the wait, timed from the moment in the pass, rounded up.)
    let put_off = (check_at.expect("a check time") - later).num_seconds();
    assert!((9..=10).contains(&put_off), "put off to the end of the real quiet period, not {put_off} s");
    // Once 10 s have passed on the boot clock: looked up (nothing there) and resent (refused by the script).
    let after = later + chrono::Duration::seconds(10);
    clock.set(after.timestamp(), at.timestamp() + 11);
    let report = rt.block_on(engine.pass(after)).unwrap();
    assert_eq!((report.reconciled, report.deferred), (1, 0), "{report:?}");
}

/// A gateway whose lookups fail for the merchant_uids listed in `failing` (and find nothing otherwise), and that
/// pays every charge, recording its merchant_uid.
#[derive(Default)]
struct FailingLookups {
    failing: Mutex<Vec<String>>,
    charged: Mutex<Vec<String>>,
}

impl Gateway for FailingLookups {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
    async fn authenticate(&self) -> crate::gateway::Auth {
        crate::gateway::Auth::Accepted
    }
    async fn charge(&self, req: &ChargeRequest, go: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
        if !go.await {
            return None;
        }
        self.charged.lock().unwrap().push(req.merchant_uid.clone());
        Some(ChargeOutcome::Paid { imp_uid: format!("imp_{}", self.charged.lock().unwrap().len()) })
    }
    async fn refund(
        &self,
        _: &crate::gateway::RefundRequest,
        _: impl Future<Output = bool> + Send,
    ) -> Option<crate::gateway::RefundOutcome> {
        unreachable!("this test makes no refunds")
    }
    async fn refunds(&self, _: &str, _: &str) -> crate::gateway::RefundsLookup {
        unreachable!("this test makes no refunds")
    }
    async fn payment(&self, _: &str) -> Lookup {
        Lookup::NotFound
    }
    async fn find(&self, merchant_uid: &str, _: &str) -> Lookup {
        if self.failing.lock().unwrap().iter().any(|m| m == merchant_uid) {
            Lookup::Error("HTTP 503".into())
        } else {
            Lookup::NotFound
        }
    }
}

/// `catch_up_window` (issue 25 review): a period older than the window is looked up before it is skipped; when its
/// lookup fails it is neither skipped nor charged, and no later period of its subscription opens in that pass (it
/// waits, and the pass does not wake again at once); the next pass whose lookup answers skips it, then charges
/// what is inside the window. Other subscriptions are billed meanwhile.
#[test]
fn a_stale_period_whose_lookup_fails_is_neither_skipped_nor_charged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2, 2);
    cfg.billing.catch_up_window = Some(std::time::Duration::from_secs(10 * 86_400));
    let first = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let engine =
        Engine::new(sqlite::open(cfg.billing.database.file().unwrap()).unwrap(), FailingLookups::default(), cfg)
            .with_real_clock(TestClock::at(first));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(engine.pass(first)).unwrap();
    // April 5: February's and March's periods are older than 10 days; April 1's is inside the window. s0's
    // lookups fail.
    *engine.gateway.failing.lock().unwrap() = vec!["billd-s0-1".into()];
    let now = DateTime::parse_from_rfc3339("2025-04-05T02:00:00Z").unwrap().with_timezone(&Utc);
    let report = rt.block_on(engine.pass(now)).unwrap();
    let states = |id: &str| -> Vec<(u64, PeriodState)> {
        let s = engine.store.lock().unwrap();
        s.subscription_story(id).unwrap().0.iter().map(|p| (p.period, p.state)).collect()
    };
    assert_eq!(states("s0"), [(0, PeriodState::Paid)], "skipped or charged without a lookup");
    assert_eq!(
        states("s1"),
        [(0, PeriodState::Paid), (1, PeriodState::Skipped), (2, PeriodState::Skipped), (3, PeriodState::Paid)]
    );
    assert_eq!((report.skipped, report.stale_left), (2, 1));
    assert!(report.next_wake.is_some_and(|t| t >= now + chrono::Duration::minutes(1)), "{:?}", report.next_wake);
    // The gateway answers again.
    engine.gateway.failing.lock().unwrap().clear();
    rt.block_on(engine.pass(now + chrono::Duration::hours(1))).unwrap();
    assert_eq!(
        states("s0"),
        [(0, PeriodState::Paid), (1, PeriodState::Skipped), (2, PeriodState::Skipped), (3, PeriodState::Paid)]
    );
    let mut charged = engine.gateway.charged.lock().unwrap().clone();
    charged.sort();
    assert_eq!(charged, ["billd-s0-0", "billd-s0-3", "billd-s1-0", "billd-s1-3"]);
}

#[test]
fn a_held_pass_wakes_at_an_instant_ahead_and_never_at_once_for_one_past() {
    let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2031, 3, 1, 1, 0, 0).unwrap();
    let minute = chrono::Duration::minutes(1);
    assert_eq!(wake_after_held(now + chrono::Duration::seconds(5), now), now + chrono::Duration::seconds(5));
    assert_eq!(wake_after_held(now + chrono::Duration::hours(3), now), now + chrono::Duration::hours(3));
    assert_eq!(wake_after_held(now, now), now + minute);
    assert_eq!(wake_after_held(now - chrono::Duration::days(2), now), now + minute);
}
