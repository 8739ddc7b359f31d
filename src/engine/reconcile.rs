//! Reconciliation: unresolved attempts (and one-time charges, and refunds in `refunds`) settled by lookup, resent only when the gateway has no
//! record of them after the quiet period.

use super::pipeline::Msg;
use super::{At, Engine, PAGE};
use crate::billing::dunning::Decision;
use crate::billing::quiet::quiet_period;
use crate::gateway::{Gateway, Lookup};
use crate::store::{
    Attempt, AttemptResult, ChargeStatus, Doubt, Failure, OneTimeKind, Recorded, Store, UnresolvedOneTime,
};

/// What a look at an unresolved attempt came to.
pub(super) enum Look {
    /// An outcome to record (paid, declined, still unknown, or a resend's answer).
    Record(Box<Recorded>),
    /// The gateway has no record of it yet, and the quiet period of its request is not over in real time: put off
    /// (its check time moved to the end of the quiet period), neither resent nor given up.
    Waiting,
    /// Changed by another process since it was read: left to that process.
    Skipped,
}
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info, warn};

/// What settled a one-time charge: its status, its failure, the payment's imp_uid, and why.
pub(super) type OneTimeVerdict = (ChargeStatus, Option<Failure>, Option<String>, Option<String>);

impl<S: Store, G: Gateway> Engine<S, G> {
    /// A payment found under a one-time charge's merchant_uid: paid if it is what was asked (a refund shown with it
    /// is recorded at the end of the pass), else held as a mismatch, never taken as paid; a plan change's charge
    /// refunded in full before it was recorded is not collected ([`super::refunds::change_taken_back`]). The one
    /// rule for a lookup's and a notification's.
    pub(super) fn one_time_paid(&self, c: &UnresolvedOneTime, p: crate::gateway::Payment) -> OneTimeVerdict {
        if let Some(why) = super::refunds::change_taken_back(c.kind, &p) {
            return (ChargeStatus::Failed, Some(Failure::Abandoned), Some(p.imp_uid), Some(why));
        }
        match p.differs_from(c.amount, &c.currency, c.customer_uid.as_deref()) {
            None => {
                self.note_if_refunded(&c.merchant_uid, &p);
                (ChargeStatus::Paid, None, Some(p.imp_uid), None)
            }
            Some(why) => (ChargeStatus::Failed, Some(Failure::Mismatch), None, Some(why)),
        }
    }

