//! Billing domain records shared by the engine, the sync planner and the store.

use crate::calendar::{Calendar, Interval};
use chrono::NaiveDate;
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
}

impl Subscription {
    pub fn calendar(&self) -> Calendar {
        Calendar { anchor: self.anchor_date, anchor_period: self.anchor_period, interval: self.interval }
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
