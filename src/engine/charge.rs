//! Sending one claimed attempt and deciding what its outcome means for its period (the dunning policy, the quiet
//! period, a refused resend, a payment that is not billd's).

use super::{At, Engine};
use crate::billing::dunning::{Decision, Outcome, Tally};
use crate::failpoint::{armed as failpoint_armed, failpoint};
use crate::gateway::{ChargeOutcome, ChargeRequest, Gateway, Lookup};
use crate::store::{Attempt, AttemptResult, Recorded, Store};
use std::sync::atomic::Ordering;

/// How many refusals of a resend are taken as "the first request may still be in progress" before a refusal is
/// final (see [`Engine::send_as`]): the next one is. Only refused resends count, not other unresolved tries.
pub(super) const RESEND_REFUSALS_TOLERATED: u32 = 2;

impl<S: Store, G: Gateway> Engine<S, G> {
    pub(super) fn request(a: &Attempt) -> ChargeRequest {
        ChargeRequest {
            customer_uid: a.customer_uid.clone(),
            merchant_uid: a.merchant_uid.clone(),
            amount: a.amount,
            currency: a.currency.clone(),
            name: a.name.clone(),
        }
    }

    /// Sends one committed attempt and decides what its outcome means.
    /// `go`: the engine's decision that the request may leave, awaited by the gateway right before it sends
    /// ([`Gateway::charge`]); `None` when it said no (nothing was sent).
    pub(super) async fn send(&self, a: Attempt, at: At, go: impl Future<Output = bool> + Send) -> Option<Recorded> {
        self.send_as(a, at, false, go).await
    }

    /// [`Engine::send`]; `resend`: the attempt was sent before (by a process that died or lost the answer) and the
    /// lookups found nothing, so that request may still be in progress at the gateway: a refusal of this one (say,
    /// a duplicate merchant_uid) is not taken as final unless a lookup settles it.
    pub(super) async fn send_as(
        &self,
        a: Attempt,
        at: At,
        resend: bool,
        go: impl Future<Output = bool> + Send,
    ) -> Option<Recorded> {
        let req = Self::request(&a);
        let started = std::time::Instant::now();
        // Whether the request left (the go said yes): only then is it in flight and counted as sent.
        let went = std::sync::atomic::AtomicBool::new(false);
        let go = async {
            let asked = crate::realtime::steady_ms();
            let mut allowed = go.await;
            if allowed && !self.may_send(asked) {
                // Its go is written, so it stays in doubt (pending) for this daemon's next sweep, or for the daemon
                // that takes it over: looked up, and resent only after its quiet period.
                tracing::warn!(event = "charge.late", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                    "charge.late: this daemon's lease is not renewed in time (or the request waited too long since \
                     its go); not sent");
                allowed = false;
            }
            if allowed {
                went.store(true, Ordering::Relaxed);
                self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
                self.metrics.charges_sent.fetch_add(1, Ordering::Relaxed);
            }
            allowed
        };
        let charge = self.gateway.charge(&req, go);
        let outcome = if failpoint_armed("after_send") {
            tokio::pin!(charge);
            tokio::select! {
                o = &mut charge => o,
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => { failpoint("after_send"); unreachable!() }
            }
        } else {
            charge.await
        };
        let outcome = outcome?;
        if went.load(Ordering::Relaxed) {
            self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.metrics.observe_latency(started.elapsed());
        }
        failpoint("after_response");
        let result = match outcome {
            ChargeOutcome::Paid { imp_uid } => AttemptResult::Paid { imp_uid },
            ChargeOutcome::Declined { imp_uid, reason } => AttemptResult::Declined { imp_uid, reason },
            ChargeOutcome::Rejected { code, message } => {
                // A refusal may mean "already paid" (a resend after a lost answer): confirm before giving up.
                match self.gateway.find_paid(&a.merchant_uid).await {
                    Lookup::Found(p) => self.paid_or_mismatch(&a, p),
                    // A few refusals of a resend only (counted apart from other unresolved tries): after the quiet
                    // period and the backoff, the first request is long over.
                    Lookup::NotFound if resend && a.refused_resends < RESEND_REFUSALS_TOLERATED => {
                        AttemptResult::ResendRefused {
                            reason: format!(
                                "the resend was refused (code {code}: {message}); the first may be in progress"
                            ),
                        }
                    }
                    Lookup::NotFound => AttemptResult::Rejected { reason: format!("code {code}: {message}") },
                    Lookup::Error(e) => AttemptResult::Unresolved {
                        reason: format!("rejected (code {code}: {message}) but the confirming lookup failed: {e}"),
                    },
                }
            }
            ChargeOutcome::Transient(r) => AttemptResult::Unresolved { reason: format!("transient: {r}") },
            ChargeOutcome::Unknown(r) => AttemptResult::Unresolved { reason: format!("unknown outcome: {r}") },
        };
        Some(self.decide(a, result, at))
    }

    /// A paid payment found under the attempt's merchant_uid: paid if it is what billd asked for; otherwise a
    /// mismatch, never taken as paid (a key-in payment under a subscription's merchant_uid, say).
    pub(super) fn paid_or_mismatch(&self, a: &Attempt, p: crate::gateway::Payment) -> AttemptResult {
        match p.differs_from(a.amount, &a.currency, Some(&a.customer_uid)) {
            None => {
                self.note_if_refunded(&a.merchant_uid, &p);
                AttemptResult::Paid { imp_uid: p.imp_uid }
            }
            Some(reason) => AttemptResult::Mismatch { reason },
        }
    }

    pub(super) fn decide(&self, a: Attempt, result: AttemptResult, at: At) -> Recorded {
        let policy = &self.cfg.dunning;
        let now = at.as_of;
        let (clock, tally) = (&self.cfg.billing.clock, Tally { declines: a.declines, tries: 0, ahead_of: a.ahead_of });
        let decision = match &result {
            AttemptResult::Paid { .. } => policy.decide(clock, Outcome::Paid, tally, now),
            AttemptResult::Declined { .. } => policy.decide(clock, Outcome::Declined, tally, now),
            AttemptResult::Rejected { .. } => policy.decide(clock, Outcome::Rejected, tally, now),
            // Timed from now in the pass (a request may leave well after the pass began), and never sooner than
            // the quiet period.
            AttemptResult::Unresolved { .. } | AttemptResult::ResendRefused { .. } => {
                let tally = Tally { tries: a.tries + 1, ..tally };
                match policy.decide(clock, Outcome::Unresolved, tally, at.now()) {
                    Decision::CheckAt(t) => Decision::CheckAt(t.max(at.now() + self.quiet_period(&a))),
                    other => other,
                }
            }
            AttemptResult::Mismatch { .. } => Decision::Hold,
            AttemptResult::Abandoned { .. } => Decision::Paid,
            // (Made by the outcome writer from a rejection, never decided here.)
            AttemptResult::Withheld { .. } => Decision::Hold,
        };
        // An unresolved outcome is in doubt from now in real time (its request left before): its quiet period is
        // counted from here on the real clocks.
        let doubt = matches!(result, AttemptResult::Unresolved { .. } | AttemptResult::ResendRefused { .. })
            .then(|| self.clock.now());
        Recorded { attempt: a, result, decision, doubt }
    }
}
