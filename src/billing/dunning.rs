//! Pure dunning rules: what happens to a period after each kind of outcome, when retries fall, and the backoff for
//! unresolved ones.

use crate::billing::calendar::ChargeClock;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What to do when the last retry of a period is declined (or a charge is rejected outright).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// No charges ever again.
    Cancel,
    /// No charges until an operator resumes the subscription.
    Suspend,
    /// Give that period up; the subscription stays active for the next one.
    Skip,
}

impl OnExhausted {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cancel" => Ok(Self::Cancel),
            "suspend" => Ok(Self::Suspend),
            "skip" => Ok(Self::Skip),
            other => Err(format!("{other:?} is not one of cancel, suspend, skip")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Suspend => "suspend",
            Self::Skip => "skip",
        }
    }
}

/// The merchant's dunning policy.
#[derive(Debug, Clone, PartialEq)]
pub struct DunningPolicy {
    /// Delay before each retry, after the previous attempt: a delay of whole days lands at `charge_time` that many
    /// days after the attempt's local date; any other delay counts from the attempt itself ([`retry_time`]).
    pub retry_after: Vec<Duration>,
    pub on_exhausted: OnExhausted,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        let day = Duration::from_secs(86_400);
        Self { retry_after: vec![day, 2 * day, 4 * day], on_exhausted: OnExhausted::Cancel }
    }
}

/// What the gateway's answer means for billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Paid,
    /// The card company declined (HTTP 200, code 0, status failed).
    Declined,
    /// The gateway refused the request (code != 0): nothing was charged, and retrying will not help.
    Rejected,
    /// Transient trouble or an unknown outcome: to be confirmed by a lookup; never a decline.
    Unresolved,
}

/// The next step for a period after an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The period is paid; the subscription is active.
    Paid,
    /// Declined; the next attempt is at this instant and the subscription is past due meanwhile.
    RetryAt(DateTime<Utc>),
    /// Declined on an operator's extra attempt (made ahead of the scheduled retry): the decline is not counted, and
    /// the next attempt is the scheduled retry, at this instant, as if the operator had not tried.
    BackToSchedule(DateTime<Utc>),
    /// The period is given up and the policy's action applies.
    Exhausted(OnExhausted),
    /// Unresolved; look the attempt up (and resend only if the gateway never saw it) at this instant.
    CheckAt(DateTime<Utc>),
    /// Nothing more is attempted for the period until an operator acts (the gateway holds a payment under its
    /// merchant_uid that is not the one billd asked for).
    Hold,
}

/// What is known of the attempt being decided, beyond its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// The period's declines counted so far, before this attempt.
    pub declines: u32,
    /// The unresolved tries of this attempt, this one included.
    pub tries: u32,
    /// An operator's extra attempt (`billd retry`, or a `resume`, made ahead of the scheduled retry): the scheduled
    /// retry it went ahead of. `None`: a scheduled attempt.
    pub ahead_of: Option<DateTime<Utc>>,
}

impl DunningPolicy {
    /// Decides the next step after an attempt's outcome at `now` (billing time). A decline of a scheduled attempt
    /// is counted and schedules the next retry ([`retry_time`]) or, after the last one, the policy's action; a
    /// decline of an operator's extra attempt is not counted and leaves the scheduled retry where it was.
    pub fn decide(&self, clock: &ChargeClock, outcome: Outcome, t: Tally, now: DateTime<Utc>) -> Decision {
        match outcome {
            Outcome::Paid => Decision::Paid,
            Outcome::Rejected => Decision::Exhausted(self.on_exhausted),
            Outcome::Unresolved => Decision::CheckAt(later(now, unresolved_backoff(t.tries))),
            // Settled after the scheduled retry's time (a lookup settled it late), the scheduled retry is due at
            // once: it could not be made while this attempt was in doubt.
            Outcome::Declined => match t.ahead_of {
                Some(scheduled) => Decision::BackToSchedule(scheduled.max(now)),
                None => match self.retry_after.get(t.declines as usize) {
                    Some(delay) => Decision::RetryAt(retry_time(clock, now, *delay)),
                    None => Decision::Exhausted(self.on_exhausted),
                },
            },
        }
    }
}

