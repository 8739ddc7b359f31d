//! `--as-of` in the future (`tick`, `run` and the commands that act at an instant): refused unless `--simulate`.
//!
//! A pass at an instant ahead of the real time charges every period due until then, for real, at whatever gateway
//! `gateway.base_url` names (a pass at `9999-12-31` on a monthly book would send thousands of real charges per
//! subscription). Moving time forward is for tests and demos against a sandbox, so it takes `--simulate`, and
//! `--simulate` runs only against a gateway on this machine (a loopback `base_url`, like `billd sandbox`).

use crate::clock::BillingClock;
use crate::config::Config;
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use tracing::warn;

/// How far ahead of the real time an `--as-of` may be without `--simulate` (clock skew between machines).
pub const MAX_AHEAD: chrono::Duration = chrono::Duration::minutes(1);

/// Checks a pass's instant against the real time `now`: an instant more than [`MAX_AHEAD`] in the future is refused
/// (an error saying why) unless `simulate`, which logs a warning naming the gateway that will be charged.
/// `--simulate` itself runs only against a loopback gateway, whatever the instant (`billd run --simulate --speed N`
/// from a past instant overtakes the real time).
/// The clock of a command that writes "now" (`charge-once`, `charge-key`, `refund`, `refunds --sync`): its
/// `--as-of` (checked as [`check_as_of`] checks it) advancing with real time, or the wall clock without one.
pub fn command_clock(cfg: &Config, (as_of, simulate): (Option<DateTime<Utc>>, bool)) -> Result<BillingClock> {
    let now = Utc::now();
    check_as_of(cfg, as_of.unwrap_or(now), now, simulate)?;
    Ok(BillingClock::command(as_of))
}

pub fn check_as_of(cfg: &Config, as_of: DateTime<Utc>, now: DateTime<Utc>, simulate: bool) -> Result<()> {
    let base_url = &cfg.gateway.base_url;
    if simulate && !crate::config::local::loopback_url(base_url) {
        bail!(
            "--simulate runs only against a sandbox on this machine, and gateway.base_url {base_url} (in {}) is not \
             a loopback address: a simulated clock (at {}) would charge, for real, every period due on it. Nothing \
             was done (point gateway.base_url at `billd sandbox` on 127.0.0.1 to simulate)",
            cfg.file.display(),
            as_of.to_rfc3339()
        );
    }
    if as_of <= now + MAX_AHEAD {
        return Ok(());
    }
    let ahead = describe(as_of - now);
    if !simulate {
        bail!(
            "--as-of {} is {ahead} after the current time ({}): a pass at a future instant charges, for real, every \
             period due until then at the gateway {base_url} (gateway.base_url in {}); nothing was done. Pass \
             --simulate to run it anyway (for a sandbox or test gateway only)",
            as_of.to_rfc3339(),
            now.to_rfc3339(),
            cfg.file.display()
        );
    }
    warn!(
        event = "tick.simulate",
        as_of = %as_of.to_rfc3339(),
        base_url = %base_url,
        "tick.simulate: --as-of is {ahead} in the future; every charge due until then is sent to {base_url} for real"
    );
    Ok(())
}

/// A rough span, for a message: `3 days`, `2 hours`, `5 minutes`.
fn describe(d: chrono::Duration) -> String {
    let (n, unit) = if d.num_days() >= 2 {
        (d.num_days(), "days")
    } else if d.num_hours() >= 2 {
        (d.num_hours(), "hours")
    } else {
        (d.num_minutes().max(1), "minutes")
    };
    format!("{n} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let text = "[billing]\ntimezone = \"Asia/Seoul\"\n\n[gateway]\nbase_url = \"https://api.iamport.kr\"\n\
                    imp_key = \"k\"\nimp_secret = \"s\"\n";
        crate::config::parse_str(text, std::path::Path::new("/etc/billd/schedules.toml")).unwrap()
    }

    #[test]
    fn a_future_instant_needs_simulate() {
        let now: DateTime<Utc> = "2026-11-30T00:00:00Z".parse().unwrap();
        let c = cfg();
        assert!(check_as_of(&c, now - chrono::Duration::days(400), now, false).is_ok(), "the past is fine");
        assert!(check_as_of(&c, now + chrono::Duration::seconds(59), now, false).is_ok(), "clock skew is fine");
        let far: DateTime<Utc> = "9999-12-31T23:59:59Z".parse().unwrap();
        let e = check_as_of(&c, far, now, false).unwrap_err().to_string();
        assert!(e.contains("--simulate") && e.contains("https://api.iamport.kr") && e.contains("for real"), "{e}");
        // Issue 21, 7: --simulate against a real gateway sent real charges; it runs only against this machine.
        let e = check_as_of(&c, far, now, true).unwrap_err().to_string();
        assert!(e.contains("not a loopback address") && e.contains("Nothing was done"), "{e}");
        let local = |url: &str| {
            let text = format!(
                "[billing]\ntimezone = \"Asia/Seoul\"\n\n[gateway]\nbase_url = \"{url}\"\nimp_key = \"k\"\nimp_secret = \"s\"\n"
            );
            crate::config::parse_str(&text, std::path::Path::new("/etc/billd/schedules.toml")).unwrap()
        };
        for url in ["http://127.0.0.1:8801", "http://localhost:9", "http://[::1]:80", "http://127.9.9.9"] {
            assert!(check_as_of(&local(url), far, now, true).is_ok(), "{url}");
        }
        for url in ["https://api.iamport.kr", "https://10.0.0.1", "https://localhost.example.com"] {
            assert!(check_as_of(&local(url), far, now, true).is_err(), "{url}");
            // `run --simulate --speed N` from the past overtakes the real time: --simulate alone needs this machine.
            assert!(check_as_of(&local(url), now - chrono::Duration::days(30), now, true).is_err(), "{url}");
            assert!(check_as_of(&local(url), now - chrono::Duration::days(30), now, false).is_ok(), "{url}");
        }
    }
}
