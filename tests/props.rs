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
//!   five subscriptions against a concurrency of two.
//!
//! Set `PROPTEST_CASES` for more cases.

use billd::billing::calendar::{Calendar, ChargeClock, Interval, Unit};
use billd::config::Config;
use billd::engine::Engine;
use billd::gateway::{ChargeOutcome, ChargeRequest, Gateway, Lookup, Payment};
use billd::store::sqlite::SqliteStore as Store;
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
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
// The dunning state machine: real engine + store + policy, scripted gateway, reference model.

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

#[derive(Clone, Debug)]
struct Entry {
    imp_uid: String,
    merchant_uid: String,
    customer_uid: String,
    paid: bool,
}

#[derive(Default)]
struct FakeState {
    scripts: HashMap<String, VecDeque<Script>>,
    ledger: Vec<Entry>,
    /// Every `again` call: (customer_uid, merchant_uid).
    charges: Vec<(String, String)>,
    /// `again` calls for a merchant_uid that was already paid (must never happen).
    repaid: usize,
    next: u64,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Gateway for Fake {
    /// The config's default (30 s): the quiet period (a minute) is never longer than the first backoff.
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }

    async fn authenticate(&self) -> billd::gateway::Auth {
        billd::gateway::Auth::Accepted
    }

    async fn charge(&self, req: &ChargeRequest) -> ChargeOutcome {
        let mut s = self.0.lock().unwrap();
        s.charges.push((req.customer_uid.clone(), req.merchant_uid.clone()));
        if s.ledger.iter().any(|e| e.paid && e.merchant_uid == req.merchant_uid) {
            s.repaid += 1;
            return ChargeOutcome::Rejected { code: 1, message: "already paid".into() };
        }
        let what = s.scripts.get_mut(&req.customer_uid).and_then(VecDeque::pop_front).unwrap_or(Script::Paid);
        s.next += 1;
        let imp_uid = format!("imp_{:012}", s.next);
        let mut record = |paid: bool| {
            s.ledger.push(Entry {
                imp_uid: imp_uid.clone(),
                merchant_uid: req.merchant_uid.clone(),
                customer_uid: req.customer_uid.clone(),
                paid,
            })
        };
        match what {
            Script::Paid => {
                record(true);
                ChargeOutcome::Paid { imp_uid }
            }
            Script::Declined => {
                record(false);
                ChargeOutcome::Declined { imp_uid: Some(imp_uid), reason: "잔액부족".into() }
            }
            Script::Rejected => {
                ChargeOutcome::Rejected { code: -1, message: "등록되지 않은 구매자입니다.".into() }
            }
            Script::Transient => ChargeOutcome::Transient("HTTP 503".into()),
            Script::UnknownPaid => {
                record(true);
                ChargeOutcome::Unknown("connection reset".into())
            }
            Script::UnknownDeclined => {
                record(false);
                ChargeOutcome::Unknown("connection reset".into())
            }
            Script::UnknownNothing => ChargeOutcome::Unknown("no answer within 30s".into()),
        }
    }

