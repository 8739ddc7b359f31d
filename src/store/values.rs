//! The row and value types of the storage contract: what the traits of `store` take and return. Instants are
//! `DateTime<Utc>`, statuses are enums; each adapter converts at its own edge.

use crate::billing::dunning::Decision;
use crate::billing::model::{Source, Status, Subscription};
use crate::billing::quiet::{RealInstant, remaining};
use chrono::{DateTime, NaiveDate, Utc};
use std::fmt;

/// Defines a status enum with its stored spelling (`as_str`, `parse`) and a padded `Display` (tables align it).
macro_rules! spelled {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// How it is spelled in the book, the listings and `--json`.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($s => Some(Self::$v),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown {}: {text}", stringify!($name))))
            }
        }
    };
}

// (After the macro: the refund types are spelled with it too.)
mod changes;
mod daemons;
mod lifecycle;
mod outbox;
mod refunds;
pub use changes::*;
pub use daemons::*;
pub use lifecycle::*;
pub use outbox::*;
pub use refunds::*;

spelled! {
    /// The status of a charge attempt, or of a one-time charge.
    ChargeStatus {
        /// Its intent is committed; its request may have left.
        Pending = "pending",
        /// Sent, outcome not known: settled by a lookup after its check time.
        Unknown = "unknown",
        Paid = "paid",
        Failed = "failed",
    }
}

impl ChargeStatus {
    /// Pending or unknown: to be settled by a lookup.
    pub fn unresolved(self) -> bool {
        matches!(self, ChargeStatus::Pending | ChargeStatus::Unknown)
    }
}

spelled! {
    /// Why a failed charge failed.
    Failure {
        /// The card company declined it.
        Declined = "declined",
        /// The gateway refused the request: nothing was charged.
        Rejected = "rejected",
        /// The gateway holds a paid payment under its merchant_uid that is not what billd asked for: held.
        Mismatch = "mismatch",
        /// Never reached the gateway, and no longer to be charged: closed without a charge.
        Abandoned = "abandoned",
    }
}

spelled! {
    /// What a one-time charge charges.
    OneTimeKind {
        /// A card typed by the operator, in a key-in payment (`billd charge-once`).
        Card = "card",
        /// A billing key already stored at the gateway (`billd charge-key`).
        Key = "key",
        /// The charge of a plan change made now (`billd subscriptions change --now`), on the subscription's key.
        Proration = "proration",
    }
}

spelled! {
    /// The state of a subscription period.
    PeriodState {
        Open = "open",
        Paid = "paid",
        GivenUp = "given_up",
        /// Due longer ago than `billing.catch_up_window` when a pass got to it: never charged.
        Skipped = "skipped",
    }
}

/// A charge attempt with what is needed to send or reconcile it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: i64,
    pub subscription_id: String,
    pub period: u64,
    pub attempt: u32,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: String,
    pub due_at: DateTime<Utc>,
    /// Pending (intent committed, maybe sent) or unknown (sent; outcome to be confirmed).
    pub status: ChargeStatus,
    pub tries: u32,
    /// Declined attempts of this period so far (counted against the dunning retries).
    pub declines: u32,
    /// An operator's extra attempt (made due by `retry` or `resume`, and claimed, before the scheduled retry's
    /// instant): that scheduled instant, where the next attempt stays if this one is declined (decided when it is
    /// claimed, kept until it is settled). `None`: a scheduled attempt.
    pub ahead_of: Option<DateTime<Utc>>,
    /// Whether its period is the last of a fixed term (paid, or given up and skipped, the subscription completes).
    pub ends_term: bool,
    /// Whether the subscription is still billed (active or past due).
    pub billing: bool,
    /// Whether the subscription was past due or trialing when the attempt was claimed (a payment makes it active;
    /// no other status can turn into those while the attempt is out, as a subscription has one open period).
    pub past_due: bool,
    /// The gateway timeout its latest request was sent with, in milliseconds (`None`: a row from before schema
    /// 6). The quiet period before the next look at it is twice this, whatever the config says now.
    pub timeout_ms: Option<u64>,
    /// Resends of it that the gateway refused while no lookup found the first request.
    pub refused_resends: u32,
    /// The latest real instant at which a request of it may have left or been in progress (the "go" write before
    /// its request left, the recording of an unresolved outcome, a restart finding it pending); `None`: no request
    /// of it has left (claimed, not sent). The quiet period is counted from it ([`Doubt`]).
    pub in_doubt: Option<RealInstant>,
    /// Taken over by this sweep from another daemon that may still be running (a book several daemons share: one
    /// whose lease lapsed, or whose database session ended): a request it was given the go for may still reach the
    /// gateway up to two timeouts after that go ([`crate::billing::quiet::in_doubt_until`]). `false` for a claim, and
    /// where the one scheduler knows the others are gone (SQLite).
    pub taken_over: bool,
}

