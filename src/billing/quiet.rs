//! The quiet period in real time: how long a request that may still be in progress must be left alone, measured on
//! every real clock that applies (never on the billing clock), so that no `--as-of` and no step of the wall clock
//! shortens it.

use std::time::Duration;

/// A reading of the real clocks, taken by the process that sends or records a request (`crate::realtime` reads
/// them): the wall clock, and where the system has one, a clock that wall-clock steps do not move and that every
/// process of this boot shares (Linux `CLOCK_BOOTTIME`, with the kernel's `boot_id` naming the boot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealInstant {
    /// Milliseconds since the UNIX epoch on the wall clock (`CLOCK_REALTIME`).
    pub wall_ms: i64,
    /// Milliseconds since boot (`CLOCK_BOOTTIME`), with the id of the boot it counts in (empty where the id could
    /// not be read, e.g. under systemd's `ProcSubset=pid`); `None` where there is no such clock.
    pub boot: Option<(String, i64)>,
}

impl RealInstant {
    /// A reading of the wall clock alone (what is known of a request recorded before billd kept real instants).
    pub fn wall(wall_ms: i64) -> RealInstant {
        RealInstant { wall_ms, boot: None }
    }
}

/// The timeout assumed for a request whose row recorded none (written by a billd older than schema 6, whose
/// process may have waited longer than this one does): generous, as the quiet period is twice it.
pub const LEGACY_TIMEOUT: Duration = Duration::from_secs(300);

/// The quiet period of a request sent with a timeout of `timeout_ms` (`None`: not recorded, see
/// [`LEGACY_TIMEOUT`]): twice that timeout, a margin for a request still in progress at the gateway (which
/// documents no time limit of its own). Recorded with each request, so a reload or a restart with a shorter
/// timeout never shortens it.
pub fn quiet_period(timeout_ms: Option<u64>) -> Duration {
    2 * timeout_ms.map(Duration::from_millis).unwrap_or(LEGACY_TIMEOUT).min(Duration::from_secs(86_400 * 366))
}

/// How much longer a request that may have been in progress at `since` must be left alone at `now`, for a quiet
/// period of `quiet`: zero once the quiet period has passed on **every** clock that applies. The wall clock always
/// applies. The boot clock applies whenever both readings have one, through a lower bound of the real time elapsed
/// ([`boot_elapsed_at_least`]), so a wall clock stepped forward is caught by it, whether or not the boot id could
/// be read. A clock that ran backward (less elapsed than nothing) only makes the wait longer.
pub fn remaining(since: &RealInstant, now: &RealInstant, quiet: Duration) -> Duration {
    let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
    let wait = |elapsed_ms: i64| quiet_ms.saturating_sub(elapsed_ms).max(0);
    let mut ms = wait(now.wall_ms.saturating_sub(since.wall_ms));
    if let (Some(then), Some(now)) = (&since.boot, &now.boot) {
        ms = ms.max(wait(boot_elapsed_at_least(then, now)));
    }
    Duration::from_millis(ms as u64)
}

/// When a request whose go was written at `go` may be in progress at the gateway until, at the latest, for a quiet
/// period counted from it: `go` plus `late` (its sender lets it leave within one timeout of its go, and its client
/// gives it up within one more if it has not reached the gateway: two timeouts in all), but never before `now`. On
/// each clock: the wall clock, and the boot clock when both readings are of the same known boot (otherwise `now`'s).
/// An outside review found a daemon taking over a charge counted its quiet period from its own lookup, while the
/// first owner's request, still connecting, reached the gateway after it: both were charged.
pub fn in_doubt_until(go: &RealInstant, late: Duration, now: &RealInstant) -> RealInstant {
    let late_ms = i64::try_from(late.as_millis()).unwrap_or(i64::MAX);
    let wall_ms = now.wall_ms.max(go.wall_ms.saturating_add(late_ms));
    let boot = match (&go.boot, &now.boot) {
        (Some((id0, t0)), Some((id1, t1))) if !id0.is_empty() && id0 == id1 => {
            Some((id1.clone(), (*t1).max(t0.saturating_add(late_ms))))
        }
        _ => now.boot.clone(),
    };
    RealInstant { wall_ms, boot }
}

