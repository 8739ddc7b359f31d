//! `billd charge-key`: one charge of a billing key already stored at the gateway, outside the plan (an add-on, an
//! overage), under the operator's merchant_uid and the exactly-once protocol of every one-time charge.

use crate::app::{gateway, load_config, open_store, runtime};
use crate::commands::customers::{check_customer_uid, key_at_gateway, shown};
use crate::commands::one_time::{Ask, Done, Go, Sender, charge, check_args};
use crate::config::Config;
use crate::gateway::{BillingKeys, ChargeOutcome, ChargeRequest};
use crate::store::{Book, OneTimeKind};
use anyhow::{Result, anyhow, bail};
use std::path::Path;
use std::process::ExitCode;

/// What `charge-key` is told besides the charge itself.
#[derive(Clone, Copy, Default)]
pub struct KeyOptions<'a> {
    /// The subscription the charge is tied to (`subscriptions show` lists it).
    pub subscription: Option<&'a str>,
    /// An amount above `limits.max_amount` is meant.
    pub above_max_amount: bool,
    /// Charge even while a safety stop holds billing.
    pub despite_safety_stop: bool,
}

/// The billing key: charged through the engine's own call (`Gateway::charge`, i'mport's `again`), once the book
/// lets it (no safety stop in force, unless the operator says so) and the gateway shows the key.
pub(crate) struct KeySender<'a, G, S> {
    pub cfg: &'a Config,
    pub g: &'a G,
    pub store: &'a S,
    pub rt: &'a tokio::runtime::Runtime,
    pub customer_uid: &'a str,
    pub despite_safety_stop: bool,
}

impl<G: BillingKeys, S: Book> Sender for KeySender<'_, G, S> {
    fn prepare(&mut self) -> Result<String> {
        if let Some(stop) = self.store.safety_stop()?
            && !stop.released
            && !stop.lifted_by(self.cfg.limits.max_charges_per_pass)
        {
            if !self.despite_safety_stop {
                bail!(
                    "billing is stopped by a safety rail since {} ({}); nothing sent. Release it (`billd safety \
                     release`), or charge anyway with --despite-safety-stop",
                    crate::commands::present::human(stop.at, self.cfg.billing.clock.timezone),
                    stop.reason
                );
            }
            tracing::warn!(
                event = "charge.despite_safety_stop",
                customer_uid = self.customer_uid,
                "charge-key while billing is stopped (--despite-safety-stop)"
            );
        }
        // The key must be at the gateway: a mistyped key is refused here, not by the charge.
        let key = self.rt.block_on(key_at_gateway(self.g, self.customer_uid)).map_err(|e| e.context("nothing sent"))?;
        let Some(key) = key else {
            bail!(
                "no billing key {} at the gateway (`billd customers register {}` issues one); nothing sent",
                self.customer_uid,
                self.customer_uid
            );
        };
        Ok(shown(&key.card).to_owned())
    }

    async fn send(&self, req: &ChargeRequest, go: Go) -> Option<ChargeOutcome> {
        self.g.charge(req, go).await
    }
}

/// The subscription a charge is tied to must exist and charge this very billing key (spelled as it is stored).
fn check_subscription(store: &impl Book, id: &str, customer_uid: &str) -> Result<()> {
    let sub = store.subscription(id)?.ok_or_else(|| anyhow!("--subscription {id:?}: no such subscription"))?;
    if sub.customer_uid != customer_uid {
        bail!(
            "--subscription {id}: it charges billing key {:?}, not {customer_uid:?}{}; nothing sent",
            sub.customer_uid,
            if sub.customer_uid.eq_ignore_ascii_case(customer_uid) { " (spell it as stored)" } else { "" }
        );
    }
    Ok(())
}

pub fn charge_key(
    path: &Path,
    customer_uid: &str,
    merchant_uid: &str,
    amount: i64,
    name: &str,
    opts: KeyOptions<'_>,
    at: (Option<chrono::DateTime<chrono::Utc>>, bool),
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let clock = crate::commands::simulate::command_clock(&cfg, at)?;
    check_customer_uid(customer_uid)?;
    check_args(&cfg, merchant_uid, amount, name, opts.above_max_amount)?;
    let g = gateway(&cfg)?;
    let store = open_store(&cfg)?;
    if let Some(id) = opts.subscription {
        check_subscription(&store, id, customer_uid)?;
    }
    if amount > cfg.limits.max_amount {
        tracing::warn!(
            event = "charge.above_max_amount",
            merchant_uid,
            amount,
            max_amount = cfg.limits.max_amount,
            "charge-key above limits.max_amount (--above-max-amount)"
        );
    }
    let rt = runtime()?;
    let ask = Ask {
        command: "charge-key",
        kind: OneTimeKind::Key,
        merchant_uid,
        amount,
        name,
        customer_uid: Some(customer_uid),
        subscription_id: opts.subscription,
        made_at: None,
        clock,
    };
    let mut sender = KeySender {
        cfg: &cfg,
        g: &g,
        store: &store,
        rt: &rt,
        customer_uid,
        despite_safety_stop: opts.despite_safety_stop,
    };
    Ok(match charge(&cfg, &store, &g, &rt, &ask, &mut sender)? {
        Done::Paid { .. } => ExitCode::SUCCESS,
        Done::NotPaid => ExitCode::FAILURE,
    })
}
