//! Billing domain records shared by the engine, the sync planner and the store.

use crate::billing::calendar::{Calendar, Interval};
use chrono::{DateTime, NaiveDate, Utc};
use std::fmt;

/// A subscription's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In its trial: its first period falls due when the trial ends (then active once paid).
    Trialing,
    Active,
    PastDue,
    /// Billed until `cancel_at` (no period due at or after it opens), canceled then.
    Canceling,
    Suspended,
    Canceled,
    /// Its fixed term is over: the last period was paid or given up. Final, like canceled.
    Completed,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Trialing,
        Status::Active,
        Status::PastDue,
        Status::Canceling,
        Status::Suspended,
        Status::Canceled,
        Status::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trialing => "trialing",
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Canceling => "canceling",
            Status::Suspended => "suspended",
            Status::Canceled => "canceled",
            Status::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "cancelled" => Status::Canceled,
            s => *Status::ALL.iter().find(|st| st.as_str() == s)?,
        })
    }

    /// Whether periods of a subscription in this state are charged.
    pub fn bills(self) -> bool {
        matches!(self, Status::Trialing | Status::Active | Status::PastDue | Status::Canceling)
    }

    /// Whether nothing ever changes it again (canceled, completed).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Canceled | Status::Completed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a subscription was defined: `schedules.toml` (synced) or the database only (never canceled by a sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Config,
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Manual => "manual",
        }
    }
}

/// A subscription as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub customer_uid: String,
    pub plan_id: String,
    pub plan_name: String,
    pub amount: i64,
    pub currency: String,
    pub interval: Interval,
    pub start_date: NaiveDate,
    pub anchor_date: NaiveDate,
    pub anchor_period: u64,
    pub next_period: u64,
    pub status: Status,
    pub source: Source,
    /// Pauses whose periods are not charged: `[from, to)` in UNIX seconds. A period whose due instant lies in one
    /// is skipped when billing gets to it (set by `resume` when periods that fell due before the pause are still
    /// owed, so billing cannot simply jump past the pause; dropped once billing is past them).
    pub skip: Vec<(i64, i64)>,
    /// Less charged on its first periods (`None`: none).
    pub discount: Option<crate::billing::proration::Discount>,
    /// No period due at or after this instant opens (a cancel at period end, `cancel_at` in the config); the
    /// subscription is canceled then. `None`: none.
    pub cancel_at: Option<DateTime<Utc>>,
    /// The last period of a fixed term (`None`: no end): none after it opens, and it is completed once that one
    /// is paid (or given up and skipped).
    pub last_period: Option<u64>,
}

impl Subscription {
    /// Period `p`'s due instant if it is ever billed: `None` past the calendar's end, past the last period of a
    /// fixed term, or at or after `cancel_at`.
    pub fn billed_due(&self, clock: &crate::billing::calendar::ChargeClock, p: u64) -> Option<DateTime<Utc>> {
        if self.last_period.is_some_and(|last| p > last) {
            return None;
        }
        self.calendar().due_at(clock, p).filter(|t| self.cancel_at.is_none_or(|c| *t < c))
    }

    /// What period `p` charges: the amount, less the discount on the first periods.
    pub fn amount_of(&self, p: u64) -> i64 {
        self.discount.map_or(self.amount, |d| d.apply(self.amount, p))
    }

    pub fn calendar(&self) -> Calendar {
        Calendar { anchor: self.anchor_date, anchor_period: self.anchor_period, interval: self.interval }
    }

    /// The period billed after period `p`: the next one whose due instant (`due`, UNIX s) lies in no skip window.
    pub fn following(&self, p: u64, due: impl Fn(u64) -> Option<i64>) -> u64 {
        let mut next = p + 1;
        while due(next).is_some_and(|t| self.skip.iter().any(|&(from, to)| from <= t && t < to)) {
            next += 1;
        }
        next
    }

