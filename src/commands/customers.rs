//! `billd customers`: register, show and delete billing keys (and the card input the other card commands share).

use crate::app::{gateway, load_config, open_store, runtime};
use crate::config::Config;
use crate::gateway::card::{Card, read_card};
use crate::gateway::{BillingKey, BillingKeys, Channel, KeyError};
use crate::store::{Book, Events, Views};
use anyhow::{Result, anyhow, bail};
use chrono::{NaiveDate, Utc};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn today(cfg: &Config) -> NaiveDate {
    cfg.billing.clock.local_date(Utc::now())
}

pub(super) fn check_customer_uid(uid: &str) -> Result<()> {
    match crate::ids::refusal(uid, crate::ids::CUSTOMER_UID_MAX) {
        Some(why) => bail!("CUSTOMER_UID {uid:?} {why}; nothing was sent"),
        None => Ok(()),
    }
}

/// Reads and validates the card from stdin or the terminal.
pub(super) fn card(cfg: &Config) -> Result<Card> {
    let raw = read_card().map_err(|e| anyhow!(e))?;
    Card::validate(raw, today(cfg)).map_err(|e| anyhow!("invalid card, nothing was sent: {e}"))
}

/// A field of a key the gateway did not give.
pub(super) fn shown(field: &Option<String>) -> &str {
    field.as_deref().unwrap_or("-")
}

/// Prints a key (cleaned and its card masked by the gateway client); the customer_uid shown is the one asked for.
/// Times are in `billing.timezone`, like every listing.
fn print_key(cfg: &Config, uid: &str, key: &BillingKey) {
    crate::say!("customer_uid  {uid}");
    crate::say!("card          {} {}", shown(&key.card), shown(&key.card_name));
    crate::say!("pg            {} ({})", shown(&key.pg_provider), shown(&key.pg_id));
    for (k, t) in [("inserted", key.inserted), ("updated", key.updated)] {
        let at = t.map_or_else(|| "-".to_string(), |t| crate::commands::present::human(t, cfg.billing.clock.timezone));
        crate::say!("{k:<13} {at}");
    }
}

pub(super) async fn issue_key(
    g: &impl BillingKeys,
    uid: &str,
    card: &Card,
    pg: Option<&str>,
    channel_key: Option<&str>,
) -> Result<BillingKey> {
    g.issue_key(uid, card, Channel { pg, channel_key }).await.map_err(|e| match e {
        KeyError::Unavailable(e) => anyhow!("registering {uid}: {e}"),
        // (NotFound: not an answer to an issue; a refusal of it is Refused.)
        KeyError::NoKey | KeyError::NotFound => anyhow!("registering {uid}: the gateway answered no billing key"),
        KeyError::Refused { status, code, message } => {
            anyhow!("registering {uid} with card {}: refused (HTTP {status}, code {code}): {message}", card.masked())
        }
    })
}

/// Whether the billing key `uid` is at the gateway (`None`: no such key). An error when the gateway cannot tell:
/// then nothing that depends on the answer may be done.
pub(super) async fn key_at_gateway(g: &impl BillingKeys, uid: &str) -> Result<Option<BillingKey>> {
    let why = match g.show_key(uid).await {
        Ok(k) => return Ok(Some(k)),
        Err(KeyError::NotFound) => return Ok(None),
        Err(KeyError::Unavailable(e)) => e,
        Err(KeyError::Refused { status, code, message }) => format!("HTTP {status}, code {code}: {message}"),
        Err(KeyError::NoKey) => "the gateway answered no billing key".into(),
    };
    bail!("cannot tell whether billing key {uid} exists at the gateway ({why})")
}

/// Who charges billing key `uid`, as a phrase for a message (`subscriptions s1 (active), s2 (suspended)`; `None`:
/// nobody): the book's subscriptions that are not canceled, whose key it is or whose open period still charges it
/// (compared without case, as the gateway may not tell keys apart by case), and the config's entries the book has not
/// seen yet. `exact`: only those whose own key is `uid` exactly (who will charge a card saved under that very key).
pub(super) fn users_of(cfg: &Config, store: &(impl Views + Book), uid: &str, exact: bool) -> Result<Option<String>> {
    let mut list: Vec<String> = store
        .subscriptions_using(uid)?
        .into_iter()
        .filter(|(_, _, key)| !exact || key == uid)
        .map(|(id, st, key)| if key == uid { format!("{id} ({st})") } else { format!("{id} ({st}, key {key})") })
        .collect();
    for s in cfg.subscriptions.iter().filter(|s| !s.canceled) {
        let same = if exact { s.customer_uid == uid } else { s.customer_uid.eq_ignore_ascii_case(uid) };
        if same && store.subscription(&s.id)?.is_none() {
            list.push(format!("{} (in {}, not synced yet)", s.id, cfg.file.display()));
        }
    }
    Ok(match list.len() {
        0 => None,
        1 => Some(format!("subscription {}", list[0])),
        _ => Some(format!("subscriptions {}", list.join(", "))),
    })
}

