//! `billd refund` (a refund of a paid charge, at most once: its intent committed first, a lost answer settled by a lookup of the payment, never by sending again) and `billd refunds` (the list, and `--sync`: refunds made outside billd).

use crate::app::{existing_store, gateway, listed_store, load_config, runtime};
use crate::clock::BillingClock;
use crate::commands::present::{human, rfc3339, shown};
use crate::config::{self, Config};
use crate::engine::refunds::{log_refund, look_up_and_settle};
use crate::gateway::{Auth, Gateway, PaymentRefunds, RefundOutcome, RefundRequest, RefundsLookup};
use crate::realtime::{ProcessClock, RealClock};
use crate::store::{
    NewRefund, RefundRefused, RefundRow, RefundSource, RefundStatus, RefundTarget, Refunds, RefundsStale,
};
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// Exit code: refused before anything was sent, or refused by the gateway (nothing refunded).
const REFUSED: u8 = 1;
/// Exit code: the outcome of a refund is not known (billd settles it by lookup; nothing is to be sent again).
const UNKNOWN: u8 = 3;

/// The longest reason billd sends.
const REASON_MAX: usize = 200;

/// What remains of a charge, in words: what it can still refund, the credit of its period's plan changes counted
/// (issue 25: never more than the refund rule of credits allows).
fn remains(t: &RefundTarget) -> String {
    let left = crate::billing::refunds::refundable(t.amount, t.refunded);
    match t.beside_credit {
        Some((cap, credited)) if cap < left => format!(
            "charge {} paid {} {cur}; {} refunded; {} {cur} can still be refunded ({credited} {cur} of its period's \
             payments were credited by a plan change: the customer's already)",
            t.merchant_uid,
            t.amount,
            t.refunded,
            cap.max(0),
            cur = t.currency
        ),
        _ => format!(
            "charge {} paid {} {}; {} refunded; {} can still be refunded",
            t.merchant_uid, t.amount, t.currency, t.refunded, left
        ),
    }
}

/// Says that a refund's outcome is not known and when billd settles it; the exit code for that.
fn in_doubt(cfg: &Config, r: &RefundRow, what: &str) -> ExitCode {
    let when = r.check_at.map(|t| human(t, cfg.billing.clock.timezone)).unwrap_or_else(|| "its next look".into());
    eprintln!(
        "{what}: refund of {} {} of charge {} (reason {}): outcome unknown ({}). billd settles it by looking the \
         payment up, not before {when} (the next `billd refund {}`, `billd refunds --sync` or pass of `billd run`). \
         A rerun of this same command sends nothing: it looks the payment up and says whether the refund was made \
         (exit 0) or is still unknown (exit 3); only once it is known not to have been made can it be sent again",
        r.amount,
        r.currency,
        r.merchant_uid,
        shown(&r.reason),
        r.detail.as_deref().unwrap_or("no answer"),
        r.merchant_uid
    );
    ExitCode::from(UNKNOWN)
}

/// Refuses with `why`, nothing sent.
fn refused(why: String) -> Result<ExitCode> {
    Ok(refused_code(why))
}

/// Says `why`; the exit code of a refusal.
fn refused_code(why: String) -> ExitCode {
    eprintln!("{why}");
    ExitCode::from(REFUSED)
}

