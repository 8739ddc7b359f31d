//! i'mport's notifications (issue 26) settled by the rules of a pass's lookups: a notification is a hint, never evidence; billd looks the payment up by imp_uid and acts on that answer only.
//!
//! What a notification may do, and no more:
//! - an unresolved charge (a period's attempt, a one-time charge, a plan change's charge) whose payment the gateway
//!   shows **paid** (or refunded since: `cancelled`) under the notification's merchant_uid is settled at once, by
//!   the rule every lookup applies (`paid_or_mismatch` for an attempt, `one_time_paid` for a one-time charge:
//!   amount, currency and billing key compared, a mismatch held, never taken as paid), recorded only if the charge
//!   is still as it was read; the refunds the payment shows (or the cancel notified) are recorded after it, as
//!   `refunds --sync` records them;
//! - a payment shown **failed** is never taken from the notification alone: once the charge's real quiet period is
//!   over (no request of it can still be in progress), the pass's own lookups by merchant_uid (`look`,
//!   `look_one_time`) are made and what they find is recorded; before that, nothing;
//! - a **cancel** of a charge billd recorded paid is settled as `billd refunds --sync` settles it (`settle_seen`):
//!   refunds made outside billd are recorded once;
//! - nothing else: a charge still pending (its request in flight) is left to its sender, and nothing here ever sends
//!   a charge, resends one, gives one up or puts off a look.

use super::report::{Tally, log_changes, log_outcome};
use super::{At, Engine};
use crate::billing::quiet::quiet_period;
use crate::gateway::{Gateway, Lookup, Payment, RefundsLookup};
use crate::store::{Attempt, AttemptResult, ChargeStatus, Doubt, NoticeTarget, Store, UnresolvedOneTime};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;

/// A notification as it came: ids the receiver checked billd may look up and log; what it says is not believed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notice {
    pub imp_uid: String,
    pub merchant_uid: String,
    /// What it says happened (`paid`, `cancelled`, …): only a hint of whether a charge billd recorded paid is worth
    /// a lookup of its refunds.
    pub status: String,
    /// A cancel's id, as it says (never used but to tell two cancels of one payment apart).
    pub cancellation_id: Option<String>,
}

impl Notice {
    /// Its merchant_uid as log lines show it: as it is, or with its digits masked when it holds what could be a
    /// card number (a run of 13 or more digits: the body is unsigned, whoever sent it).
    pub fn shown_merchant_uid(&self) -> String {
        if crate::gateway::card::holds_card_number(&self.merchant_uid) {
            crate::gateway::card::redact_numbers(&self.merchant_uid)
        } else {
            self.merchant_uid.clone()
        }
    }
}

/// What came of a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Noticed {
    /// A charge or a refund was settled: what was recorded.
    Settled(String),
    /// Nothing was recorded: why (nothing to do, or nothing billd may conclude; the charge is left to its lookups).
    Ignored(String),
    /// Its charge is still pending (its request in flight, its sender about to record the answer): to be looked at
    /// again shortly, with the payment if it was already looked up. (Nothing is looked up for a charge in flight:
    /// i'mport notifies every approval, and the answer usually settles it first.)
    Wait(Option<Payment>),
}

