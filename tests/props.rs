//! Property tests of the pure billing rules.
//!
//! - The calendar: due dates strictly increase, the anchor day comes back after short months, month ends clamp,
//!   leap days, and the local charge time across DST transitions (America/New_York, Europe/Berlin and more),
//!   each checked against a direct model.
//! - The dunning state machine: the real engine and store, driven by a scripted in-process gateway through random
//!   sequences of paid / declined / rejected / transient / unknown outcomes and clock jumps (back an hour,
//!   forward minutes to weeks), compared after every pass with a small reference model of the README's rules. The
//!   model's due instants come from this file's own calendar and clock (`model_nth`, `model_due_at`), never
//!   billd's, across zones with DST gaps and folds, month-end and Feb 29 starts, day to year intervals, and two to
//!   five subscriptions against a concurrency of two. billd dies at scripted points of the protocol (intent
//!   committed, not sent; the gateway took the charge, no answer; answered, not recorded) and restarts as a new
//!   process (a new runtime, `Store` and `Engine` on the same file), and the gateway may record a charge up to
//!   twice the timeout late, finishing it with billd gone. The model predicts what the dead process had committed,
//!   every payment at the gateway, and that once passes run past the quiet periods every due period is paid once
//!   or given up by the dunning rules; the gateway fails the case on any request for a merchant_uid it has paid or
//!   is still charging.
//!
//! - Both stores (issue 27): the model's cases run on SQLite and, fewer of them, on PostgreSQL (`…_on_postgres`, a
//!   fresh database of the throwaway cluster of `tests/common/pg.rs` per case, skipped loudly without PostgreSQL
//!   outside CI); a dying process is cut off to a scratch SQLite file either way.
//!
//! Set `PROPTEST_CASES` for more cases.

mod common;
#[path = "common/pg.rs"]
mod pg;

use billd::billing::calendar::{Calendar, ChargeClock, Interval, Unit};
use billd::config::Config;
use billd::engine::Engine;
use billd::gateway::{ChargeOutcome, ChargeRequest, Gateway, Lookup, Payment};
use billd::store::sql::SqlStore as Store;
use billd::store::sqlite;
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use common::book::{self, Row, lit};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// The number of cases: `PROPTEST_CASES` when set (a longer run), else this test's default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------------------------
// Calendar

fn days_in_month(year: i32, month: u32) -> u32 {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap();
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap()
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap()
    };
    (next - first).num_days() as u32
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn any_date(from_year: i32, to_year: i32) -> impl Strategy<Value = NaiveDate> {
    (from_year..=to_year, 1u32..=12, 1u32..=31)
        .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d.min(days_in_month(y, m))).unwrap())
}

fn any_interval() -> impl Strategy<Value = Interval> {
    (1u32..=24, prop_oneof![Just(Unit::Day), Just(Unit::Week), Just(Unit::Month), Just(Unit::Year)])
        .prop_map(|(count, unit)| Interval { count, unit })
}

/// The calendar's rule written out directly: period k is `anchor + k × interval`, the day clamped to the month.
fn model_nth(interval: Interval, anchor: NaiveDate, k: u64) -> NaiveDate {
    let n = u64::from(interval.count) * k;
    match interval.unit {
        Unit::Day => anchor + chrono::Duration::days(n as i64),
        Unit::Week => anchor + chrono::Duration::days(7 * n as i64),
        Unit::Month | Unit::Year => {
            let months = if interval.unit == Unit::Year { 12 * n } else { n } as i64;
            let index = i64::from(anchor.year()) * 12 + i64::from(anchor.month0()) + months;
            let (y, m) = ((index / 12) as i32, (index % 12) as u32 + 1);
            NaiveDate::from_ymd_opt(y, m, anchor.day().min(days_in_month(y, m))).unwrap()
        }
    }
}

/// The clock's rule written out directly: the charge time on that local date; in a DST gap the first local
/// time that exists after it; when it happens twice, the first.
fn model_due_at(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = NaiveDateTime::new(date, time);
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => return t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
        LocalResult::None => {}
    }
    let mut probe = NaiveDateTime::new(date, NaiveTime::from_hms_opt(time.hour(), time.minute(), 0).unwrap());
    loop {
        probe += chrono::Duration::minutes(1);
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.with_timezone(&Utc),
            LocalResult::None => {}
        }
    }
}

/// README's retry rule written out: a delay of whole days lands at the charge time (on the model's clock) nearest
/// to `now + delay` among those at least half the delay after `now`, the later one on a tie; any other delay is
/// exact.
fn model_retry_at((tz, time): (Tz, NaiveTime), now: i64, delay: i64) -> i64 {
    let exact = now + delay;
    if delay % 86_400 != 0 {
        return exact;
    }
    let day = DateTime::from_timestamp(exact, 0).unwrap().with_timezone(&tz).date_naive();
    let candidates = [day - chrono::Duration::days(1), day, day + chrono::Duration::days(1)];
    let times: Vec<i64> =
        candidates.iter().map(|d| ts(model_due_at(tz, *d, time))).filter(|t| *t >= now + delay / 2).collect();
    let best = times.iter().map(|t| (t - exact).abs()).min().unwrap();
    times.into_iter().filter(|t| (t - exact).abs() == best).max().unwrap()
}

fn dst_zone() -> impl Strategy<Value = Tz> {
    prop_oneof![
        Just(chrono_tz::America::New_York),
        Just(chrono_tz::Europe::Berlin),
        // A 30-minute DST shift, and a zone whose gaps were at midnight.
        Just(chrono_tz::Australia::Lord_Howe),
        Just(chrono_tz::America::Sao_Paulo),
        Just(chrono_tz::Asia::Seoul),
    ]
}

/// Charge times that hit DST transitions often: around 00:00-03:30 and a few anywhere.
fn charge_time() -> impl Strategy<Value = NaiveTime> {
    prop_oneof![
        3 => (0u32..4, 0u32..60, prop_oneof![Just(0u32), 0u32..60]).prop_map(|(h, m, s)| NaiveTime::from_hms_opt(h, m, s).unwrap()),
        1 => (0u32..24, 0u32..60).prop_map(|(h, m)| NaiveTime::from_hms_opt(h, m, 0).unwrap()),
    ]
}

/// The local dates around `tz`'s offset changes in `year` (the day before, of and after each change).
fn transition_days(tz: Tz, year: i32) -> Vec<NaiveDate> {
    use chrono::Offset;
    let offset = |d: NaiveDate| tz.offset_from_utc_datetime(&d.and_hms_opt(12, 0, 0).unwrap()).fix();
    let mut out = Vec::new();
    let mut d = NaiveDate::from_ymd_opt(year, 1, 2).unwrap();
    while d.year() == year {
        if offset(d) != offset(d.pred_opt().unwrap()) {
            out.extend([d.pred_opt().unwrap(), d, d.succ_opt().unwrap()]);
        }
        d = d.succ_opt().unwrap();
    }
    out
}