    /// Reconciles the unresolved attempts whose check time has come (and one-time charges); returns how many it
    /// looked at and how many it left alone because the real quiet period of their request is not over (their
    /// check time is put off to its end).
    pub(super) async fn reconcile_stale(
        &self,
        at: At,
        tx: &mpsc::Sender<Msg>,
        sem: &Arc<Semaphore>,
    ) -> Result<(usize, usize)> {
        let now = at.as_of;
        // No notification settles anything while the pass reconciles (and records, and flushes).
        let _settling = self.settling.lock().await;
        // A page at a time, so a large backlog (say, after a gateway outage) is never held at once.
        let mut n = 0;
        let deferred = Arc::new(AtomicUsize::new(0));
        let mut after: Option<(String, u64)> = None;
        'pages: loop {
            let key = after.clone();
            let page =
                self.db(move |s| s.unresolved_after(now, key.as_ref().map(|(s, p)| (s.as_str(), *p)), PAGE)).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.subscription_id.clone(), last.period));
            // A pass for one subscription (a command's) settles its attempts only.
            let page: Vec<Attempt> = page.into_iter().filter(|a| self.in_scope(&a.subscription_id)).collect();
            n += page.len();
            for a in page {
                if self.stopping() {
                    break 'pages;
                }
                let permit = sem.clone().acquire_owned().await?;
                let (me, tx, deferred) = (self.clone(), tx.clone(), deferred.clone());
                tokio::spawn(async move {
                    match me.reconcile(a, at).await {
                        Look::Record(rec) => {
                            let _ = tx.send(Msg::Record(rec)).await;
                        }
                        Look::Waiting => {
                            deferred.fetch_add(1, Ordering::Relaxed);
                        }
                        Look::Skipped => {}
                    }
                    drop(permit);
                });
            }
        }
        // Wait until every reconciliation is recorded before sending anything new.
        let _all = sem.acquire_many(self.cfg.gateway.concurrency as u32).await?;
        drop(_all);
        self.flush(tx).await?;
        if self.only.is_some() {
            // One-time charges and refunds are left to the next full pass.
            return Ok((n, deferred.load(Ordering::Relaxed)));
        }
        let (one_time, one_time_deferred) = self.reconcile_one_time(now).await?;
        let refunds = self.reconcile_refunds(now).await?;
        Ok((n + one_time + refunds, deferred.load(Ordering::Relaxed) + one_time_deferred))
    }

    /// Settles one-time charges (`billd charge-once`) left pending or unknown, by lookup only: a one-time charge is
    /// never resent (billd does not keep the card). Only once its check time has come: the quiet period after its
    /// last request (twice the timeout it was sent with), or, for one still pending, after the longest a
    /// `charge-once` can take, so one still waiting for an answer is left alone. Paid at the gateway (as asked):
    /// recorded so; paid with another amount, currency or card: held as a mismatch; declined: recorded so; no
    /// record there: closed as abandoned (rerunning the command looks it up, then sends it). A failed lookup leaves
    /// it for the next pass.
    pub(super) async fn reconcile_one_time(&self, now: DateTime<Utc>) -> Result<(usize, usize)> {
        // Rows from before schema 6 have no check time: the old rule (five timeouts and a minute after the change).
        let fallback = chrono::Duration::seconds(5 * self.gateway.timeout().as_secs() as i64 + 60);
        let page = self.db(move |s| s.unresolved_one_time(now, fallback, PAGE)).await?;
        let (mut settled, mut deferred) = (0, 0);
        for c in page {
            if self.stopping() {
                break;
            }
            let merchant_uid = c.merchant_uid.clone();
            let failed_lookup = |e: String| {
                warn!(event = "charge.unknown", merchant_uid = %c.merchant_uid, one_time = true, reason = %e,
                    "charge.unknown: the one-time charge's lookup failed; looking again in the next pass");
            };
            let verdict = match self.look_one_time(&c).await {
                Ok(Some(v)) => v,
                Err(e) => {
                    failed_lookup(e);
                    continue;
                }
                Ok(None) => {
                    // Its request may still be in progress in real time (whatever the billing clock says): closing
                    // it as abandoned now would invite a second charge. Put off to the end of its quiet period.
                    let left = c.doubt.as_ref().map(|d| d.remaining(&self.clock.now())).unwrap_or_default();
                    if c.pending && c.doubt.is_some() {
                        // Its command stopped before recording an outcome, perhaps while its request waited for a
                        // token or its turn: it may have left later than recorded. Not given up now: unknown, with a
                        // full quiet period from this look.
                        let (id, tries, real) = (c.id, c.tries, self.clock.now());
                        let quiet = c.doubt.as_ref().map_or(std::time::Duration::ZERO, |d| d.quiet);
                        let reason = "no record at the gateway yet; the charge-once that sent it stopped before its \
                                      answer, so it is looked up again after the quiet period";
                        deferred += 1;
                        let until = self.wait_event(None, &merchant_uid, quiet, now);
                        self.db(move |s| s.one_time_unknown(id, tries, reason, &real, until, now)).await?;
                        continue;
                    }
                    if !left.is_zero() {
                        deferred += 1;
                        let until = self.wait_event(None, &merchant_uid, left, now);
                        let (id, tries) = (c.id, c.tries);
                        self.db(move |s| s.defer_one_time(id, tries, until)).await?;
                        continue;
                    }
                    (
                        ChargeStatus::Failed,
                        Some(Failure::Abandoned),
                        None,
                        Some(format!(
                            "no record at the gateway after the quiet period: nothing was charged (rerun {} to send \
                             it; it looks the payment up first)",
                            match c.kind {
                                OneTimeKind::Card => "charge-once",
                                OneTimeKind::Key => "charge-key",
                                OneTimeKind::Proration => "subscriptions change",
                            }
                        )),
                    )
                }
            };
            crate::failpoint::pause("one_time_after_lookup");
            if self.finish_one_time_logged(&c, verdict, now).await? {
                settled += 1;
            }
        }
        Ok((settled, deferred))
    }

    /// The lookups of a one-time charge by its merchant_uid (paid, then failed), judged by the one rule for a
    /// one-time charge: paid as asked, paid otherwise (a mismatch, held), or declined (a decline already known for it
    /// is not this try's outcome). `Ok(None)`: no record of this try; `Err`: a lookup failed.
    pub(super) async fn look_one_time(&self, c: &UnresolvedOneTime) -> Result<Option<OneTimeVerdict>, String> {
        match self.gateway.find_paid(&c.merchant_uid).await {
            Lookup::Found(p) => Ok(Some(self.one_time_paid(c, p))),
            Lookup::Error(e) => Err(e),
            Lookup::NotFound => match self.gateway.find(&c.merchant_uid, "failed").await {
                // An earlier try's decline is not this try's outcome: as if nothing were found.
                Lookup::Found(p) if c.known_failed.as_deref() != Some(p.imp_uid.as_str()) => Ok(Some((
                    ChargeStatus::Failed,
                    Some(Failure::Declined),
                    Some(p.imp_uid),
                    Some(p.fail_reason.unwrap_or_else(|| "declined (no reason given)".into())),
                ))),
                Lookup::Error(e) => Err(e),
                Lookup::NotFound | Lookup::Found(_) => Ok(None),
            },
        }
    }

    /// Records what settled a one-time charge, only if no rerun began another send of it since it was read
    /// ([`crate::store::OneTime::finish_one_time`]: a paid one also applies its plan change), and logs it. Returns
    /// whether it was recorded.
    pub(super) async fn finish_one_time_logged(
        &self,
        c: &UnresolvedOneTime,
        (status, failure, imp_uid, reason): OneTimeVerdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (imp, why) = (imp_uid.clone(), reason.clone());
        let (id, tries) = (c.id, c.tries);
        // Recorded only if no rerun of charge-once began another send of it while the lookups ran.
        let done = self
            .db(move |s| s.finish_one_time(id, tries, status, failure, imp.as_deref(), why.as_deref(), now))
            .await?;
        if !done {
            return Ok(false);
        }
        let merchant_uid = &c.merchant_uid;
        match (status, failure) {
            (ChargeStatus::Paid, _) => info!(event = "charge.paid", merchant_uid = %merchant_uid, one_time = true,
                imp_uid = %imp_uid.unwrap_or_default(), "charge.paid"),
            (_, Some(Failure::Abandoned)) => info!(event = "charge.abandoned", merchant_uid = %merchant_uid,
                one_time = true, reason = %reason.unwrap_or_default(), "charge.abandoned"),
            (_, Some(Failure::Mismatch)) => error!(event = "charge.mismatch", merchant_uid = %merchant_uid,
                one_time = true, reason = %reason.unwrap_or_default(),
                "charge.mismatch: not taken as paid; held for an operator"),
            _ => warn!(event = "charge.failed", merchant_uid = %merchant_uid, one_time = true,
                failure = "declined", reason = %reason.unwrap_or_default(), "charge.failed"),
        }
        Ok(true)
    }

    /// What the gateway's lookups by merchant_uid (paid, then failed) say of an unresolved attempt: paid (or a
    /// mismatch, never taken as paid), declined, or, if a lookup failed, still unresolved. `None`: no record of it.
    /// The one rule for every look at an attempt (a pass's, and a notification's).
    pub(super) async fn look(&self, a: &Attempt) -> Option<AttemptResult> {
        match self.gateway.find_paid(&a.merchant_uid).await {
            Lookup::Found(p) => Some(self.paid_or_mismatch(a, p)),
            Lookup::Error(e) => Some(AttemptResult::Unresolved { reason: format!("lookup failed: {e}") }),
            Lookup::NotFound => match self.gateway.find(&a.merchant_uid, "failed").await {
                Lookup::Error(e) => Some(AttemptResult::Unresolved { reason: format!("lookup failed: {e}") }),
                // A failed payment for another amount, currency or card is not this attempt's.
                Lookup::Found(p) if p.differs_from(a.amount, &a.currency, Some(&a.customer_uid)).is_some() => None,
                Lookup::Found(p) => {
                    let (sub, period) = (a.subscription_id.clone(), a.period);
                    match self.db(move |s| s.known_imp_uids(&sub, period)).await {
                        // An earlier decline of this period: the gateway never saw this attempt.
                        Ok(known) if known.contains(&p.imp_uid) => None,
                        Ok(_) => Some(AttemptResult::Declined {
                            imp_uid: Some(p.imp_uid),
                            reason: p.fail_reason.unwrap_or_else(|| "declined (no reason given)".into()),
                        }),
                        // Without the earlier declines, an old one could be taken for a new one: look again later.
                        Err(e) => Some(AttemptResult::Unresolved { reason: format!("database: {e:#}") }),
                    }
                }
                Lookup::NotFound => None,
            },
        }
    }

    /// Resolves an unresolved attempt by looking its merchant_uid up; resends only if the gateway never saw it, and
    /// an attempt left `pending` only after a quiet period (see [`Engine::quiet_period`]).
    pub(super) async fn reconcile(&self, a: Attempt, at: At) -> Look {
        let result = self.look(&a).await;
        // Nothing at the gateway for an attempt whose request may still be in progress there (its quiet period not
        // over in real time, whatever the billing clock says): neither resent nor given up yet.
        if result.is_none() && a.status == ChargeStatus::Unknown {
            let left = a
                .in_doubt
                .clone()
                .map(|since| Doubt { since, quiet: quiet_period(a.timeout_ms) }.remaining(&self.clock.now()))
                .unwrap_or_default();
            if !left.is_zero() {
                let until = self.wait_event(Some(&a.subscription_id), &a.merchant_uid, left, at.now());
                let waiting = [(a.id, a.tries, until)];
                if let Err(e) = self.db(move |s| s.defer(&waiting)).await {
                    let r = AttemptResult::Unresolved { reason: format!("database: {e:#}") };
                    return Look::Record(Box::new(self.decide(a, r, at)));
                }
                return Look::Waiting;
            }
        }
        let rec = match result {
            Some(r) => self.decide(a, r, at),
            // Left pending by a process that stopped (or a pass that ended early): its request may have left and
            // still be in progress at the gateway, where a lookup may not find it yet (and a merchant_uid is
            // refused only once it is paid), so a resend now could be a second charge. Neither resent nor given up
            // now: looked up again after the quiet period.
            // (A wait, not a failure: the quiet period exactly, not the unresolved backoff.)
            None if a.status == ChargeStatus::Pending => {
                let reason = "no record at the gateway yet; a request sent before billd stopped may still be in \
                              progress, so it is looked up again after the quiet period before anything else";
                // In doubt from now; or, taken over from a daemon that may still be running (cut off from the
                // database, or stalled) after its go was written, from the latest its request may reach the gateway
                // (two timeouts after its go).
                let late = 2 * std::time::Duration::from_millis(a.timeout_ms.unwrap_or(0));
                let real = self.clock.now();
                let doubt = Some(match &a.in_doubt {
                    Some(go) if a.taken_over => crate::billing::quiet::in_doubt_until(go, late, &real),
                    _ => real,
                });
                let wait = doubt.as_ref().map_or(std::time::Duration::ZERO, |d| {
                    Doubt { since: d.clone(), quiet: quiet_period(a.timeout_ms) }.remaining(&self.clock.now())
                });
                let decision = Decision::CheckAt(at.now() + chrono::Duration::from_std(wait).unwrap_or_default());
                Recorded { attempt: a, result: AttemptResult::Unresolved { reason: reason.into() }, decision, doubt }
            }
            None if !a.billing => self.decide(
                a,
                AttemptResult::Abandoned {
                    reason: "never reached the gateway; the subscription no longer bills".into(),
                },
                at,
            ),
            None => return self.resend(a, at).await,
        };
        Look::Record(Box::new(rec))
    }

    /// Resends an unresolved attempt the gateway has no record of, at least a quiet period (in real time) after
    /// its last send, under the same merchant_uid (a paid one cannot be paid twice). The resend is claimed by
    /// compare and set ([`crate::store::Ledger::mark_resending`]) at the moment the request leaves (the gateway
    /// asks right before it sends): of several processes that read this attempt one resends, and nothing is sent
    /// for a subscription that stopped billing meanwhile.
    async fn resend(&self, a: Attempt, at: At) -> Look {
        let timeout_ms = self.timeout_ms();
        let read = a.clone();
        let sending = Attempt { timeout_ms: Some(timeout_ms), status: ChargeStatus::Pending, ..a.clone() };
        let go = async move {
            if self.config_refused().is_some() || self.mass_rejected() {
                info!(event = "charge.skip", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                    "the config is refused, or the pass stopped on a mass rejection: not resent");
                return false;
            }
            // A resend counts against limits.max_charges_per_pass, taken from the pass's budget at its go.
            if !self.take_one() {
                info!(event = "charge.skip", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                    "limits.max_charges_per_pass is spent in this pass: not resent");
                self.resend_capped.store(true, Ordering::SeqCst);
                return false;
            }
            let real = self.clock.now();
            match self.db(move |s| s.mark_resending(&read, &real, at.as_of, timeout_ms)).await {
                Ok(true) => {
                    info!(event = "charge.resend", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                        "the gateway has no record of this attempt; sending it again");
                    true
                }
                Ok(false) => {
                    info!(event = "charge.skip", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                        "changed by another process (or no longer billed) since it was read; not resent here");
                    false
                }
                Err(e) => {
                    error!(event = "pass.error", merchant_uid = %a.merchant_uid,
                        "cannot record the resend; not resending: {e:#}");
                    false
                }
            }
        };
        match Box::pin(self.send_as(sending, at, true, go)).await {
            Some(rec) => Look::Record(Box::new(rec)),
            None => Look::Skipped,
        }
    }

    /// Logs that an unresolved charge is put off because its request may still be in progress (`charge.wait`),
    /// with its next look, and returns the check time to put it off to: the end of the wait counted from the
    /// pass's billing instant `billing_now` or from the wall clock, whichever is earlier, so that neither passes at
    /// the real time (after a pass ahead of it) nor passes replaying the past (after a pass at the real time) wait
    /// longer than the quiet period to look again. (A look is harmless; the resend waits for the real clocks.)
    fn wait_event(
        &self,
        subscription: Option<&str>,
        merchant_uid: &str,
        left: std::time::Duration,
        billing_now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let left_c = chrono::Duration::from_std(left).unwrap_or(chrono::Duration::days(366));
        let wall = DateTime::from_timestamp_millis(self.clock.now().wall_ms).unwrap_or_default() + left_c;
        info!(event = "charge.wait", subscription = %subscription.unwrap_or("-"), merchant_uid = %merchant_uid,
            wait_ms = left.as_millis() as u64, next_look = %wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "charge.wait: no record at the gateway yet, and its request may still be in progress (the quiet period \
             is not over in real time); neither resent nor given up before its next look");
        wall.min(billing_now + left_c)
    }

    /// The least time between an unresolved outcome and the next look at it (so also between a send and any
    /// resend): twice the time the attempt's latest request was given to answer (recorded with the attempt: a
    /// reload or a restart with a shorter `gateway.timeout` never shortens it), a margin for a request still in
    /// progress at the gateway. (The gateway documents no time limit of its own, so this is a margin, not a
    /// guarantee.) The rule is [`quiet_period`]; in billing time it spaces looks out, and in real time
    /// ([`Engine::reconcile`]) it bounds every look and resend whatever the billing clock says.
    pub(super) fn quiet_period(&self, a: &Attempt) -> chrono::Duration {
        chrono::Duration::from_std(quiet_period(a.timeout_ms)).unwrap_or(chrono::Duration::hours(1))
    }
}
