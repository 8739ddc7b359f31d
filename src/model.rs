//! Billing domain records shared by the engine, the sync planner and the store.

use crate::calendar::{Calendar, Interval};
use chrono::{DateTime, NaiveDate, Utc};
use std::fmt;

/// A subscription's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Active,
    PastDue,
    Suspended,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Suspended => "suspended",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "active" => Status::Active,
            "past_due" => Status::PastDue,
            "suspended" => Status::Suspended,
            "canceled" | "cancelled" => Status::Canceled,
            _ => return None,
        })
    }

    /// Whether periods of a subscription in this state are charged.
    pub fn bills(self) -> bool {
        matches!(self, Status::Active | Status::PastDue)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a subscription was defined: `schedules.toml` (synced) or the database only (never canceled by a sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Periods `from..to` fell due while the subscription was paused and are not charged: once period `from - 1`
    /// has opened, billing continues at `to` (set by `resume` when periods due before the pause are still to be
    /// charged; `None` otherwise).
    pub skip: Option<(u64, u64)>,
}

impl Subscription {
    pub fn calendar(&self) -> Calendar {
        Calendar { anchor: self.anchor_date, anchor_period: self.anchor_period, interval: self.interval }
    }

    /// The period billed after period `p` (the next one, or the end of a skipped stretch).
    pub fn following(&self, p: u64) -> u64 {
        match self.skip {
            Some((from, to)) if p + 1 == from => to,
            _ => p + 1,
        }
    }
}

/// Where billing restarts when a paused (suspended) subscription is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// The next period to open.
    pub next_period: u64,
    /// Periods not charged (see [`Subscription::skip`]), when they come after periods still to be charged.
    pub skip: Option<(u64, u64)>,
    /// How many periods are not charged.
    pub skipped: u64,
}

/// Where billing restarts at `now` for a subscription paused at `paused_at` (`None`: unknown, as for a row older
/// than the pause record). Only periods whose due instant lies inside the paused interval `[paused_at, now)` are
/// skipped; a period that fell due before the pause and was never charged (billd was not running, say) is charged
/// as usual, and `catch_up` charges every period. `due(p)` is period p's due instant (`None`: no such period).
pub fn restart_after_pause(
    next_period: u64,
    paused_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    catch_up: bool,
    due: impl Fn(u64) -> Option<DateTime<Utc>>,
) -> Restart {
    let mut first_skipped = next_period;
    if let Some(paused) = paused_at {
        while due(first_skipped).is_some_and(|t| t < paused && t < now) {
            first_skipped += 1;
        }
    }
    let mut end = first_skipped;
    if !catch_up {
        while due(end).is_some_and(|t| t < now) {
            end += 1;
        }
    }
    let skipped = end - first_skipped;
    match (skipped, first_skipped == next_period) {
        (0, _) => Restart { next_period, skip: None, skipped: 0 },
        (_, true) => Restart { next_period: end, skip: None, skipped },
        (_, false) => Restart { next_period, skip: Some((first_skipped, end)), skipped },
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
        let r = restart_after_pause(9, Some(at("2026-11-30T05:00:00Z")), at("2026-11-30T06:00:00Z"), false, monthly);
        assert_eq!(r, Restart { next_period: 9, skip: None, skipped: 0 });
    }

    #[test]
    fn only_periods_due_while_paused_are_skipped() {
        // Paused on Oct 15 with Oct 1 never charged; resumed on Dec 15: Nov 1 and Dec 1 fell due while paused.
        let r = restart_after_pause(9, Some(at("2026-10-15T00:00:00Z")), at("2026-12-15T00:00:00Z"), false, monthly);
        assert_eq!(r, Restart { next_period: 9, skip: Some((10, 12)), skipped: 2 });
        // Nothing owed from before the pause: billing jumps straight past the paused stretch.
        let r = restart_after_pause(10, Some(at("2026-10-15T00:00:00Z")), at("2026-12-15T00:00:00Z"), false, monthly);
        assert_eq!(r, Restart { next_period: 12, skip: None, skipped: 2 });
        // --catch-up charges every period.
        let r = restart_after_pause(9, Some(at("2026-10-15T00:00:00Z")), at("2026-12-15T00:00:00Z"), true, monthly);
        assert_eq!(r, Restart { next_period: 9, skip: None, skipped: 0 });
        // A pause of unknown start skips everything due before now (the rule before the pause was recorded).
        let r = restart_after_pause(9, None, at("2026-12-15T00:00:00Z"), false, monthly);
        assert_eq!(r, Restart { next_period: 12, skip: None, skipped: 3 });
    }

    #[test]
    fn a_skip_jumps_once_from_the_period_before_it() {
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
            skip: Some((10, 12)),
        };
        assert_eq!(s.following(8), 9);
        assert_eq!(s.following(9), 12);
        s.skip = None;
        assert_eq!(s.following(9), 10);
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
