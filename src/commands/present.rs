//! One way to show time (tables and messages in the billing time zone with its offset, `2025-04-30 10:00 +09:00`;
//! `--json` as RFC 3339 with that offset), and what the config will bill that the database has not seen yet.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use crate::shapes::rfc3339;

/// A time for people: in the billing time zone, to the minute, with its offset.
pub fn human(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %:z").to_string()
}

/// A value cut to `max` characters for a table column (with an ellipsis).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

/// Free text from a person or the gateway (a refund's reason), shown on one line: every character a terminal must not
/// get as it is ([`crate::text::invisible`]) is written escaped (`\u{1b}`).
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if crate::text::invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `n` things, in the singular for one (`1 plan`, `2 plans`).
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// What the config changes that the database has not applied yet (a listing run before the first `sync`, or after
/// an edit the daemon has not reloaded): the subscriptions it would add, and a note for the listing to print (stdout
/// for a table, stderr for JSON). Read only: nothing is written. `None`: the database is in sync with the file.
pub fn unsynced(
    cfg: &crate::config::Config,
    store: &impl crate::store::Book,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<(Vec<crate::billing::model::Subscription>, String)>> {
    let plan = cfg.sync_plan(&store.config_subscriptions()?, cfg.billing.clock.local_date(now));
    if plan.changes.is_empty() {
        return Ok(None);
    }
    let added: Vec<_> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            crate::billing::sync::Change::Insert(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let others = plan.changes.len() - added.len();
    let mut what = Vec::new();
    if !added.is_empty() {
        what.push(format!(
            "{} not in the database yet (listed here as \"not synced\")",
            count(added.len(), "subscription")
        ));
    }
    if others > 0 {
        what.push(format!("{} to apply (not shown here)", count(others, "other change")));
    }
    let note = format!(
        "note: {} has {}: apply it with `billd sync` (a running `billd run` applies it when reloaded, \
         `systemctl reload billd`, or restarted)",
        cfg.file.display(),
        what.join(" and ")
    );
    Ok(Some((added, note)))
}