/// When a retry `delay` after an attempt at `at` falls. A whole number of days lands at the `charge_time` nearest
/// to `at + delay` (a tie: the later one) among those at least half the delay after the attempt, in
/// `billing.timezone`, like every other charge: a decline at 14:21 with `1d` is retried the next day at 10:00. Any
/// other delay (`6h`, `90m`) counts from the attempt itself.
pub fn retry_time(clock: &ChargeClock, at: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    const DAY: u64 = 86_400;
    let exact = later(at, delay);
    let secs = delay.as_secs();
    // (Within two days of the end of chrono's time a local date cannot be formed: the exact instant then.)
    let near_the_end = exact.checked_add_signed(chrono::Duration::days(2)).is_none();
    if secs == 0 || !secs.is_multiple_of(DAY) || delay.subsec_nanos() != 0 || near_the_end {
        return exact;
    }
    let day = clock.local_date(exact);
    let soonest = later(at, delay / 2);
    [day.pred_opt(), Some(day), day.succ_opt()]
        .into_iter()
        .flatten()
        .map(|d| clock.due_at(d))
        .filter(|t| *t >= soonest)
        .min_by_key(|t| ((*t - exact).abs(), *t < exact))
        .unwrap_or(exact)
}

/// Backoff for unresolved attempts: 1, 2, 4, … minutes, at most one hour. The first retry is within 5 minutes.
pub fn unresolved_backoff(tries: u32) -> Duration {
    let exp = tries.saturating_sub(1).min(6);
    Duration::from_secs((60u64 << exp).min(3600))
}