/// Real milliseconds that have certainly passed between two boot-clock readings `(boot id, ms since boot)`:
/// - the same known boot: the difference (negative, or less than nothing, only makes the wait longer);
/// - known different boots (a reboot in between): at least the time since the later boot, `t1`;
/// - a boot id unknown on either side (it could not be read): `t1 - t0` if that is not negative, else `t1`. Both
///   are lower bounds whichever is true: in one boot the difference is exact, and after a reboot even `t1` alone
///   is less than what passed (and `t1 - t0` less still).
pub fn boot_elapsed_at_least(then: &(String, i64), now: &(String, i64)) -> i64 {
    let ((id0, t0), (id1, t1)) = (then, now);
    let known = !id0.is_empty() && !id1.is_empty();
    if known && id0 == id1 {
        t1.saturating_sub(*t0)
    } else if known || t1 < t0 {
        *t1
    } else {
        t1.saturating_sub(*t0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(6);

    fn at(wall_ms: i64, boot: Option<(&str, i64)>) -> RealInstant {
        RealInstant { wall_ms, boot: boot.map(|(id, ms)| (id.to_owned(), ms)) }
    }

    #[test]
    fn both_clocks_must_have_passed_the_quiet_period() {
        let sent = at(1_000_000, Some(("boot-a", 50_000)));
        // 2 s later on both clocks: 4 s to go.
        assert_eq!(remaining(&sent, &at(1_002_000, Some(("boot-a", 52_000))), QUIET), Duration::from_secs(4));
        // 6 s later on both: over.
        assert_eq!(remaining(&sent, &at(1_006_000, Some(("boot-a", 56_000))), QUIET), Duration::ZERO);
    }

    #[test]
    fn a_wall_clock_stepped_forward_does_not_shorten_the_wait() {
        let sent = at(1_000_000, Some(("boot-a", 50_000)));
        // The wall clock jumped five hours ahead, one real second after the send.
        let now = at(1_000_000 + 5 * 3_600_000, Some(("boot-a", 51_000)));
        assert_eq!(remaining(&sent, &now, QUIET), Duration::from_secs(5));
    }

    #[test]
    fn a_wall_clock_stepped_back_only_makes_the_wait_longer() {
        let sent = at(1_000_000, Some(("boot-a", 50_000)));
        // 10 real seconds later, but the wall clock was set back a minute meanwhile.
        let now = at(1_000_000 - 50_000, Some(("boot-a", 60_000)));
        assert_eq!(remaining(&sent, &now, QUIET), Duration::from_secs(56));
    }

    #[test]
    fn after_a_reboot_the_wall_clock_and_the_time_since_the_boot_decide() {
        let sent = at(1_000_000, Some(("boot-a", 50_000)));
        // The boot clock restarted near zero in another boot: the wall clock applies, and at least the time since
        // that boot has passed (a lower bound, whatever the wall clock says).
        assert_eq!(remaining(&sent, &at(1_003_000, Some(("boot-b", 4_000))), QUIET), Duration::from_secs(3));
        assert_eq!(remaining(&sent, &at(1_007_000, Some(("boot-b", 1_000))), QUIET), Duration::from_secs(5));
        assert_eq!(remaining(&sent, &at(1_007_000, Some(("boot-b", 6_000))), QUIET), Duration::ZERO);
        // A reading without a boot clock (a row from before billd kept one) has only the wall clock too.
        assert_eq!(
            remaining(&RealInstant::wall(1_000_000), &at(1_001_000, Some(("boot-a", 9))), QUIET),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_request_given_its_go_is_in_doubt_two_timeouts_after_it_at_the_earliest() {
        let go = at(1_000_000, Some(("boot-a", 50_000)));
        let late = Duration::from_secs(10);
        // Looked at right after the go: in doubt until the go plus two timeouts, on both clocks.
        let soon = in_doubt_until(&go, late, &at(1_001_000, Some(("boot-a", 51_000))));
        assert_eq!(soon, at(1_010_000, Some(("boot-a", 60_000))));
        // So the quiet period after it ends no sooner than go + late + quiet.
        assert_eq!(remaining(&soon, &at(1_001_000, Some(("boot-a", 51_000))), QUIET), Duration::from_secs(15));
        // Looked at long after: from the look.
        let long = at(2_000_000, Some(("boot-a", 1_050_000)));
        assert_eq!(in_doubt_until(&go, late, &long), long);
        // Another machine's boot clock (another boot id) is not carried over: the looker's stands.
        let elsewhere = at(1_001_000, Some(("boot-b", 7)));
        assert_eq!(in_doubt_until(&go, late, &elsewhere), at(1_010_000, Some(("boot-b", 7))));
    }

    #[test]
    fn extreme_readings_do_not_overflow() {
        let sent = at(i64::MAX, Some(("b", i64::MAX)));
        assert_eq!(
            remaining(&sent, &at(i64::MIN, Some(("b", i64::MIN))), QUIET),
            Duration::from_millis(i64::MAX as u64)
        );
        assert_eq!(remaining(&at(i64::MIN, None), &at(i64::MAX, None), Duration::MAX), Duration::ZERO);
    }

    /// A review found that under the shipped unit (`ProcSubset=pid` hides `/proc/sys`, so no boot id) the boot
    /// clock was dropped and a wall clock stepped forward resent a charge in flight. Without a boot id on either
    /// side, the boot clock still bounds the wait.
    #[test]
    fn an_unknown_boot_id_still_lets_the_boot_clock_bound_the_wait() {
        let sent = at(1_000_000, Some(("", 50_000)));
        // The wall clock stepped 5 h forward, 1 s later on the boot clock: 5 s to go.
        let later = at(1_000_000 + 5 * 3_600_000, Some(("", 51_000)));
        assert_eq!(remaining(&sent, &later, QUIET), Duration::from_secs(5));
        // One side known, the other not: the same.
        assert_eq!(remaining(&at(1_000_000, Some(("boot-a", 50_000))), &later, QUIET), Duration::from_secs(5));
        // The boot clock less than before: a reboot, or so it must be taken; elapsed is at least the time since
        // the boot (3 s here), so 3 s to go.
        let rebooted = at(1_000_000 + 5 * 3_600_000, Some(("", 3_000)));
        assert_eq!(remaining(&sent, &rebooted, QUIET), Duration::from_secs(3));
        // A known reboot: at least the uptime has passed.
        let known = at(1_000_000 + 5 * 3_600_000, Some(("boot-b", 2_000)));
        assert_eq!(remaining(&at(1_000_000, Some(("boot-a", 50_000))), &known, QUIET), Duration::from_secs(4));
    }
}