/// `at`: the command's `--as-of` and `--simulate` (the instant it records; quiet periods stay real).
pub fn refund(
    path: &Path,
    merchant_uid: &str,
    amount: Option<i64>,
    reason: &str,
    at: (Option<DateTime<Utc>>, bool),
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let clock = crate::commands::simulate::command_clock(&cfg, at)?;
    if let Some(a) = amount.filter(|a| *a <= 0) {
        bail!("--amount {a}: a refund is a whole number of won, more than 0; nothing was sent");
    }
    let n = reason.chars().count();
    if reason.trim().is_empty() || n > REASON_MAX {
        bail!("--reason must be 1-{REASON_MAX} characters, not blank (it is {n}); nothing was sent");
    }
    crate::commands::check_reason(&cfg, "--reason", reason)?;
    let store = existing_store(&cfg)?;
    let Some(target) = store.refund_target(merchant_uid)? else {
        return refused(format!(
            "no charge of billd has merchant_uid {} (merchant_uids are matched exactly as recorded; see `billd \
             charges`); nothing was sent",
            shown(merchant_uid)
        ));
    };
    let Some(imp_uid) = target.imp_uid.clone() else {
        return refused(format!(
            "charge {merchant_uid} is not paid ({}); only a paid charge can be refunded; nothing was sent",
            target.status.as_str()
        ));
    };
    let g = gateway(&cfg)?;
    let rt = runtime()?;
    let now = || clock.now();
    // Credentials the gateway refuses: nothing is begun (no refund in doubt, no quiet period for nothing).
    if let Auth::Refused(why) = rt.block_on(g.authenticate()) {
        return refused(format!("refund of charge {merchant_uid}: {why}; nothing was sent"));
    }
    // The payment as the gateway has it first: it settles a refund of it in doubt (an earlier run that stopped or
    // lost its answer) and records refunds made outside billd, so that the checksum is right.
    let looked = match rt.block_on(look_up_and_settle(&store, &g, &ProcessClock, merchant_uid, &imp_uid, now())) {
        // The lookup is older than a refund another process recorded since: nothing sent, nothing recorded.
        Err(e) if e.downcast_ref::<RefundsStale>().is_some() => {
            return refused(format!(
                "refund of charge {merchant_uid}: another refund of this charge was recorded meanwhile (after this \
                 command looked the payment up); nothing was sent; rerun"
            ));
        }
        r => r?,
    };
    let settled = match looked {
        Ok(s) => s.in_doubt,
        Err(e) if target.unresolved.is_some() => {
            let r = target.unresolved.as_ref().expect("checked");
            eprintln!("{e}");
            return Ok(in_doubt(&cfg, r, "nothing sent"));
        }
        // Fail closed: without the payment as the gateway has it, the balance billd knows may be stale.
        Err(e) => return refused(format!("{e}; nothing was sent (rerun later)")),
    };
    if let Some(r) = settled {
        match r.status {
            RefundStatus::Pending if r.check_at.is_some_and(|t| t > Utc::now()) => {
                return refused(format!(
                    "another refund of charge {merchant_uid} ({} {}, reason {}) is in progress; nothing was sent \
                     (rerun once it is over to see its outcome)",
                    r.amount,
                    r.currency,
                    shown(&r.reason)
                ));
            }
            RefundStatus::Pending | RefundStatus::Unknown => return Ok(in_doubt(&cfg, &r, "nothing sent")),
            // Settled (made or not): whether this is a rerun of it is `begin_refund`'s one rule.
            RefundStatus::Refunded | RefundStatus::Failed => {}
        }
    }
    let timeout = g.timeout();
    let quiet = chrono::Duration::from_std(crate::billing::quiet::quiet_period(Some(timeout.as_millis() as u64)))
        .unwrap_or(chrono::Duration::hours(1));
    // No pass looks at it before this command is surely over (a token, a retried token, the refund and a lookup,
    // each within the timeout) and a quiet period after.
    let worst = chrono::Duration::from_std(5 * timeout).unwrap_or(chrono::Duration::hours(1)) + quiet;
    let asked = NewRefund { merchant_uid: merchant_uid.to_owned(), amount, reason: reason.to_owned() };
    // Its check time is real time (when its command is surely over), never the billing clock --as-of moves.
    let check_at = Utc::now() + worst;
    let begun = store.begin_refund(&asked, &ProcessClock.now(), now(), timeout.as_millis() as u64, check_at)?;
    let row = match begun {
        Ok(r) => r,
        Err(refusal) => {
            let t = store.refund_target(merchant_uid)?.unwrap_or(target);
            return refused(match refusal {
                RefundRefused::NoCharge => {
                    format!("no charge of billd has merchant_uid {merchant_uid}; nothing was sent")
                }
                RefundRefused::NotPaid(s) => {
                    format!("charge {merchant_uid} is not paid ({}); nothing was sent", s.as_str())
                }
                RefundRefused::Made(r) => return Ok(made_already(&cfg, &r, Utc::now())),
                RefundRefused::Unresolved(r) => format!(
                    "another refund of charge {merchant_uid} ({} {}) is in progress or its outcome is not known yet; \
                     nothing was sent (rerun once it is settled)",
                    r.amount, r.currency
                ),
                RefundRefused::Credited { refundable, credited } => format!(
                    "charge {merchant_uid}: {credited} {cur} of its period's payments were credited by a plan change \
                     (the customer's already); at most {refundable} {cur} can be refunded; refund of {} refused; \
                     nothing was sent",
                    amount.map_or_else(|| "the rest".to_string(), |a| a.to_string()),
                    cur = t.currency
                ),
                RefundRefused::ChangePending(m) => format!(
                    "charge {merchant_uid}: its subscription has a plan change whose charge {m} is not settled, and \
                     what the change credits of this period is known only once it is: settle it first (rerun the \
                     `billd subscriptions change`, or let a pass settle it); nothing was sent"
                ),
                RefundRefused::TooMuch { .. } => format!(
                    "{}: refund of {} refused; nothing was sent",
                    remains(&t),
                    amount.map_or_else(|| "the rest".to_string(), |a| a.to_string())
                ),
            });
        }
    };
    crate::failpoint::failpoint("refund_after_intent");
    crate::failpoint::pause("refund_after_intent");
    let req = RefundRequest {
        imp_uid: row.imp_uid.clone(),
        merchant_uid: merchant_uid.to_owned(),
        amount: row.amount,
        checksum: row.checksum.unwrap_or_default(),
        reason: reason.to_owned(),
    };
    // The moment the request leaves (after its token and its turn): only if no pass took the refund over meanwhile.
    // (The go may run on another thread of the runtime: the store is lent to it behind a lock.)
    let lent = std::sync::Mutex::new(store);
    let go = async { lent.lock().is_ok_and(|s| s.refund_go(row.id, &ProcessClock.now()).unwrap_or(false)) };
    let outcome = rt.block_on(g.refund(&req, go));
    let store = lent.into_inner().map_err(|_| anyhow!("the store's lock was poisoned"))?;
    let Some(outcome) = outcome else {
        bail!(
            "refund of charge {merchant_uid}: not sent: a pass took it over while this one waited for its access \
             token; it settles it by lookup"
        );
    };
    crate::failpoint::failpoint("refund_after_response");
    // From here the request may have left: the exit is 0 (made) or 3 (not known), never 1, unless the gateway
    // refused it and its payment, looked up, does not list it.
    let after = sent_refund(&cfg, &store, &g, &rt, (&row, &clock), outcome, quiet);
    match after {
        Ok(code) => Ok(code),
        Err(e) => {
            // Whatever went wrong after sending (a store error, say): not known, never "nothing refunded".
            eprintln!("refund of charge {merchant_uid}: {e:#}");
            let r = mine(&store, &row).ok().flatten().unwrap_or(row);
            Ok(in_doubt(&cfg, &r, "not known"))
        }
    }
}