/// Refuses (nothing sent) to issue billing key `uid` over an existing one unless `replace_key`: replacing a key
/// moves every subscription that charges it to the new card.
pub(super) fn refuse_replacing_unasked(
    cfg: &Config,
    store: &(impl Views + crate::store::Book),
    uid: &str,
    existing: Option<&BillingKey>,
    replace_key: bool,
) -> Result<()> {
    let Some(key) = existing.filter(|_| !replace_key) else { return Ok(()) };
    let users = users_of(cfg, store, uid, false)?.map(|u| format!(", charged by {u}")).unwrap_or_default();
    bail!(
        "billing key {uid} already exists at the gateway (card {}{users}); this would replace its card, and every \
         subscription of it would charge the new one. Pass --replace-key to replace it; nothing was sent",
        shown(&key.card)
    )
}

/// What replacing billing key `uid` (or issuing it) did, in words: whose subscriptions now charge `card`.
pub(super) fn moved(
    cfg: &Config,
    store: &(impl Views + crate::store::Book),
    uid: &str,
    replaced: Option<&BillingKey>,
    card: &str,
) -> Result<String> {
    let users = users_of(cfg, store, uid, true)?;
    // "subscription a (...) charges it", "subscriptions a, b (...) charge it".
    let verb = |u: &str| if u.starts_with("subscriptions ") { "charge" } else { "charges" };
    // What dunning stopped bills again only when an operator says so (`reactivate`): named, with the command.
    let stopped: String = store
        .stopped_by_dunning(uid)?
        .iter()
        .map(|(id, st)| {
            format!(
                "\nsubscription {id} of this key was {st} by dunning: `billd reactivate {id} --charge-now` charges its \
                 given-up period now and bills it again (without --charge-now, from its next period)"
            )
        })
        .collect();
    Ok(match (replaced, users) {
        (Some(old), Some(u)) => {
            format!("billing key {uid} replaced (card {} -> {card}): {u} now {} it", shown(&old.card), verb(&u))
        }
        (Some(old), None) => format!("billing key {uid} replaced (card {} -> {card})", shown(&old.card)),
        (None, Some(u)) => format!("billing key {uid} saved (card {card}): {u} {} it", verb(&u)),
        (None, None) => format!("billing key {uid} saved (card {card})"),
    } + &stopped)
}

pub fn register(
    path: &Path,
    uid: &str,
    pg: Option<&str>,
    channel_key: Option<&str>,
    replace_key: bool,
) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    let store = open_store(&cfg)?;
    let rt = runtime()?;
    let existing = rt.block_on(key_at_gateway(&g, uid)).map_err(|e| e.context("nothing was sent"))?;
    refuse_replacing_unasked(&cfg, &store, uid, existing.as_ref(), replace_key)?;
    let card = card(&cfg)?;
    let key = rt.block_on(issue_key(&g, uid, &card, pg, channel_key))?;
    store.log_event(
        "customer.registered",
        None,
        json!({ "customer_uid": uid, "card": shown(&key.card), "replaced": existing.is_some() }),
        Utc::now(),
    )?;
    crate::say!("{}", moved(&cfg, &store, uid, existing.as_ref(), shown(&key.card))?);
    print_key(&cfg, uid, &key);
    Ok(ExitCode::SUCCESS)
}

pub fn show(path: &Path, uid: &str) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    match runtime()?.block_on(g.show_key(uid)) {
        Ok(key) => {
            print_key(&cfg, uid, &key);
            Ok(ExitCode::SUCCESS)
        }
        Err(KeyError::Unavailable(e)) => bail!(e),
        Err(KeyError::NotFound) => bail!("no billing key for customer_uid {uid:?} at the gateway"),
        Err(KeyError::Refused { status, code, message }) => {
            bail!("customer {uid}: HTTP {status}, code {code}: {message}")
        }
        Err(KeyError::NoKey) => bail!("customer {uid}: the gateway answered no billing key"),
    }
}

pub fn delete(path: &Path, uid: &str, reason: Option<&str>, force: bool) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    if let Some(users) = users_of(&cfg, &open_store(&cfg)?, uid, false)?.filter(|_| !force) {
        bail!(
            "billing key {uid} is charged by {users}: without it their next charges are rejected (the dunning policy \
             ends them; many at once are withheld as a mass rejection instead, and billing waits for an operator). \
             Cancel them first (`billd cancel ID`), or pass --force; nothing was sent"
        );
    }
    match runtime()?.block_on(g.delete_key(uid, reason)) {
        Ok(()) => {
            let store = open_store(&cfg)?;
            store.log_event("customer.deleted", None, json!({ "customer_uid": uid, "reason": reason }), Utc::now())?;
            crate::say!("billing key {uid} deleted");
            if let Some(users) = users_of(&cfg, &store, uid, false)? {
                crate::say!("{users} now charge a billing key that no longer exists: cancel them, or register a card");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(KeyError::Unavailable(e)) => bail!(e),
        Err(KeyError::NotFound) => bail!("no billing key for customer_uid {uid:?} at the gateway"),
        Err(KeyError::Refused { status, code, message }) => {
            bail!("deleting {uid}: HTTP {status}, code {code}: {message}")
        }
        Err(KeyError::NoKey) => bail!("deleting {uid}: the gateway answered no billing key"),
    }
}
