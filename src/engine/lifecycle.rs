//! What a pass does to subscriptions before it charges: the pauses that end (`pause --until`) resume, those whose
//! `cancel_at` came are canceled, and the periods due longer ago than `billing.catch_up_window` are looked up at the
//! gateway, then recorded paid (the gateway has them: a restored book did not know) or skipped.

use super::{Engine, PAGE, new_period};
use crate::billing::model::{catch_up_cutoff, resume_plan, trial_ending_horizon};
use crate::gateway::{Gateway, Lookup};
use crate::store::{NewPeriod, StaleFound, Store};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashSet;
use tracing::{error, info, warn};

/// What the catch-up window's step of a pass did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stale {
    /// Periods recorded skipped, never charged.
    pub skipped: usize,
    /// Periods the gateway had paid (the book did not know): recorded paid.
    pub found_paid: usize,
    /// Subscriptions whose stale period could not be looked up (the gateway failed): neither skipped nor charged in
    /// this pass (a later pass looks again).
    pub left: usize,
}

impl<S: Store, G: Gateway> Engine<S, G> {
    /// Cancels the canceling subscriptions whose `cancel_at` has come (a cancel at period end).
    pub(super) async fn end_canceling(&self, now: DateTime<Utc>) -> Result<()> {
        // Logged as every status change is: the event named after the status it moved to.
        super::report::log_changes(&self.db(move |s| s.end_canceling(now)).await?);
        Ok(())
    }

    /// Resumes the subscriptions whose pause ends at or before `now` (`pause --until`), as `billd resume` would
    /// (with the pause's `--catch-up`), as of the pause's end: only the periods due before it are skipped, whenever
    /// this pass runs. Returns how many it resumed and how many failed (left for the next pass).
    pub(super) async fn resume_due(&self, now: DateTime<Utc>) -> Result<(usize, usize)> {
        let due = self.db(move |s| s.resumes_due(now)).await?;
        let (mut resumed, mut failed) = (0, 0);
        for (id, _) in due.into_iter().filter(|(id, _)| self.in_scope(id)) {
            let clock = self.cfg.billing.clock;
            let sid = id.clone();
            let done = self
                .db(move |s| {
                    s.resume_with(&sid, now, "its pause ended (pause --until)", |sub, pause| {
                        // Decided from the pause as it is inside the transaction: given another end meanwhile, it is
                        // left to that end.
                        if !pause.ended_by(now) {
                            bail!("its pause was given another end meanwhile");
                        }
                        let (r, next_due, skip) = resume_plan(sub, pause, now, pause.catch_up, &clock);
                        Ok((r.next_period, next_due, skip))
                    })
                    .map(|(_, p)| p)
                })
                .await;
            match done {
                Ok(period) => {
                    resumed += 1;
                    info!(event = "subscription.resumed", subscription = %id, next_period = period,
                        "subscription.resumed: its pause ended (pause --until)");
                }
                Err(e) => {
                    failed += 1;
                    warn!(event = "subscription.resume_failed", subscription = %id,
                        "subscription.resume_failed: {e:#}; the next pass tries again");
                }
            }
        }
        Ok((resumed, failed))
    }

    /// Tells the app about trials ending within [`TRIAL_ENDING_NOTICE`](crate::billing::model::TRIAL_ENDING_NOTICE)
    /// of `now` (`subscription.trial_ending`, once per subscription).
    pub(super) async fn announce_trials_ending(&self, now: DateTime<Utc>) -> Result<()> {
        let until = trial_ending_horizon(now);
        for id in self.db(move |s| s.announce_trials_ending(until, now)).await? {
            info!(event = "subscription.trial_ending", subscription = %id, "subscription.trial_ending: its trial ends within 3 days");
        }
        Ok(())
    }