/// A zone and a date: mostly the days around its DST transitions, sometimes any day.
fn zone_and_date() -> impl Strategy<Value = (Tz, NaiveDate)> {
    (dst_zone(), 2000i32..=2037, any::<proptest::sample::Index>(), 0u8..8, any_date(2000, 2037)).prop_map(
        |(tz, year, pick, dice, any_day)| {
            let days = transition_days(tz, year);
            if days.is_empty() || dice == 0 { (tz, any_day) } else { (tz, days[pick.index(days.len())]) }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), failure_persistence: None, ..ProptestConfig::default() })]

    /// Due dates strictly increase and equal the model: month ends clamp (Jan 31 → Feb 28/29 → Mar 31), the anchor
    /// day comes back after short months, a Feb 29 anchor gives Feb 29 exactly in leap years.
    #[test]
    fn due_dates_follow_the_anchor_and_strictly_increase(
        anchor in any_date(1990, 2100),
        interval in any_interval(),
        periods in 1u64..60,
    ) {
        let mut prev: Option<NaiveDate> = None;
        for k in 0..=periods {
            let d = interval.nth_date(anchor, k).expect("within the calendar");
            prop_assert_eq!(d, model_nth(interval, anchor, k), "period {} of {} from {}", k, interval, anchor);
            if let Some(p) = prev {
                prop_assert!(d > p, "period {} ({}) is not after period {} ({})", k, d, k - 1, p);
            }
            if matches!(interval.unit, Unit::Month | Unit::Year) {
                // The anchor day, or the month's last day when the month is shorter: never drifts.
                prop_assert_eq!(d.day(), anchor.day().min(days_in_month(d.year(), d.month())));
                if anchor.month() == 2 && anchor.day() == 29 && interval.unit == Unit::Year {
                    prop_assert_eq!(d.day(), if is_leap(d.year()) { 29 } else { 28 });
                }
            }
            prev = Some(d);
        }
    }

    /// A calendar rebased at a later period (after an interval change) continues from its new anchor.
    #[test]
    fn rebased_calendar_counts_from_its_anchor(anchor in any_date(2000, 2050), at in 0u64..50, k in 0u64..50,
                                               interval in any_interval()) {
        let cal = Calendar { anchor, anchor_period: at, interval };
        prop_assert_eq!(cal.date_of(at + k), Some(model_nth(interval, anchor, k)));
        if at > 0 {
            prop_assert_eq!(cal.date_of(at - 1), None);
        }
    }

    /// The charge time in zones with DST: on the right local date, at the charge time when it exists, the first
    /// valid time after a spring-forward gap, the first of the two in a fall-back fold.
    #[test]
    fn charge_time_across_dst_matches_the_model((tz, date) in zone_and_date(), time in charge_time()) {
        let clock = ChargeClock { timezone: tz, charge_time: time };
        let got = clock.due_at(date);
        let want = model_due_at(tz, date, time);
        prop_assert_eq!(got, want, "{} {} {} in {}", date, time, got.with_timezone(&tz), tz);
        let local = got.with_timezone(&tz);
        prop_assert_eq!(local.date_naive(), date);
        prop_assert!(local.time() >= time, "{} is earlier than the charge time {}", local, time);
        prop_assert_eq!(clock.local_date(got), date);
    }

    /// Daily, weekly and monthly due instants strictly increase through DST transitions, and each falls on
    /// its own local date.
    #[test]
    fn due_instants_strictly_increase_through_dst(
        tz in dst_zone(),
        anchor in any_date(2000, 2035),
        time in charge_time(),
        unit in prop_oneof![Just(Unit::Day), Just(Unit::Week), Just(Unit::Month)],
    ) {
        let clock = ChargeClock { timezone: tz, charge_time: time };
        let cal = Calendar { anchor, anchor_period: 0, interval: Interval { count: 1, unit } };
        let mut prev = None;
        for p in 0..120 {
            let t = cal.due_at(&clock, p).unwrap();
            prop_assert_eq!(clock.local_date(t), cal.date_of(p).unwrap());
            if let Some(prev) = prev {
                prop_assert!(t > prev, "period {} at {} is not after {}", p, t, prev);
            }
            prev = Some(t);
        }
    }
}

#[test]
fn known_dst_cases() {
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let t = |s: &str| s.parse::<NaiveTime>().unwrap();
    let ny = |time: &str, date: &str| {
        ChargeClock { timezone: chrono_tz::America::New_York, charge_time: t(time) }.due_at(d(date)).to_rfc3339()
    };
    // Spring forward 2025-03-09: 02:00-02:59 do not exist; the first valid time after any of them is 03:00 EDT.
    assert_eq!(ny("02:30:00", "2025-03-09"), "2025-03-09T07:00:00+00:00");
    assert_eq!(ny("02:10:00", "2025-03-09"), "2025-03-09T07:00:00+00:00");
    assert_eq!(ny("02:59:59", "2025-03-09"), "2025-03-09T07:00:00+00:00");
    // Fall back 2025-11-02: 01:30 happens twice; the first (EDT) counts.
    assert_eq!(ny("01:30:00", "2025-11-02"), "2025-11-02T05:30:00+00:00");
    let berlin = ChargeClock { timezone: chrono_tz::Europe::Berlin, charge_time: t("02:15:00") };
    assert_eq!(berlin.due_at(d("2025-03-30")).to_rfc3339(), "2025-03-30T01:00:00+00:00");
    assert_eq!(berlin.due_at(d("2025-10-26")).to_rfc3339(), "2025-10-26T00:15:00+00:00");
}

// ---------------------------------------------------------------------------------------------------------------
// The dunning state machine: real engine + store + policy, scripted gateway, reference model. billd dies at
// scripted points of the protocol and restarts as a new process would: a new runtime, a new `Store` on the same
// file, a new `Engine`; only committed SQLite writes and the gateway's own records survive.

/// The timeout billd's gateway client reports (the config's default), and the quiet period the README promises
/// after an unresolved outcome or a restart: twice that.
const TIMEOUT: i64 = 30;
const QUIET: i64 = 2 * TIMEOUT;

/// What the scripted gateway does with one `again` call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    Paid,
    Declined,
    /// Refused (code != 0): nothing charged.
    Rejected,
    /// HTTP 5xx: nothing charged.
    Transient,
    /// Charged (paid), but the answer was lost.
    UnknownPaid,
    /// Declined, but the answer was lost.
    UnknownDeclined,
    /// Never reached the card company, and the answer was lost.
    UnknownNothing,
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        4 => Just(Script::Paid),
        4 => Just(Script::Declined),
        1 => Just(Script::Rejected),
        2 => Just(Script::Transient),
        2 => Just(Script::UnknownPaid),
        1 => Just(Script::UnknownDeclined),
        2 => Just(Script::UnknownNothing),
    ]
}

