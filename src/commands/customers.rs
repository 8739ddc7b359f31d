//! `billd customers`: register, show and delete billing keys (and the card input the other card commands share).

use crate::app::{gateway, load_config, open_store, runtime};
use crate::config::Config;
use crate::gateway::card::{Card, read_card};
use crate::gateway::{BillingKey, BillingKeys, Channel, KeyError};
use crate::store::{Events, Views};
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
fn print_key(uid: &str, key: &BillingKey) {
    println!("customer_uid  {uid}");
    println!("card          {} {}", shown(&key.card), shown(&key.card_name));
    println!("pg            {} ({})", shown(&key.pg_provider), shown(&key.pg_id));
    for (k, t) in [("inserted", key.inserted), ("updated", key.updated)] {
        let at = t.map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
        println!("{k:<13} {at}");
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

/// The subscriptions that charge billing key `uid` (every one not canceled), as a phrase for a message:
/// `subscriptions s1 (active), s2 (paused)`; `None` when there are none.
pub(super) fn users_of(store: &impl Views, uid: &str) -> Result<Option<String>> {
    let subs = store.subscriptions_using(uid)?;
    let list: Vec<String> = subs.iter().map(|(id, st)| format!("{id} ({st})")).collect();
    Ok(match list.len() {
        0 => None,
        1 => Some(format!("subscription {}", list[0])),
        _ => Some(format!("subscriptions {}", list.join(", "))),
    })
}

/// Refuses (nothing sent) to issue billing key `uid` over an existing one unless `replace_key`: replacing a key
/// moves every subscription that charges it to the new card.
pub(super) fn refuse_replacing_unasked(
    store: &impl Views,
    uid: &str,
    existing: Option<&BillingKey>,
    replace_key: bool,
) -> Result<()> {
    let Some(key) = existing.filter(|_| !replace_key) else { return Ok(()) };
    let users = users_of(store, uid)?.map(|u| format!(", charged by {u}")).unwrap_or_default();
    bail!(
        "billing key {uid} already exists at the gateway (card {}{users}); this would replace its card, and every \
         subscription of it would charge the new one. Pass --replace-key to replace it; nothing was sent",
        shown(&key.card)
    )
}

/// What replacing billing key `uid` (or issuing it) did, in words: whose subscriptions now charge `card`.
pub(super) fn moved(store: &impl Views, uid: &str, replaced: Option<&BillingKey>, card: &str) -> Result<String> {
    let users = users_of(store, uid)?;
    Ok(match (replaced, users) {
        (Some(old), Some(u)) => {
            format!("billing key {uid} replaced (card {} -> {card}): {u} now charge it", shown(&old.card))
        }
        (Some(old), None) => format!("billing key {uid} replaced (card {} -> {card})", shown(&old.card)),
        (None, Some(u)) => format!("billing key {uid} saved (card {card}): {u} charge it"),
        (None, None) => format!("billing key {uid} saved (card {card})"),
    })
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
    refuse_replacing_unasked(&store, uid, existing.as_ref(), replace_key)?;
    let card = card(&cfg)?;
    let key = rt.block_on(issue_key(&g, uid, &card, pg, channel_key))?;
    store.log_event(
        "customer.registered",
        None,
        json!({ "customer_uid": uid, "card": shown(&key.card), "replaced": existing.is_some() }),
        Utc::now(),
    )?;
    println!("{}", moved(&store, uid, existing.as_ref(), shown(&key.card))?);
    print_key(uid, &key);
    Ok(ExitCode::SUCCESS)
}

pub fn show(path: &Path, uid: &str) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    match runtime()?.block_on(g.show_key(uid)) {
        Ok(key) => {
            print_key(uid, &key);
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
    if let Some(users) = users_of(&open_store(&cfg)?, uid)?.filter(|_| !force) {
        bail!(
            "billing key {uid} is charged by {users}: without it their next charges are rejected, and the dunning \
             policy ends them. Cancel them first (`billd cancel ID`), or pass --force; nothing was sent"
        );
    }
    match runtime()?.block_on(g.delete_key(uid, reason)) {
        Ok(()) => {
            let store = open_store(&cfg)?;
            store.log_event("customer.deleted", None, json!({ "customer_uid": uid, "reason": reason }), Utc::now())?;
            println!("billing key {uid} deleted");
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
