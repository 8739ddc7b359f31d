//! `billd charge-once`: a key-in payment with a card typed by the operator, charged at most once per merchant_uid
//! (its intent recorded first, an unknown outcome settled by lookup, never resent blindly).

use crate::app::{gateway, load_config, open_store, runtime};
use crate::commands::customers::{
    card, check_customer_uid, issue_key, key_at_gateway, moved, refuse_replacing_unasked,
};
use crate::commands::one_time::{Ask, Done, Go, Sender, charge, check_args};
use crate::config::Config;
use crate::gateway::card::Card;
use crate::gateway::{BillingKeys, ChargeOutcome, ChargeRequest};
use crate::store::{Book, OneTimeKind, Views};
use anyhow::Result;
use chrono::Utc;
use std::path::Path;
use std::process::ExitCode;

/// `--customer-uid` (and `--replace-key`): the billing key to save the card as, once the charge is paid.
#[derive(Clone, Copy)]
pub struct SaveKey<'a> {
    pub customer_uid: &'a str,
    /// Replace the card of an existing key (without it, an existing key is refused before anything is sent).
    pub replace_key: bool,
}

/// The exit code of a charge that is paid but whose card could not be saved as the billing key asked for.
const PAID_KEY_NOT_SAVED: u8 = 3;

/// The card that paid a charge: the one this run charged, or (on a rerun of a charge already paid) the masked card
/// recorded with it, which the card read again must match.
pub enum PaidWith<'a> {
    ThisRun(&'a Card),
    Recorded(&'a str),
}

/// After the charge is paid: saves the card that paid it as the billing key asked for (the key is never touched by a
/// charge that is not paid, nor with a card that did not pay). On a rerun of a charge already paid, a key that is
/// already as asked is left alone; otherwise the card is read again and must be the one that paid. Exit 0 when the
/// key is as asked, [`PAID_KEY_NOT_SAVED`] when it could not be saved.
fn save_key_after_paid(
    cfg: &Config,
    store: &(impl crate::store::Views + crate::store::Events + crate::store::Book),
    g: &impl BillingKeys,
    rt: &tokio::runtime::Runtime,
    save: SaveKey<'_>,
    paid_with: PaidWith<'_>,
) -> Result<ExitCode> {
    let uid = save.customer_uid;
    let existing = match rt.block_on(key_at_gateway(g, uid)) {
        Ok(k) => k,
        Err(e) => return not_saved(save, false, format!("{e:#}")),
    };
    let not_saved = |why: String| not_saved(save, existing.is_some(), why);
    let card = match paid_with {
        PaidWith::ThisRun(c) => Some(c),
        PaidWith::Recorded(_) => None,
    };
    let read;
    let card = match (card, &existing) {
        (Some(c), _) => c,
        // A rerun: the key is already as asked (saved by the first run, or replaced by it with this card).
        (None, Some(k)) if !save.replace_key => {
            crate::say!("billing key {uid} exists (card {})", crate::commands::customers::shown(&k.card));
            return Ok(ExitCode::SUCCESS);
        }
        (None, _) => {
            read = crate::commands::customers::card(cfg)?;
            if let PaidWith::Recorded(paid) = paid_with
                && read.masked() != paid
            {
                return not_saved(format!(
                    "card {} is not the card that paid this charge ({paid}); only that card is saved by charge-once",
                    read.masked()
                ));
            }
            if existing.as_ref().is_some_and(|k| k.card.as_deref() == Some(read.masked().as_str())) {
                crate::say!("billing key {uid} already holds card {}", read.masked());
                return Ok(ExitCode::SUCCESS);
            }
            &read
        }
    };
    if existing.is_some() && !save.replace_key {
        return not_saved("it was created meanwhile, and --replace-key was not given".into());
    }
    match rt.block_on(issue_key(g, uid, card, None, None)) {
        Ok(key) => {
            let card = crate::commands::customers::shown(&key.card);
            store.log_event(
                "customer.registered",
                None,
                serde_json::json!({ "customer_uid": uid, "card": card, "replaced": existing.is_some() }),
                Utc::now(),
            )?;
            crate::say!("{}", moved(cfg, store, uid, existing.as_ref(), card)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => not_saved(format!("{e:#}")),
    }
}

/// Says that the charge is paid but its card was not saved as the key, and how to save it; the exit code for that.
fn not_saved(save: SaveKey<'_>, exists: bool, why: String) -> Result<ExitCode> {
    let uid = save.customer_uid;
    let flag = if save.replace_key || exists { " --replace-key" } else { "" };
    eprintln!(
        "paid, but the card was not saved as billing key {uid}: {why}; save it with `billd customers register {uid}{flag}`"
    );
    Ok(ExitCode::from(PAID_KEY_NOT_SAVED))
}

/// The card typed in: read once the protocol's checks have passed (and, with `--customer-uid`, once an existing key
/// is known to be replaced only when asked), then paid with a key-in payment.
struct CardSender<'a, G, S> {
    cfg: &'a Config,
    g: &'a G,
    store: &'a S,
    rt: &'a tokio::runtime::Runtime,
    save: Option<SaveKey<'a>>,
    card: Option<Card>,
}

impl<G: BillingKeys, S: Views + Book> Sender for CardSender<'_, G, S> {
    fn prepare(&mut self) -> Result<String> {
        // An existing billing key is replaced only when asked, and only once paid: refused before anything is sent.
        if let Some(save) = self.save {
            let existing = self.rt.block_on(key_at_gateway(self.g, save.customer_uid));
            let existing = existing.map_err(|e| e.context("nothing was sent"))?;
            refuse_replacing_unasked(self.cfg, self.store, save.customer_uid, existing.as_ref(), save.replace_key)?;
        }
        let card = card(self.cfg)?;
        let masked = card.masked();
        self.card = Some(card);
        Ok(masked)
    }

    async fn send(&self, req: &ChargeRequest, go: Go) -> Option<ChargeOutcome> {
        self.g.pay_with_card(req, self.card.as_ref()?, None, go).await
    }
}

/// `at`: the command's `--as-of` and `--simulate` (a future instant needs `--simulate`, as for `tick`).
pub fn charge_once(
    path: &Path,
    merchant_uid: &str,
    amount: i64,
    name: &str,
    save: Option<SaveKey<'_>>,
    at: (Option<chrono::DateTime<Utc>>, bool),
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let clock = crate::commands::simulate::command_clock(&cfg, at)?;
    check_args(&cfg, merchant_uid, amount, name, false)?;
    if let Some(s) = save {
        check_customer_uid(s.customer_uid)?;
    }
    // The charge itself never carries a billing key: the card is saved as one only once the charge is paid
    // ([`save_key_after_paid`]), so that a declined charge never replaces the card of a key subscriptions charge.
    let g = gateway(&cfg)?;
    let store = open_store(&cfg)?;
    let rt = runtime()?;
    let ask = Ask {
        command: "charge-once",
        kind: OneTimeKind::Card,
        merchant_uid,
        amount,
        name,
        customer_uid: None,
        subscription_id: None,
        made_at: None,
        clock,
    };
    let mut sender = CardSender { cfg: &cfg, g: &g, store: &store, rt: &rt, save, card: None };
    let before = match charge(&cfg, &store, &g, &rt, &ask, &mut sender)? {
        Done::Paid { before, .. } => before,
        Done::NotPaid => return Ok(ExitCode::FAILURE),
    };
    let Some(save) = save else { return Ok(ExitCode::SUCCESS) };
    let paid_with = match (&before, sender.card.as_ref()) {
        (Some(masked), _) => PaidWith::Recorded(masked),
        (None, Some(card)) => PaidWith::ThisRun(card),
        (None, None) => return Ok(ExitCode::SUCCESS),
    };
    save_key_after_paid(&cfg, &store, &g, &rt, save, paid_with)
}
