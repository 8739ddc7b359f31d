//! The values of a subscription's life beyond charging (issue 25's review): what a pass step takes (its scope), what
//! the gateway holds under a period older than `billing.catch_up_window`, and a paused subscription as `upcoming`
//! reads it.

use super::OpenPeriod;
use crate::billing::model::{Pause, Subscription};
use chrono::{DateTime, Utc};

/// Which due charges a pass step takes: of every subscription, or of one (`only`: a command that charges one
/// subscription now: `retry`, `reactivate --charge-now`, `subscriptions add --charge-now`); and no period due before
/// `not_before` opens (a period older than `billing.catch_up_window` is looked up and settled by
/// [`Ledger::settle_stale`](crate::store::Ledger::settle_stale), never opened: one whose lookup failed waits for a
/// later pass). A retry of a period already open is not affected by `not_before`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub only: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
}

impl Scope {
    /// Every subscription, every due period.
    pub const ALL: Scope = Scope { only: None, not_before: None };
}

/// What the gateway holds under the merchant_uid of a period older than `billing.catch_up_window` (looked up before
/// the period is settled: a book restored from a backup does not know the periods the gateway paid since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleFound {
    /// Paid, as billd would have charged it (amount, currency, billing key: `Payment::mismatches` found nothing):
    /// recorded paid, under this imp_uid.
    Paid { imp_uid: String },
    /// No payment of it, or one that is not this period's: recorded skipped (never charged), with this reason.
    NotPaid { reason: String },
}

/// A subscription paused until a date (`pause --until`), for `upcoming`: as the book holds it, its pause, and its open
/// period waiting for an attempt (charged when it resumes).
pub type PausedSubscription = (Subscription, Pause, Option<OpenPeriod>);