/// billd's refund `row`, as it is now (`None`: gone, which does not happen).
fn mine(store: &impl Refunds, row: &RefundRow) -> Result<Option<RefundRow>> {
    Ok(store.list_refunds(Some(row.created_at))?.into_iter().find(|r| r.id == row.id))
}

/// What a refund whose request may have left came to: its outcome, settled in the store.
fn sent_refund(
    cfg: &Config,
    store: &impl Refunds,
    g: &impl Gateway,
    rt: &tokio::runtime::Runtime,
    (row, clock): (&RefundRow, &BillingClock),
    outcome: RefundOutcome,
    quiet: chrono::Duration,
) -> Result<ExitCode> {
    let merchant_uid = row.merchant_uid.as_str();
    let now = || clock.now();
    // A lost or unreadable answer: unknown, settled only by a lookup after the quiet period (a look now that does
    // not find the refund would prove nothing: it may still be in progress at the gateway). Settled meanwhile by
    // another process (its lookup found it): said as it is.
    let doubt = |why: String| -> Result<ExitCode> {
        store.refund_unknown(row.id, &why, &ProcessClock.now(), Utc::now() + quiet, now())?;
        let r = mine(store, row)?.ok_or_else(|| anyhow!("refund of charge {merchant_uid}: its row is gone"))?;
        log_refund(&r);
        Ok(match r.status {
            RefundStatus::Refunded => done(store, &r, " (recorded by another process that looked the payment up)"),
            // Its request left (it may have been held on its way, or this process stopped): the gateway may still
            // make it. Not known; a lookup that finds it records it as this refund.
            RefundStatus::Failed => {
                eprintln!(
                    "refund of {} {} of charge {merchant_uid}: outcome unknown: its request left, but another process \
                     settled it meanwhile as not made ({}); the gateway may still make it (a request held on its \
                     way). If it does, the next `billd refunds --sync` or `billd refund {merchant_uid}` records it as \
                     this refund, and a rerun of this same command then sends nothing; a rerun before that sends it \
                     again, and each carries the balance it was sent against as its checksum, so the gateway makes \
                     at most one of the two",
                    r.amount,
                    r.currency,
                    shown(r.detail.as_deref().unwrap_or("-"))
                );
                ExitCode::from(UNKNOWN)
            }
            _ => in_doubt(cfg, &r, "not known"),
        })
    };
    // Settles the refund against the payment `p` the gateway gave; true if it is made.
    let settle = |p: &PaymentRefunds| -> Result<Option<RefundRow>> {
        let seen = crate::engine::refunds::seen(p);
        store.settle_refunds(merchant_uid, p.amount, &seen, &ProcessClock.now(), now())?;
        Ok(mine(store, row)?.filter(|r| r.status == RefundStatus::Refunded))
    };
    match outcome {
        RefundOutcome::Refunded(p) => match settle(&p) {
            Ok(Some(r)) => Ok(done(store, &r, "")),
            // An answer that does not list this refund at its balance: not known; settled by lookup.
            Ok(None) => doubt("the answer does not list this refund".into()),
            Err(e) => doubt(format!("its answer could not be settled: {e:#}")),
        },
        RefundOutcome::Refused { code, message } => {
            let why = format!("refused by the gateway (code {code}): {message}");
            // Believed once the payment, looked up, does not list the refund (a refusal whose refund was made
            // anyway is found here, not recorded as made outside billd).
            let p = match rt.block_on(g.refunds(&row.imp_uid, merchant_uid)) {
                RefundsLookup::Found(p) => p,
                RefundsLookup::NotFound | RefundsLookup::Error(_) => {
                    return doubt(format!(
                        "{why}; the payment's lookup that would confirm nothing was refunded failed"
                    ));
                }
            };
            match settle(&p) {
                Ok(Some(r)) => return Ok(done(store, &r, " (the gateway answered that it refused it, but lists it)")),
                Ok(None) => {}
                Err(e) => return doubt(format!("{why}; the payment's lookup could not be settled: {e:#}")),
            }
            store.refund_refused(row.id, &why, now())?;
            // A stale balance (a refund made outside billd) is recorded now, so the next refund is right.
            if let Err(e) = settle(&p) {
                tracing::warn!(event = "refund.lookup", merchant_uid, reason = %format!("{e:#}"), "refund.lookup");
            }
            let t = store.refund_target(merchant_uid)?;
            tracing::warn!(event = "refund.failed", merchant_uid, amount = row.amount, reason = %why, "refund.failed");
            Ok(refused_code(format!(
                "refund of {} of charge {merchant_uid} {why}; nothing was refunded{}",
                row.amount,
                t.map(|t| format!(" ({})", remains(&t))).unwrap_or_default()
            )))
        }
        RefundOutcome::Transient(why) | RefundOutcome::Unknown(why) => doubt(why),
    }
}

