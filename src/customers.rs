//! Card commands: register, show and delete billing keys, key-in payments (`charge-once`), `subscriptions add`.

use crate::card::{Card, read_card};
use crate::cli::{load_config, runtime};
use crate::config::Config;
use crate::gateway::{ChargeOutcome, ChargeRequest, Gateway, Iamport, Lookup};
use crate::model::{Source, Status, Subscription};
use crate::store::{OneTimeCharge, Store};
use anyhow::{Result, anyhow, bail};
use chrono::{NaiveDate, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

fn gateway(cfg: &Config) -> Result<Iamport> {
    let secret = cfg.gateway.secret.resolve().map_err(|e| anyhow!("{}: {e}", cfg.file.display()))?;
    let g = &cfg.gateway;
    Ok(Iamport::new(&g.base_url, &g.imp_key, secret, g.timeout, g.concurrency).with_rate_limit(g.rate_limit))
}

fn today(cfg: &Config) -> NaiveDate {
    cfg.billing.clock.local_date(Utc::now())
}

fn check_customer_uid(uid: &str) -> Result<()> {
    let n = uid.chars().count();
    if n == 0 || n > 80 {
        bail!("CUSTOMER_UID must be 1-80 characters (it is {n})");
    }
    Ok(())
}

/// Reads and validates the card from stdin or the terminal.
fn card(cfg: &Config) -> Result<Card> {
    let raw = read_card().map_err(|e| anyhow!(e))?;
    Card::validate(raw, today(cfg)).map_err(|e| anyhow!("invalid card, nothing was sent: {e}"))
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

/// The key's card number as the gateway gave it, masked here too in case it came unmasked.
fn key_card(v: &Value) -> String {
    let shown = str_field(v, "card_number");
    if shown.chars().filter(char::is_ascii_digit).count() >= 13 { crate::card::mask(shown) } else { shown.to_owned() }
}

/// Prints a key (its strings were cleaned by the gateway client); the customer_uid shown is the one asked for.
fn print_key(uid: &str, v: &Value) {
    println!("customer_uid  {uid}");
    println!("card          {} {}", key_card(v), str_field(v, "card_name"));
    println!("pg            {} ({})", str_field(v, "pg_provider"), str_field(v, "pg_id"));
    for k in ["inserted", "updated"] {
        let t = v.get(k).and_then(Value::as_i64).unwrap_or(0);
        let shown = if t == 0 { "-".to_string() } else { crate::store::from_ts(t).to_rfc3339() };
        println!("{k:<13} {shown}");
    }
}

async fn issue_key(g: &Iamport, uid: &str, card: &Card, pg: Option<&str>, channel_key: Option<&str>) -> Result<Value> {
    let mut body = card.request_fields();
    if let Some(pg) = pg {
        body.insert("pg".into(), pg.into());
    }
    if let Some(k) = channel_key {
        body.insert("channel_key".into(), k.into());
    }
    let a = g
        .call(Method::POST, &["subscribe", "customers", uid], &[], Some(&Value::Object(body)))
        .await
        .map_err(|e| anyhow!("registering {uid}: {e}"))?;
    if a.status != 200 || a.code != 0 {
        bail!(
            "registering {uid} with card {}: refused (HTTP {}, code {}): {}",
            card.masked(),
            a.status,
            a.code,
            a.message.unwrap_or_default()
        );
    }
    a.response.ok_or_else(|| anyhow!("registering {uid}: the gateway answered no billing key"))
}

pub fn register(path: &Path, uid: &str, pg: Option<&str>, channel_key: Option<&str>) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    let card = card(&cfg)?;
    let key = runtime()?.block_on(issue_key(&g, uid, &card, pg, channel_key))?;
    let mut store = Store::open(&cfg.billing.database)?;
    store.log_event(
        "customer.registered",
        None,
        json!({ "customer_uid": uid, "card": key_card(&key) }),
        Utc::now().timestamp(),
    )?;
    println!("billing key registered");
    print_key(uid, &key);
    Ok(ExitCode::SUCCESS)
}

pub fn show(path: &Path, uid: &str) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    let a = runtime()?
        .block_on(g.call(Method::GET, &["subscribe", "customers", uid], &[], None))
        .map_err(|e| anyhow!(e))?;
    match (a.status, a.code, a.response) {
        (200, 0, Some(v)) => {
            print_key(uid, &v);
            Ok(ExitCode::SUCCESS)
        }
        (404, ..) => bail!("no billing key for customer_uid {uid:?} at the gateway"),
        (s, c, _) => bail!("customer {uid}: HTTP {s}, code {c}: {}", a.message.unwrap_or_default()),
    }
}

