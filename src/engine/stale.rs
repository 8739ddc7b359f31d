//! `billing.catch_up_window`: before a pass opens anything, the periods that fell due longer ago than the window are
//! recorded as skipped, never charged (a billd restored after a month offline does not charge the whole month).

use super::{Engine, PAGE, new_period};
use crate::billing::model::catch_up_cutoff;
use crate::gateway::Gateway;
use crate::store::Store;
use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::warn;

impl<S: Store, G: Gateway> Engine<S, G> {
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
