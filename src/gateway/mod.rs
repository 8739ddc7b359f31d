//! The gateway contract: what the engine and the refund commands (`Gateway`) and the card commands (`BillingKeys`) ask of a payment gateway, in typed values; i'mport V1 in `iamport/`.

pub mod card;
pub mod iamport;
pub mod redact;

use crate::gateway::card::Card;
use chrono::{DateTime, Utc};
use std::future::Future;

/// One charge of a billing key.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRequest {
    pub customer_uid: String,
    pub merchant_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: String,
}

/// What one charge request established (the five outcome classes).
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    /// Approved (HTTP 200, code 0, status paid, for this merchant_uid and amount).
    Paid { imp_uid: String },
    /// Declined by the card company (HTTP 200, code 0, status failed).
    Declined { imp_uid: Option<String>, reason: String },
    /// Refused by the gateway (code != 0): nothing charged.
    Rejected { code: i64, message: String },
    /// Trouble that is not a decline (no connection, 429, 5xx): to be confirmed by a lookup.
    Transient(String),
    /// The request may have been processed but the answer is missing or unreadable.
    Unknown(String),
}

/// A payment as a lookup returns it (only what billd needs).
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    /// Read as an exact integer (a fraction or an inexact number makes the answer unreadable).
    pub amount: i64,
    pub currency: Option<String>,
    pub customer_uid: Option<String>,
    pub status: String,
    pub fail_reason: Option<String>,
}

impl Payment {
    /// What of this payment is not what billd asked for (empty: it is): `amount`, `currency` (missing or another),
    /// `customer_uid` (another billing key, or none for a key charged; any for a key-in charge, `customer_uid`
    /// `None`). The one rule for a lookup's payment and a charge's own answer.
    pub fn mismatches(&self, amount: i64, currency: &str, customer_uid: Option<&str>) -> Vec<&'static str> {
        let mut other = Vec::new();
        if self.amount != amount {
            other.push("amount");
        }
        if self.currency.as_deref() != Some(currency) {
            other.push("currency");
        }
        let key = self.customer_uid.as_deref().filter(|c| !c.is_empty());
        if key != customer_uid {
            other.push("customer_uid");
        }
        other
    }

    /// Whether the gateway shows it refunded in full (i'mport: `cancelled`): a payment that took the money, refunded
    /// since (in the console, say); its refunds are recorded from a lookup of them ([`Gateway::refunds`]).
    pub fn refunded(&self) -> bool {
        self.status == "cancelled"
    }

    /// Why this payment is not the one billd asked for (`None`: it is): its amount, currency or billing key
    /// differs from the request's ([`Payment::mismatches`]). `customer_uid`: the billing key charged (`None`: a
    /// key-in charge without one, so a payment made with a billing key is not it).
    pub fn differs_from(&self, amount: i64, currency: &str, customer_uid: Option<&str>) -> Option<String> {
        // Described, not quoted: the gateway's number could be anything, a card number included, and its currency
        // and customer_uid are its text, not cleaned.
        let why: Vec<String> = self
            .mismatches(amount, currency, customer_uid)
            .into_iter()
            .map(|m| match (m, customer_uid) {
                ("amount", _) => format!("another amount (billd asked for {amount})"),
                ("currency", _) => format!("another currency (billd asked for {currency})"),
                (_, Some(c)) => format!("another customer_uid (billd asked for {c})"),
                (_, None) => "a billing key (billd's was a key-in charge without one)".to_string(),
            })
            .collect();
        (!why.is_empty()).then(|| {
            format!(
                "the gateway holds payment {} under merchant_uid {} with {}",
                self.imp_uid,
                self.merchant_uid,
                why.join(", ")
            )
        })
    }
}

/// Whether billd may send `amount`: from 1 to [`crate::config::MAX_AMOUNT`] (10^12), whatever the flags and the
/// limits say (every charge request a gateway client makes is checked here first); `Err`: why not.
pub fn sendable_amount(amount: i64) -> Result<(), String> {
    let max = crate::config::MAX_AMOUNT;
    if (1..=max).contains(&amount) {
        Ok(())
    } else {
        Err(format!("the amount {amount} is outside 1 to {max} (10^12), the most billd ever sends"))
    }
}

/// What a lookup (by merchant_uid, or by imp_uid) established.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Payment),
    NotFound,
    /// The lookup itself failed; nothing can be concluded.
    Error(String),
}

/// One refund of a paid payment (i'mport: a partial or full cancel).
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRequest {
    /// The payment refunded (the gateway's id of it).
    pub imp_uid: String,
    /// Its merchant_uid, as billd recorded it (to check the answer against).
    pub merchant_uid: String,
    /// Whole won, more than 0.
    pub amount: i64,
    /// The refundable balance billd knows (i'mport's `checksum`): the gateway refunds nothing if its own balance
    /// differs, so a stale or repeated refund is refused, never made twice.
    pub checksum: i64,
    /// The operator's reason (free text, sent as it is).
    pub reason: String,
}

