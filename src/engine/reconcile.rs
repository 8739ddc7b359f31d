//! Reconciliation: unresolved attempts (and one-time charges) settled by lookup, resent only when the gateway has no
//! record of them after the quiet period.

use super::pipeline::{Msg, writer};
use super::{At, Engine, PAGE};
use crate::billing::dunning::Decision;
use crate::gateway::{Gateway, Lookup};
use crate::store::{Attempt, AttemptResult, ChargeStatus, Failure, Recorded, Store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info, warn};

/// The timeout assumed for a request whose attempt recorded none (a row older than schema 6, whose process may
/// have waited longer than this one does): generous, as the quiet period is twice it.
const LEGACY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl<S: Store, G: Gateway> Engine<S, G> {
    /// Reconciles unresolved attempts only (at startup, before telling systemd we are ready).
    pub async fn reconcile_only(&self, now: DateTime<Utc>) -> Result<usize> {
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let writer = tokio::spawn(writer(self.clone(), rx, now));
        let sem = Arc::new(Semaphore::new(self.cfg.gateway.concurrency));
        let result = match self.check_credentials().await {
            Ok(()) => self.reconcile_stale(At::start(now), &tx, &sem).await,
            Err(e) => Err(e),
        };
        drop(tx);
        writer.await.context("the outcome writer panicked")??;
        result
    }

    pub(super) async fn reconcile_stale(&self, at: At, tx: &mpsc::Sender<Msg>, sem: &Arc<Semaphore>) -> Result<usize> {
        let now = at.as_of;
        // A page at a time, so a large backlog (say, after a gateway outage) is never held at once.
        let mut n = 0;
        let mut after: Option<(String, u64)> = None;
        'pages: loop {
            let key = after.clone();
            let page =
                self.db(move |s| s.unresolved_after(now, key.as_ref().map(|(s, p)| (s.as_str(), *p)), PAGE)).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.subscription_id.clone(), last.period));
            n += page.len();
            for a in page {
                if self.stopping() {
                    break 'pages;
                }
                let permit = sem.clone().acquire_owned().await?;
                let (me, tx) = (self.clone(), tx.clone());
                tokio::spawn(async move {
                    let rec = me.reconcile(a, at).await;
                    let _ = tx.send(Msg::Record(Box::new(rec))).await;
                    drop(permit);
                });
            }
        }
        // Wait until every reconciliation is recorded before sending anything new.
        let _all = sem.acquire_many(self.cfg.gateway.concurrency as u32).await?;
        drop(_all);
        self.flush(tx).await?;
        Ok(n + self.reconcile_one_time(now).await?)
    }

    /// Settles one-time charges (`billd charge-once`) left pending or unknown, by lookup only: a one-time charge is
    /// never resent (billd does not keep the card). Only once its check time has come: the quiet period after its
    /// last request (twice the timeout it was sent with), or, for one still pending, after the longest a
    /// `charge-once` can take, so one still waiting for an answer is left alone. Paid at the gateway (as asked):
    /// recorded so; paid with another amount, currency or card: held as a mismatch; declined: recorded so; no
    /// record there: closed as abandoned (rerunning the command looks it up, then sends it). A failed lookup leaves
    /// it for the next pass.
    pub(super) async fn reconcile_one_time(&self, now: DateTime<Utc>) -> Result<usize> {
        // Rows from before schema 6 have no check time: the old rule (five timeouts and a minute after the change).
        let fallback = chrono::Duration::seconds(5 * self.gateway.timeout().as_secs() as i64 + 60);
        let page = self.db(move |s| s.unresolved_one_time(now, fallback, PAGE)).await?;
        let mut settled = 0;
        for c in page {
            if self.stopping() {
                break;
            }
            let merchant_uid = c.merchant_uid.clone();
            let failed_lookup = |e: String| {
                warn!(event = "charge.unknown", merchant_uid = %c.merchant_uid, one_time = true, reason = %e,
                    "charge.unknown: the one-time charge's lookup failed; looking again in the next pass");
            };
            let (status, failure, imp_uid, reason) = match self.gateway.find(&merchant_uid, "paid").await {
                Lookup::Found(p) => match p.differs_from(c.amount, &c.currency, c.customer_uid.as_deref()) {
                    None => (ChargeStatus::Paid, None, Some(p.imp_uid), None),
                    Some(why) => (ChargeStatus::Failed, Some(Failure::Mismatch), None, Some(why)),
                },
                Lookup::Error(e) => {
                    failed_lookup(e);
                    continue;
                }
                Lookup::NotFound => match self.gateway.find(&merchant_uid, "failed").await {
                    Lookup::Found(p) => (
                        ChargeStatus::Failed,
                        Some(Failure::Declined),
                        Some(p.imp_uid),
                        Some(p.fail_reason.unwrap_or_else(|| "declined (no reason given)".into())),
                    ),
                    Lookup::Error(e) => {
                        failed_lookup(e);
                        continue;
                    }
                    Lookup::NotFound => (
                        ChargeStatus::Failed,
                        Some(Failure::Abandoned),
                        None,
                        Some(
                            "no record at the gateway after the quiet period: nothing was charged (rerun \
                             charge-once to send it; it looks the payment up first)"
                                .into(),
                        ),
                    ),
                },
            };
            crate::failpoint::pause("one_time_after_lookup");
            let (imp, why) = (imp_uid.clone(), reason.clone());
            let (id, tries) = (c.id, c.tries);
            // Recorded only if no rerun of charge-once began another send of it while the lookups ran.
            let done = self
                .db(move |s| s.finish_one_time(id, tries, status, failure, imp.as_deref(), why.as_deref(), now))
                .await?;
            if !done {
                continue;
            }
            settled += 1;
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
        }
        Ok(settled)
    }

    /// Resolves an unresolved attempt by looking its merchant_uid up; resends only if the gateway never saw it, and
    /// an attempt left `pending` only after a quiet period (see [`Engine::quiet_period`]).
    pub(super) async fn reconcile(&self, a: Attempt, at: At) -> Recorded {
        let result = match self.gateway.find(&a.merchant_uid, "paid").await {
            Lookup::Found(p) => Some(self.paid_or_mismatch(&a, p)),
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
        };
        match result {
            Some(r) => self.decide(a, r, at),
            // Left pending by a process that stopped (or a pass that ended early): its request may have left and
            // still be in progress at the gateway, where a lookup may not find it yet (and a merchant_uid is
            // refused only once it is paid), so a resend now could be a second charge. Neither resent nor given up
            // now: looked up again after the quiet period.
            // (A wait, not a failure: the quiet period exactly, not the unresolved backoff.)
            None if a.status == ChargeStatus::Pending => {
                let reason = "no record at the gateway yet; a request sent before billd stopped may still be in \
                              progress, so it is looked up again after the quiet period before anything else";
                let decision = Decision::CheckAt(at.now() + self.quiet_period(&a));
                Recorded { attempt: a, result: AttemptResult::Unresolved { reason: reason.into() }, decision }
            }
            None if !a.billing => self.decide(
                a,
                AttemptResult::Abandoned {
                    reason: "never reached the gateway; the subscription no longer bills".into(),
                },
                at,
            ),
            None => {
                // The gateway has no record of it, at least a quiet period after the last send: resend the same
                // merchant_uid (a paid one cannot be paid twice).
                let (id, timeout_ms) = (a.id, self.timeout_ms());
                if let Err(e) = self.db(move |s| s.mark_resending(id, at.as_of, timeout_ms)).await {
                    return self.decide(a, AttemptResult::Unresolved { reason: format!("database: {e:#}") }, at);
                }
                info!(event = "charge.resend", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                    "the gateway has no record of this attempt; sending it again");
                let a = Attempt { timeout_ms: Some(timeout_ms), ..a };
                Box::pin(self.send_as(a, at, true)).await
            }
        }
    }

    /// The least time between an unresolved outcome and the next look at it (so also between a send and any
    /// resend): twice the time the attempt's latest request was given to answer (recorded with the attempt: a
    /// reload or a restart with a shorter `gateway.timeout` never shortens it), a margin for a request still in
    /// progress at the gateway. (The gateway documents no time limit of its own, so this is a margin, not a
    /// guarantee.) A row that recorded no timeout (written by an older billd) gets the longer of this client's and
    /// [`LEGACY_TIMEOUT`].
    pub(super) fn quiet_period(&self, a: &Attempt) -> chrono::Duration {
        let sent_with = a
            .timeout_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or_else(|| self.gateway.timeout().max(LEGACY_TIMEOUT));
        chrono::Duration::from_std(2 * sent_with).unwrap_or(chrono::Duration::hours(1))
    }
}