/// Where billd dies at a scripted `again` call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    /// The intent is committed; the request never reaches the gateway.
    BeforeSend,
    /// The gateway takes the charge as scripted (and completes it, late or not, with billd gone); no answer comes
    /// back.
    AfterRecord,
    /// The answer comes back; billd dies before recording it.
    AfterAnswer,
}

/// One scripted `again` call: what the gateway does, how many seconds after the call its record becomes visible to
/// a lookup (a charge the gateway is still completing: up to twice the timeout), and whether billd dies at it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    what: Script,
    late: i64,
    crash: Option<Crash>,
}

/// What the gateway does once a customer's script has run out.
const PLAIN: Step = Step { what: Script::Paid, late: 0, crash: None };

fn step() -> impl Strategy<Value = Step> {
    (
        script(),
        prop_oneof![4 => Just(0i64), 2 => 1i64..QUIET, 1 => Just(QUIET)],
        prop_oneof![
            12 => Just(None),
            1 => Just(Some(Crash::BeforeSend)),
            1 => Just(Some(Crash::AfterRecord)),
            1 => Just(Some(Crash::AfterAnswer)),
        ],
    )
        .prop_map(|(what, late, crash)| Step { what, late, crash })
}

/// A payment at the gateway (in the fake's ledger, and in the model's copy of it).
#[derive(Clone, Debug)]
struct Entry {
    imp_uid: String,
    merchant_uid: String,
    customer_uid: String,
    paid: bool,
    /// From this instant of the gateway's clock on, a lookup finds it.
    visible_at: i64,
}

/// Whether a scripted outcome charged the card: paid (`Some(true)`), declined (`Some(false)`), or nothing.
fn charged(what: Script) -> Option<bool> {
    match what {
        Script::Paid | Script::UnknownPaid => Some(true),
        Script::Declined | Script::UnknownDeclined => Some(false),
        Script::Rejected | Script::Transient | Script::UnknownNothing => None,
    }
}

#[derive(Default)]
struct FakeState {
    scripts: HashMap<String, VecDeque<Step>>,
    ledger: Vec<Entry>,
    /// Every `again` call that reached the gateway: (customer_uid, merchant_uid).
    charges: Vec<(String, String)>,
    /// Script steps taken per customer in the current pass (in a pass billd died in: how far each got).
    taken: HashMap<String, usize>,
    /// `again` calls for a merchant_uid the gateway had paid or was still charging (must never happen).
    repeats: Vec<String>,
    next: u64,
    /// The gateway's clock: real time, which never goes back whatever billd's clock does (set before each pass).
    now: i64,
    /// Where billd died in the current pass: (customer_uid, merchant_uid, where). From then on nothing of that
    /// process reaches the gateway: its calls never return.
    died: Option<(String, String, Crash)>,
}

/// The scripted gateway. Its state is shared by every billd process of a case; `died` and `cut` are one process's.
#[derive(Clone, Default)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    /// Told when billd dies at a scripted call.
    died: Arc<tokio::sync::Notify>,
    /// Told by the test once the dying process is cut off from the database file: the call it died at goes on
    /// (with `AfterAnswer` its answer reaches a process that can no longer record it; else it never returns).
    cut: Arc<tokio::sync::Notify>,
}

impl Fake {
    /// The gateway as a new billd process sees it (the same state, new signals).
    fn for_process(&self) -> Fake {
        self.state.lock().unwrap().died = None;
        Fake { state: self.state.clone(), died: Default::default(), cut: Default::default() }
    }

    /// An `again` call arrives: the scripted outcome, and where billd dies if it does (`None`: the process is
    /// already dead, and the call never returns).
    fn arrive(&self, req: &ChargeRequest) -> Option<(ChargeOutcome, Option<Crash>)> {
        let mut s = self.state.lock().unwrap();
        if s.died.is_some() {
            return None;
        }
        let step = s.scripts.get_mut(&req.customer_uid).and_then(VecDeque::pop_front).unwrap_or(PLAIN);
        *s.taken.entry(req.customer_uid.clone()).or_default() += 1;
        if let Some(crash) = step.crash {
            s.died = Some((req.customer_uid.clone(), req.merchant_uid.clone(), crash));
            if crash == Crash::BeforeSend {
                return Some((ChargeOutcome::Unknown("never sent".into()), step.crash));
            }
        }
        s.charges.push((req.customer_uid.clone(), req.merchant_uid.clone()));
        let now = s.now;
        let earlier = s
            .ledger
            .iter()
            .find(|e| e.merchant_uid == req.merchant_uid && (e.paid || e.visible_at > now))
            .map(|e| (e.imp_uid.clone(), e.paid, e.visible_at));
        if let Some((imp_uid, paid, visible_at)) = earlier {
            let had = if visible_at > now { "was still charging" } else { "had paid" };
            let what = if paid { "paid" } else { "declined" };
            s.repeats.push(format!(
                "`again` for {} at gateway time {now}: the gateway {had} it ({imp_uid}, {what}, visible at {visible_at})",
                req.merchant_uid
            ));
            if paid && visible_at <= now {
                // i'mport refuses a merchant_uid it has paid; one it is still charging, it charges again.
                return Some((ChargeOutcome::Rejected { code: 1, message: "already paid".into() }, step.crash));
            }
        }
        s.next += 1;
        let imp_uid = format!("imp_{:012}", s.next);
        if let Some(paid) = charged(step.what) {
            s.ledger.push(Entry {
                imp_uid: imp_uid.clone(),
                merchant_uid: req.merchant_uid.clone(),
                customer_uid: req.customer_uid.clone(),
                paid,
                visible_at: now + step.late,
            });
        }
        let outcome = match step.what {
            Script::Paid => ChargeOutcome::Paid { imp_uid },
            Script::Declined => ChargeOutcome::Declined { imp_uid: Some(imp_uid), reason: "잔액부족".into() },
            Script::Rejected => {
                ChargeOutcome::Rejected { code: -1, message: "등록되지 않은 구매자입니다.".into() }
            }
            Script::Transient => ChargeOutcome::Transient("HTTP 503".into()),
            Script::UnknownPaid | Script::UnknownDeclined => ChargeOutcome::Unknown("connection reset".into()),
            Script::UnknownNothing => ChargeOutcome::Unknown("no answer within 30s".into()),
        };
        Some((outcome, step.crash))
    }
}