    /// The skip windows still ahead of a period due at `due_at` (the ones it has passed can no longer apply).
    pub fn skip_ahead_of(&self, due_at: Option<i64>) -> Vec<(i64, i64)> {
        self.skip.iter().copied().filter(|&(_, to)| due_at.is_none_or(|t| t < to)).collect()
    }
}

/// How long before a trial ends the app is told (`subscription.trial_ending`).
pub const TRIAL_ENDING_NOTICE: chrono::Duration = chrono::Duration::days(3);

/// The instant up to which trials ending are announced by a pass at `now`: trials ending after `now` and at or
/// before it.
pub fn trial_ending_horizon(now: DateTime<Utc>) -> DateTime<Utc> {
    now + TRIAL_ENDING_NOTICE
}

/// With `billing.catch_up_window`, the instant before which a period falling due is skipped, not charged, by a pass
/// at `now` (`None`: no window, every missed period is charged).
pub fn catch_up_cutoff(now: DateTime<Utc>, window: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
    let w = chrono::Duration::from_std(window?).ok()?;
    now.checked_sub_signed(w)
}

/// Where billing continues when a subscription dunning stopped is reactivated at `now`: the first period from its
/// next one that falls due after `now`, from the original anchor (the periods in between are not charged), and its
/// due instant (`None`: no period will ever fall due).
pub fn reactivation_period(
    sub: &Subscription,
    now: DateTime<Utc>,
    clock: &crate::billing::calendar::ChargeClock,
) -> (u64, Option<DateTime<Utc>>) {
    let mut p = sub.next_period;
    loop {
        match sub.billed_due(clock, p) {
            Some(t) if t <= now => p += 1,
            due => return (p, due),
        }
    }
}

/// A pause as the book keeps it: when it began (`None`: unknown, a row older than the pause record), when it ends by
/// itself (`pause --until`; `None`: when an operator resumes it), and whether the periods that fell due while paused
/// are then charged (the pause's `--catch-up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pause {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub catch_up: bool,
}

impl Pause {
    /// Whether it ended by itself at or before `now` (its `until` came).
    pub fn ended_by(&self, now: DateTime<Utc>) -> bool {
        self.until.is_some_and(|u| u <= now)
    }

    /// When it ends for a resume at `now`: at its own end if that came already (whenever the resume runs after it: a
    /// pass that did not run that day, an operator's `resume`), else at `now`.
    pub fn end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.until.filter(|_| self.ended_by(now)).unwrap_or(now)
    }
}

/// What resuming `sub` (under `pause`) at `now` does, for [`crate::store::Book::resume_with`]: where billing restarts
/// ([`restart_after_pause`] over the paused interval, which ends at [`Pause::end`]: a pause whose own end came ended
/// then, and the periods due since are charged as any period missed while billd was down), that period's due instant
/// if it is ever billed, and the skip windows to keep. `catch_up` charges the periods due while paused, and so does
/// the pause's own `catch_up` once its end came.
pub fn resume_plan(
    sub: &Subscription,
    pause: &Pause,
    now: DateTime<Utc>,
    catch_up: bool,
    clock: &crate::billing::calendar::ChargeClock,
) -> (Restart, Option<DateTime<Utc>>, Vec<(i64, i64)>) {
    let cal = sub.calendar();
    let due = |p| cal.due_at(clock, p);
    let catch_up = catch_up || (pause.ended_by(now) && pause.catch_up);
    let r = restart_after_pause(sub.next_period, &sub.skip, pause.since, pause.end(now), catch_up, due);
    let next_due = sub.billed_due(clock, r.next_period);
    let mut skip = sub.skip_ahead_of(next_due.map(|t| t.timestamp()));
    skip.extend(r.skip);
    (r, next_due, skip)
}