pub fn delete(path: &Path, uid: &str, reason: Option<&str>) -> Result<ExitCode> {
    check_customer_uid(uid)?;
    let cfg = load_config(path)?;
    let g = gateway(&cfg)?;
    let query: Vec<(&str, &str)> = reason.map(|r| vec![("reason", r)]).unwrap_or_default();
    let a = runtime()?
        .block_on(g.call(Method::DELETE, &["subscribe", "customers", uid], &query, None))
        .map_err(|e| anyhow!(e))?;
    match (a.status, a.code) {
        (200, 0) => {
            let mut store = Store::open(&cfg.billing.database)?;
            store.log_event(
                "customer.deleted",
                None,
                json!({ "customer_uid": uid, "reason": reason }),
                Utc::now().timestamp(),
            )?;
            println!("billing key {uid} deleted");
            Ok(ExitCode::SUCCESS)
        }
        (404, _) => bail!("no billing key for customer_uid {uid:?} at the gateway"),
        (s, c) => bail!("deleting {uid}: HTTP {s}, code {c}: {}", a.message.unwrap_or_default()),
    }
}

/// Settles an attempt whose answer was lost by looking its merchant_uid up: Some(paid imp_uid) / Err(reason if
/// failed) / Ok(None) when the gateway has no record of it.
async fn look_up(g: &Iamport, merchant_uid: &str) -> Result<Option<String>, String> {
    match g.find(merchant_uid, "paid").await {
        Lookup::Found(p) => Ok(Some(p.imp_uid)),
        Lookup::Error(e) => Err(format!("lookup failed: {e}")),
        Lookup::NotFound => match g.find(merchant_uid, "failed").await {
            Lookup::Found(p) => Err(p.fail_reason.unwrap_or_else(|| "declined".into())),
            Lookup::Error(e) => Err(format!("lookup failed: {e}")),
            Lookup::NotFound => Ok(None),
        },
    }
}

