//! What a pass reports: its counts (`PassReport`, `pass.done`), the refusal of billd's credentials, and the log line
//! of each recorded outcome and status change.

use crate::billing::dunning::Decision;
use crate::store::{AttemptResult, Recorded, StatusChange};
use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

/// A pass refused to start: the gateway refused billd's credentials (nothing was claimed or sent).
#[derive(Debug)]
pub struct Unauthorized {
    pub imp_key: String,
    pub reason: String,
}

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the gateway refused gateway.imp_key {:?} and its imp_secret ({}); nothing was sent (check both)",
            self.imp_key, self.reason
        )
    }
}

impl std::error::Error for Unauthorized {}

/// A pass refused to start because the config on disk was refused (its sync failed: the mass-cancel guard, or any
/// other error): nothing is claimed, sent or resent until it is fixed or applied with `billd sync --force`.
#[derive(Debug)]
pub struct ConfigRefused(pub String);

impl std::fmt::Display for ConfigRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config refused, nothing (more) is charged: {}", self.0)
    }
}

impl std::error::Error for ConfigRefused {}

/// A pass refused to start because billing is stopped by a safety rail (`limits.max_charges_per_pass` tripped):
/// nothing is claimed or sent until an operator raises the limit or runs `billd safety release`.
#[derive(Debug)]
pub struct SafetyStopped {
    pub stop: crate::store::SafetyStop,
    pub file: String,
    /// The billing time zone (the stop's instant is shown in it).
    pub tz: chrono_tz::Tz,
}

impl std::fmt::Display for SafetyStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "billing is stopped since {} by a safety rail ({}); nothing is charged until an operator acts: raise \
             limits.max_charges_per_pass in {} above {}, or confirm with `billd safety release` (the next pass may \
             then send up to the limit again)",
            self.stop.at.with_timezone(&self.tz).format("%Y-%m-%d %H:%M %:z"),
            self.stop.reason,
            self.file,
            self.stop.max_charges_per_pass
        )
    }
}

impl std::error::Error for SafetyStopped {}

/// A pass stopped sending because its rejections were a mass rejection
/// ([`crate::billing::rails::MassRejection`]): the gateway account or the config is wrong, not the customers' keys.
/// The rejected charges were recorded as withheld (their periods stay open, no subscription changed status).
#[derive(Debug)]
pub struct MassRejected {
    pub rejected: usize,
    pub answers: usize,
    /// One of the gateway's refusals, as an example.
    pub example: String,
    /// The config file (whose `limits.mass_rejection_*` set the threshold).
    pub file: String,
}

impl std::fmt::Display for MassRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the gateway rejected {} of the {} charges it answered in this pass ({}): billd stopped sending and \
             changed no subscription for them (their periods stay open). Check gateway.imp_key and base_url in {} \
             (a test key against the live account, or a fresh sandbox, knows none of the billing keys); if the \
             rejections are real, cancel those subscriptions or raise limits.mass_rejection_count",
            self.rejected, self.answers, self.example, self.file
        )
    }
}

impl std::error::Error for MassRejected {}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassReport {
    pub reconciled: usize,
    /// Periods skipped, never charged: due longer ago than `billing.catch_up_window` and not paid at the gateway.
    pub skipped: usize,
    /// Periods due longer ago than `billing.catch_up_window` that the gateway had paid (the book did not know):
    /// recorded paid, not charged again.
    pub found_paid: usize,
    /// Subscriptions whose period older than the window could not be looked up: left for a later pass.
    pub stale_left: usize,
    /// Pauses whose end came that could not be resumed: left for the next pass.
    pub resumes_failed: usize,
    pub opened: usize,
    pub sent: usize,
    pub paid: usize,
    pub declined: usize,
    pub rejected: usize,
    /// Rejections of a mass rejection: recorded as withheld (their periods stay open).
    pub withheld: usize,
    pub unresolved: usize,
    /// Paid payments found under an attempt's merchant_uid that are not what billd asked for (held).
    pub mismatched: usize,
    /// Claimed charges refused at the moment of sending (voided by a cancel, a pause or a sync meanwhile, or their
    /// subscription no longer bills): never sent.
    pub withdrawn: usize,
    /// Unresolved charges left alone because the real quiet period of their request is not over yet.
    pub deferred: usize,
    pub next_wake: Option<DateTime<Utc>>,
    /// When the pass committed its first intent, and its last outcome (for `charge_ms` in logs and benchmarks).
    pub first_claim: Option<std::time::Instant>,
    pub last_record: Option<std::time::Instant>,
}

impl PassReport {
    /// From the first intent committed to the last outcome recorded (`None` when nothing was sent).
    pub fn charge_time(&self) -> Option<std::time::Duration> {
        Some(self.last_record?.saturating_duration_since(self.first_claim?))
    }