/// Where billing restarts when a paused (suspended) subscription is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// The next period to open.
    pub next_period: u64,
    /// The pause to add to [`Subscription::skip`] (UNIX s), when periods still owed come before its periods.
    pub skip: Option<(i64, i64)>,
    /// How many periods are not charged.
    pub skipped: u64,
    /// How many periods that fell due before the pause are still owed (charged first).
    pub owed: u64,
}

/// Where billing restarts at `now` for a subscription paused at `paused_at` (`None`: unknown, as for a row older
/// than the pause record). Only periods whose due instant lies inside the paused interval `[paused_at, now)` are
/// skipped; a period that fell due before the pause and was never charged (billd was not running, say) is charged
/// as usual, and `catch_up` charges every period. `due(p)` is period p's due instant (`None`: no such period).
/// Periods already skipped by earlier pauses (`skip` windows) are neither owed nor counted again.
pub fn restart_after_pause(
    next_period: u64,
    skip: &[(i64, i64)],
    paused_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    catch_up: bool,
    due: impl Fn(u64) -> Option<DateTime<Utc>>,
) -> Restart {
    let skipped_before = |t: DateTime<Utc>| skip.iter().any(|&(from, to)| from <= t.timestamp() && t.timestamp() < to);
    // Owed: due before the pause (and before now), not in an earlier pause.
    let mut owed = 0;
    let mut first_skipped = next_period;
    if let Some(paused) = paused_at {
        while let Some(t) = due(first_skipped).filter(|t| *t < paused && *t < now) {
            owed += u64::from(!skipped_before(t));
            first_skipped += 1;
        }
    }
    let mut end = first_skipped;
    if !catch_up {
        while due(end).is_some_and(|t| t < now) {
            end += 1;
        }
    }
    let skipped = (first_skipped..end).filter(|p| due(*p).is_some_and(|t| !skipped_before(t))).count() as u64;
    let window = paused_at.map(|p| p.timestamp()).unwrap_or(i64::MIN);
    match (end > first_skipped, owed > 0) {
        // Nothing owed before it: billing jumps past the pause (and any earlier one).
        (_, false) => Restart { next_period: end, skip: None, skipped, owed },
        (false, true) => Restart { next_period, skip: None, skipped: 0, owed },
        // The window ends at `now` rounded up, so a period due in that second is skipped, as counted.
        (true, true) => {
            let end = now.timestamp() + i64::from(now.timestamp_subsec_nanos() > 0);
            Restart { next_period, skip: Some((window, end)), skipped, owed }
        }
    }
}

/// The merchant_uid of one subscription period: deterministic, at most 40 characters, the same for every attempt
/// of the period (so the gateway itself refuses a second payment of it). Long ids are shortened with a hash.
pub fn merchant_uid(prefix: &str, subscription_id: &str, period: u64) -> String {
    let full = format!("{prefix}-{subscription_id}-{period}");
    if full.len() <= 40 {
        return full;
    }
    let tail = format!("~{:016x}-{period}", fnv1a64(subscription_id.as_bytes()));
    let room = 40usize.saturating_sub(prefix.len() + 1 + tail.len());
    let head: String = subscription_id.chars().take(room).collect();
    format!("{prefix}-{head}{tail}")
}

/// The merchant_uid of the `n`-th charge of a plan change made now in period `period` (n = 1, 2, ...):
/// `{prefix}-{subscription}-{period}-c{n}`, deterministic, at most 40 characters (long ids shortened with a hash, as
/// [`merchant_uid`] does), never a period's (which ends in digits after its last '-').
pub fn change_merchant_uid(prefix: &str, subscription_id: &str, period: u64, n: u64) -> String {
    let full = format!("{prefix}-{subscription_id}-{period}-c{n}");
    if full.len() <= 40 {
        return full;
    }
    let tail = format!("~{:016x}-{period}-c{n}", fnv1a64(subscription_id.as_bytes()));
    let room = 40usize.saturating_sub(prefix.len() + 1 + tail.len());
    let head: String = subscription_id.chars().take(room).collect();
    format!("{prefix}-{head}{tail}")
}