pub fn charge_once(
    path: &Path,
    merchant_uid: &str,
    amount: i64,
    name: &str,
    customer_uid: Option<&str>,
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    if merchant_uid.is_empty() || merchant_uid.chars().count() > 40 {
        bail!("--merchant-uid must be 1-40 characters");
    }
    if amount <= 0 || amount > cfg.limits.max_amount {
        bail!("--amount {amount} must be between 1 and limits.max_amount ({})", cfg.limits.max_amount);
    }
    let n = name.chars().count();
    if n == 0 || n > 40 {
        bail!("--name must be 1-40 characters (it is {n})");
    }
    if let Some(c) = customer_uid {
        check_customer_uid(c)?;
    }
    let g = gateway(&cfg)?;
    let mut store = Store::open(&cfg.billing.database)?;
    let rt = runtime()?;
    let now = || Utc::now().timestamp();
    if let Some((id, status, imp, _)) = store.one_time(merchant_uid)? {
        match status.as_str() {
            "paid" => bail!("merchant_uid {merchant_uid} is already paid (imp_uid {})", imp.unwrap_or_default()),
            "pending" | "unknown" => match rt.block_on(look_up(&g, merchant_uid)) {
                Ok(Some(imp)) => {
                    store.finish_one_time(id, "paid", None, Some(&imp), None, now())?;
                    bail!("merchant_uid {merchant_uid} was already paid (imp_uid {imp}); nothing sent");
                }
                Ok(None) => {}
                Err(e) if e.starts_with("lookup failed") => bail!("merchant_uid {merchant_uid} is unresolved: {e}"),
                Err(reason) => {
                    store.finish_one_time(id, "failed", Some("declined"), None, Some(&reason), now())?;
                }
            },
            _ => {}
        }
    }
    let card = card(&cfg)?;
    let charge = OneTimeCharge {
        merchant_uid: merchant_uid.to_owned(),
        customer_uid: customer_uid.map(str::to_owned),
        name: name.to_owned(),
        amount,
        currency: "KRW".into(),
        card_masked: card.masked(),
    };
    // The intent is committed before the request leaves.
    let id = store.begin_one_time(&charge, now())?;
    // An outcome that stays unknown (the lookup failed too): recorded so; a rerun, or the next pass, settles it.
    let leave_unknown = |store: &mut Store, r: &str, e: &str| -> anyhow::Error {
        match store.finish_one_time(id, "unknown", None, None, Some(&format!("{r}; {e}")), now()) {
            Err(db) => db,
            Ok(_) => anyhow!(
                "merchant_uid {merchant_uid}: outcome unknown ({r}) and the lookup failed; rerun the same command \
                 later (it looks the payment up before sending anything), or let the running billd settle it"
            ),
        }
    };
    let req = ChargeRequest {
        customer_uid: customer_uid.unwrap_or_default().to_owned(),
        merchant_uid: merchant_uid.to_owned(),
        amount,
        currency: "KRW".into(),
        name: name.to_owned(),
    };
    let outcome = rt.block_on(g.charge_once(&req, &card, customer_uid));
    let settled = match outcome {
        ChargeOutcome::Paid { imp_uid } => Ok(imp_uid),
        ChargeOutcome::Declined { imp_uid, reason } => Err(("declined", imp_uid, reason)),
        ChargeOutcome::Rejected { code, message } => match rt.block_on(look_up(&g, merchant_uid)) {
            Ok(Some(imp)) => Ok(imp),
            Err(e) if e.starts_with("lookup failed") => {
                return Err(leave_unknown(&mut store, &format!("rejected (code {code}: {message})"), &e));
            }
            _ => Err(("rejected", None, format!("code {code}: {message}"))),
        },
        ChargeOutcome::Transient(r) | ChargeOutcome::Unknown(r) => match rt.block_on(look_up(&g, merchant_uid)) {
            Ok(Some(imp)) => Ok(imp),
            Ok(None) => Err(("abandoned", None, format!("{r}; the gateway has no record of it: nothing was charged"))),
            Err(e) if e.starts_with("lookup failed") => return Err(leave_unknown(&mut store, &r, &e)),
            Err(reason) => Err(("declined", None, reason)),
        },
    };
    match settled {
        Ok(imp) => {
            store.finish_one_time(id, "paid", None, Some(&imp), None, now())?;
            println!("paid: {merchant_uid} {amount} KRW with card {} (imp_uid {imp})", card.masked());
            if let Some(c) = customer_uid {
                println!("the card is saved as the billing key {c}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err((failure, imp, reason)) => {
            store.finish_one_time(id, "failed", Some(failure), imp.as_deref(), Some(&reason), now())?;
            tracing::warn!(event = "charge.failed", merchant_uid, amount, failure, reason = %reason, "charge.failed");
            eprintln!("not paid ({failure}): {merchant_uid} with card {}: {reason}", card.masked());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `billd subscriptions add`: a subscription kept in the database only, optionally with its card registered and
/// its first period charged at once (under the same exactly-once rules as scheduled charges).
pub fn add_subscription(
    path: &Path,
    id: &str,
    customer_uid: &str,
    plan: &str,
    start: Option<&str>,
    register_card: bool,
    charge_now: bool,
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    check_customer_uid(customer_uid)?;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("--id must be 1-64 characters of letters, digits, '-', '_' or '.'");
    }
    let plan = cfg
        .plan(plan)
        .ok_or_else(|| anyhow!("unknown plan {plan:?} (no [[plans]] entry in {})", cfg.file.display()))?;
    if cfg.subscriptions.iter().any(|s| s.id == id) {
        bail!("subscription {id:?} is defined in {}; pick another id", cfg.file.display());
    }
    let start = match start {
        Some(s) => crate::config::parse_date(s).map_err(|e| anyhow!("--start: {e}"))?,
        None => today(&cfg),
    };
    {
        let store = Store::open(&cfg.billing.database)?;
        if store.subscription(id)?.is_some() {
            bail!("subscription {id:?} already exists");
        }
    }
    if register_card {
        let g = gateway(&cfg)?;
        let card = card(&cfg)?;
        let key = runtime()?.block_on(issue_key(&g, customer_uid, &card, None, None))?;
        println!("billing key {customer_uid} registered: {}", key_card(&key));
    }
    let sub = Subscription {
        id: id.to_owned(),
        customer_uid: customer_uid.to_owned(),
        plan_id: plan.id.clone(),
        plan_name: plan.name.clone(),
        amount: plan.amount,
        currency: plan.currency.clone(),
        interval: plan.interval,
        start_date: start,
        anchor_date: start,
        anchor_period: 0,
        next_period: 0,
        status: Status::Active,
        source: Source::Manual,
    };
    let now = Utc::now();
    let first_due = sub.calendar().due_at(&cfg.billing.clock, 0);
    // --charge-now makes the first period due at once; later periods keep the start date's anchor.
    let due = if charge_now { first_due.map(|t| t.min(now)) } else { first_due };
    Store::open(&cfg.billing.database)?.insert_manual(&sub, due.map(|t| t.timestamp()), now.timestamp())?;
    println!(
        "subscription {id} added: {} {} every {}, first due {}",
        sub.amount,
        sub.currency,
        sub.interval,
        due.map(|t| t.with_timezone(&cfg.billing.clock.timezone).to_rfc3339()).unwrap_or_default()
    );
    if !charge_now {
        return Ok(ExitCode::SUCCESS);
    }
    use crate::ops::ChargedNow;
    match crate::ops::charge_due_now(&cfg, id)? {
        ChargedNow::Attempt(r) if r.status == "paid" => {
            println!("first charge paid: {} (imp_uid {})", r.merchant_uid, r.imp_uid.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        ChargedNow::Attempt(r) => {
            eprintln!("first charge {}: {} {}", r.merchant_uid, r.status, r.fail_reason.unwrap_or_default());
            Ok(ExitCode::FAILURE)
        }
        ChargedNow::NoAttempt => bail!("the first charge was not attempted"),
        ChargedNow::LeftToDaemon => {
            println!("the running billd charges the first period within a minute");
            Ok(ExitCode::SUCCESS)
        }
    }
}