    /// `billing.catch_up_window`: every period due before the window at `now` is looked up at the gateway by its
    /// merchant_uid (at most `gateway.concurrency` at once, at the gateway's rate limit), then recorded paid if the
    /// gateway paid it as billd would have charged it (a book restored from a backup does not know it), skipped
    /// otherwise; one period per subscription per round, rounds until none is left. A period whose lookup fails is
    /// neither: its subscription is left for a later pass, and this pass opens none of its periods.
    pub(super) async fn settle_stale(&self, now: DateTime<Utc>) -> Result<Stale> {
        let window = self.cfg.billing.catch_up_window;
        let mut done = Stale::default();
        let Some(cutoff) = catch_up_cutoff(now, window) else {
            return Ok(done);
        };
        let reason =
            format!("older than catch_up_window ({})", crate::config::duration::format(window.unwrap_or_default()));
        let mut failed: HashSet<String> = HashSet::new();
        loop {
            let mut progressed = false;
            let mut after: Option<(DateTime<Utc>, String)> = None;
            loop {
                if self.stopping() {
                    return Ok(done);
                }
                let (only, from) = (self.only.clone(), after.clone());
                let page = self
                    .db(move |s| {
                        s.stale_due(cutoff, only.as_deref(), from.as_ref().map(|(t, id)| (*t, id.as_str())), PAGE)
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some((last.next_due_at, last.sub.id.clone()));
                let todo: Vec<NewPeriod> =
                    page.iter().filter(|d| !failed.contains(&d.sub.id)).map(|d| new_period(&self.cfg, d)).collect();
                let looked: Vec<(NewPeriod, Lookup)> = futures::stream::iter(todo)
                    .map(|p| async move {
                        let found = self.gateway.find_paid(&p.merchant_uid).await;
                        (p, found)
                    })
                    .buffer_unordered(self.cfg.gateway.concurrency.max(1))
                    .collect()
                    .await;
                let mut items = Vec::with_capacity(looked.len());
                for (p, found) in looked {
                    match self.stale_found(&p, found, &reason) {
                        Some(f) => items.push((p, f)),
                        None => {
                            failed.insert(p.subscription_id);
                        }
                    }
                }
                if items.is_empty() {
                    continue;
                }
                let settle = items.clone();
                let written = self.db(move |s| s.settle_stale(&settle, now)).await?;
                progressed |= !written.is_empty();
                for (p, f) in written.into_iter().map(|i| &items[i]) {
                    match f {
                        StaleFound::Paid { imp_uid } => {
                            done.found_paid += 1;
                            info!(event = "charge.paid", subscription = %p.subscription_id,
                                customer_uid = %p.customer_uid, merchant_uid = %p.merchant_uid, amount = p.amount,
                                currency = %p.currency, imp_uid = %imp_uid, found = "older than catch_up_window",
                                "charge.paid: found paid at the gateway (the book did not know it); recorded, not \
                                 charged again");
                        }
                        StaleFound::NotPaid { reason } => {
                            done.skipped += 1;
                            warn!(event = "period.skipped", subscription = %p.subscription_id, period = p.period,
                                merchant_uid = %p.merchant_uid, due_at = %p.due_at.to_rfc3339(), amount = p.amount,
                                currency = %p.currency, reason = %reason, "period.skipped: not charged, {reason}");
                        }
                    }
                }
            }
            if !progressed {
                done.left = failed.len();
                return Ok(done);
            }
        }
    }

    /// What a stale period's lookup says (`None`: the lookup failed; logged): paid as billd would have charged it,
    /// or not paid (nothing found, or a payment that is not this period's: logged as a mismatch).
    fn stale_found(&self, p: &NewPeriod, found: Lookup, reason: &str) -> Option<StaleFound> {
        match found {
            Lookup::Found(pay) => match pay.differs_from(p.amount, &p.currency, Some(&p.customer_uid)) {
                None => {
                    self.note_if_refunded(&p.merchant_uid, &pay);
                    Some(StaleFound::Paid { imp_uid: pay.imp_uid })
                }
                Some(why) => {
                    error!(event = "charge.mismatch", subscription = %p.subscription_id, merchant_uid = %p.merchant_uid,
                        reason = %why, "charge.mismatch: not taken as this period's payment; the period is skipped");
                    Some(StaleFound::NotPaid { reason: format!("{reason}; {why} (not this period's payment)") })
                }
            },
            Lookup::NotFound => Some(StaleFound::NotPaid { reason: reason.to_owned() }),
            Lookup::Error(e) => {
                warn!(event = "period.lookup_failed", subscription = %p.subscription_id, period = p.period,
                    merchant_uid = %p.merchant_uid, reason = %e,
                    "period.lookup_failed: a period {reason} could not be looked up at the gateway; neither skipped \
                     nor charged: a later pass looks again");
                None
            }
        }
    }
}