/// One refund of a payment as the gateway lists it (i'mport: an entry of `cancel_history`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cancellation {
    /// The gateway's id of it (i'mport's `cancellation_id`), a plain identifier; when the gateway gave none billd
    /// can keep, `~AMOUNT-CANCELLED_AT-HASH_OF_REASON-N` (the N-th entry of that content, from 0): named by what it
    /// is, not by its place in the history, which shifts.
    pub id: String,
    pub amount: i64,
    /// When it was made (`None`: the gateway did not say).
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Its reason, cleaned.
    pub reason: String,
    /// Cleaning left the reason as the gateway gave it (no digits blanked, nothing invisible, nothing decoded).
    pub verbatim: bool,
}

/// What a payment's refunds are at the gateway (a lookup by imp_uid, or a refund's answer). Amounts are whole
/// numbers the gateway gave; strings are cleaned.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRefunds {
    pub imp_uid: String,
    pub merchant_uid: String,
    /// The amount paid.
    pub amount: i64,
    /// The amount refunded so far (the sum of `history`: an answer where they differ is not read).
    pub cancel_amount: i64,
    /// `paid`, or `cancelled` once fully refunded (cleaned).
    pub status: String,
    /// Every refund, in the gateway's order (oldest first).
    pub history: Vec<Cancellation>,
}

/// What one refund request established.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundOutcome {
    /// The gateway answered with the payment after the refund (code 0).
    Refunded(PaymentRefunds),
    /// Refused by the gateway (code != 0: a checksum that is not its balance, an amount above it, a payment fully
    /// refunded already): nothing refunded.
    Refused { code: i64, message: String },
    /// Trouble that is not a refusal (no connection, 429, 5xx): the refund may not have been made; settled by a
    /// lookup.
    Transient(String),
    /// The refund may have been made but the answer is missing or unreadable: settled by a lookup.
    Unknown(String),
}

/// What a lookup of a payment's refunds by imp_uid established.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundsLookup {
    Found(PaymentRefunds),
    NotFound,
    /// The lookup itself failed (or its answer could not be read): nothing can be concluded.
    Error(String),
}

/// Whether the gateway accepts billd's credentials (asked before a pass claims or sends anything).
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Accepted,
    /// The gateway refused them (HTTP 401/403 on the token request): a configuration error, not a charge outcome.
    Refused(String),
    /// No answer, or an unreadable one: nothing can be concluded (charges go on and are classified one by one).
    Unavailable(String),
}

/// The gateway operations the engine needs.
pub trait Gateway: Send + Sync + 'static {
    /// How long a request is given to answer: the quiet period before anything sent with it is looked at again
    /// (and so resent) is twice this.
    fn timeout(&self) -> std::time::Duration;
    /// Charges the billing key (i'mport: `POST /subscribe/payments/again`), classified. Never retried internally.
    ///
    /// `go` is the engine's last word on whether the request may leave: it is awaited **immediately before the
    /// request is sent**, after any wait for a rate-limit turn or an access token, and if it resolves `false`
    /// nothing is sent and `charge` returns `None`. (So a cancel that commits while the request waits for its turn
    /// stops it: the moment a request leaves is the engine's write, not the moment the engine asked.) `None` only
    /// then; a request that fails before `go` (no token) is `Some(Transient)`. Nothing is ever sent that `go` did
    /// not cover: a request refused for its token (HTTP 401) is not sent again inside `charge` (transient).
    fn charge(
        &self,
        req: &ChargeRequest,
        go: impl Future<Output = bool> + Send,
    ) -> impl Future<Output = Option<ChargeOutcome>> + Send;
    /// The payment made under `merchant_uid` with `status` (`paid`, `failed` or `cancelled`; i'mport:
    /// `GET /payments/find/{merchant_uid}/{status}`). `Found` only for a payment of that merchant_uid and that
    /// status: an answer with another is an error (no answer to the question). "Was it paid?" is
    /// [`Gateway::find_paid`].
    fn find(&self, merchant_uid: &str, status: &str) -> impl Future<Output = Lookup> + Send;
    /// The payment that took the money under `merchant_uid`, however much of it was refunded since: `paid`, else
    /// `cancelled` (refunded in full, by billd or in the console: it was paid all the same). The one lookup every
    /// "was it charged?" asks: a charge refunded before billd looked is never taken for one never made (and sent
    /// again, refused, given up by dunning). Its [`Payment::refunded`] says which.
    fn find_paid(&self, merchant_uid: &str) -> impl Future<Output = Lookup> + Send {
        async move {
            match self.find(merchant_uid, "paid").await {
                Lookup::NotFound => self.find(merchant_uid, "cancelled").await,
                other => other,
            }
        }
    }
    /// Gets (or reuses) an access token: whether the gateway accepts the credentials.
    fn authenticate(&self) -> impl Future<Output = Auth> + Send;
    /// Refunds part or all of a paid payment (i'mport: `POST /payments/cancel` with `imp_uid`, `amount`, `reason`
    /// and `checksum`), classified. Never retried internally. `go` as for [`Gateway::charge`]: awaited right before
    /// the request leaves (after its token and its rate-limit turn); `None` only when it said no (nothing sent).
    fn refund(
        &self,
        req: &RefundRequest,
        go: impl Future<Output = bool> + Send,
    ) -> impl Future<Output = Option<RefundOutcome>> + Send;
    /// A payment's amount and refunds by imp_uid (i'mport: `GET /payments/{imp_uid}`): how a refund whose answer
    /// was lost is settled, and how refunds made outside billd are found.
    /// The answer is for `imp_uid` and for `merchant_uid` (billd's record of it), with a status of `paid` or
    /// `cancelled`, or it is an error.
    fn refunds(&self, imp_uid: &str, merchant_uid: &str) -> impl Future<Output = RefundsLookup> + Send;
    /// The payment `imp_uid` (i'mport: `GET /payments/{imp_uid}`), read as [`Gateway::find`] reads one (a plain
    /// imp_uid, an exact amount, strings cleaned): `Found` only for that imp_uid (an answer for another is an
    /// error), `NotFound` when the gateway has none. How billd checks an unsigned notification: its merchant_uid
    /// is the caller's to compare.
    fn payment(&self, imp_uid: &str) -> impl Future<Output = Lookup> + Send;
}

