//! What a pass does to plan changes left pending: one whose command died before its charge's intent (nothing of it
//! was sent) is abandoned once that command is surely over, so that it never holds its subscription; the others
//! (a charge in doubt, settled by the one-time reconciliation) are said to hold their subscription.

use super::Engine;
use crate::gateway::Gateway;
use crate::store::Store;
use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::warn;

impl<S: Store, G: Gateway> Engine<S, G> {
    /// The longest a `subscriptions change` takes from recording its change to committing its charge's intent (an
    /// access token, a retried one, the billing key's lookup, each within the timeout, a rate limit's turn), with a
    /// margin: a change recorded longer ago (billing time, as it was recorded) with no intent is abandoned.
    fn change_grace(&self) -> chrono::Duration {
        chrono::Duration::seconds(5 * self.gateway.timeout().as_secs() as i64 + 60)
    }

    /// Abandons the pending plan changes whose charge was never begun (their command died: a kill -9 between the
    /// change's record and its charge's intent) once their command is surely over: nothing was sent, so the plan
    /// stays as it was and the subscription bills again (`Changes::abandon_unbegun_changes`, exclusive with the
    /// intent). Warns about every change still holding its subscription. Before anything opens.
    pub(super) async fn settle_held_changes(&self, now: DateTime<Utc>) -> Result<()> {
        let before = now - self.change_grace();
        let why = "its command stopped before its charge was begun (nothing was sent): abandoned by a pass, the \
                   plan is unchanged; run `billd subscriptions change` again to change it";
        for r in self.db(move |s| s.abandon_unbegun_changes(before, why, now)).await? {
            warn!(event = "subscription.plan_change_abandoned", subscription = %r.change.subscription_id,
                to = %r.change.to_plan_id, merchant_uid = %r.change.merchant_uid.as_deref().unwrap_or("-"),
                "subscription.plan_change_abandoned: {why}");
        }
        for r in self.db(|s| s.pending_changes()).await? {
            let uid = r.change.merchant_uid.as_deref().unwrap_or("-");
            let state = match self.db_one_time(uid).await? {
                None => "its charge is not begun yet (a pass abandons it if its command died)",
                Some(true) => "its charge is in doubt (settled by lookup, never sent again blindly)",
                Some(false) => "its charge is being sent",
            };
            warn!(event = "subscription.held", subscription = %r.change.subscription_id, to = %r.change.to_plan_id,
                merchant_uid = uid, "subscription.held: a plan change to {} is pending: {state}; no period of it \
                opens until it is settled", r.change.to_plan_id);
        }
        Ok(())
    }

    /// Whether the one-time charge `merchant_uid` is unknown (`None`: no such charge).
    async fn db_one_time(&self, merchant_uid: &str) -> Result<Option<bool>> {
        let m = merchant_uid.to_owned();
        let row = self.db(move |s| s.one_time(&m)).await?;
        Ok(row.map(|r| r.status == crate::store::ChargeStatus::Unknown))
    }
}
