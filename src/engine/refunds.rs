//! Refunds in doubt settled by a lookup of the payment (`GET /payments/{imp_uid}` at i'mport), never by sending again: by every pass, `billd refund` and `billd refunds --sync`; refunds made outside billd recorded on the way.

use super::Engine;
use crate::gateway::{Gateway, Payment, PaymentRefunds, RefundsLookup};
use crate::realtime::RealClock;
use crate::store::{OneTimeKind, RefundRow, RefundStatus, Refunds, RefundsSettled, SeenRefund, Store};
use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

/// How many refunds in doubt a pass looks at, at most (the rest wait for the next pass).
const PAGE: usize = 256;

/// A plan change's charge found refunded in full before billd recorded it (in i'mport's console, say): nothing of it
/// was collected, so the change it pays for is not applied (the charge is recorded failed, for this reason), never
/// applied, or credited, with its money given back. `None` for any other charge or payment. The one rule for a
/// pass's lookups, a notification and a rerun of `subscriptions change`.
pub fn change_taken_back(kind: OneTimeKind, p: &Payment) -> Option<String> {
    (kind == OneTimeKind::Proration && p.refunded()).then(|| {
        format!(
            "paid and then refunded in full at the gateway (payment {}) before billd recorded it: nothing was \
             collected, so the plan change is not applied",
            p.imp_uid
        )
    })
}

/// A payment's cancel history as the store takes it.
pub fn seen(p: &PaymentRefunds) -> Vec<SeenRefund> {
    p.history
        .iter()
        .map(|c| SeenRefund {
            id: c.id.clone(),
            amount: c.amount,
            at: c.cancelled_at,
            reason: c.reason.clone(),
            verbatim: c.verbatim,
        })
        .collect()
}

/// Looks the payment of charge `merchant_uid` (`imp_uid`) up and settles its refunds from what the gateway lists
/// ([`Refunds::settle_refunds`]); logs what changed. `Err`: the lookup failed (nothing changed), as text.
pub async fn look_up_and_settle(
    store: &impl Refunds,
    gateway: &impl Gateway,
    clock: &dyn RealClock,
    merchant_uid: &str,
    imp_uid: &str,
    now: DateTime<Utc>,
) -> Result<std::result::Result<RefundsSettled, String>> {
    let p = match gateway.refunds(imp_uid, merchant_uid).await {
        RefundsLookup::Found(p) => p,
        RefundsLookup::NotFound => {
            return Ok(Err(format!("the gateway has no payment {imp_uid} (charge {merchant_uid})")));
        }
        RefundsLookup::Error(e) => return Ok(Err(format!("lookup of payment {imp_uid} failed: {e}"))),
    };
    crate::failpoint::pause("refund_lookup_before_settle");
    Ok(Ok(settle_seen(store, clock, merchant_uid, &p, now)?))
}

/// Settles the refunds of charge `merchant_uid` from what a lookup of its payment listed
/// ([`Refunds::settle_refunds`]: its refund in doubt, then refunds made outside billd, each recorded once); logs what
/// changed. The one place a lookup's answer is taken (`billd refund`, `refunds --sync`, every pass, a notification).
pub fn settle_seen(
    store: &impl Refunds,
    clock: &dyn RealClock,
    merchant_uid: &str,
    p: &PaymentRefunds,
    now: DateTime<Utc>,
) -> Result<RefundsSettled> {
    let settled = store.settle_refunds(merchant_uid, p.amount, &seen(p), &clock.now(), now)?;
    log_settled(&settled);
    Ok(settled)
}

/// One log line per refund a settlement changed.
pub fn log_settled(s: &RefundsSettled) {
    if let Some(r) = &s.in_doubt {
        log_refund(r);
    }
    for r in s.late.iter().chain(&s.external) {
        log_refund(r);
    }
}

/// One log line for a refund as it now is.
pub fn log_refund(r: &RefundRow) {
    let (m, imp, amount, source) = (&r.merchant_uid, &r.imp_uid, r.amount, r.source.as_str());
    let detail = r.detail.as_deref().unwrap_or_default();
    match r.status {
        RefundStatus::Refunded => info!(event = "charge.refunded", merchant_uid = %m, imp_uid = %imp, amount, source,
            reason = %r.reason, "charge.refunded"),
        RefundStatus::Failed => warn!(event = "refund.failed", merchant_uid = %m, imp_uid = %imp, amount,
            reason = %detail, "refund.failed: nothing was refunded"),
        RefundStatus::Unknown | RefundStatus::Pending => info!(event = "refund.unknown", merchant_uid = %m,
            imp_uid = %imp, amount, reason = %detail,
            "refund.unknown: settled by a lookup of the payment after its quiet period, never by sending again"),
    }
}

