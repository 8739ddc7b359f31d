//! The JSON shapes of a charge and a subscription (with one way to write an instant in them), shared by the
//! `--json` listings and the webhook events' `data`.

use crate::realtime::{RealClock, SystemClock};
use crate::store::{ChargeRow, Doubt, Failure, OneTimeKind, SubscriptionRow};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

/// A time for `--json`: RFC 3339 with the billing time zone's offset.
pub fn rfc3339(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339()
}

/// What a row is: a subscription period's attempt, a one-time key-in charge of a card (`charge-once`), or a
/// one-time charge of a stored billing key (`charge-key`).
pub fn kind(r: &ChargeRow) -> &'static str {
    match r.one_time {
        None => "period",
        Some(OneTimeKind::Card) => "one-time",
        Some(OneTimeKind::Key) => "one-time-key",
        Some(OneTimeKind::Proration) => "proration",
    }
}

/// A charge as `billd charges --json` shows it (`customer_uid` null for a key-in charge: no billing key).
pub fn charge_json(r: &ChargeRow, tz: Tz) -> Value {
    let period = r.one_time.is_none().then_some((r.period, r.attempt));
    let key = Some(r.customer_uid.as_str()).filter(|k| !k.is_empty());
    json!({
        "kind": kind(r), "subscription_id": r.subscription_id, "period": period.map(|p| p.0),
        "attempt": period.map(|p| p.1), "tries": r.attempt,
        "merchant_uid": r.merchant_uid, "customer_uid": key, "amount": r.amount, "currency": r.currency,
        "status": r.status.as_str(), "failure": r.failure.map(Failure::as_str), "imp_uid": r.imp_uid,
        "fail_reason": r.fail_reason, "refunded": r.refunded,
        "due_at": rfc3339(r.due_at, tz), "made_at": rfc3339(r.created_at, tz), "updated_at": rfc3339(r.updated_at, tz),
    })
}

/// An unresolved attempt's next look, in real time: the later of its check time and the end of the quiet period of
/// its request in doubt, measured now on the real clocks (a past `--as-of` or a step of the wall clock never makes
/// it look sooner than it will).
pub fn next_look(check_at: Option<DateTime<Utc>>, doubt: Option<&Doubt>) -> Option<DateTime<Utc>> {
    match doubt {
        Some(d) => Some(d.next_look(check_at, &SystemClock.now())),
        None => check_at,
    }
}

/// A subscription's next charge: (when, what), for the NEXT CHARGE column. A past-due subscription's next charge is
/// its retry, not its next period; an attempt whose outcome is unknown is looked up first.
pub fn next_charge(r: &SubscriptionRow) -> (Option<DateTime<Utc>>, &'static str) {
    // A charge already at the gateway is settled by lookup whatever the status (a cancel or a pause promised it).
    if r.check_at.is_some() || r.doubt.is_some() {
        return (next_look(r.check_at, r.doubt.as_ref()), "lookup");
    }
    if !r.status.bills() {
        return (None, "");
    }
    if let Some(at) = r.next_attempt_at {
        return (Some(at), if r.declines > 0 { "retry" } else { "charge" });
    }
    (r.next_due_at, "charge")
}

/// A subscription as `billd subscriptions --json` shows it (`retries`: the dunning policy's retries).
pub fn subscription_json(r: &SubscriptionRow, retries: usize, tz: Tz) -> Value {
    let (at, kind) = next_charge(r);
    json!({
        "id": r.id, "customer_uid": r.customer_uid, "plan": r.plan, "amount": r.amount, "currency": r.currency,
        "interval": r.interval, "status": r.status.as_str(), "source": r.source.as_str(),
        "next_due_at": r.next_due_at.map(|t| rfc3339(t, tz)),
        "next_charge": at.map(|t| json!({ "at": rfc3339(t, tz), "kind": kind })),
        "retries_left": retries_left(r, retries),
        "paid_periods": r.paid_periods,
        "why": r.why,
        "resume_at": r.resume_at.map(|t| rfc3339(t, tz)),
        "cancel_at": r.cancel_at.map(|t| rfc3339(t, tz)),
        "stopped_by": r.stopped_by_dunning.then_some("dunning"),
    })
}

/// Retries left for the open period (or for the next one, for a subscription that bills); `None` otherwise: the
/// scheduled retries not yet made, the one shown as NEXT CHARGE included. A period's first decline schedules the
/// first retry and makes none (`billing::dunning`: the n-th decline is followed by the n-th retry, if there is one),
/// so with 3 retries, 3 are left after it (attempts 2, 3 and 4 are made).
pub fn retries_left(r: &SubscriptionRow, retries: usize) -> Option<usize> {
    let made = (r.declines as usize).saturating_sub(1);
    r.status.bills().then(|| retries.saturating_sub(made))
}