/// A request that may still be in progress: since when (real time), and the quiet period it must be left alone
/// for (twice the timeout it was sent with).
#[derive(Debug, Clone, PartialEq)]
pub struct Doubt {
    pub since: RealInstant,
    pub quiet: std::time::Duration,
}

impl Doubt {
    /// How much longer it must be left alone at `now` (zero: its quiet period is over on every clock).
    pub fn remaining(&self, now: &RealInstant) -> std::time::Duration {
        remaining(&self.since, now, self.quiet)
    }

    /// Its next look as a wall-clock instant, for listings: the later of the billing check time `check_at` and
    /// the end of its real quiet period.
    pub fn next_look(&self, check_at: Option<DateTime<Utc>>, now: &RealInstant) -> DateTime<Utc> {
        let wall = DateTime::from_timestamp_millis(now.wall_ms).unwrap_or_default();
        let quiet_end = wall + chrono::Duration::from_std(self.remaining(now)).unwrap_or(chrono::Duration::MAX / 2);
        check_at.map_or(quiet_end, |t| t.max(quiet_end))
    }
}

/// What the gateway's answer (or a lookup) established about an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Paid {
        imp_uid: String,
    },
    Declined {
        imp_uid: Option<String>,
        reason: String,
    },
    Rejected {
        reason: String,
    },
    Unresolved {
        reason: String,
    },
    /// A resend refused by the gateway while no lookup finds the first request (which may still be in progress):
    /// unresolved, and counted, so that a refusal becomes final only after a few.
    ResendRefused {
        reason: String,
    },
    /// A lookup found a paid payment under the attempt's merchant_uid whose amount, currency or customer differs
    /// from what was sent: never taken as paid; the attempt is held (its period waits) for an operator.
    Mismatch {
        reason: String,
    },
    /// The gateway never saw it and the subscription no longer bills: closed without a charge.
    Abandoned {
        reason: String,
    },
    /// Rejected by the gateway (nothing charged) in a pass whose rejections were a mass rejection
    /// ([`crate::billing::rails::MassRejection`]): the gateway's or the config's problem, not the customer's. The
    /// attempt is closed as rejected, but its period stays open (due again from `now`), uncounted, and the
    /// subscription's status does not change.
    Withheld {
        reason: String,
    },
}

/// An outcome to record, with the dunning decision for its period.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub attempt: Attempt,
    pub result: AttemptResult,
    pub decision: Decision,
    /// For an unresolved outcome: the real instant it was decided at (its request left before), from which its
    /// quiet period is counted. Ignored for other outcomes.
    pub doubt: Option<RealInstant>,
}

