//! `billd charge-once`: a key-in payment with a card typed by the operator, charged at most once per merchant_uid
//! (its intent recorded first, an unknown outcome settled by lookup, never resent blindly).

use crate::app::{gateway, load_config, open_store, runtime};
use crate::commands::customers::{
    card, check_customer_uid, issue_key, key_at_gateway, moved, refuse_replacing_unasked,
};
use crate::config::Config;
use crate::gateway::card::Card;
use crate::gateway::{BillingKeys, ChargeOutcome, ChargeRequest, Gateway, Lookup};
use crate::realtime::{RealClock, SystemClock};
use crate::store::{ChargeStatus, Failure, Ledger, OneTime, OneTimeCharge, from_ts};
use anyhow::{Result, bail};
use chrono::Utc;
use std::path::Path;
use std::process::ExitCode;

/// What a lookup by merchant_uid says of a one-time charge.
enum Found {
    /// Paid, as asked (imp_uid).
    Paid(String),
    /// A paid payment for another amount, currency or card: never taken as this charge.
    Mismatch(String),
    /// A failed payment that is not one already recorded for this charge (imp_uid, reason).
    Declined(String, String),
    /// No record at the gateway.
    Nothing,
}

/// Looks a one-time charge up by merchant_uid (paid, then failed). `known_failed`: the imp_uid of a decline already
/// recorded for it (a lookup finding that one has found nothing new). Err: the lookup failed.
async fn look_up(
    g: &impl Gateway,
    merchant_uid: &str,
    amount: i64,
    currency: &str,
    customer_uid: Option<&str>,
    known_failed: Option<&str>,
) -> Result<Found, String> {
    match g.find(merchant_uid, "paid").await {
        Lookup::Found(p) => Ok(match p.differs_from(amount, currency, customer_uid) {
            None => Found::Paid(p.imp_uid),
            Some(why) => Found::Mismatch(why),
        }),
        Lookup::Error(e) => Err(format!("lookup failed: {e}")),
        Lookup::NotFound => match g.find(merchant_uid, "failed").await {
            Lookup::Found(p) if Some(p.imp_uid.as_str()) == known_failed => Ok(Found::Nothing),
            Lookup::Found(p) if p.differs_from(amount, currency, customer_uid).is_some() => Ok(Found::Nothing),
            Lookup::Found(p) => Ok(Found::Declined(p.imp_uid, p.fail_reason.unwrap_or_else(|| "declined".into()))),
            Lookup::Error(e) => Err(format!("lookup failed: {e}")),
            Lookup::NotFound => Ok(Found::Nothing),
        },
    }
}

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

/// The instant, in the billing time zone, for a message.
fn local(cfg: &Config, t: i64) -> String {
    crate::commands::present::human(from_ts(t), cfg.billing.clock.timezone)
}