/// `at + d`, or the last instant chrono knows when that is beyond it.
fn later(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| at.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2025-01-01T01:00:00Z".parse().unwrap()
    }

    fn seoul(time: &str) -> ChargeClock {
        ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: time.parse().unwrap() }
    }

    fn counted(declines: u32) -> Tally {
        Tally { declines, ..Default::default() }
    }

    #[test]
    fn declines_follow_retry_after_then_exhaust() {
        // t0 is 10:00 in Seoul, the charge time: each retry lands exactly whole days later.
        let (p, c) = (DunningPolicy::default(), seoul("10:00"));
        let day = chrono::Duration::days(1);
        assert_eq!(p.decide(&c, Outcome::Declined, counted(0), t0()), Decision::RetryAt(t0() + day));
        assert_eq!(p.decide(&c, Outcome::Declined, counted(1), t0()), Decision::RetryAt(t0() + day * 2));
        assert_eq!(p.decide(&c, Outcome::Declined, counted(2), t0()), Decision::RetryAt(t0() + day * 4));
        assert_eq!(p.decide(&c, Outcome::Declined, counted(3), t0()), Decision::Exhausted(OnExhausted::Cancel));
    }

    #[test]
    fn retries_of_whole_days_land_at_the_nearest_charge_time() {
        let at = |s: &str| s.parse::<DateTime<chrono::FixedOffset>>().unwrap().with_timezone(&Utc);
        let day = Duration::from_secs(86_400);
        let c = seoul("10:00");
        // A decline at 14:21 (after a downtime): the next day at 10:00, not at 14:21.
        assert_eq!(retry_time(&c, at("2025-01-15T14:21:00+09:00"), day), at("2025-01-16T10:00:00+09:00"));
        assert_eq!(retry_time(&c, at("2025-01-15T14:21:00+09:00"), 2 * day), at("2025-01-17T10:00:00+09:00"));
        // Hours count from the attempt, whatever the charge time.
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(retry_time(&c, at("2025-01-15T14:21:00+09:00"), six_hours), at("2025-01-15T20:21:00+09:00"));
        let a_day_and_a_half = Duration::from_secs(36 * 3600);
        assert_eq!(retry_time(&c, at("2025-01-15T14:21:00+09:00"), a_day_and_a_half), at("2025-01-17T02:21:00+09:00"));
        // Never less than half the delay after the attempt: charge time at midnight, a decline at 23:30 is retried
        // the day after next at 00:00 (24.5 h), not 30 minutes later.
        let midnight = seoul("00:00");
        assert_eq!(retry_time(&midnight, at("2025-01-15T23:30:00+09:00"), day), at("2025-01-17T00:00:00+09:00"));
        // A tie (exactly 12 h either way) goes to the later one.
        let c22 = seoul("22:00");
        assert_eq!(retry_time(&c22, at("2025-01-15T10:00:00+09:00"), day), at("2025-01-16T22:00:00+09:00"));
        // Across a DST change the charge time holds in local time.
        let ny = ChargeClock { timezone: chrono_tz::America::New_York, charge_time: "09:00".parse().unwrap() };
        assert_eq!(
            retry_time(&ny, at("2025-03-08T09:00:00-05:00"), day),
            at("2025-03-09T09:00:00-04:00"),
            "23 real hours: the local charge time"
        );
        // A 25-hour night (New York falls back on 2027-11-07): from 21:29 the evening before, the nearest 09:00
        // would be 11 h 31 min later, under half the delay: the one after is taken.
        assert_eq!(retry_time(&ny, at("2027-11-05T21:29:00-04:00"), day), at("2027-11-07T09:00:00-05:00"));
        // At the end of time: no panic.
        assert_eq!(retry_time(&c, DateTime::<Utc>::MAX_UTC, day), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn an_operators_declined_extra_attempt_goes_back_to_the_schedule() {
        let (p, c) = (DunningPolicy::default(), seoul("10:00"));
        let scheduled = t0() + chrono::Duration::days(1);
        let extra = Tally { declines: 1, tries: 0, ahead_of: Some(scheduled) };
        let now = t0() + chrono::Duration::hours(8);
        assert_eq!(p.decide(&c, Outcome::Declined, extra, now), Decision::BackToSchedule(scheduled));
        // Even with no scheduled retry left to count against, it costs nothing.
        let last = Tally { declines: 3, ..extra };
        assert_eq!(p.decide(&c, Outcome::Declined, last, now), Decision::BackToSchedule(scheduled));
        let late_last = scheduled + chrono::Duration::hours(1);
        assert_eq!(p.decide(&c, Outcome::Declined, last, late_last), Decision::BackToSchedule(late_last));
        // Settled after the scheduled retry's time (a late lookup): still uncounted, and the scheduled retry,
        // which could not be made while it was in doubt, is due at once.
        let late = scheduled + chrono::Duration::hours(1);
        assert_eq!(p.decide(&c, Outcome::Declined, extra, late), Decision::BackToSchedule(late));
        // Paid or rejected, it is like any attempt.
        assert_eq!(p.decide(&c, Outcome::Paid, extra, now), Decision::Paid);
        assert_eq!(p.decide(&c, Outcome::Rejected, extra, now), Decision::Exhausted(OnExhausted::Cancel));
    }

    #[test]
    fn rejection_skips_retries() {
        let p = DunningPolicy { on_exhausted: OnExhausted::Suspend, ..Default::default() };
        let got = p.decide(&seoul("10:00"), Outcome::Rejected, counted(0), t0());
        assert_eq!(got, Decision::Exhausted(OnExhausted::Suspend));
    }

    #[test]
    fn unresolved_never_uses_a_retry_and_backs_off() {
        let p = DunningPolicy::default();
        let first = p.decide(&seoul("10:00"), Outcome::Unresolved, Tally { tries: 1, ..Default::default() }, t0());
        assert_eq!(first, Decision::CheckAt(t0() + chrono::Duration::minutes(1)));
        assert!(unresolved_backoff(1) <= Duration::from_secs(300));
        assert_eq!(unresolved_backoff(3), Duration::from_secs(240));
        assert_eq!(unresolved_backoff(50), Duration::from_secs(3600));
    }

    #[test]
    fn no_retries_means_first_decline_exhausts() {
        let p = DunningPolicy { retry_after: vec![], on_exhausted: OnExhausted::Skip };
        let got = p.decide(&seoul("10:00"), Outcome::Declined, counted(0), t0());
        assert_eq!(got, Decision::Exhausted(OnExhausted::Skip));
    }
}