/// What an operator's status change did (see [`Book::set_status`](crate::store::Book::set_status)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusSet {
    /// The status before.
    pub before: Status,
    /// Claimed charges of it whose requests had not left: voided in the same transaction (never sent).
    pub voided: usize,
    /// Charges of it whose requests had already left and are not settled yet: settled by lookup, never resent
    /// once it no longer bills.
    pub in_flight: usize,
    /// Of `in_flight`, the charges of a pending plan change: if paid, the change does not apply to a subscription
    /// that no longer bills, and the charge is credited (refundable once the subscription has ended).
    pub change_charges: usize,
    /// Pending plan changes of it whose charges had not left: withdrawn (failed) in the same transaction, their
    /// charges never sent.
    pub changes_withdrawn: usize,
    /// The credit it held, released by this change when it ended it (canceled): refundable from then on; 0: none.
    pub credit_released: i64,
}

/// A subscription status change made while recording.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub subscription_id: String,
    pub from: Status,
    pub to: Status,
    /// Credit released as refundable by an end (canceled, completed) with credit left (issue 25); 0: none.
    pub credit_released: i64,
}

/// A period to open: computed by the engine from the calendar.
#[derive(Debug, Clone)]
pub struct NewPeriod {
    pub subscription_id: String,
    pub period: u64,
    pub due_at: DateTime<Utc>,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: String,
    /// The period billed after this one ([`Subscription::following`]) and its due instant (`None`: no further
    /// period).
    pub following_period: u64,
    pub following_due_at: Option<DateTime<Utc>>,
    /// The subscription's skip windows still ahead of the following period (as [`Subscription::skip`] keeps them).
    pub skip_ahead: Vec<(i64, i64)>,
}

/// A subscription that needs its next period opened.
#[derive(Debug, Clone)]
pub struct DueSubscription {
    pub sub: Subscription,
    pub next_due_at: DateTime<Utc>,
}

/// A period that was not opened because its merchant_uid is taken: its subscription was suspended with `reason`
/// ([`crate::billing::status::merchant_uid_taken_reason`]) in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub subscription_id: String,
    pub period: u64,
    pub merchant_uid: String,
    pub reason: String,
}

/// What one [`Ledger::open_and_claim`](crate::store::Ledger::open_and_claim) step did.
#[derive(Debug, Clone, Default)]
pub struct ClaimStep {
    /// How many periods it opened.
    pub opened: usize,
    /// Every attempt claimed: their intents are committed.
    pub attempts: Vec<Attempt>,
    /// Periods not opened because their merchant_uid is taken.
    pub refused: Vec<Refused>,
}

/// One attempt row (or one-time charge), for listings and the outbox's snapshots.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChargeRow {
    /// The subscription of a period's attempt, or the one a one-time charge of a billing key is tied to
    /// (`charge-key --subscription`); `None` for other one-time charges.
    pub subscription_id: Option<String>,
    /// `None`: a period's attempt; otherwise a one-time charge of that kind.
    pub one_time: Option<OneTimeKind>,
    pub period: u64,
    pub attempt: u32,
    pub merchant_uid: String,
    pub customer_uid: String,
    pub amount: i64,
    pub currency: String,
    pub status: ChargeStatus,
    pub failure: Option<Failure>,
    pub imp_uid: Option<String>,
    pub fail_reason: Option<String>,
    pub due_at: DateTime<Utc>,
    /// When the attempt was made (its intent committed).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How much of it was refunded (refunds done; 0 for a charge that is not paid).
    pub refunded: i64,
}

/// A recorded one-time charge, as `charge-once` needs it before sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeState {
    pub id: i64,
    pub kind: OneTimeKind,
    /// The billing key charged (kind `Key`), or the one an older billd sent with a key-in charge (kind `Card`).
    pub customer_uid: Option<String>,
    /// The subscription it is tied to (kind `Key` only).
    pub subscription_id: Option<String>,
    pub name: String,
    /// The card of its latest try, masked (first 6, last 4 digits).
    pub card_masked: String,
    pub amount: i64,
    pub currency: String,
    pub status: ChargeStatus,
    pub failure: Option<Failure>,
    pub imp_uid: Option<String>,
    pub fail_reason: Option<String>,
    /// For an unresolved one: no look at it (by a pass, or a rerun's resend) before this instant (`None`: a row
    /// from before schema 6; see `updated_at`).
    pub check_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Since when its latest request may have been in progress, and for how long that request must be left
    /// alone (`None`: never sent).
    pub doubt: Option<Doubt>,
    /// How many times it was sent: a send, a pass's lookup or a command's answer is recorded only if no other send
    /// of it began meanwhile (see [`OneTime::finish_one_time`](crate::store::OneTime::finish_one_time)).
    pub tries: i64,
}