impl<S: Store, G: Gateway> Engine<S, G> {
    /// Settles what a notification is about, as described in this module's documentation. `looked`: the payment
    /// as an earlier look at this notification found it (after a [`Noticed::Wait`]); `as_of`: the billing instant.
    /// The book is read first: a merchant_uid billd does not know, a charge settled already (a paid one unless the
    /// notification says it was cancelled) or still in flight costs no gateway lookup.
    pub async fn settle_notice(&self, n: &Notice, looked: Option<Payment>, as_of: DateTime<Utc>) -> Result<Noticed> {
        let m = n.merchant_uid.clone();
        let target = self.db(move |s| s.notice_target(&m)).await?;
        let payment = match target {
            NoticeTarget::Unknown => return ignored("no charge of billd has this merchant_uid"),
            NoticeTarget::Uncharged => return ignored("a period billd never charged (paid by credit, or skipped)"),
            NoticeTarget::Settled(status) => return ignored(&format!("its charge is settled already ({status})")),
            NoticeTarget::Paid { imp_uid } => return self.notice_of_paid(n, &imp_uid, as_of).await,
            NoticeTarget::Attempt(a) if a.status == ChargeStatus::Pending => return Ok(Noticed::Wait(looked)),
            NoticeTarget::OneTime(c) if c.pending => return Ok(Noticed::Wait(looked)),
            NoticeTarget::Attempt(_) | NoticeTarget::OneTime(_) => match looked {
                Some(p) => p,
                None => match self.gateway.payment(&n.imp_uid).await {
                    Lookup::Found(p) => p,
                    Lookup::NotFound => {
                        return ignored("the gateway has no such payment: not taken (a forged notification?)");
                    }
                    Lookup::Error(e) => {
                        return ignored(&format!(
                            "the payment's lookup failed ({e}); its charge is left to its lookups"
                        ));
                    }
                },
            },
        };
        if payment.merchant_uid != n.merchant_uid {
            return ignored(
                "the gateway holds this payment under another merchant_uid than the notification says: not taken (a \
                 forged notification?)",
            );
        }
        // Decided from a fresh read, and recorded, while no pass reconciles.
        let _settling = self.settling.lock().await;
        let m = n.merchant_uid.clone();
        // A payment refunded since (in full, or in part as the notification says): its refunds are recorded once
        // its charge is recorded paid (nothing is recorded for a charge that is not).
        let refunded = (payment.refunded() || n.status == "cancelled").then(|| payment.imp_uid.clone());
        let noticed = match self.db(move |s| s.notice_target(&m)).await? {
            NoticeTarget::Attempt(a) => self.notice_of_attempt(a, payment, as_of).await?,
            NoticeTarget::OneTime(c) => self.notice_of_one_time(c, payment, as_of).await?,
            _ => return ignored("its charge was settled meanwhile"),
        };
        if let (Noticed::Settled(_), Some(imp_uid)) = (&noticed, refunded) {
            self.record_refunds_of(&n.merchant_uid, &imp_uid, as_of).await;
        }
        Ok(noticed)
    }

    /// An unresolved attempt of a period, and its payment as the gateway shows it.
    async fn notice_of_attempt(&self, a: Attempt, p: Payment, as_of: DateTime<Utc>) -> Result<Noticed> {
        if a.status == ChargeStatus::Pending {
            return Ok(Noticed::Wait(Some(p)));
        }
        let result = match p.status.as_str() {
            "paid" | "cancelled" => self.paid_or_mismatch(&a, p),
            "failed" => {
                let over = a.in_doubt.clone().is_some_and(|since| {
                    Doubt { since, quiet: quiet_period(a.timeout_ms) }.remaining(&self.clock.now()).is_zero()
                });
                if !over {
                    return ignored(QUIET);
                }
                match self.look(&a).await {
                    Some(r @ (AttemptResult::Paid { .. } | AttemptResult::Declined { .. })) => r,
                    Some(r @ AttemptResult::Mismatch { .. }) => r,
                    Some(AttemptResult::Unresolved { reason }) => {
                        return ignored(&format!("{reason}; left to its next lookup"));
                    }
                    _ => return ignored("its lookups find no outcome of this attempt; left to its next lookup"),
                }
            }
            other => {
                return ignored(&format!(
                    "the payment is {other}, neither paid, refunded nor failed; left to its lookups"
                ));
            }
        };
        let rec = self.decide(a, result, At::start(as_of));
        let (rec, changes) = self.db(move |s| s.record_unchanged(&rec, as_of).map(|c| (rec, c))).await?;
        let Some(changes) = changes else { return ignored("its attempt changed meanwhile; left as it is recorded") };
        let mut tally = Tally::default();
        log_outcome(&rec, &mut tally);
        log_changes(&changes);
        let m = &self.metrics;
        m.paid.fetch_add(tally.paid as u64, Ordering::Relaxed);
        m.declined.fetch_add(tally.declined as u64, Ordering::Relaxed);
        let what = match &rec.result {
            AttemptResult::Paid { imp_uid } => format!("paid (imp_uid {imp_uid})"),
            AttemptResult::Declined { .. } => "declined".to_string(),
            _ => "held as a mismatch".to_string(),
        };
        Ok(Noticed::Settled(format!("attempt {} of period {}: {what}", rec.attempt.attempt, rec.attempt.period)))
    }

