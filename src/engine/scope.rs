//! What a pass takes: every subscription, or one (a command that charges one now), and no period older than
//! `billing.catch_up_window` (those are looked up and settled, never opened).

use super::Engine;
use crate::gateway::Gateway;
use crate::store::{Scope, Store};
use chrono::{DateTime, Utc};

impl<S: Store, G: Gateway> Engine<S, G> {
    /// The same engine charging one subscription only: its passes apply the config, then reconcile, open, claim and
    /// send for `id` alone (every other subscription's charges, resends and lookups are left to the next full pass).
    /// For the commands that charge one subscription now.
    pub fn only(mut self, id: &str) -> Self {
        self.only = Some(id.to_owned());
        self
    }

    /// Whether subscription `id` is charged by this engine's passes.
    pub(super) fn in_scope(&self, id: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == id)
    }

    /// What a pass at `now` opens and claims: its subscription (or all), none of the periods older than
    /// `billing.catch_up_window` (settled by lookup before, never opened).
    pub(super) fn scope(&self, now: DateTime<Utc>) -> Scope {
        let not_before = crate::billing::model::catch_up_cutoff(now, self.cfg.billing.catch_up_window);
        Scope { only: self.only.clone(), not_before }
    }
}
