//! What a pass does to subscriptions before it charges: the pauses that end (`pause --until`) resume, those whose
//! `cancel_at` came are canceled, and the periods due longer ago than `billing.catch_up_window` are skipped.

use super::{Engine, PAGE, new_period};
use crate::billing::model::{catch_up_cutoff, resume_plan, trial_ending_horizon};
use crate::gateway::Gateway;
use crate::store::Store;
use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

impl<S: Store, G: Gateway> Engine<S, G> {
    /// Cancels the canceling subscriptions whose `cancel_at` has come (a cancel at period end).
    pub(super) async fn end_canceling(&self, now: DateTime<Utc>) -> Result<()> {
        for id in self.db(move |s| s.end_canceling(now)).await? {
            let released = self.credit_released(&id).await?;
            info!(event = "subscription.ended", subscription = %id, credit_released = released,
                "subscription.ended: its cancel_at came, or its term has nothing left to bill (see its status){}",
                super::changes::released_note(released));
        }
        Ok(())
    }

    /// Resumes the subscriptions whose pause ends at or before `now` (`pause --until`), as `billd resume` would
    /// (with the pause's `--catch-up`); returns how many. One that changed meanwhile is left for the next pass.
    pub(super) async fn resume_due(&self, now: DateTime<Utc>) -> Result<usize> {
        let due = self.db(move |s| s.resumes_due(now)).await?;
        let mut resumed = 0;
        for (id, catch_up) in due {
            let clock = self.cfg.billing.clock;
            let sid = id.clone();
            let done = self
                .db(move |s| {
                    s.resume_with(&sid, now, "paused until now (pause --until)", |sub, paused_at| {
                        let (r, next_due, skip) = resume_plan(sub, paused_at, now, catch_up, &clock);
                        Ok((r.next_period, next_due, skip))
                    })
                })
                .await;
            match done {
                Ok((_, period)) => {
                    resumed += 1;
                    info!(event = "subscription.resumed", subscription = %id, next_period = period, catch_up,
                        "subscription.resumed: its pause ended (pause --until)");
                }
                Err(e) => warn!(event = "subscription.resume_failed", subscription = %id,
                    "subscription.resume_failed: {e:#}; the next pass tries again"),
            }
        }
        Ok(resumed)
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

    /// Skips every period due before the window at `now`, page by page; returns how many.
    pub(super) async fn skip_stale(&self, now: DateTime<Utc>) -> Result<usize> {
        let window = self.cfg.billing.catch_up_window;
        let Some(cutoff) = catch_up_cutoff(now, window) else {
            return Ok(0);
        };
        let reason =
            format!("older than catch_up_window ({})", crate::config::duration::format(window.unwrap_or_default()));
        let mut total = 0;
        loop {
            let (cfg, why) = (self.cfg.clone(), reason.clone());
            let skipped = self.db(move |s| s.skip_stale(cutoff, now, PAGE, &why, |d| new_period(&cfg, d))).await?;
            if skipped.is_empty() {
                return Ok(total);
            }
            total += skipped.len();
            for p in &skipped {
                warn!(event = "period.skipped", subscription = %p.subscription_id, period = p.period,
                    merchant_uid = %p.merchant_uid, due_at = %p.due_at.to_rfc3339(), amount = p.amount,
                    currency = %p.currency, reason = %reason, "period.skipped: not charged, {reason}");
            }
        }
    }
}
