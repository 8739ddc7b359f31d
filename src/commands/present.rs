//! One way to show time: tables and messages in the billing time zone with its offset (`2025-04-30 10:00 +09:00`),
//! `--json` as RFC 3339 with that offset.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A time for people: in the billing time zone, to the minute, with its offset.
pub fn human(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %:z").to_string()
}

/// A time for `--json`: RFC 3339 with the billing time zone's offset.
pub fn rfc3339(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339()
}

/// A value cut to `max` characters for a table column (with an ellipsis).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

/// `n` things, in the singular for one (`1 plan`, `2 plans`).
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}