/// A one-time charge for a pass to settle by lookup.
#[derive(Debug, Clone)]
pub struct UnresolvedOneTime {
    pub id: i64,
    /// Which send of it this is (see [`OneTime::finish_one_time`](crate::store::OneTime::finish_one_time)).
    pub tries: i64,
    pub merchant_uid: String,
    pub kind: OneTimeKind,
    pub customer_uid: Option<String>,
    pub amount: i64,
    pub currency: String,
    /// Since when its latest request may have been in progress (`None`: never sent).
    pub doubt: Option<Doubt>,
    /// The imp_uid of an earlier try's decline, if any: a lookup that finds it has found nothing of this try.
    pub known_failed: Option<String>,
    /// Still `pending`: the command that sent it has not recorded an outcome (it may have stopped while its
    /// request waited for a token or a rate-limit turn, so the request may have left later than `doubt` says).
    pub pending: bool,
}

/// A one-time charge: a key-in payment made by `billd charge-once` (only the masked card is kept), or a charge of a
/// stored billing key made by `billd charge-key`.
#[derive(Debug, Clone)]
pub struct OneTimeCharge {
    pub merchant_uid: String,
    pub kind: OneTimeKind,
    /// The billing key charged (kind `Key`; `None` for a key-in charge).
    pub customer_uid: Option<String>,
    /// The subscription a charge of a billing key is tied to.
    pub subscription_id: Option<String>,
    pub name: String,
    pub amount: i64,
    pub currency: String,
    /// The card charged, masked (kind `Key`: the key's card as the gateway showed it, or `-`).
    pub card_masked: String,
}

/// What holds a merchant_uid (compared without case: the gateway may not tell merchant_uids apart by case).
#[derive(Debug, Clone, PartialEq)]
pub enum MerchantUidHolder {
    /// A subscription period (billd's own namespace, or an older prefix).
    Period { subscription_id: String, period: u64, merchant_uid: String },
    /// A one-time charge.
    OneTime { merchant_uid: String, kind: OneTimeKind },
}

impl fmt::Display for MerchantUidHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Period { subscription_id, period, merchant_uid } => {
                write!(f, "period {period} of subscription {subscription_id:?} (merchant_uid {merchant_uid})")
            }
            Self::OneTime { merchant_uid, kind: OneTimeKind::Card } => {
                write!(f, "a one-time key-in charge (charge-once) under merchant_uid {merchant_uid}")
            }
            Self::OneTime { merchant_uid, kind: OneTimeKind::Key } => {
                write!(f, "a one-time charge of a billing key (charge-key) under merchant_uid {merchant_uid}")
            }
            Self::OneTime { merchant_uid, kind: OneTimeKind::Proration } => {
                write!(f, "the charge of a plan change (subscriptions change) under merchant_uid {merchant_uid}")
            }
        }
    }
}

/// An open period waiting for an attempt, for `upcoming`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenPeriod {
    pub period: u64,
    pub next_attempt_at: DateTime<Utc>,
    /// What its attempts charge: its amount less what the subscription's credit paid of it.
    pub amount: i64,
    pub currency: String,
}

/// A billed subscription, its next due instant, and its open period waiting for an attempt.
pub type BillingSubscription = (Subscription, Option<DateTime<Utc>>, Option<OpenPeriod>);

/// One period of a subscription with its attempts, for `subscriptions show`.
#[derive(Debug, Clone)]
pub struct PeriodStory {
    pub period: u64,
    pub due_at: DateTime<Utc>,
    pub merchant_uid: String,
    pub amount: i64,
    pub currency: String,
    pub state: PeriodState,
    pub declines: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptStory>,
}