impl Gateway for Fake {
    /// The config's default (30 s): the quiet period (a minute) is never longer than the first backoff.
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(TIMEOUT as u64)
    }

    async fn authenticate(&self) -> billd::gateway::Auth {
        billd::gateway::Auth::Accepted
    }

    async fn charge(&self, req: &ChargeRequest, go: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
        if !go.await {
            return None;
        }
        let Some((outcome, crash)) = self.arrive(req) else { return std::future::pending().await };
        let Some(crash) = crash else { return Some(outcome) };
        self.died.notify_one();
        self.cut.notified().await;
        match crash {
            Crash::AfterAnswer => Some(outcome),
            Crash::BeforeSend | Crash::AfterRecord => std::future::pending().await,
        }
    }

    async fn refund(
        &self,
        _: &billd::gateway::RefundRequest,
        _: impl Future<Output = bool> + Send,
    ) -> Option<billd::gateway::RefundOutcome> {
        unreachable!("this test makes no refunds")
    }
    async fn refunds(&self, _: &str, _: &str) -> billd::gateway::RefundsLookup {
        unreachable!("this test makes no refunds")
    }
    async fn payment(&self, _: &str) -> Lookup {
        unreachable!("this model posts no notifications")
    }
    async fn find(&self, merchant_uid: &str, status: &str) -> Lookup {
        if status == "cancelled" {
            // The model refunds nothing: no payment is ever cancelled.
            return Lookup::NotFound;
        }
        let found = {
            let s = self.state.lock().unwrap();
            let want_paid = status == "paid";
            s.died.is_none().then(|| {
                s.ledger
                    .iter()
                    .rev()
                    .find(|e| e.merchant_uid == merchant_uid && e.paid == want_paid && e.visible_at <= s.now)
                    .map(|e| Payment {
                        imp_uid: e.imp_uid.clone(),
                        merchant_uid: e.merchant_uid.clone(),
                        amount: 9900,
                        currency: Some("KRW".into()),
                        customer_uid: Some(e.customer_uid.clone()),
                        status: status.to_string(),
                        fail_reason: (!e.paid).then(|| "잔액부족".to_string()),
                    })
            })
        };
        match found {
            // billd is dead: the lookup never returns.
            None => std::future::pending().await,
            Some(Some(p)) => Lookup::Found(p),
            Some(None) => Lookup::NotFound,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Cancel,
    Suspend,
    Skip,
}

/// The open period's attempt whose outcome is not settled.
#[derive(Clone, Debug, PartialEq)]
struct Unresolved {
    /// Its unresolved tries so far (`attempts.tries`).
    tries: u32,
    /// When it is looked up again (`None`: a first send with no outcome recorded).
    check_at: Option<i64>,
    /// Resends the gateway refused while it had no record of the attempt.
    refusals: u32,
    /// Its intent is committed and no outcome recorded (`pending`): a send under way, or one a process that died
    /// made (or was about to make).
    pending: bool,
}

impl Unresolved {
    /// A new attempt whose intent is committed.
    fn intent() -> Unresolved {
        Unresolved { tries: 0, check_at: None, refusals: 0, pending: true }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Open {
    period: u64,
    declines: u32,
    next_attempt_at: Option<i64>,
    unresolved: Option<Unresolved>,
    known_imp_uids: HashSet<String>,
}

/// The reference model of one subscription, written from the README's rules.
#[derive(Clone, Debug)]
struct Model {
    id: String,
    status: &'static str,
    next_period: u64,
    open: Option<Open>,
    closed: BTreeMap<u64, &'static str>,
    retry_after: Vec<i64>,
    /// `billing.timezone` and `charge_time`: where retries of whole days land.
    clock: (Tz, NaiveTime),
    action: Action,
    script: VecDeque<Step>,
}

/// One model pass of one subscription: what it sees and what it leaves.
struct Pass<'a> {
    now: i64,
    /// The gateway's clock (real time): what a lookup can see.
    real: i64,
    /// This subscription's payments at the gateway.
    ledger: &'a mut Vec<Entry>,
    next: &'a mut u64,
    /// Charges that reached the gateway.
    calls: Vec<String>,
    /// In a pass billd died in: how many script steps this subscription's calls took before it died.
    budget: Option<usize>,
    /// The states this subscription's rows went through since its last call (the first: its state at that call). If
    /// billd dies, the database holds one of them.
    durable: Vec<Model>,
}

/// Why a model pass ended early.
#[derive(Clone, Debug, PartialEq)]
enum Died {
    /// billd died at this subscription's scripted call for this merchant_uid.
    Here(String, Crash),
    /// It died elsewhere, after every call the gateway saw from this subscription.
    Elsewhere,
}

impl Model {
    fn muid(&self, period: u64) -> String {
        format!("billd-{}-{period}", self.id)
    }

    /// The billing key: subscription `sN` charges customer `cN`.
    fn customer(&self) -> String {
        self.id.replacen('s', "c", 1)
    }

    fn bills(&self) -> bool {
        matches!(self.status, "active" | "past_due")
    }

    /// A commit that changed this subscription's rows.
    fn commit(&self, p: &mut Pass) {
        p.durable.push(self.clone());
    }

    /// The open period's `again` call (its intent committed): what the gateway does with it (mirrors the fake,
    /// from the model's own copy of the script).
    fn call(&mut self, p: &mut Pass) -> Result<Script, Died> {
        if let Some(left) = p.budget.as_mut() {
            if *left == 0 {
                return Err(Died::Elsewhere);
            }
            *left -= 1;
        }
        let step = self.script.pop_front().unwrap_or(PLAIN);
        let m = self.muid(self.open.as_ref().unwrap().period);
        // From here until an outcome is recorded, the database holds the intent.
        p.durable = vec![self.clone()];
        if step.crash == Some(Crash::BeforeSend) {
            return Err(Died::Here(m, Crash::BeforeSend));
        }
        p.calls.push(m.clone());
        *p.next += 1;
        if let Some(paid) = charged(step.what) {
            let imp_uid = format!("model_{}", p.next);
            p.ledger.push(Entry {
                imp_uid,
                merchant_uid: m.clone(),
                customer_uid: self.customer(),
                paid,
                visible_at: p.real + step.late,
            });
        }
        match step.crash {
            Some(crash) => Err(Died::Here(m, crash)),
            None => Ok(step.what),
        }
    }

    fn paid(&mut self, period: u64) {
        self.open = None;
        self.closed.insert(period, "paid");
        if self.status == "past_due" {
            self.status = "active";
        }
    }

    fn exhausted(&mut self, period: u64) {
        self.open = None;
        self.closed.insert(period, "given_up");
        self.status = match self.action {
            Action::Cancel => "canceled",
            Action::Suspend => "suspended",
            Action::Skip => "active",
        };
    }

    fn declined(&mut self, now: i64, imp_uid: String) {
        let open = self.open.as_mut().unwrap();
        open.declines += 1;
        open.unresolved = None;
        open.known_imp_uids.insert(imp_uid);
        let n = open.declines as usize;
        if n <= self.retry_after.len() {
            open.next_attempt_at = Some(model_retry_at(self.clock, now, self.retry_after[n - 1]));
            if self.status == "active" {
                self.status = "past_due";
            }
        } else {
            let p = open.period;
            self.exhausted(p);
        }
    }

    /// Sends the open period's attempt, whose intent is committed, and records the outcome (`tries`: the attempt's
    /// unresolved tries so far; `resend`: the gateway had no record of an earlier send of it, which may still be in
    /// progress).
    fn send(&mut self, p: &mut Pass, tries: u32, refusals: u32, resend: bool) -> Result<(), Died> {
        let what = self.call(p)?;
        let period = self.open.as_ref().unwrap().period;
        match what {
            Script::Paid => self.paid(period),
            Script::Declined => {
                let imp = p.ledger.last().unwrap().imp_uid.clone();
                self.declined(p.now, imp)
            }
            // A refused resend is final only after two refusals of resends (RESEND_REFUSALS_TOLERATED = 2),
            // however many other unresolved tries came between.
            Script::Rejected if !(resend && refusals < 2) => self.exhausted(period),
            Script::Rejected
            | Script::Transient
            | Script::UnknownPaid
            | Script::UnknownDeclined
            | Script::UnknownNothing => {
                let open = self.open.as_mut().unwrap();
                open.next_attempt_at = None;
                let refusals = refusals + u32::from(resend && what == Script::Rejected);
                // The backoff, and never sooner than the quiet period.
                let check_at = (p.now + backoff(tries + 1)).max(p.now + QUIET);
                open.unresolved =
                    Some(Unresolved { tries: tries + 1, check_at: Some(check_at), refusals, pending: false });
            }
        }
        self.commit(p);
        Ok(())
    }

    /// One pass at `p.now` (a `billd tick`, or a pass of `billd run`): reconcile, then open and charge what is
    /// due, round after round. `Err` if billd died in it.
    fn pass(&mut self, p: &mut Pass, due_at: &dyn Fn(u64) -> i64) -> Result<(), Died> {
        p.durable = vec![self.clone()];
        // 1. An unresolved attempt is settled by lookup only: once its check time has come, or at once if a process
        //    that died left it pending.
        if let Some(open) = self.open.clone()
            && let Some(u) = open.unresolved.clone()
            && (u.pending || u.check_at.is_some_and(|t| t <= p.now))
        {
            let m = self.muid(open.period);
            let (paid, new_decline) = {
                let seen: Vec<&Entry> =
                    p.ledger.iter().filter(|e| e.merchant_uid == m && e.visible_at <= p.real).collect();
                let latest_failed = seen.iter().rev().find(|e| !e.paid).map(|e| e.imp_uid.clone());
                (seen.iter().any(|e| e.paid), latest_failed.filter(|i| !open.known_imp_uids.contains(i)))
            };
            if paid {
                self.paid(open.period);
                self.commit(p);
            } else if let Some(imp) = new_decline {
                self.declined(p.now, imp);
                self.commit(p);
            } else if u.pending {
                // Its request may still be in progress at the gateway: neither resent nor given up now, looked up
                // again after the quiet period.
                self.open.as_mut().unwrap().unresolved =
                    Some(Unresolved { tries: u.tries + 1, check_at: Some(p.now + QUIET), pending: false, ..u });
                self.commit(p);
            } else {
                // The gateway never saw it: the same merchant_uid again, the resend committed first (a resend is
                // one more unresolved try).
                self.open.as_mut().unwrap().unresolved.as_mut().unwrap().pending = true;
                self.commit(p);
                self.send(p, u.tries, u.refusals, true)?;
            }
        }
        // 2. Open due periods and charge them, oldest first, until nothing more is due.
        loop {
            if !self.bills() {
                return Ok(());
            }
            match &mut self.open {
                None if due_at(self.next_period) <= p.now => {
                    self.open = Some(Open {
                        period: self.next_period,
                        declines: 0,
                        next_attempt_at: None,
                        unresolved: Some(Unresolved::intent()),
                        known_imp_uids: HashSet::new(),
                    });
                    self.next_period += 1;
                }
                Some(o) if o.unresolved.is_none() && o.next_attempt_at.is_some_and(|t| t <= p.now) => {
                    o.next_attempt_at = None;
                    o.unresolved = Some(Unresolved::intent());
                }
                _ => return Ok(()),
            }
            // The intent (a new period's first attempt, or a retry) is committed before its call.
            self.commit(p);
            self.send(p, 0, 0, false)?;
        }
    }

    /// This state as the database shows it.
    fn view(&self) -> DbView {
        let open = self.open.as_ref();
        (
            self.status.to_string(),
            self.next_period,
            open.map(|o| (o.period, o.declines, o.next_attempt_at)),
            open.and_then(|o| o.unresolved.as_ref())
                .map(|u| ((if u.pending { "pending" } else { "unknown" }).to_string(), u.tries, u.check_at)),
            self.closed.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        )
    }

    /// The earliest instant at which this subscription has something to do: an unresolved attempt to look up (at
    /// once if a process that died left it pending), a retry, or a due period a pass that died did not open.
    fn next_action(&self, now: i64, due_at: impl Fn(u64) -> i64) -> Option<i64> {
        match &self.open {
            Some(Open { unresolved: Some(u), .. }) => Some(if u.pending { now } else { u.check_at.unwrap() }),
            Some(o) if self.bills() => o.next_attempt_at,
            None if self.bills() => Some(due_at(self.next_period)).filter(|t| *t <= now),
            _ => None,
        }
    }
}

/// The model's state `m` if the database holds it: the same rows, but for an unresolved attempt's check, which the
/// engine times from its moment in the pass (the pass's instant plus the real seconds since the pass began,
/// normally none here), so up to a few seconds later than the model; the model follows the engine's from there.
fn held(db: &DbView, m: &Model) -> Option<Model> {
    let mut m = m.clone();
    if let Some((_, _, Some(got))) = &db.3
        && let Some(u) = m.open.as_mut().and_then(|o| o.unresolved.as_mut())
        && let Some(want) = u.check_at
        && (want..=want + 5).contains(got)
    {
        u.check_at = Some(*got);
    }
    (m.view() == *db).then_some(m)
}

/// The README's backoff for unresolved attempts: 1, 2, 4, … minutes after the n-th try, at most an hour.
fn backoff(tries: u32) -> i64 {
    (60i64 << tries.saturating_sub(1).min(10)).min(3600)
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The database's view of one subscription, in the model's terms: (status, next period, open period (period,
/// declines, next attempt), unresolved attempt (status, tries, check_at), closed periods).
type DbView = (String, u64, Option<(u64, u32, Option<i64>)>, Option<(String, u32, Option<i64>)>, BTreeMap<u64, String>);

/// The book a case runs on, read by [`db_view`].
enum Book {
    Sqlite(rusqlite::Connection),
    Postgres(book::Postgres),
}

impl Book {
    fn rows(&self, sql: &str) -> Vec<Row> {
        match self {
            Book::Sqlite(db) => book::sqlite_query(db, sql),
            Book::Postgres(pg) => pg.query(sql),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

fn db_view(db: &Book, id: &str) -> DbView {
    let id = lit(id);
    let int = |v: &Option<String>| v.as_deref().expect("not NULL").parse::<i64>().unwrap();
    let time = |v: &Option<String>| v.as_deref().map(|t| t.parse::<i64>().unwrap());
    let sub = db.rows(&format!("SELECT status, next_period FROM subscriptions WHERE id = {id}"));
    let (status, next_period) = (sub[0][0].clone().unwrap(), int(&sub[0][1]));
    let open = db
        .rows(&format!(
            "SELECT period, declines, next_attempt_at FROM periods WHERE subscription_id = {id} AND state = 'open'"
        ))
        .first()
        .map(|r| (int(&r[0]) as u64, int(&r[1]) as u32, time(&r[2])));
    let unresolved = db
        .rows(&format!(
            "SELECT status, tries, check_at FROM attempts WHERE subscription_id = {id} AND status IN ('pending', 'unknown')"
        ))
        .first()
        .map(|r| (r[0].clone().unwrap(), int(&r[1]) as u32, time(&r[2])));
    let closed = db
        .rows(&format!(
            "SELECT period, state FROM periods WHERE subscription_id = {id} AND state != 'open' ORDER BY period"
        ))
        .into_iter()
        .map(|r| (int(&r[0]) as u64, r[1].clone().unwrap()))
        .collect();
    (status, next_period as u64, open, unresolved, closed)
}

fn jump() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => Just(-3600i64),          // the wall clock goes back an hour
        1 => Just(0i64),              // the same instant again
        2 => Just(60i64),
        2 => Just(300i64),
        2 => Just(3600i64),
        2 => Just(6 * 3600i64),
        4 => Just(86_400i64),         // forward a day
        2 => Just(3 * 86_400i64),
        1 => Just(10 * 86_400i64),
        1 => Just(35 * 86_400i64),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    timezone: Tz,
    charge_time: NaiveTime,
    interval: &'static str,
    retry_after: Vec<&'static str>,
    action: Action,
    /// One script and one start date per subscription (more subscriptions than the engine's concurrency of 2).
    scripts: Vec<Vec<Step>>,
    starts: Vec<NaiveDate>,
    jumps: Vec<i64>,
}

/// Start dates that exercise the calendar: month ends, Feb 29, a DST transition day, and any day.
fn start_date() -> impl Strategy<Value = NaiveDate> {
    prop_oneof![
        2 => prop_oneof![
            Just(NaiveDate::from_ymd_opt(2025, 1, 31).unwrap()),
            Just(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Just(NaiveDate::from_ymd_opt(2024, 1, 30).unwrap()),
            Just(NaiveDate::from_ymd_opt(2025, 3, 30).unwrap()),
            Just(NaiveDate::from_ymd_opt(2025, 3, 9).unwrap()),
            Just(NaiveDate::from_ymd_opt(2025, 10, 5).unwrap()),
            Just(NaiveDate::from_ymd_opt(2025, 4, 6).unwrap()),
        ],
        1 => any_date(2024, 2025),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dst_zone(), charge_time()),
        prop_oneof![
            Just("1 day"),
            Just("3 days"),
            Just("1 week"),
            Just("2 weeks"),
            Just("1 month"),
            Just("3 months"),
            Just("1 year")
        ],
        proptest::collection::vec(prop_oneof![Just("1h"), Just("1d"), Just("2d"), Just("4d")], 0..4),
        prop_oneof![Just(Action::Cancel), Just(Action::Suspend), Just(Action::Skip)],
        proptest::collection::vec((proptest::collection::vec(step(), 0..24), start_date()), 2..6),
        proptest::collection::vec(jump(), 4..24),
    )
        .prop_map(|((timezone, charge_time), interval, retry_after, action, subs, jumps)| Case {
            timezone,
            charge_time,
            interval,
            retry_after,
            action,
            scripts: subs.iter().map(|(s, _)| s.clone()).collect(),
            starts: subs.iter().map(|(_, d)| *d).collect(),
            jumps,
        })
}

fn secs(d: &str) -> i64 {
    billd::config::duration::parse(d).unwrap().as_secs() as i64
}

/// billd's real clocks in the model: its wall clock is billd's clock of the pass (which the case jumps back and
/// forth, as a wall clock set by hand), and its boot clock (which wall-clock steps do not move) the gateway's real
/// time, which only moves forward. Both are set before each pass.
#[derive(Clone, Default)]
struct ModelClock {
    wall: Arc<std::sync::atomic::AtomicI64>,
    boot: Arc<std::sync::atomic::AtomicI64>,
}

impl ModelClock {
    fn set(&self, wall: i64, boot: i64) {
        self.wall.store(wall, std::sync::atomic::Ordering::SeqCst);
        self.boot.store(boot, std::sync::atomic::Ordering::SeqCst);
    }
}

impl billd::realtime::RealClock for ModelClock {
    fn now(&self) -> billd::billing::quiet::RealInstant {
        let ms = |a: &std::sync::atomic::AtomicI64| a.load(std::sync::atomic::Ordering::SeqCst) * 1000;
        billd::billing::quiet::RealInstant {
            wall_ms: ms(&self.wall),
            boot: Some(("model-boot".into(), ms(&self.boot))),
        }
    }
}

/// One billd process: its own runtime, and an engine on a new `Store` of the database file.
struct Process {
    // Declared first, so dropped first: its shutdown ends every task the process spawned.
    rt: tokio::runtime::Runtime,
    engine: Engine<Store, Fake>,
    fake: Fake,
}

impl Process {
    fn start(cfg: &Config, gateway: &Fake, clock: &ModelClock) -> Process {
        let fake = gateway.for_process();
        let store = match &cfg.billing.database {
            billd::config::Database::File(path) => sqlite::open(path),
            billd::config::Database::Postgres(target) => billd::store::postgres::open(target),
        }
        .expect("the database opens");
        let engine = Engine::new(store, fake.clone(), cfg.clone()).with_real_clock(clock.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Process { rt, engine, fake }
    }

    /// One pass at `at`; `false` if billd died in it at a scripted call. The dying process is then cut off from the
    /// database file (its `Store` becomes one on `scratch`, so nothing it does from then on reaches the file) and
    /// must be dropped: its runtime's shutdown ends every task it spawned (`tokio::spawn`ed senders, writer and
    /// lookups; a `spawn_blocking` database call already running finishes, on the scratch file once cut). Between
    /// the call it died at and the cut, other tasks may still commit what the gateway had answered them before
    /// (nothing more reaches the gateway): commits a real process could have made before dying, which is why the
    /// model accepts any state a subscription's rows went through since its last call.
    fn pass(&self, at: DateTime<Utc>, scratch: &std::path::Path) -> bool {
        let died = self.rt.block_on(async {
            tokio::select! {
                biased;
                _ = self.fake.died.notified() => true,
                r = self.engine.pass(at) => {
                    r.expect("the pass runs");
                    false
                }
            }
        });
        if died {
            let scratch = scratch.to_path_buf();
            self.rt
                .block_on(self.engine.db(move |s| {
                    *s = sqlite::open(&scratch)?;
                    Ok(())
                }))
                .expect("the scratch database opens");
            // The call it died at goes on (an answer comes back, or nothing ever does); what is left of the process
            // runs a little against the scratch file before it is dropped.
            self.fake.cut.notify_one();
            self.rt.block_on(async {
                for _ in 0..64 {
                    tokio::task::yield_now().await;
                }
            });
        }
        !died
    }
}

/// One case, on SQLite (a file in a temp folder) or on the PostgreSQL book at `postgres`.
fn run_case(case: &Case, postgres: Option<&str>) -> Result<(), TestCaseError> {
    // On tmpfs when there is one: the model runs thousands of fsynced commits.
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let action = match case.action {
        Action::Cancel => "cancel",
        Action::Suspend => "suspend",
        Action::Skip => "skip",
    };
    let retry: Vec<String> = case.retry_after.iter().map(|r| format!("\"{r}\"")).collect();
    let database = postgres.map(|url| format!("database = \"{url}\"\n")).unwrap_or_default();
    let mut text = format!(
        "[billing]\ntimezone = \"{}\"\ncharge_time = \"{}\"\n{database}\n[gateway]\nbase_url = \"http://127.0.0.1:9\"\n\
         imp_key = \"k\"\nimp_secret = \"s\"\nconcurrency = 2\n\n[dunning]\nretry_after = [{}]\non_exhausted = \"{action}\"\n\n\
         [[plans]]\nid = \"p\"\nname = \"Plan\"\namount = 9900\ninterval = \"{}\"\n",
        case.timezone.name(),
        case.charge_time.format("%H:%M"),
        retry.join(", "),
        case.interval
    );
    for (i, start) in case.starts.iter().enumerate() {
        text += &format!(
            "\n[[subscriptions]]\nid = \"s{i}\"\ncustomer_uid = \"c{i}\"\nplan = \"p\"\nstart = \"{start}\"\n"
        );
    }
    let cfg: Config = billd::config::parse_str(&text, &dir.path().join("schedules.toml")).expect("valid config");
    let interval: Interval = case.interval.parse().unwrap();
    // Due instants from the test's own calendar and clock (model_nth, model_due_at), never billd's.
    let time = NaiveTime::from_hms_opt(case.charge_time.hour(), case.charge_time.minute(), 0).unwrap();
    let due_of = |start: NaiveDate, k: u64| ts(model_due_at(case.timezone, model_nth(interval, start, k), time));
    let fake = Fake::default();
    let mut models = Vec::new();
    for (i, s) in case.scripts.iter().enumerate() {
        fake.state.lock().unwrap().scripts.insert(format!("c{i}"), s.iter().copied().collect());
        models.push(Model {
            id: format!("s{i}"),
            status: "active",
            next_period: 0,
            open: None,
            closed: BTreeMap::new(),
            retry_after: case.retry_after.iter().map(|r| secs(r)).collect(),
            clock: (case.timezone, time),
            action: case.action,
            script: s.iter().copied().collect(),
        });
    }
    // A process that dies is cut off from the database file by pointing its store at this one.
    let scratch = dir.path().join("dead-process.sqlite3");
    let clock = ModelClock::default();
    let mut process = Process::start(&cfg, &fake, &clock);
    let db = match &cfg.billing.database {
        billd::config::Database::File(path) => Book::Sqlite(rusqlite::Connection::open(path).unwrap()),
        billd::config::Database::Postgres(_) => Book::Postgres(book::Postgres::new(postgres.unwrap())),
    };
    let mut model_ledgers: Vec<Vec<Entry>> = vec![Vec::new(); models.len()];
    let mut model_next = 0u64;
    // billd's clock (it jumps back and forth), and the gateway's real time, which only moves forward: a jump back
    // is the wall clock being set back, not time running backwards.
    let mut now: i64 = case.starts.iter().map(|d| due_of(*d, 0)).min().unwrap();
    let mut real = now;
    let mut history = Vec::new();
    let mut jumps = std::iter::once(0).chain(case.jumps.iter().copied());
    let mut settling = 0;
    loop {
        // The scripted passes, then passes at each next thing to do until nothing is left (every due period paid
        // or given up): at its check, its retry, or at once after billd died.
        let j = match jumps.next() {
            Some(j) => j,
            None => {
                let next = models
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| m.next_action(now, |k| due_of(case.starts[i], k)))
                    .min();
                let Some(next) = next else { break };
                settling += 1;
                prop_assert!(settling <= 400, "still not settled after 400 passes (passes at {:?})", history);
                (next - now).max(0)
            }
        };
        now += j;
        real += j.max(0);
        clock.set(now, real);
        let calls_before = {
            let mut s = fake.state.lock().unwrap();
            s.now = real;
            s.taken.clear();
            s.charges.len()
        };
        let finished = process.pass(DateTime::from_timestamp(now, 0).unwrap(), &scratch);
        let (calls, died_at, taken, repeats, ledger) = {
            let s = fake.state.lock().unwrap();
            (s.charges[calls_before..].to_vec(), s.died.clone(), s.taken.clone(), s.repeats.clone(), s.ledger.clone())
        };
        prop_assert_eq!(finished, died_at.is_none());
        let at = DateTime::from_timestamp(now, 0).unwrap();
        history.push(match &died_at {
            None => at.to_string(),
            Some((_, m, crash)) => format!("{at} (billd died: {crash:?} at {m})"),
        });
        // The gateway never got a request for a merchant_uid it had paid or was still charging, and never paid one
        // twice.
        prop_assert!(repeats.is_empty(), "{} (passes at {:?})", repeats.join("; "), history);
        let mut paid = HashSet::new();
        for e in ledger.iter().filter(|e| e.paid) {
            prop_assert!(paid.insert(e.merchant_uid.clone()), "two paid charges for {}", e.merchant_uid);
        }
        for (i, m) in models.iter_mut().enumerate() {
            let budget = died_at.as_ref().map(|_| taken.get(&m.customer()).copied().unwrap_or(0));
            let mut p = Pass {
                now,
                real,
                ledger: &mut model_ledgers[i],
                next: &mut model_next,
                calls: Vec::new(),
                budget,
                durable: Vec::new(),
            };
            let start = case.starts[i];
            let died = m.pass(&mut p, &|k| due_of(start, k)).err();
            let ctx = || format!("step {} at {at} (real {real}; passes at {history:?}), {}", history.len() - 1, m.id);
            // billd died where this subscription's script says, or elsewhere.
            let want_died = match &died {
                Some(Died::Here(muid, crash)) => Some((m.customer(), muid.clone(), *crash)),
                _ => None,
            };
            let got_died = died_at.clone().filter(|(c, _, _)| *c == m.customer());
            prop_assert_eq!(got_died, want_died, "where billd died: {}", ctx());
            let got_calls: Vec<String> =
                calls.iter().filter(|(c, _)| *c == m.customer()).map(|(_, muid)| muid.clone()).collect();
            prop_assert_eq!(&got_calls, &p.calls, "charges sent: {}", ctx());
            // Exactly the payments the model predicts, per period: paid or declined, and visible when.
            let payments = |l: &[Entry]| {
                let mut v: Vec<(String, bool, i64)> = l
                    .iter()
                    .filter(|e| e.customer_uid == m.customer())
                    .map(|e| (e.merchant_uid.clone(), e.paid, e.visible_at))
                    .collect();
                v.sort();
                v
            };
            prop_assert_eq!(payments(&ledger), payments(p.ledger), "payments at the gateway: {}", ctx());
            // The database holds the model's state; if billd died, one of the states this subscription's rows went
            // through since its last call (what the dead process committed before it died).
            let candidates = if died_at.is_some() { std::mem::take(&mut p.durable) } else { vec![m.clone()] };
            let view = db_view(&db, &m.id);
            let Some(state) = candidates.iter().find_map(|c| held(&view, c)) else {
                let want: Vec<DbView> = candidates.iter().map(Model::view).collect();
                return Err(TestCaseError::fail(format!(
                    "the database holds {view:?}, the model one of {want:?}: {}",
                    ctx()
                )));
            };
            *m = state;
        }
        if !finished {
            // Restarted as a new process would be: a new runtime, store and engine on the same file.
            drop(process);
            process = Process::start(&cfg, &fake, &clock);
        }
    }
    // Nothing lost: every period due by the last pass is closed, paid once at the gateway or given up by the dunning
    // rules, or its subscription stopped billing before it (on_exhausted); nothing is unresolved; nothing was
    // charged for a period that never opened.
    let ledger = fake.state.lock().unwrap().ledger.clone();
    for (i, m) in models.iter().enumerate() {
        let (status, next_period, open, unresolved, closed) = db_view(&db, &m.id);
        let ctx = || format!("{} after passes at {history:?}", m.id);
        prop_assert_eq!(open, None, "an open period left: {}", ctx());
        prop_assert_eq!(unresolved, None, "an unresolved attempt left: {}", ctx());
        let due = due_of(case.starts[i], next_period);
        prop_assert!(
            !matches!(status.as_str(), "active" | "past_due") || due > now,
            "period {} fell due at {} and was never opened: {}",
            next_period,
            due,
            ctx()
        );
        for k in 0..next_period {
            let state = closed.get(&k).map(String::as_str);
            prop_assert!(matches!(state, Some("paid" | "given_up")), "period {} is {:?}: {}", k, state, ctx());
            let paid = ledger.iter().filter(|e| e.paid && e.merchant_uid == m.muid(k)).count();
            prop_assert_eq!(paid, usize::from(state == Some("paid")), "paid charges for period {}: {}", k, ctx());
        }
        for e in ledger.iter().filter(|e| e.customer_uid == m.customer()) {
            let k: u64 = e.merchant_uid.rsplit('-').next().unwrap().parse().unwrap();
            prop_assert!(k < next_period, "{} charged, but its period never opened: {}", e.merchant_uid, ctx());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random outcomes, clock jumps, restarts at random points of the protocol and a gateway that records charges
    /// late: the engine does exactly what the reference model says, pass by pass (which charges it sends, dunning
    /// retries and their times, statuses, unresolved checks and their backoff; after a restart, what the dead
    /// process had committed), the gateway holds exactly the payments the model predicts and never gets a request
    /// for a merchant_uid it has paid or is still charging, transient or unknown outcomes never use up a retry, and
    /// once the passes run past every check, every due period is paid once or given up by the dunning rules.
    #[test]
    fn dunning_state_machine_matches_the_model(case in case()) {
        run_case(&case, None)?;
    }
}

proptest! {
    // Fewer cases on PostgreSQL: each is a fresh database, and every commit a round trip.
    #![proptest_config(ProptestConfig { cases: cases(32), failure_persistence: None, ..ProptestConfig::default() })]

    /// The same model, on a PostgreSQL book (a fresh database per case; skipped, saying so, without PostgreSQL).
    #[test]
    fn dunning_state_machine_matches_the_model_on_postgres(case in case()) {
        let Some(db) = pg::database() else { return Ok(()) };
        run_case(&case, Some(db.url()))?;
    }
}

/// Each point billd can die at (intent committed, not sent; the gateway took the charge, no answer; answered, not
/// recorded), for a charge that pays, one that is declined and a request that charged nothing, recorded by the
/// gateway at once or only after twice the timeout (a charge still in progress when billd restarts): the restart
/// right after looks it up and finds nothing it can trust, so it sends nothing and looks again after the quiet
/// period, which settles it; every period ends paid once or declined as the dunning rules say.
#[test]
fn a_restart_at_each_protocol_point_waits_for_the_gateway_and_settles_by_lookup() {
    restart_at_each_protocol_point(|| None);
}

#[test]
fn a_restart_at_each_protocol_point_waits_for_the_gateway_and_settles_by_lookup_on_postgres() {
    if pg::database().is_none() {
        return;
    }
    restart_at_each_protocol_point(pg::database);
}

/// Each case on the book `book()` gives (a fresh PostgreSQL database, or `None`: SQLite).
fn restart_at_each_protocol_point(book: impl Fn() -> Option<pg::PgDb>) {
    let mut failures = Vec::new();
    for crash in [Crash::BeforeSend, Crash::AfterRecord, Crash::AfterAnswer] {
        for late in [0, QUIET] {
            for what in [Script::Paid, Script::Declined, Script::UnknownNothing] {
                let case = Case {
                    timezone: chrono_tz::Asia::Seoul,
                    charge_time: NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
                    interval: "1 month",
                    retry_after: vec!["1d"],
                    action: Action::Cancel,
                    scripts: vec![vec![Step { what, late, crash: Some(crash) }], vec![]],
                    starts: vec![NaiveDate::from_ymd_opt(2025, 1, 31).unwrap(); 2],
                    // Restarted at once, then passes half a quiet period apart, then a day later.
                    jumps: vec![0, QUIET / 2, QUIET / 2, 86_400],
                };
                let db = book();
                if let Err(e) = run_case(&case, db.as_ref().map(pg::PgDb::url)) {
                    failures.push(format!(
                        "billd died {crash:?} of a charge scripted {what:?}, recorded {late} s late: {e}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of 18 failed:\n{}", failures.len(), failures.join("\n"));
}