pub fn charge_once(
    path: &Path,
    merchant_uid: &str,
    amount: i64,
    name: &str,
    save: Option<SaveKey<'_>>,
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    if let Some(why) = crate::ids::refusal(merchant_uid, crate::ids::MERCHANT_UID_MAX) {
        bail!("--merchant-uid {merchant_uid:?} {why}; nothing was sent");
    }
    let prefix = &cfg.billing.merchant_uid_prefix;
    // Without case: the gateway may not tell merchant_uids apart by case (ids differing only by case are refused
    // everywhere for that reason).
    if merchant_uid.to_lowercase().starts_with(&format!("{}-", prefix.to_lowercase())) {
        bail!(
            "--merchant-uid {merchant_uid}: merchant_uids starting with \"{prefix}-\" are billd's own (subscription \
             periods, billing.merchant_uid_prefix in {}); pick one outside that namespace",
            cfg.file.display()
        );
    }
    if amount <= 0 || amount > cfg.limits.max_amount {
        bail!("--amount {amount} must be between 1 and limits.max_amount ({})", cfg.limits.max_amount);
    }
    let n = name.chars().count();
    if n == 0 || n > 40 {
        bail!("--name must be 1-40 characters (it is {n})");
    }
    if let Some(s) = save {
        check_customer_uid(s.customer_uid)?;
    }
    // The charge itself never carries a billing key: the card is saved as one only once the charge is paid
    // ([`save_key_after_paid`]), so that a declined charge never replaces the card of a key subscriptions charge.
    let currency = "KRW";
    let g = gateway(&cfg)?;
    let store = open_store(&cfg)?;
    if let Some((sub, period)) = store.period_by_merchant_uid(merchant_uid)? {
        bail!("--merchant-uid {merchant_uid} is period {period} of subscription {sub:?}; pick another");
    }
    let rt = runtime()?;
    let now = || Utc::now().timestamp();
    // A "not before" instant (a check after a quiet period), rounded up so that rounding never makes it earlier.
    let after = |secs: i64| crate::store::ceil_second(Utc::now()).timestamp() + secs;
    let timeout = g.timeout();
    // The quiet period after a request whose outcome is unknown: no look at it (and no resend) before it is over.
    let quiet = ((2 * timeout.as_millis() as i64 + 999) / 1000).max(1);
    let prev = store.one_time(merchant_uid)?;
    let prev_tries = prev.as_ref().map(|p| p.tries);
    // The imp_uid a row that is not paid keeps is an earlier try's decline: a lookup that finds it has found nothing
    // of this try (a review found a stale decline settling a try in flight, and a rerun then charged twice).
    let known_failed = prev.as_ref().and_then(|p| p.imp_uid.clone());
    // The billing key its charge was sent with: only a try by a billd before issue 21 sent one (with the charge);
    // its lookups must match it.
    let charged_with = prev.as_ref().and_then(|p| p.customer_uid.clone());
    let charged_with = charged_with.as_deref();
    if let Some(prev) = prev {
        if prev.amount != amount || prev.currency != currency {
            bail!(
                "merchant_uid {merchant_uid} was first tried with amount {} {}{}; a rerun must ask for the same (or \
                 use a new merchant_uid)",
                prev.amount,
                prev.currency,
                prev.customer_uid.as_deref().map(|c| format!(" and customer_uid {c}")).unwrap_or_default()
            );
        }
        if prev.status == ChargeStatus::Paid {
            // Paid is what was asked: a rerun of a paid charge succeeds (exit 0) and sends nothing.
            crate::say!(
                "merchant_uid {merchant_uid} is already paid (imp_uid {}); nothing sent",
                prev.imp_uid.unwrap_or_default()
            );
            return match save {
                Some(save) => save_key_after_paid(&cfg, &store, &g, &rt, save, PaidWith::Recorded(&prev.card_masked)),
                None => Ok(ExitCode::SUCCESS),
            };
        }
        if prev.failure == Some(Failure::Mismatch) {
            bail!(
                "merchant_uid {merchant_uid} is held: {} (see `billd charges --failed`)",
                prev.fail_reason.unwrap_or_default()
            );
        }
        // Whatever billd recorded, the gateway is asked before anything is sent again.
        match rt.block_on(look_up(&g, merchant_uid, amount, currency, charged_with, known_failed.as_deref())) {
            Err(e) => bail!("merchant_uid {merchant_uid}: {e}; nothing sent (rerun later)"),
            Ok(Found::Paid(imp)) => {
                store.finish_one_time(prev.id, prev.tries, ChargeStatus::Paid, None, Some(&imp), None, Utc::now())?;
                crate::say!("merchant_uid {merchant_uid} was already paid (imp_uid {imp}); nothing sent");
                return match save {
                    Some(save) => {
                        save_key_after_paid(&cfg, &store, &g, &rt, save, PaidWith::Recorded(&prev.card_masked))
                    }
                    None => Ok(ExitCode::SUCCESS),
                };
            }
            Ok(Found::Mismatch(why)) => {
                let mismatch = Some(Failure::Mismatch);
                store.finish_one_time(
                    prev.id,
                    prev.tries,
                    ChargeStatus::Failed,
                    mismatch,
                    None,
                    Some(&why),
                    Utc::now(),
                )?;
                bail!("merchant_uid {merchant_uid}: {why}; not taken as this charge, nothing sent");
            }
            Ok(Found::Declined(imp, reason)) => {
                store.finish_one_time(
                    prev.id,
                    prev.tries,
                    ChargeStatus::Failed,
                    Some(Failure::Declined),
                    Some(&imp),
                    Some(&reason),
                    Utc::now(),
                )?;
            }
            Ok(Found::Nothing) => {
                let unresolved = prev.status.unresolved();
                // A row from before schema 6 has no check time: the longest a charge-once can take after its
                // last change.
                let check_at = prev.check_at.map(|t| t.timestamp());
                let check_at = check_at.unwrap_or(prev.updated_at.timestamp() + 5 * timeout.as_secs() as i64 + 60);
                // Not before its check time, nor before the quiet period of its last request has passed in real
                // time on every clock (a wall clock stepped forward since does not shorten it).
                let check_at = match &prev.doubt {
                    Some(d) => d.next_look(Some(from_ts(check_at)), &SystemClock.now()).timestamp(),
                    None => check_at,
                };
                if let Some(at) = Some(check_at).filter(|at| unresolved && *at > now()) {
                    bail!(
                        "merchant_uid {merchant_uid}: outcome unknown: billd will settle it; do not retry before {} \
                         (its first request may still be in progress at the gateway)",
                        local(&cfg, at)
                    );
                }
            }
        }
    }
    if let Some(c) = charged_with {
        bail!(
            "merchant_uid {merchant_uid} was tried by an earlier billd with billing key {c} sent with the charge, and \
             no payment of it is found; it is not sent again this way: use a new merchant_uid"
        );
    }
    // An existing billing key is replaced only when asked, and only once paid: refused before anything is sent.
    if let Some(save) = save {
        let existing = rt.block_on(key_at_gateway(&g, save.customer_uid)).map_err(|e| e.context("nothing was sent"))?;
        refuse_replacing_unasked(&cfg, &store, save.customer_uid, existing.as_ref(), save.replace_key)?;
    }
    crate::failpoint::pause("charge_once_after_check");
    let card = card(&cfg)?;
    let charge = OneTimeCharge {
        merchant_uid: merchant_uid.to_owned(),
        customer_uid: None,
        name: name.to_owned(),
        amount,
        currency: currency.into(),
        card_masked: card.masked(),
    };
    // The intent is committed before the request leaves. No pass looks at it before the command is surely over
    // (a token, a retried token, the charge and two lookups, each within the timeout) and a quiet period after.
    let worst = 5 * timeout.as_secs() as i64 + quiet + 60;
    let sent = SystemClock.now();
    let Some((id, tries)) = store.begin_one_time(
        &charge,
        &sent,
        Utc::now(),
        timeout.as_millis() as u64,
        from_ts(after(worst)),
        prev_tries,
    )?
    else {
        bail!(
            "merchant_uid {merchant_uid}: another `billd charge-once` of it is running or has just run; nothing sent \
             (rerun to see its outcome)"
        );
    };
    let req = ChargeRequest {
        customer_uid: String::new(),
        merchant_uid: merchant_uid.to_owned(),
        amount,
        currency: currency.into(),
        name: name.to_owned(),
    };
    // The moment the request leaves (after its token and its turn): only if no pass took the charge over meanwhile.
    let go = async { store.one_time_go(id, tries, &SystemClock.now()).unwrap_or(false) };
    let Some(outcome) = rt.block_on(g.pay_with_card(&req, &card, None, go)) else {
        bail!(
            "merchant_uid {merchant_uid}: not sent: a pass or another `billd charge-once` took it over while this one \
             waited for its access token (rerun to see its outcome; it looks the payment up first)"
        );
    };
    // A lookup right after the answer: Some(outcome) if it settles the charge; None if it found nothing; Err if
    // it failed.
    let settle =
        || match rt.block_on(look_up(&g, merchant_uid, amount, currency, charged_with, known_failed.as_deref())) {
            Ok(Found::Paid(imp)) => Ok(Some(Ok(imp))),
            Ok(Found::Mismatch(m)) => Ok(Some(Err(("mismatch", None, m)))),
            Ok(Found::Declined(imp, reason)) => Ok(Some(Err(("declined", Some(imp), reason)))),
            Ok(Found::Nothing) => Ok(None),
            Err(e) => Err(e),
        };
    let settled = match outcome {
        ChargeOutcome::Paid { imp_uid } => Ok(imp_uid),
        ChargeOutcome::Declined { imp_uid, reason } => Err(("declined", imp_uid, reason)),
        ChargeOutcome::Rejected { code, message } => match settle() {
            Ok(Some(r)) => r,
            // Refused and no record of it: nothing was charged.
            Ok(None) => Err(("rejected", None, format!("code {code}: {message}"))),
            Err(e) => {
                let why = format!("rejected (code {code}: {message}); {e}");
                return unknown(&cfg, &store, (id, tries), merchant_uid, &why, after(quiet));
            }
        },
        // The request may have been made: unknown until a lookup after the quiet period settles it (a lookup now
        // that finds nothing proves nothing, as the gateway may still be making it).
        ChargeOutcome::Transient(r) | ChargeOutcome::Unknown(r) => match settle() {
            Ok(Some(r)) => r,
            Ok(None) => return unknown(&cfg, &store, (id, tries), merchant_uid, &r, after(quiet)),
            Err(e) => return unknown(&cfg, &store, (id, tries), merchant_uid, &format!("{r}; {e}"), after(quiet)),
        },
    };
    match settled {
        Ok(imp) => {
            store.finish_one_time(id, tries, ChargeStatus::Paid, None, Some(&imp), None, Utc::now())?;
            crate::say!("paid: {merchant_uid} {amount} KRW with card {} (imp_uid {imp})", card.masked());
            match save {
                Some(save) => save_key_after_paid(&cfg, &store, &g, &rt, save, PaidWith::ThisRun(&card)),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Err((failure, imp, reason)) => {
            let (failed, why) = (Failure::parse(failure), Some(reason.as_str()));
            store.finish_one_time(id, tries, ChargeStatus::Failed, failed, imp.as_deref(), why, Utc::now())?;
            if failure == "mismatch" {
                tracing::error!(event = "charge.mismatch", merchant_uid, amount, reason = %reason,
                    "charge.mismatch: not taken as paid; held for an operator");
            } else {
                tracing::warn!(event = "charge.failed", merchant_uid, amount, failure, reason = %reason,
                    "charge.failed");
            }
            eprintln!("not paid ({failure}): {merchant_uid} with card {}: {reason}", card.masked());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A one-time charge whose outcome stays unknown: recorded so (no look at it before `check_at`); says what to do.
fn unknown(
    cfg: &Config,
    store: &impl OneTime,
    (id, tries): (i64, i64),
    merchant_uid: &str,
    why: &str,
    check_at: i64,
) -> Result<ExitCode> {
    store.one_time_unknown(id, tries, why, &SystemClock.now(), from_ts(check_at), Utc::now())?;
    tracing::warn!(event = "charge.unknown", merchant_uid, one_time = true, reason = %why, check_at = %local(cfg, check_at),
        "charge.unknown");
    eprintln!(
        "outcome unknown: {merchant_uid} ({why}): billd will settle it; do not retry before {} (`billd charges` \
         shows it once settled; a rerun of this command before then sends nothing)",
        local(cfg, check_at)
    );
    Ok(ExitCode::FAILURE)
}
