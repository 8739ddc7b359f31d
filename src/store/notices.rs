//! The storage contract for i'mport's notifications (issue 26): what a notification's merchant_uid names in the book, and a settlement recorded only if its attempt is still as it was read.

use super::{Attempt, ChargeStatus, Recorded, StatusChange, UnresolvedOneTime};
use anyhow::Result;
use chrono::{DateTime, Utc};

/// What the book holds under a merchant_uid, as a notification about it needs to know.
#[derive(Debug, Clone)]
pub enum NoticeTarget {
    /// No charge or period of billd has it (compared exactly as stored).
    Unknown,
    /// A period's attempt not settled yet (pending or unknown), as [`super::Ledger::unresolved_after`] reads it.
    Attempt(Attempt),
    /// A one-time charge (`charge-once`, `charge-key`, a plan change's) not settled yet, as
    /// [`super::OneTime::unresolved_one_time`] reads it.
    OneTime(UnresolvedOneTime),
    /// A paid charge (a period's paid attempt, or a one-time charge), with the imp_uid billd recorded for it.
    Paid { imp_uid: String },
    /// A charge settled otherwise (declined, rejected, held as a mismatch, abandoned): its status.
    Settled(ChargeStatus),
    /// A period of billd that no request ever charged (paid by credit, or skipped).
    Uncharged,
}

/// What a notification reads and writes.
pub trait Notices {
    /// What the book holds under `merchant_uid` (exactly as stored), in one read of committed rows: a period's
    /// unresolved attempt, else its paid attempt, else its latest attempt; else a one-time charge.
    fn notice_target(&self, merchant_uid: &str) -> Result<NoticeTarget>;

    /// Records one outcome as [`super::Ledger::record`] does (the same rules, its events and their outbox entries
    /// included, in one write transaction), only if its attempt is still as `item.attempt` was read: unresolved, with the same status and the same tries, checked
    /// inside the transaction. So a settlement decided from an earlier read (a notification's) never overwrites what
    /// a pass, a resend or another settlement recorded meanwhile, and is never recorded twice. Returns the status
    /// changes, or `None` when the attempt changed (nothing is written).
    fn record_unchanged(&self, item: &Recorded, now: DateTime<Utc>) -> Result<Option<Vec<StatusChange>>>;
}