/// A billing key as the gateway shows it. Every string was cleaned by the gateway client (`redact`); the card number
/// is masked (at most its first 6 and last 4 digits). `None`: the gateway did not say.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BillingKey {
    /// The card number, masked.
    pub card: Option<String>,
    /// The card's name (issuer or product), as the gateway gives it.
    pub card_name: Option<String>,
    /// The card processor the key is held at, and its merchant id there.
    pub pg_provider: Option<String>,
    pub pg_id: Option<String>,
    /// When the key was issued and last replaced.
    pub inserted: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
}

/// Where a billing key is issued (`None`: the gateway account's default). Its `Debug` never shows the channel key.
#[derive(Clone, Copy, Default)]
pub struct Channel<'a> {
    /// The card processor, optionally with its merchant id (i'mport's `pg`: `kcp`, `nice.MID1`).
    pub pg: Option<&'a str>,
    /// The gateway's channel key (a credential: never printed, and cleaned from every answer).
    pub channel_key: Option<&'a str>,
}

impl std::fmt::Debug for Channel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.channel_key.map(|_| "[redacted]");
        f.debug_struct("Channel").field("pg", &self.pg).field("channel_key", &key).finish()
    }
}

/// Why a billing-key request did not do what was asked. Every string was cleaned by the gateway client.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyError {
    /// No answer, or an unreadable one (or no access token): nothing can be concluded.
    Unavailable(String),
    /// The gateway holds no billing key under this customer_uid (HTTP 404 on a show or a delete).
    NotFound,
    /// The gateway refused the request, or answered something that is not what was asked: its HTTP status, its own
    /// code and its message.
    Refused { status: u16, code: i64, message: String },
    /// The gateway accepted the key request but its answer holds no billing key.
    NoKey,
}

/// What the card commands need beyond charging a billing key: billing keys themselves, and key-in payments.
pub trait BillingKeys: Gateway {
    /// Issues the billing key `customer_uid` for `card` (replacing the card of an existing one) on `channel`.
    /// Never `NotFound`: a refusal is `Refused`, whatever its status.
    fn issue_key(
        &self,
        customer_uid: &str,
        card: &Card,
        channel: Channel<'_>,
    ) -> impl Future<Output = Result<BillingKey, KeyError>> + Send;
    /// The billing key `customer_uid`.
    fn show_key(&self, customer_uid: &str) -> impl Future<Output = Result<BillingKey, KeyError>> + Send;
    /// Deletes the billing key `customer_uid`, giving the gateway `reason`.
    fn delete_key(&self, customer_uid: &str, reason: Option<&str>)
    -> impl Future<Output = Result<(), KeyError>> + Send;
    /// A key-in payment of `req` (its `customer_uid` is not used) with `card`, classified like a charge; with
    /// `save_as`, the card is also saved as that billing key. `go` as for [`Gateway::charge`]: awaited right before
    /// the request leaves; `None` when it said no (nothing sent).
    fn pay_with_card(
        &self,
        req: &ChargeRequest,
        card: &Card,
        save_as: Option<&str>,
        go: impl Future<Output = bool>,
    ) -> impl Future<Output = Option<ChargeOutcome>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_never_prints_its_key() {
        let c = Channel { pg: Some("kcp"), channel_key: Some("channel-key-s3cret") };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("kcp") && shown.contains("[redacted]"), "{shown}");
    }
}