    /// Logs the pass's `pass.done` line (`billd tick` always; `billd run` for passes that did something).
    pub fn log_done(&self, as_of: DateTime<Utc>, took: std::time::Duration) {
        info!(
            event = "pass.done",
            as_of = %as_of.to_rfc3339(),
            pass_ms = ms(took),
            charge_ms = self.charge_time().map(ms).unwrap_or(0.0),
            reconciled = self.reconciled,
            skipped = self.skipped,
            found_paid = self.found_paid,
            opened = self.opened,
            sent = self.sent,
            paid = self.paid,
            declined = self.declined,
            rejected = self.rejected,
            withheld = self.withheld,
            unresolved = self.unresolved,
            mismatched = self.mismatched,
            withdrawn = self.withdrawn,
            deferred = self.deferred,
            next_wake = %self.next_wake.map(|t| t.to_rfc3339()).unwrap_or_else(|| "none".into()),
            "pass.done"
        );
    }
}

/// A duration in milliseconds, rounded to two decimals for a log field (`pass_ms=6.84`).
fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// What the outcome writer recorded in a pass.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) paid: usize,
    pub(super) declined: usize,
    pub(super) rejected: usize,
    pub(super) withheld: usize,
    pub(super) unresolved: usize,
    pub(super) mismatched: usize,
    /// Set when the pass's rejections were a mass rejection: how many, of how many answers, and one refusal.
    pub(super) mass_rejection: Option<MassRejected>,
    pub(super) last_commit: Option<std::time::Instant>,
}

pub(super) fn log_outcome(r: &Recorded, tally: &mut Tally) {
    let a = &r.attempt;
    match (&r.result, r.decision) {
        (AttemptResult::Paid { imp_uid }, _) => {
            tally.paid += 1;
            info!(event = "charge.paid", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                imp_uid = %imp_uid, "charge.paid");
        }
        (AttemptResult::Declined { reason, .. } | AttemptResult::Rejected { reason }, decision) => {
            let failure = if matches!(r.result, AttemptResult::Declined { .. }) {
                tally.declined += 1;
                "declined"
            } else {
                tally.rejected += 1;
                "rejected"
            };
            let (next_retry, final_action) = match decision {
                Decision::RetryAt(t) => (t.to_rfc3339(), "retry"),
                // An operator's extra attempt: not counted; the scheduled retry stays.
                Decision::BackToSchedule(t) => (t.to_rfc3339(), "retry_uncounted"),
                Decision::Exhausted(x) => ("none".to_string(), x.as_str()),
                _ => ("none".to_string(), "none"),
            };
            warn!(event = "charge.failed", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, failure, reason = %reason,
                attempt = a.attempt, next_retry = %next_retry, final_action, "charge.failed");
        }
        (AttemptResult::Mismatch { reason }, _) => {
            tally.mismatched += 1;
            error!(event = "charge.mismatch", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                reason = %reason, "charge.mismatch: not taken as paid; the period is held for an operator");
        }
        (AttemptResult::Unresolved { reason } | AttemptResult::ResendRefused { reason }, decision) => {
            tally.unresolved += 1;
            let check_at = match decision {
                Decision::CheckAt(t) => t.to_rfc3339(),
                _ => String::new(),
            };
            warn!(event = "charge.unknown", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                reason = %reason, check_at = %check_at, "charge.unknown");
        }
        (AttemptResult::Withheld { reason }, _) => {
            tally.withheld += 1;
            warn!(event = "charge.withheld", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                reason = %reason, "charge.withheld: rejected in a mass rejection; the period stays open");
        }
        (AttemptResult::Abandoned { reason }, _) => {
            info!(event = "charge.abandoned", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                reason = %reason, "charge.abandoned");
        }
    }
}

/// Logs status changes (an outcome's, or an end a pass made: a cancel date come, a term over), each as the event
/// named after the status it moved to: `subscription.active` and `subscription.completed` at INFO, the others at
/// WARN; an end with credit left says how much it released (`credit_released`: refundable).
pub(super) fn log_changes(changes: &[StatusChange]) {
    use crate::billing::model::Status::{Active, Completed};
    for c in changes {
        let (event, id, from, released) =
            (format!("subscription.{}", c.to.as_str()), &c.subscription_id, c.from, c.credit_released);
        let note = format!(": it ended with {released} of credit left, released: refundable (`billd refund`)");
        match (matches!(c.to, Active | Completed), released > 0) {
            (true, false) => info!(event = %event, subscription = %id, from = %from, "{event}"),
            (true, true) => {
                info!(event = %event, subscription = %id, from = %from, credit_released = released, "{event}{note}")
            }
            (false, false) => warn!(event = %event, subscription = %id, from = %from, "{event}"),
            (false, true) => {
                warn!(event = %event, subscription = %id, from = %from, credit_released = released, "{event}{note}")
            }
        }
    }
}
