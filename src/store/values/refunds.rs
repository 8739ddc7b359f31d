//! The storage contract's refund values (issue 24): a refund's status and source, its rows, and what
//! `Refunds` takes and returns.

use super::{ChargeStatus, Doubt};
use chrono::{DateTime, Utc};

spelled! {
    /// The status of a refund.
    RefundStatus {
        /// Its intent is committed; its request may have left.
        Pending = "pending",
        /// Sent, outcome not known: settled by a lookup of the payment after its check time, never by sending again.
        Unknown = "unknown",
        Refunded = "refunded",
        /// Not made (refused by the gateway, or not in the payment's refunds after the quiet period).
        Failed = "failed",
    }
}

impl RefundStatus {
    /// Pending or unknown: to be settled by a lookup.
    pub fn unresolved(self) -> bool {
        matches!(self, RefundStatus::Pending | RefundStatus::Unknown)
    }
}

spelled! {
    /// Who made a refund.
    RefundSource {
        /// `billd refund`.
        Billd = "billd",
        /// Found in the payment's refunds at the gateway (i'mport's console, say).
        External = "external",
    }
}

/// A refund row.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRow {
    pub id: i64,
    /// The charge's merchant_uid, as stored.
    pub merchant_uid: String,
    pub imp_uid: String,
    pub amount: i64,
    pub currency: String,
    /// The refundable balance billd knew when it began the refund (sent as i'mport's checksum); `None` for an
    /// external one.
    pub checksum: Option<i64>,
    /// The operator's reason (or the gateway's, cleaned, for an external one), as given: escape it to print it.
    pub reason: String,
    pub status: RefundStatus,
    pub source: RefundSource,
    /// The gateway's id of the refund (its cancel history entry), once known.
    pub cancellation_id: Option<String>,
    /// Why it failed, or why its outcome is not known.
    pub detail: Option<String>,
    /// No pass looks at an unresolved one before then.
    pub check_at: Option<DateTime<Utc>>,
    /// Since when its request may have been in progress, and for how long it must be left alone.
    pub doubt: Option<Doubt>,
    /// When it was begun (for an external one: when the gateway made it, if it said).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A paid charge as a refund sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundTarget {
    /// As stored.
    pub merchant_uid: String,
    /// `None`: not paid (its status says what it is).
    pub imp_uid: Option<String>,
    pub status: ChargeStatus,
    pub amount: i64,
    pub currency: String,
    /// Refunded so far (done).
    pub refunded: i64,
    /// Its refund whose outcome is not known (pending or unknown), if any.
    pub unresolved: Option<RefundRow>,
    /// What its period's charges may still refund beside the credit their plan changes left, and that credit
    /// (issue 25, [`crate::billing::credit::refund_cap`]); `None`: no such limit.
    pub beside_credit: Option<(i64, i64)>,
}

/// A refund to begin.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRefund {
    pub merchant_uid: String,
    /// `None`: all that remains.
    pub amount: Option<i64>,
    pub reason: String,
}

/// Why a refund was not begun (nothing written); the listing's words.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundRefused {
    /// No charge has this merchant_uid.
    NoCharge,
    /// The charge is not paid (its status).
    NotPaid(ChargeStatus),
    /// Another refund of it is unresolved.
    Unresolved(Box<RefundRow>),
    /// The same refund (merchant_uid, amount, reason; without an amount: the rest, with nothing left) was made
    /// already or is in doubt: that refund (billd's, refunded, pending or unknown; or one the gateway lists, made
    /// outside billd).
    Made(Box<RefundRow>),
    /// More than remains: what was paid, refunded so far, and what remains.
    TooMuch { paid: i64, refunded: i64, remaining: i64 },
    /// More than the charge's period may refund beside the credit its plan changes left (issue 25): what may still
    /// be refunded, and what was credited.
    Credited { refundable: i64, credited: i64 },
    /// The charge's subscription has a plan change whose charge is not settled (its merchant_uid): what that change
    /// credits of the charge's period is not known until it is, so nothing of it is refunded meanwhile (a refund
    /// then was credited again when the change applied).
    ChangePending(String),
}

/// One refund as a payment's cancel history shows it (the gateway's words cleaned by the gateway client).
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRefund {
    /// The gateway's id of it.
    pub id: String,
    pub amount: i64,
    pub at: Option<DateTime<Utc>>,
    pub reason: String,
    /// The gateway's reason came back as the cleaner leaves it (cleaning changed nothing): only such an entry can
    /// be billd's refund, whose reason is always one the cleaner leaves unchanged.
    pub verbatim: bool,
}

/// What a settlement of a charge's refunds changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RefundsSettled {
    /// The refund in doubt, as it is after the settlement (`None`: there was none).
    pub in_doubt: Option<RefundRow>,
    /// Refunds made outside billd, recorded now.
    pub external: Vec<RefundRow>,
    /// billd's refunds settled as failed that the gateway made after all (a cancel that reached it late), now
    /// refunded.
    pub late: Vec<RefundRow>,
}

/// A payment's lookup older than what billd recorded of it: a refund billd recorded (its cancellation id) is not
/// in it (another process recorded it after this lookup was answered). Nothing is recorded from such an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundsStale {
    pub merchant_uid: String,
    pub cancellation_id: String,
}

impl std::fmt::Display for RefundsStale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "charge {}: the payment's lookup does not list refund {} that billd recorded (it is older than that \
             record); nothing was recorded from it",
            self.merchant_uid, self.cancellation_id
        )
    }
}

impl std::error::Error for RefundsStale {}

/// A paid charge for a sweep of refunds made outside billd.
#[derive(Debug, Clone, PartialEq)]
pub struct PaidCharge {
    pub merchant_uid: String,
    pub imp_uid: String,
    pub amount: i64,
}
