//! `billd webhooks`: the outbox's events with their delivery state (what happens next to each), `webhooks replay`
//! (send delivered or given-up events again) and `webhooks new-secret` (a fresh Standard Webhooks signing secret).

use crate::app::{existing_store, listed_store, load_config};
use crate::commands::present::{human, rfc3339};
use crate::config::{self, Config, WebhookSecret};
use crate::store::{DeliveryState, Outbox, OutboxEvent, OutboxFilter, Replay};
use crate::text::cell;
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// The most events one listing prints (the oldest first; narrow it with --since).
const LISTED: usize = 10_000;

/// How many random bytes a new secret holds (256 bits; the spec asks for 24 to 64).
pub const NEW_SECRET_BYTES: usize = 32;

/// A fresh secret: [`NEW_SECRET_BYTES`] bytes from the operating system's random generator.
pub fn generate() -> Result<WebhookSecret> {
    let mut key = vec![0u8; NEW_SECRET_BYTES];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("{e}")).context("cannot read the OS random generator")?;
    WebhookSecret::from_key(key).map_err(anyhow::Error::msg)
}

/// `billd webhooks new-secret`: prints a fresh `whsec_…` secret on stdout, and nothing else. It reads no config and
/// writes nothing: where it goes (BILLD_WEBHOOKS__SECRET, webhooks.secret_file, a systemd credential, and the
/// app's verifier) is the operator's to choose.
pub fn new_secret() -> Result<ExitCode> {
    use std::io::Write as _;
    let line = format!("{}\n", generate()?.expose_whsec());
    // Not `say!`: a secret that could not be written must not look printed (exit 1 instead).
    std::io::stdout().write_all(line.as_bytes()).and_then(|_| std::io::stdout().flush()).context("cannot write it")?;
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a date (midnight in the billing time zone) or an RFC 3339 instant.
pub fn since(cfg: &Config, s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = config::parse_date(s).map_err(|e| anyhow!("--since: {e}"))?;
    Ok(cfg.billing.clock.due_at_midnight(d))
}

/// For each listed event that waits behind an earlier pending event of its subscription (events of a subscription
/// are delivered in order), the id of the first of them: it is sent once that one is delivered or given up.
fn heads(events: &[OutboxEvent]) -> std::collections::HashMap<i64, String> {
    let mut head: std::collections::HashMap<Option<&str>, &str> = std::collections::HashMap::new();
    let mut behind = std::collections::HashMap::new();
    for e in events.iter().filter(|e| e.state == DeliveryState::Pending) {
        match head.get(&e.subscription_id.as_deref()) {
            Some(first) => {
                behind.insert(e.position, first.to_string());
            }
            None => {
                head.insert(e.subscription_id.as_deref(), e.id.as_str());
            }
        }
    }
    behind
}

/// What happens next to an event (or what became of it), for people. `behind`: the earlier event of its
/// subscription it waits for, if any.
fn next(e: &OutboxEvent, cfg: &Config, behind: Option<&String>) -> String {
    let tz = cfg.billing.clock.timezone;
    let settled = e.settled_at.map(|t| human(t, tz)).unwrap_or_default();
    if let (DeliveryState::Pending, Some(first), Some(_)) = (e.state, behind, &cfg.webhooks) {
        return format!("waits for {first} (a subscription's events are sent in order)");
    }
    match e.state {
        DeliveryState::Pending if cfg.webhooks.is_none() => "not sent: webhooks are off ([webhooks] url)".into(),
        DeliveryState::Pending if e.attempts == 0 => format!("sent from {}", human(e.next_attempt_at, tz)),
        DeliveryState::Pending => format!("next try at {}", human(e.next_attempt_at, tz)),
        DeliveryState::Delivered => format!("delivered {settled}"),
        // A replay is refused while webhooks are off: not suggested then.
        DeliveryState::Failed if cfg.webhooks.is_none() => {
            format!("given up {settled}; webhooks are off ([webhooks] url): it can be replayed once they are on")
        }
        DeliveryState::Failed => format!("given up {settled}: `billd webhooks replay {}` sends it again", e.id),
    }
}

/// `billd webhooks [--failed] [--since DATE] [--json]`.
pub fn list(path: &Path, failed: bool, since_arg: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let filter =
        OutboxFilter { failed_only: failed, since: since_arg.map(|s| since(&cfg, s)).transpose()?, subscription: None };
    let store = listed_store(&cfg)?;
    let events = store.outbox_events(&filter, LISTED)?;
    let tz = cfg.billing.clock.timezone;
    let behind = heads(&events);
    if as_json {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "id": e.id, "type": e.kind, "created_at": rfc3339(e.created_at, tz),
                    "subscription_id": e.subscription_id, "sequence": e.sequence, "state": e.state.as_str(),
                    "attempts": e.attempts, "last_attempt_at": e.last_attempt_at.map(|t| rfc3339(t, tz)),
                    "last_error": e.last_error,
                    "next_attempt_at": (e.state == DeliveryState::Pending).then(|| rfc3339(e.next_attempt_at, tz)),
                    "waits_for": behind.get(&e.position),
                    "settled_at": e.settled_at.map(|t| rfc3339(t, tz)),
                })
            })
            .collect();
        crate::say!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        crate::say!("no events{}", if failed { " given up" } else { "" });
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!(
        "{:<23} {:<36} {:<27} {:<16} {:>5} {:<9} {:>8}  NEXT / LAST ERROR",
        "CREATED",
        "EVENT",
        "TYPE",
        "SUBSCRIPTION",
        "SEQ",
        "STATE",
        "ATTEMPTS"
    );
    for e in &events {
        let error = match (&e.last_error, e.state) {
            (Some(x), DeliveryState::Pending | DeliveryState::Failed) => format!(" (last: {x})"),
            _ => String::new(),
        };
        crate::say!(
            "{:<23} {:<36} {:<27} {:<16} {:>5} {:<9} {:>8}  {}{}",
            human(e.created_at, tz),
            e.id,
            e.kind,
            cell(e.subscription_id.as_deref().unwrap_or("")),
            e.sequence,
            e.state,
            e.attempts,
            next(e, &cfg, behind.get(&e.position)),
            cell(&error)
        );
    }
    if events.len() == LISTED {
        crate::say!("(the first {LISTED} only: narrow it with --since)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `billd webhooks replay EVENT_ID` or `billd webhooks replay --since DATE`: makes delivered or given-up events
/// pending again, for the running daemon (or the next `tick`) to send, each with its own `webhook-id` and the same
/// body; given up again `max_age` after the replay.
pub fn replay(
    path: &Path,
    id: Option<&str>,
    since_arg: Option<&str>,
    (now, simulate): crate::commands::ops::At,
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    crate::commands::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    let Some(hooks) = &cfg.webhooks else {
        bail!("webhooks are off: set [webhooks] url (and its secret) in {} to send events", path.display());
    };
    let which = match (id, since_arg) {
        (Some(id), None) => Replay::Event(id.to_owned()),
        (None, Some(s)) => Replay::Since(since(&cfg, s)?),
        _ => bail!("give an event id or --since DATE (not both)"),
    };
    let store = existing_store(&cfg)?;
    if let Replay::Event(id) = &which {
        match store.outbox_event(id)? {
            None => bail!(
                "no event {:?} (see `billd webhooks`; events are kept {} after delivery)",
                crate::commands::present::cut(id, 200),
                config::duration::format(hooks.retain)
            ),
            Some(e) if e.state == DeliveryState::Pending => {
                crate::say!("{id}: already on its way ({})", next(&e, &cfg, None));
                return Ok(ExitCode::SUCCESS);
            }
            Some(_) => {}
        }
    }
    let give_up_at = now + chrono::Duration::from_std(hooks.max_age).unwrap_or(chrono::Duration::days(3));
    let ids = store.replay(&which, give_up_at, now)?;
    for id in &ids {
        crate::say!("{id}: sent again by the running daemon (or the next `billd tick`)");
    }
    if ids.is_empty() {
        crate::say!("nothing to replay: no delivered or given-up event since then");
    }
    Ok(ExitCode::SUCCESS)
}