    async fn find(&self, merchant_uid: &str, status: &str) -> Lookup {
        let s = self.0.lock().unwrap();
        let want_paid = status == "paid";
        match s.ledger.iter().rev().find(|e| e.merchant_uid == merchant_uid && e.paid == want_paid) {
            Some(e) => Lookup::Found(Payment {
                imp_uid: e.imp_uid.clone(),
                merchant_uid: e.merchant_uid.clone(),
                amount: 9900.0,
                currency: Some("KRW".into()),
                customer_uid: Some(e.customer_uid.clone()),
                status: status.to_string(),
                fail_reason: (!e.paid).then(|| "잔액부족".to_string()),
            }),
            None => Lookup::NotFound,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Cancel,
    Suspend,
    Skip,
}

#[derive(Clone, Debug, PartialEq)]
struct Unresolved {
    db_tries: u32,
    check_at: i64,
    /// Resends the gateway refused while it had no record of the attempt.
    refusals: u32,
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
    customer: String,
    status: &'static str,
    next_period: u64,
    open: Option<Open>,
    closed: BTreeMap<u64, &'static str>,
    retry_after: Vec<i64>,
    action: Action,
    script: VecDeque<Script>,
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

    /// What the gateway does with an `again` call (mirrors the fake, from the model's own script copy).
    fn call(&mut self, ledger: &mut Vec<Entry>, next: &mut u64, calls: &mut Vec<String>) -> Script {
        let open = self.open.as_ref().unwrap();
        let m = self.muid(open.period);
        calls.push(m.clone());
        let what = self.script.pop_front().unwrap_or(Script::Paid);
        *next += 1;
        let imp_uid = format!("model_{next}");
        match what {
            Script::Paid | Script::UnknownPaid => {
                ledger.push(Entry { imp_uid, merchant_uid: m, customer_uid: self.customer(), paid: true })
            }
            Script::Declined | Script::UnknownDeclined => {
                ledger.push(Entry { imp_uid, merchant_uid: m, customer_uid: self.customer(), paid: false })
            }
            _ => {}
        }
        what
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
        self.status = match (self.action, self.status) {
            (Action::Cancel, _) => "canceled",
            (Action::Suspend, _) => "suspended",
            (Action::Skip, _) => "active",
        };
    }

    fn declined(&mut self, now: i64, imp_uid: String) {
        let open = self.open.as_mut().unwrap();
        open.declines += 1;
        open.unresolved = None;
        open.known_imp_uids.insert(imp_uid);
        let n = open.declines as usize;
        if n <= self.retry_after.len() {
            open.next_attempt_at = Some(now + self.retry_after[n - 1]);
            if self.status == "active" {
                self.status = "past_due";
            }
        } else {
            let p = open.period;
            self.exhausted(p);
        }
    }

    /// Sends the open period's attempt (`a_tries`: the attempt's unresolved tries as the engine loaded them;
    /// `resend`: the gateway had no record of an earlier send of it, which may still be in progress).
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: i64,
        a_tries: u32,
        db_tries: u32,
        refusals: u32,
        resend: bool,
        ledger: &mut Vec<Entry>,
        next: &mut u64,
        calls: &mut Vec<String>,
    ) {
        let what = self.call(ledger, next, calls);
        let period = self.open.as_ref().unwrap().period;
        match what {
            Script::Paid => self.paid(period),
            Script::Declined => {
                let imp = ledger.last().unwrap().imp_uid.clone();
                self.declined(now, imp)
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
                open.unresolved =
                    Some(Unresolved { db_tries: db_tries + 1, check_at: now + backoff(a_tries + 1), refusals });
            }
        }
    }

    /// One `billd tick` at `now`: reconcile, then open and charge what is due, round after round.
    fn pass(&mut self, now: i64, due_at: &dyn Fn(u64) -> i64, ledger: &mut Vec<Entry>, next: &mut u64) -> Vec<String> {
        let mut calls = Vec::new();
        // 1. Unresolved attempts whose check time has come are resolved by lookup only.
        if let Some(open) = self.open.clone()
            && let Some(u) = open.unresolved.clone()
            && u.check_at <= now
        {
            let m = self.muid(open.period);
            let latest_failed = ledger.iter().rev().find(|e| e.merchant_uid == m && !e.paid).map(|e| e.imp_uid.clone());
            if ledger.iter().any(|e| e.merchant_uid == m && e.paid) {
                self.paid(open.period);
            } else if let Some(imp) = latest_failed.filter(|i| !open.known_imp_uids.contains(i)) {
                self.declined(now, imp);
            } else {
                // The gateway never saw it: the same merchant_uid again (a resend is one more unresolved try).
                self.send(now, u.db_tries, u.db_tries, u.refusals, true, ledger, next, &mut calls);
            }
        }
        // 2. Open due periods and charge them, oldest first, until nothing more is due.
        loop {
            let mut progress = false;
            if self.bills() && self.open.is_none() {
                let due = due_at(self.next_period);
                if due <= now {
                    self.open = Some(Open {
                        period: self.next_period,
                        declines: 0,
                        next_attempt_at: Some(due),
                        unresolved: None,
                        known_imp_uids: HashSet::new(),
                    });
                    self.next_period += 1;
                    progress = true;
                }
            }
            if self.bills()
                && let Some(open) = &self.open
                && open.unresolved.is_none()
                && open.next_attempt_at.is_some_and(|t| t <= now)
            {
                self.send(now, 0, 0, 0, false, ledger, next, &mut calls);
                progress = true;
            }
            if !progress {
                return calls;
            }
        }
    }
}

/// The README's backoff for unresolved attempts: 1, 2, 4, … minutes after the n-th try, at most an hour.
fn backoff(tries: u32) -> i64 {
    (60i64 << tries.saturating_sub(1).min(10)).min(3600)
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The database's view of one subscription, in the model's terms.
/// (status, next period, open period (period, declines, next attempt), unresolved (tries, check_at), paid periods).
type DbView = (String, u64, Option<(u64, u32, Option<i64>)>, Option<(u32, i64)>, BTreeMap<u64, String>);

fn db_view(db: &rusqlite::Connection, id: &str) -> DbView {
    let (status, next_period): (String, i64) = db
        .query_row("SELECT status, next_period FROM subscriptions WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let open = db
        .query_row(
            "SELECT period, declines, next_attempt_at FROM periods WHERE subscription_id = ?1 AND state = 'open'",
            [id],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u32, r.get(2)?)),
        )
        .ok();
    let unresolved = db
        .query_row(
            "SELECT tries, check_at FROM attempts WHERE subscription_id = ?1 AND status IN ('pending', 'unknown')",
            [id],
            |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?)),
        )
        .ok();
    let mut st = db
        .prepare("SELECT period, state FROM periods WHERE subscription_id = ?1 AND state != 'open' ORDER BY period")
        .unwrap();
    let closed =
        st.query_map([id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))).unwrap().map(Result::unwrap).collect();
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
    scripts: Vec<Vec<Script>>,
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
        proptest::collection::vec((proptest::collection::vec(script(), 0..24), start_date()), 2..6),
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

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    // On tmpfs when there is one: the model runs thousands of fsynced commits.
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let action = match case.action {
        Action::Cancel => "cancel",
        Action::Suspend => "suspend",
        Action::Skip => "skip",
    };
    let retry: Vec<String> = case.retry_after.iter().map(|r| format!("\"{r}\"")).collect();
    let mut text = format!(
        "[billing]\ntimezone = \"{}\"\ncharge_time = \"{}\"\n\n[gateway]\nbase_url = \"http://127.0.0.1:9\"\n\
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
    let store = Store::open(&cfg.billing.database).unwrap();
    let fake = Fake::default();
    let mut models = Vec::new();
    for (i, s) in case.scripts.iter().enumerate() {
        fake.0.lock().unwrap().scripts.insert(format!("c{i}"), s.iter().copied().collect());
        models.push(Model {
            id: format!("s{i}"),
            customer: format!("c{i}"),
            status: "active",
            next_period: 0,
            open: None,
            closed: BTreeMap::new(),
            retry_after: case.retry_after.iter().map(|r| secs(r)).collect(),
            action: case.action,
            script: s.iter().copied().collect(),
        });
    }
    let engine = Engine::new(store, fake.clone(), cfg.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = rusqlite::Connection::open(&cfg.billing.database).unwrap();
    let mut model_ledgers: Vec<Vec<Entry>> = vec![Vec::new(); models.len()];
    let mut model_next = 0u64;
    let mut now: i64 = case.starts.iter().map(|d| due_of(*d, 0)).min().unwrap();
    let mut history = Vec::new();
    for (step, j) in std::iter::once(&0).chain(case.jumps.iter()).enumerate() {
        now += j;
        history.push(now);
        let calls_before = fake.0.lock().unwrap().charges.len();
        rt.block_on(engine.pass(DateTime::from_timestamp(now, 0).unwrap())).expect("the pass runs");
        let calls: Vec<(String, String)> = fake.0.lock().unwrap().charges[calls_before..].to_vec();
        for (i, m) in models.iter_mut().enumerate() {
            let start = case.starts[i];
            let want_calls = m.pass(now, &|k| due_of(start, k), &mut model_ledgers[i], &mut model_next);
            let got_calls: Vec<String> =
                calls.iter().filter(|(c, _)| *c == m.customer).map(|(_, muid)| muid.clone()).collect();
            let ctx = format!(
                "step {step} at {} (passes at {history:?}), {}",
                DateTime::from_timestamp(now, 0).unwrap(),
                m.id
            );
            prop_assert_eq!(&got_calls, &want_calls, "charges sent: {}", ctx);
            let (status, next_period, open, unresolved, closed) = db_view(&db, &m.id);
            prop_assert_eq!(status.as_str(), m.status, "status: {}", ctx);
            prop_assert_eq!(next_period, m.next_period, "next period: {}", ctx);
            let want_open = m.open.as_ref().map(|o| (o.period, o.declines, o.next_attempt_at));
            prop_assert_eq!(open, want_open, "open period (period, declines, next attempt): {}", ctx);
            // The engine times an unresolved outcome from its moment in the pass (the pass's instant plus the real
            // seconds since the pass began, normally none here): its check may be a few seconds later than the
            // model's, and the model follows it from there.
            let want_unresolved = m.open.as_ref().and_then(|o| o.unresolved.as_ref()).map(|u| (u.db_tries, u.check_at));
            let late = match (unresolved, want_unresolved) {
                (Some((_, got)), Some((_, want))) if (want..=want + 5).contains(&got) => got - want,
                _ => 0,
            };
            let want_unresolved = want_unresolved.map(|(tries, at)| (tries, at + late));
            prop_assert_eq!(unresolved, want_unresolved, "unresolved attempt (tries, check_at): {}", ctx);
            if let Some(u) = m.open.as_mut().and_then(|o| o.unresolved.as_mut()) {
                u.check_at += late;
            }
            let want_closed: BTreeMap<u64, String> = m.closed.iter().map(|(k, v)| (*k, v.to_string())).collect();
            prop_assert_eq!(closed, want_closed, "closed periods: {}", ctx);
        }
        let f = fake.0.lock().unwrap();
        prop_assert_eq!(f.repaid, 0, "an `again` call for a merchant_uid already paid");
        let mut paid = HashSet::new();
        for e in f.ledger.iter().filter(|e| e.paid) {
            prop_assert!(paid.insert(e.merchant_uid.clone()), "two paid charges for {}", e.merchant_uid);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(160), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random outcomes and clock jumps: the engine does exactly what the reference model says, pass by pass
    /// (which charges it sends, dunning retries and their times, statuses, unresolved checks and their backoff),
    /// never pays a period twice, and transient or unknown outcomes never use up a retry.
    #[test]
    fn dunning_state_machine_matches_the_model(case in case()) {
        run_case(&case)?;
    }
}