    /// An unresolved one-time charge (`charge-once`, `charge-key`, a plan change's), and its payment.
    async fn notice_of_one_time(&self, c: UnresolvedOneTime, p: Payment, as_of: DateTime<Utc>) -> Result<Noticed> {
        if c.pending {
            return Ok(Noticed::Wait(Some(p)));
        }
        let verdict = match p.status.as_str() {
            "paid" | "cancelled" => self.one_time_paid(&c, p),
            "failed" => {
                let over = c.doubt.as_ref().is_some_and(|d| d.remaining(&self.clock.now()).is_zero());
                if !over {
                    return ignored(QUIET);
                }
                match self.look_one_time(&c).await {
                    Ok(Some(v)) => v,
                    Ok(None) => return ignored("its lookups find no outcome of this try; left to its next lookup"),
                    Err(e) => return ignored(&format!("lookup failed: {e}; left to its next lookup")),
                }
            }
            other => {
                return ignored(&format!(
                    "the payment is {other}, neither paid, refunded nor failed; left to its lookups"
                ));
            }
        };
        let what = format!("one-time charge: {}", verdict.0);
        if self.finish_one_time_logged(&c, verdict, as_of).await? {
            Ok(Noticed::Settled(what))
        } else {
            ignored("the one-time charge changed meanwhile (another send of it began); left as it is recorded")
        }
    }

    /// A charge billd recorded paid: a cancel is settled as `refunds --sync` settles it, from a lookup of the
    /// payment billd recorded (only if the notification names it).
    async fn notice_of_paid(&self, n: &Notice, recorded: &str, as_of: DateTime<Utc>) -> Result<Noticed> {
        if n.imp_uid != recorded {
            return ignored("its charge is paid with another payment (imp_uid) than the notification names");
        }
        if n.status != "cancelled" {
            return ignored("its charge is recorded paid already");
        }
        let p = match self.gateway.refunds(&n.imp_uid, &n.merchant_uid).await {
            RefundsLookup::Found(p) => p,
            RefundsLookup::NotFound => return ignored("the gateway has no such payment: not taken"),
            RefundsLookup::Error(e) => return ignored(&format!("the payment's lookup failed ({e}); nothing recorded")),
        };
        let (m, clock) = (n.merchant_uid.clone(), self.clock.clone());
        let settled = self.db(move |s| super::refunds::settle_seen(s, clock.as_ref(), &m, &p, as_of)).await?;
        let in_doubt = settled.in_doubt.as_ref().filter(|r| !r.status.unresolved());
        let billds = settled.late.len() + usize::from(in_doubt.is_some());
        if settled.external.is_empty() && billds == 0 {
            return ignored("the payment lists no refund billd has not recorded");
        }
        Ok(Noticed::Settled(format!(
            "refunds recorded: {} made outside billd, {billds} of billd's settled",
            settled.external.len()
        )))
    }
}

/// Why a failed payment is not taken from a notification yet.
const QUIET: &str = "the payment failed, but a request of this charge may still be in progress (its real quiet \
                     period is not over): a decline is not taken from a notification before then; left to its next \
                     lookup";

fn ignored(why: &str) -> Result<Noticed> {
    Ok(Noticed::Ignored(why.to_string()))
}