impl<S: Store, G: Gateway> Engine<S, G> {
    /// A payment a lookup took as charge `merchant_uid`'s: if the gateway shows it refunded, its refunds are to be
    /// recorded once the charge is recorded paid ([`Engine::record_refunds_found`]).
    pub(super) fn note_if_refunded(&self, merchant_uid: &str, p: &Payment) {
        if p.refunded() {
            let mut found = self.refunds_found.lock().unwrap_or_else(|e| e.into_inner());
            found.push((merchant_uid.to_owned(), p.imp_uid.clone()));
        }
    }

    /// Records the refunds of the payments this pass's lookups found refunded (see [`Engine::note_if_refunded`]), as
    /// `billd refunds --sync` would: a charge answered by nobody and refunded in the console before billd looked is
    /// recorded paid, then refunded. One that fails is logged and tried again by the next pass of this process
    /// (`refunds --sync` records them too); nothing here sends anything. (Until they are recorded, a plan change
    /// now looks the period's refunds up itself: none is credited again.)
    pub(super) async fn record_refunds_found(&self, now: DateTime<Utc>) {
        let found = std::mem::take(&mut *self.refunds_found.lock().unwrap_or_else(|e| e.into_inner()));
        for (merchant_uid, imp_uid) in found {
            self.record_refunds_of(&merchant_uid, &imp_uid, now).await;
        }
    }

    /// Records the refunds the gateway lists for payment `imp_uid` of charge `merchant_uid` (recorded paid), as
    /// `billd refunds --sync` would; a failure is logged and left for the next pass to try again.
    pub(super) async fn record_refunds_of(&self, merchant_uid: &str, imp_uid: &str, now: DateTime<Utc>) {
        let why = match self.gateway.refunds(imp_uid, merchant_uid).await {
            RefundsLookup::Found(p) => {
                let (m, clock) = (merchant_uid.to_owned(), self.clock.clone());
                match self.db(move |s| settle_seen(s, clock.as_ref(), &m, &p, now)).await {
                    Ok(_) => return,
                    Err(e) => format!("{e:#}"),
                }
            }
            RefundsLookup::NotFound => "the gateway has no such payment".to_string(),
            RefundsLookup::Error(e) => e,
        };
        warn!(event = "refund.unknown", merchant_uid = %merchant_uid, imp_uid = %imp_uid, reason = %why,
            "the payment was refunded at the gateway, but its refunds could not be recorded now; the next pass tries \
             again (`billd refunds --sync` records them too)");
        let mut again = self.refunds_found.lock().unwrap_or_else(|e| e.into_inner());
        again.push((merchant_uid.to_owned(), imp_uid.to_owned()));
    }

    /// Settles refunds in doubt whose check time has come (a `billd refund` that lost its answer or stopped), by a
    /// lookup of their payments; returns how many it looked at. A failed lookup leaves them for the next pass.
    pub(super) async fn reconcile_refunds(&self, now: DateTime<Utc>) -> Result<usize> {
        let page = self.db(move |s| s.unresolved_refunds(now, PAGE)).await?;
        let n = page.len();
        for r in page {
            if self.stopping() {
                break;
            }
            let p = match self.gateway.refunds(&r.imp_uid, &r.merchant_uid).await {
                RefundsLookup::Found(p) => p,
                RefundsLookup::NotFound => {
                    warn!(event = "refund.unknown", merchant_uid = %r.merchant_uid, imp_uid = %r.imp_uid,
                        "the gateway has no such payment; the refund stays unknown");
                    continue;
                }
                RefundsLookup::Error(e) => {
                    warn!(event = "refund.unknown", merchant_uid = %r.merchant_uid, reason = %e,
                        "the refund's lookup failed; looking again in the next pass");
                    continue;
                }
            };
            let (m, clock) = (r.merchant_uid.clone(), self.clock.clone());
            if let Err(e) = self.db(move |s| settle_seen(s, clock.as_ref(), &m, &p, now)).await {
                warn!(event = "refund.unknown", merchant_uid = %r.merchant_uid, "{e:#}");
            }
        }
        Ok(n)
    }
}
