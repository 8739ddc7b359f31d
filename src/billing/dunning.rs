//! Pure dunning rules: what happens to a period after each kind of outcome, and the backoff for unresolved ones.

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
    /// Delay before each retry, counted from the previous attempt.
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
    /// The period is given up and the policy's action applies.
    Exhausted(OnExhausted),
    /// Unresolved; look the attempt up (and resend only if the gateway never saw it) at this instant.
    CheckAt(DateTime<Utc>),
    /// Nothing more is attempted for the period until an operator acts (the gateway holds a payment under its
    /// merchant_uid that is not the one billd asked for).
    Hold,
}

impl DunningPolicy {
    /// Decides the next step. `declines` counts the declined attempts of this period including this one;
    /// `tries` counts the unresolved tries of the current attempt including this one.
    pub fn decide(&self, outcome: Outcome, declines: u32, tries: u32, now: DateTime<Utc>) -> Decision {
        match outcome {
            Outcome::Paid => Decision::Paid,
            Outcome::Rejected => Decision::Exhausted(self.on_exhausted),
            Outcome::Unresolved => Decision::CheckAt(now + to_chrono(unresolved_backoff(tries))),
            Outcome::Declined => match self.retry_after.get(declines.saturating_sub(1) as usize) {
                Some(delay) => Decision::RetryAt(now + to_chrono(*delay)),
                None => Decision::Exhausted(self.on_exhausted),
            },
        }
    }
}

/// Backoff for unresolved attempts: 1, 2, 4, … minutes, at most one hour. The first retry is within 5 minutes.
pub fn unresolved_backoff(tries: u32) -> Duration {
    let exp = tries.saturating_sub(1).min(6);
    Duration::from_secs((60u64 << exp).min(3600))
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2025-01-01T01:00:00Z".parse().unwrap()
    }

    #[test]
    fn declines_follow_retry_after_then_exhaust() {
        let p = DunningPolicy::default();
        let day = chrono::Duration::days(1);
        assert_eq!(p.decide(Outcome::Declined, 1, 0, t0()), Decision::RetryAt(t0() + day));
        assert_eq!(p.decide(Outcome::Declined, 2, 0, t0()), Decision::RetryAt(t0() + day * 2));
        assert_eq!(p.decide(Outcome::Declined, 3, 0, t0()), Decision::RetryAt(t0() + day * 4));
        assert_eq!(p.decide(Outcome::Declined, 4, 0, t0()), Decision::Exhausted(OnExhausted::Cancel));
    }

    #[test]
    fn rejection_skips_retries() {
        let p = DunningPolicy { on_exhausted: OnExhausted::Suspend, ..Default::default() };
        assert_eq!(p.decide(Outcome::Rejected, 0, 0, t0()), Decision::Exhausted(OnExhausted::Suspend));
    }

    #[test]
    fn unresolved_never_uses_a_retry_and_backs_off() {
        let p = DunningPolicy::default();
        let first = p.decide(Outcome::Unresolved, 0, 1, t0());
        assert_eq!(first, Decision::CheckAt(t0() + chrono::Duration::minutes(1)));
        assert!(unresolved_backoff(1) <= Duration::from_secs(300));
        assert_eq!(unresolved_backoff(3), Duration::from_secs(240));
        assert_eq!(unresolved_backoff(50), Duration::from_secs(3600));
    }

    #[test]
    fn no_retries_means_first_decline_exhausts() {
        let p = DunningPolicy { retry_after: vec![], on_exhausted: OnExhausted::Skip };
        assert_eq!(p.decide(Outcome::Declined, 1, 0, t0()), Decision::Exhausted(OnExhausted::Skip));
    }
}
