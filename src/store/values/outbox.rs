//! The outbox's values: a public event (what webhooks deliver) with its snapshot and delivery state, and which of
//! the book's changes are published under which event type.

use super::{ChargeRow, SubscriptionRow};
use crate::billing::model::Status;
use crate::billing::status::Cause;
use chrono::{DateTime, Utc};

spelled! {
    /// Where an event is in its delivery.
    DeliveryState {
        /// Not delivered yet (never tried, or tried and to be tried again).
        Pending = "pending",
        /// The app answered 2xx.
        Delivered = "delivered",
        /// Given up (its `max_age` passed without a 2xx): kept, and sent again only by a replay.
        Failed = "failed",
    }
}

/// What an event is about, as the change left it: the charge or the subscription as the `--json` listings show
/// them, and the event's own fields (`next_retry`, `final_action`, `reason`, the refund, ...).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<ChargeRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionRow>,
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A public event in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Its place in the whole outbox (the order events were written in), for paging.
    pub position: i64,
    /// Stable and unique forever (`evt_` + 32 hex digits): the `webhook-id` of every delivery of it.
    pub id: String,
    /// `charge.paid`, `subscription.canceled`, ... (see [`PUBLIC_TYPES`]).
    pub kind: String,
    /// When the change happened (billing clock).
    pub created_at: DateTime<Utc>,
    pub subscription_id: Option<String>,
    /// Its place among its subscription's events (from 1; events of no subscription count among themselves).
    pub sequence: u64,
    pub snapshot: Snapshot,
    /// The payload as first sent (every later delivery sends these bytes); `None` before the first attempt.
    pub body: Option<String>,
    pub state: DeliveryState,
    pub attempts: u32,
    /// When it may be sent (next); meaningful while pending.
    pub next_attempt_at: DateTime<Utc>,
    /// Given up after this instant (`None`: `created_at` + the configured `max_age`; a replay sets it).
    pub give_up_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Why its last attempt failed (an HTTP status, a timeout, no connection), without the answer's body.
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    pub settled_at: Option<DateTime<Utc>>,
}

/// The outcome of one delivery attempt, as the delivery service decided it.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// 2xx.
    Delivered,
    /// Failed; try again at this instant.
    RetryAt(DateTime<Utc>, String),
    /// Failed, and its time is up: given up (kept, replayable).
    GaveUp(String),
}

/// One delivery attempt to record: the event, what was sent, and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub id: String,
    pub body: String,
    pub outcome: Delivery,
}

/// Which events of the outbox a listing shows.
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    pub failed_only: bool,
    pub since: Option<DateTime<Utc>>,
    pub subscription: Option<String>,
}

/// What a replay sends again.
#[derive(Debug, Clone)]
pub enum Replay {
    /// This event (delivered or failed; a pending one is already on its way).
    Event(String),
    /// Every delivered or failed event created at or after this instant.
    Since(DateTime<Utc>),
}

/// The outbox in numbers, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxStats {
    pub pending: u64,
    /// The creation of the first pending event in the order events were written (the oldest).
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Every event type billd publishes (README, "Webhooks").
pub const PUBLIC_TYPES: &[&str] = &[
    "charge.paid",
    "charge.failed",
    "charge.refunded",
    "subscription.created",
    "subscription.updated",
    "subscription.trialing",
    "subscription.past_due",
    "subscription.active",
    "subscription.canceling",
    "subscription.suspended",
    "subscription.resumed",
    "subscription.canceled",
    "subscription.completed",
    "subscription.plan_changed",
    "subscription.trial_ending",
    "period.skipped",
    "period.paid_by_credit",
];

/// The event a status change publishes: `subscription.<status>`, except that a subscription made active by an
/// operator (a resume, a reactivation, an end of pause) is `subscription.resumed`; made active by a payment (a
/// past-due one recovered, a trial's first period paid) or by dunning skipping a period, `subscription.active`.
pub fn status_event(to: Status, cause: Cause) -> &'static str {
    match to {
        Status::Active if !matches!(cause, Cause::Paid | Cause::Exhausted(_)) => "subscription.resumed",
        Status::Trialing => "subscription.trialing",
        Status::Active => "subscription.active",
        Status::PastDue => "subscription.past_due",
        Status::Canceling => "subscription.canceling",
        Status::Suspended => "subscription.suspended",
        Status::Canceled => "subscription.canceled",
        Status::Completed => "subscription.completed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::dunning::OnExhausted;

    #[test]
    fn every_status_event_is_a_public_type() {
        for to in Status::ALL {
            for cause in [Cause::Paid, Cause::Resume, Cause::Reactivate, Cause::Exhausted(OnExhausted::Skip)] {
                assert!(PUBLIC_TYPES.contains(&status_event(to, cause)), "{to} {cause:?}");
            }
        }
        assert_eq!(status_event(Status::Active, Cause::Paid), "subscription.active");
        assert_eq!(status_event(Status::Active, Cause::Resume), "subscription.resumed");
        assert_eq!(status_event(Status::Active, Cause::Reactivate), "subscription.resumed");
    }

    #[test]
    fn a_snapshot_round_trips_through_json() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = Snapshot {
            charge: Some(ChargeRow {
                subscription_id: Some("sub-1".into()),
                one_time: Some(super::super::OneTimeKind::Proration),
                period: 3,
                attempt: 2,
                merchant_uid: "billd-sub-1-3".into(),
                customer_uid: "cust".into(),
                amount: 9900,
                currency: "KRW".into(),
                status: super::super::ChargeStatus::Failed,
                failure: Some(super::super::Failure::Declined),
                imp_uid: Some("imp_1".into()),
                fail_reason: Some("card declined".into()),
                due_at: t,
                created_at: t,
                updated_at: t,
                refunded: 0,
            }),
            subscription: None,
            extra: serde_json::Map::from_iter([("next_retry".to_owned(), serde_json::json!("2025-01-01T10:00:00Z"))]),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&text).unwrap(), s);
    }
}
