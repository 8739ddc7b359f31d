//! The billing clock of the daemon and of the commands that write "now": the wall clock, or simulated time (`billd run --as-of T --simulate --speed N`; a command's `--as-of T`, at speed 1).
//!
//! Simulated time starts at T and advances N times as fast as the real clock; the sleeps until the next charge are
//! divided by N. It only decides what falls due: the quiet periods of requests in doubt are measured on the real
//! clocks (`crate::realtime`) whatever it says.

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// What `billd run` was asked for: `--as-of`, `--simulate`, `--speed`.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub from: Option<DateTime<Utc>>,
    pub simulate: bool,
    pub speed: u32,
}

/// The instant the daemon bills at.
#[derive(Debug, Clone, Copy)]
pub enum BillingClock {
    /// The system's wall clock (steps of it are followed).
    Wall,
    /// From `from`, when the real monotonic clock read `started`, `speed` times as fast as real time.
    Simulated { from: DateTime<Utc>, started: Instant, speed: u32 },
}

impl BillingClock {
    /// The clock `start` asks for, starting now. Without `--as-of` or `--simulate` it is the wall clock.
    pub fn start(start: Start) -> BillingClock {
        match start {
            Start { from: None, simulate: false, .. } => BillingClock::Wall,
            Start { from, speed, .. } => BillingClock::Simulated {
                from: from.unwrap_or_else(Utc::now),
                started: Instant::now(),
                speed: speed.max(1),
            },
        }
    }

    /// A command's clock: from its `--as-of` (advancing with real time while it runs, so that what it writes
    /// stays in order), or the wall clock without one.
    pub fn command(as_of: Option<DateTime<Utc>>) -> BillingClock {
        BillingClock::start(Start { from: as_of, simulate: false, speed: 1 })
    }

    /// The billing instant now.
    pub fn now(&self) -> DateTime<Utc> {
        match *self {
            BillingClock::Wall => Utc::now(),
            BillingClock::Simulated { from, started, speed } => {
                let real = started.elapsed().saturating_mul(speed);
                from + chrono::Duration::from_std(real).unwrap_or(chrono::Duration::MAX)
            }
        }
    }

    /// The real time to sleep until the billing instant `t` (zero if it has come).
    pub fn real_until(&self, t: DateTime<Utc>) -> Duration {
        let left = (t - self.now()).to_std().unwrap_or(Duration::ZERO);
        match *self {
            BillingClock::Wall => left,
            BillingClock::Simulated { speed, .. } => left / speed,
        }
    }

    /// Whether time is simulated.
    pub fn simulated(&self) -> bool {
        matches!(self, BillingClock::Simulated { .. })
    }

    /// For a status line: `""` on the wall clock, else `simulated time 2025-03-01 10:00 +09:00 (86400x real speed)`
    /// in the billing time zone.
    pub fn describe(&self, tz: chrono_tz::Tz) -> String {
        match *self {
            BillingClock::Wall => String::new(),
            BillingClock::Simulated { speed, .. } => format!(
                "simulated time {} ({speed}x real speed)",
                self.now().with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_time_runs_speed_times_as_fast_and_sleeps_shrink_to_match() {
        let from: DateTime<Utc> = "2025-03-01T01:00:00Z".parse().unwrap();
        let started = Instant::now() - Duration::from_secs(2);
        let c = BillingClock::Simulated { from, started, speed: 3600 };
        let now = c.now();
        assert!(now >= from + chrono::Duration::hours(2) && now < from + chrono::Duration::hours(3), "{now}");
        // A day ahead of the simulated instant is 24 real seconds away at 3600x (less the time this test took).
        let sleep = c.real_until(now + chrono::Duration::days(1));
        assert!(sleep <= Duration::from_secs(24) && sleep > Duration::from_secs(20), "{sleep:?}");
        assert_eq!(c.real_until(from), Duration::ZERO, "a past instant is no sleep");
        assert!(
            c.describe(chrono_tz::Asia::Seoul).starts_with("simulated time 2025-03-01 12:"),
            "{}",
            c.describe(chrono_tz::Asia::Seoul)
        );
        assert!(!BillingClock::start(Start { from: None, simulate: false, speed: 1 }).simulated());
        assert!(BillingClock::start(Start { from: Some(from), simulate: false, speed: 1 }).simulated());
        let wall = BillingClock::Wall;
        assert!((wall.now() - Utc::now()).num_seconds().abs() < 2);
        assert_eq!(wall.describe(chrono_tz::UTC), "");
    }
}
