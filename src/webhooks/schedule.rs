//! When a webhook delivery is tried again, and when it is given up (pure: the clock is an argument).

use crate::store::Delivery;
use chrono::{DateTime, Duration, Utc};

/// The waits after the 1st, 2nd, ... failed attempt (Standard Webhooks' suggested schedule); every later wait is
/// the last one.
const BACKOFF: [Duration; 6] = [
    Duration::seconds(5),
    Duration::minutes(5),
    Duration::minutes(30),
    Duration::hours(2),
    Duration::hours(5),
    Duration::hours(10),
];

/// The wait after `failed` failed attempts (1 for the first).
pub fn backoff(failed: u32) -> Duration {
    BACKOFF[(failed.max(1) as usize - 1).min(BACKOFF.len() - 1)]
}

/// What follows a failed attempt (`error`) at `now` of an event created at `created_at` that had failed
/// `attempts_before` times: tried again after [`backoff`], or given up once its time is up (`give_up_at`, or
/// `created_at + max_age`). An event is always tried at least once, however old.
pub fn after_failure(
    attempts_before: u32,
    created_at: DateTime<Utc>,
    give_up_at: Option<DateTime<Utc>>,
    max_age: Duration,
    now: DateTime<Utc>,
    error: String,
) -> Delivery {
    let deadline = give_up_at.unwrap_or(created_at + max_age);
    if now >= deadline {
        return Delivery::GaveUp(error);
    }
    Delivery::RetryAt(now + backoff(attempts_before + 1), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_waits_follow_the_schedule_then_stay_at_ten_hours() {
        let waits: Vec<i64> = (1..=9).map(|n| backoff(n).num_seconds()).collect();
        assert_eq!(waits, [5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000]);
    }

    #[test]
    fn a_failure_is_retried_until_max_age_then_given_up() {
        let created = t("2025-01-01T00:00:00Z");
        let day3 = Duration::days(3);
        let e = || "HTTP 500".to_owned();
        assert_eq!(
            after_failure(0, created, None, day3, created, e()),
            Delivery::RetryAt(t("2025-01-01T00:00:05Z"), e())
        );
        assert_eq!(
            after_failure(3, created, None, day3, t("2025-01-02T00:00:00Z"), e()), // the 4th failure: 2 h
            Delivery::RetryAt(t("2025-01-02T02:00:00Z"), e())
        );
        assert_eq!(after_failure(7, created, None, day3, t("2025-01-04T00:00:00Z"), e()), Delivery::GaveUp(e()));
        // A replay's own deadline replaces the creation's.
        let replayed = Some(t("2025-02-04T00:00:00Z"));
        assert!(matches!(
            after_failure(0, created, replayed, day3, t("2025-02-01T00:00:00Z"), e()),
            Delivery::RetryAt(..)
        ));
    }
}
