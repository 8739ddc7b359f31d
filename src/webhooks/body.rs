//! A webhook event's payload: `id`, `type`, `created_at`, `subscription_id`, `sequence` and `data` (the charge or
//! the subscription as the `--json` listings show them, with the event's own fields).

use crate::shapes::{charge_json, rfc3339, subscription_json};
use crate::store::OutboxEvent;
use chrono::DateTime;
use chrono_tz::Tz;
use serde_json::{Value, json};

/// The event's fields that are instants (written in UTC by the store), rewritten with the billing time zone's offset.
const INSTANTS: [&str; 4] = ["next_retry", "trial_ends", "due_at", "at"];

/// The payload of `e`, as sent (compact JSON). `tz`: the billing time zone; `retries`: the dunning policy's.
pub fn render(e: &OutboxEvent, tz: Tz, retries: usize) -> String {
    let s = &e.snapshot;
    let mut data = match (&s.charge, &s.subscription) {
        (Some(c), _) => charge_json(c, tz),
        (None, Some(sub)) => subscription_json(sub, retries, tz),
        (None, None) => json!({}),
    };
    if let Value::Object(d) = &mut data {
        for (k, v) in &s.extra {
            let v = match (INSTANTS.contains(&k.as_str()), v.as_str().map(DateTime::parse_from_rfc3339)) {
                (true, Some(Ok(t))) => json!(rfc3339(t.to_utc(), tz)),
                _ => v.clone(),
            };
            // The charge's or the subscription's own fields win (an event's copy of them is older or the same).
            d.entry(k.clone()).or_insert(v);
        }
    }
    json!({
        "id": e.id,
        "type": e.kind,
        "created_at": rfc3339(e.created_at, tz),
        "subscription_id": e.subscription_id,
        "sequence": e.sequence,
        "data": data,
    })
    .to_string()
}