/// FNV-1a, 64-bit: a stable hash (std's hashers are not stable across releases).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monthly(p: u64) -> Option<DateTime<Utc>> {
        // Period p falls due on the first of month p + 1 of 2026, 01:00 UTC.
        let month = p as u32 % 12 + 1;
        let year = 2026 + (p / 12) as i32;
        Some(DateTime::from_naive_utc_and_offset(NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(1, 0, 0)?, Utc))
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn periods_due_before_the_pause_are_never_skipped() {
        // Period 8 (Sep 1) paid; billd did not run on Oct 1 and Nov 1; paused and resumed on Nov 30.
        let r =
            restart_after_pause(9, &[], Some(at("2026-11-30T05:00:00Z")), at("2026-11-30T06:00:00Z"), false, monthly);
        assert_eq!(r, Restart { next_period: 9, skip: None, skipped: 0, owed: 2 });
    }

    #[test]
    fn only_periods_due_while_paused_are_skipped() {
        // Paused on Oct 15 with Oct 1 never charged; resumed on Dec 15: Nov 1 and Dec 1 fell due while paused.
        let (paused, now) = (at("2026-10-15T00:00:00Z"), at("2026-12-15T00:00:00Z"));
        let r = restart_after_pause(9, &[], Some(paused), now, false, monthly);
        let window = (paused.timestamp(), now.timestamp());
        assert_eq!(r, Restart { next_period: 9, skip: Some(window), skipped: 2, owed: 1 });
        // Nothing owed from before the pause: billing jumps straight past the paused stretch.
        let r = restart_after_pause(10, &[], Some(paused), now, false, monthly);
        assert_eq!(r, Restart { next_period: 12, skip: None, skipped: 2, owed: 0 });
        // --catch-up charges every period.
        let r = restart_after_pause(9, &[], Some(paused), now, true, monthly);
        assert_eq!(r, Restart { next_period: 9, skip: None, skipped: 0, owed: 1 });
        // A pause of unknown start skips everything due before now (the rule before the pause was recorded).
        let r = restart_after_pause(9, &[], None, now, false, monthly);
        assert_eq!(r, Restart { next_period: 12, skip: None, skipped: 3, owed: 0 });
        // A second pause before the owed period was charged: the first pause's periods stay skipped (neither owed
        // nor counted again), the new pause's are skipped too.
        let first = (at("2026-10-15T00:00:00Z").timestamp(), at("2026-11-15T00:00:00Z").timestamp());
        let r = restart_after_pause(9, &[first], Some(at("2026-11-20T00:00:00Z")), now, false, monthly);
        assert_eq!(r.next_period, 9);
        assert_eq!((r.owed, r.skipped), (1, 1), "Oct 1 owed and Dec 1 skipped; Nov 1 was skipped by the first");
    }

    #[test]
    fn a_pause_that_ended_by_itself_skips_only_what_fell_due_before_its_end() {
        // Monthly from 2026-01-01 01:00 UTC; period 0 paid; paused on Jan 20 until Feb 15; resumed on Apr 5 (no pass
        // ran on Feb 15): February's period fell due while paused, March's and April's after the pause.
        let clock =
            crate::billing::calendar::ChargeClock { timezone: chrono_tz::UTC, charge_time: "01:00".parse().unwrap() };
        let sub = Subscription { next_period: 1, ..sub_from(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()) };
        let pause =
            Pause { since: Some(at("2026-01-20T00:00:00Z")), until: Some(at("2026-02-15T00:00:00Z")), catch_up: false };
        let (r, due, _) = resume_plan(&sub, &pause, at("2026-04-05T00:00:00Z"), false, &clock);
        assert_eq!((r.next_period, r.skipped), (2, 1), "March and April are owed, February skipped");
        assert_eq!(due, Some(at("2026-03-01T01:00:00Z")));
        // Resumed before its end (an operator's resume): the pause ends then.
        let (r, _, _) = resume_plan(&sub, &pause, at("2026-02-10T00:00:00Z"), false, &clock);
        assert_eq!((r.next_period, r.skipped), (2, 1));
        // Its own catch-up applies once its end came, and an operator's --catch-up always.
        let with = Pause { catch_up: true, ..pause };
        assert_eq!(resume_plan(&sub, &with, at("2026-04-05T00:00:00Z"), false, &clock).0.next_period, 1);
        assert_eq!(resume_plan(&sub, &with, at("2026-02-10T00:00:00Z"), false, &clock).0.next_period, 2);
        assert_eq!(resume_plan(&sub, &pause, at("2026-04-05T00:00:00Z"), true, &clock).0.next_period, 1);
    }

    fn sub_from(start: NaiveDate) -> Subscription {
        Subscription {
            id: "s".into(),
            customer_uid: "c".into(),
            plan_id: "p".into(),
            plan_name: "P".into(),
            amount: 1,
            currency: "KRW".into(),
            interval: "1 month".parse().unwrap(),
            start_date: start,
            anchor_date: start,
            anchor_period: 0,
            next_period: 0,
            status: Status::Suspended,
            source: Source::Config,
            skip: Vec::new(),
            discount: None,
            cancel_at: None,
            last_period: None,
        }
    }

    #[test]
    fn billing_steps_over_the_periods_due_inside_a_skip_window() {
        let mut s = Subscription {
            id: "s".into(),
            customer_uid: "c".into(),
            plan_id: "p".into(),
            plan_name: "P".into(),
            amount: 1,
            currency: "KRW".into(),
            interval: "1 month".parse().unwrap(),
            start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            anchor_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            anchor_period: 0,
            next_period: 9,
            status: Status::Active,
            source: Source::Config,
            skip: vec![(at("2026-10-15T00:00:00Z").timestamp(), at("2026-12-15T00:00:00Z").timestamp())],
            discount: None,
            cancel_at: None,
            last_period: None,
        };
        let due = |p| monthly(p).map(|t| t.timestamp());
        assert_eq!(s.following(8, due), 9);
        assert_eq!(s.following(9, due), 12);
        assert_eq!(s.skip_ahead_of(due(12)), [], "past the window: dropped");
        assert_eq!(s.skip_ahead_of(due(9)).len(), 1);
        s.skip.clear();
        assert_eq!(s.following(9, due), 10);
    }

    #[test]
    fn a_change_charge_has_its_own_merchant_uid_that_fits_40() {
        assert_eq!(change_merchant_uid("billd", "sub-0001", 12, 1), "billd-sub-0001-12-c1");
        let long = "a-very-long-subscription-identifier-from-the-crm-0001";
        let m = change_merchant_uid("billd", long, 123_456, 2);
        assert!(m.len() <= 40 && m.ends_with("-123456-c2"), "{m}");
        assert_ne!(m, merchant_uid("billd", long, 123_456));
        assert_ne!(m, change_merchant_uid("billd", long, 123_456, 1));
    }

    #[test]
    fn merchant_uid_is_readable_when_short() {
        assert_eq!(merchant_uid("billd", "sub-0001", 12), "billd-sub-0001-12");
    }

    #[test]
    fn merchant_uid_fits_40_and_stays_distinct() {
        let a = "a-very-long-subscription-identifier-from-the-crm-0001";
        let b = "a-very-long-subscription-identifier-from-the-crm-0002";
        let ma = merchant_uid("billd", a, 123_456);
        let mb = merchant_uid("billd", b, 123_456);
        assert!(ma.len() <= 40 && mb.len() <= 40, "{ma} {mb}");
        assert_ne!(ma, mb);
        assert_eq!(ma, merchant_uid("billd", a, 123_456));
        assert_ne!(ma, merchant_uid("billd", a, 123_457));
    }
}
