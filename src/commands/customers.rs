//! `billd customers`: register, show and delete billing keys (and the card input the other card commands share).

use crate::app::{gateway, load_config, open_store, runtime};
use crate::config::Config;
use crate::gateway::card::{Card, read_card};
use crate::gateway::{BillingKey, BillingKeys, Channel, KeyError};
use crate::store::Events;
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

pub fn register(path: &Path, uid: &str, pg: Option<&str>, channel_key: Option<&str>) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    let card = card(&cfg)?;
    let key = runtime()?.block_on(issue_key(&g, uid, &card, pg, channel_key))?;
    let store = open_store(&cfg)?;
    store.log_event(
        "customer.registered",
        None,
        json!({ "customer_uid": uid, "card": shown(&key.card) }),
        Utc::now(),
    )?;
    println!("billing key registered");
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

pub fn delete(path: &Path, uid: &str, reason: Option<&str>) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
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