/// A rerun of a refund made already or in doubt ([`RefundRefused::Made`]): says so, nothing sent; 0 if it was made,
/// 3 if its outcome is not known (1 while the command that began it may still be sending it).
fn made_already(cfg: &Config, r: &RefundRow, now: DateTime<Utc>) -> ExitCode {
    let again = "to refund the same amount again on purpose, give another --reason";
    match r.status {
        RefundStatus::Refunded => {
            let by = if r.source == RefundSource::External { " outside billd (the gateway lists it)" } else { "" };
            crate::say!(
                "refund of {} {} of charge {} (reason {}) was already made{by} on {} (imp_uid {}, cancellation {}); \
                 nothing was sent ({again})",
                r.amount,
                r.currency,
                r.merchant_uid,
                shown(&r.reason),
                human(r.updated_at, cfg.billing.clock.timezone),
                r.imp_uid,
                r.cancellation_id.as_deref().unwrap_or("-")
            );
            ExitCode::SUCCESS
        }
        RefundStatus::Pending if r.check_at.is_some_and(|t| t > now) => refused_code(format!(
            "the same refund of charge {} ({} {}, reason {}) is in progress; nothing was sent (rerun once it is \
             over to see its outcome; {again})",
            r.merchant_uid,
            r.amount,
            r.currency,
            shown(&r.reason)
        )),
        _ => in_doubt(cfg, r, "nothing sent"),
    }
}