/// One attempt of a period, for `subscriptions show`.
#[derive(Debug, Clone)]
pub struct AttemptStory {
    pub attempt: u32,
    pub status: ChargeStatus,
    pub failure: Option<Failure>,
    pub imp_uid: Option<String>,
    pub fail_reason: Option<String>,
    pub check_at: Option<DateTime<Utc>>,
    /// An unresolved attempt's request in doubt: its next look in real time is [`Doubt::next_look`].
    pub doubt: Option<Doubt>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription with its derived state, for listings and the outbox's snapshots.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionRow {
    pub id: String,
    pub customer_uid: String,
    pub plan: String,
    pub amount: i64,
    pub currency: String,
    pub interval: String,
    pub status: Status,
    pub source: Source,
    /// The next period's due instant (billed subscriptions only).
    pub next_due_at: Option<DateTime<Utc>>,
    pub paid_periods: u64,
    /// The open period's next attempt (a retry of a past-due one), if one is scheduled.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The open period's unresolved attempt's next look, if it has one (in billing time; see `doubt`).
    pub check_at: Option<DateTime<Utc>>,
    /// The open period's unresolved attempt's request in doubt, if any: its next look in real time is
    /// [`Doubt::next_look`]. (Not in the outbox's snapshots: a real instant of this machine.)
    #[serde(skip)]
    pub doubt: Option<Doubt>,
    /// Declined attempts of the open period (0 without one).
    pub declines: u32,
    /// Why it is canceled or suspended (the reason of its latest such change).
    pub why: Option<String>,
    /// A paused subscription's own end (`pause --until`): it resumes by itself then.
    #[serde(default)]
    pub resume_at: Option<DateTime<Utc>>,
    /// No period due at or after this instant is charged (a cancel at period end, `cancel_at` in the config).
    #[serde(default)]
    pub cancel_at: Option<DateTime<Utc>>,
    /// Canceled or suspended by dunning (its retries ran out, or a charge was rejected): `billd reactivate` restarts
    /// it, never `resume`.
    #[serde(default)]
    pub stopped_by_dunning: bool,
}

/// A subscription as an import compares a row with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedAs {
    pub customer_uid: String,
    pub plan_id: String,
    /// The start date as the book holds it.
    pub start_date: String,
    pub source: Source,
}

/// A subscription an import adds (source manual, with its plan's terms: `billing::terms::subscription`) with its
/// first due instant.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub id: String,
    pub customer_uid: String,
    pub plan_id: String,
    pub plan_name: String,
    pub amount: i64,
    pub currency: String,
    pub interval: crate::billing::calendar::Interval,
    pub start_date: NaiveDate,
    /// Its first charge's date (its start, or the end of its plan's trial): period 0 of its calendar.
    pub anchor_date: NaiveDate,
    /// Trialing (a trial before its first charge) or active.
    pub status: crate::billing::model::Status,
    /// The last period of its plan's fixed term (`None`: none).
    pub last_period: Option<u64>,
    pub next_due_at: Option<DateTime<Utc>>,
}

/// Billing stopped by a safety rail until an operator acts (see [`crate::store::Book::stop_billing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyStop {
    /// What tripped, in words (names the limit and what was due).
    pub reason: String,
    /// `limits.max_charges_per_pass` when it tripped: a config that raises it above this releases the stop.
    pub max_charges_per_pass: u64,
    pub at: DateTime<Utc>,
    /// An operator confirmed (`billd safety release`): the next pass may send up to the limit.
    pub released: bool,
}

impl SafetyStop {
    /// Whether a config with `limits.max_charges_per_pass = max` lifts the stop: an operator raised the limit above
    /// the one that tripped (the one rule the engine and the commands that charge apply).
    pub fn lifted_by(&self, max: usize) -> bool {
        max as u64 > self.max_charges_per_pass
    }
}