/// Says that a refund is done (`how`: by whom, if not this command's answer); exit 0.
fn done(store: &impl Refunds, r: &RefundRow, how: &str) -> ExitCode {
    log_refund(r);
    let left = store.refund_target(&r.merchant_uid).ok().flatten().map(|t| remains(&t)).unwrap_or_default();
    crate::say!(
        "refunded {} {} of charge {} (imp_uid {}){how}: {left}",
        r.amount,
        r.currency,
        r.merchant_uid,
        r.imp_uid
    );
    ExitCode::SUCCESS
}

/// How many paid charges a `--sync` looks up per page.
const SYNC_PAGE: usize = 200;

fn refund_json(r: &RefundRow, tz: chrono_tz::Tz) -> Value {
    json!({
        "merchant_uid": r.merchant_uid, "imp_uid": r.imp_uid, "amount": r.amount, "currency": r.currency,
        "status": r.status.as_str(), "source": r.source.as_str(), "reason": r.reason, "detail": r.detail,
        "cancellation_id": r.cancellation_id, "checksum": r.checksum,
        "made_at": rfc3339(r.created_at, tz), "updated_at": rfc3339(r.updated_at, tz),
    })
}

/// `billd refunds [--since DATE] [--json] [--sync]`.
/// `at`: with `--sync`, the command's `--as-of` and `--simulate` (the instant refunds found are recorded at).
pub fn refunds(
    path: &Path,
    since: Option<&str>,
    json: bool,
    sync: bool,
    at: (Option<DateTime<Utc>>, bool),
) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let clock = crate::commands::simulate::command_clock(&cfg, at)?;
    let since = since.map(|s| parse_since(&cfg, s)).transpose()?;
    let store = listed_store(&cfg)?;
    let tz = cfg.billing.clock.timezone;
    // Charges that could not be looked up or settled: reported at the end, the others go on.
    let mut failed: Vec<String> = Vec::new();
    if sync {
        let g = gateway(&cfg)?;
        let rt = runtime()?;
        // Refunds in doubt first (whatever --since says), then every paid charge (since --since), a page at a time.
        let far = clock.now() + chrono::Duration::days(366 * 100);
        let in_doubt = store.unresolved_refunds(far, SYNC_PAGE)?.into_iter().map(|r| (r.merchant_uid, r.imp_uid));
        let mut look = |charges: Vec<(String, String)>| -> Result<()> {
            for (m, imp) in charges {
                let why = match rt.block_on(look_up_and_settle(&store, &g, &ProcessClock, &m, &imp, clock.now())) {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => e,
                    Err(e) => format!("{e:#}"),
                };
                tracing::warn!(event = "refund.lookup", merchant_uid = %m, reason = %why, "refunds --sync");
                failed.push(format!("charge {m}: {why}"));
            }
            Ok(())
        };
        look(in_doubt.collect())?;
        let mut after: Option<String> = None;
        loop {
            let page = store.paid_charges(since, after.as_deref(), SYNC_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.merchant_uid.clone());
            look(page.into_iter().map(|c| (c.merchant_uid, c.imp_uid)).collect())?;
        }
    }
    let rows = store.list_refunds(since)?;
    if json {
        let rows: Vec<Value> = rows.iter().map(|r| refund_json(r, tz)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<23} {:<30} {:<20} {:>12} {:<8} {:<8} REASON",
            "MADE", "MERCHANT_UID", "IMP_UID", "AMOUNT", "STATUS", "SOURCE"
        );
        for r in &rows {
            let why = match (&r.detail, r.status) {
                (Some(d), RefundStatus::Failed | RefundStatus::Unknown) => format!(" ({})", shown(d)),
                _ => String::new(),
            };
            println!(
                "{:<23} {:<30} {:<20} {:>12} {:<8} {:<8} {}{why}",
                human(r.created_at, tz),
                r.merchant_uid,
                r.imp_uid,
                format!("{} {}", r.amount, r.currency),
                r.status,
                r.source,
                shown(&r.reason)
            );
        }
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("{f}");
        }
        eprintln!(
            "{} charge(s) could not be looked up or settled (the others were); rerun `billd refunds --sync` to look \
             them up again",
            failed.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a date (midnight in the billing time zone) or an RFC 3339 instant.
fn parse_since(cfg: &Config, s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = config::parse_date(s).map_err(|e| anyhow!("--since: {e}"))?;
    Ok(cfg.billing.clock.due_at_midnight(d))
}
