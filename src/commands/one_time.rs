//! The exactly-once protocol of an operator's one-time charge, shared by `charge-once` (a card typed in) and
//! `charge-key` (a stored billing key): the checks, the intent committed first, the send, and an unknown outcome
//! settled by lookup only after its quiet period (never sent again blindly).

use crate::clock::BillingClock;
use crate::commands::present::human;
use crate::config::Config;
use crate::engine::refunds::{change_taken_back, look_up_and_settle};
use crate::gateway::{ChargeOutcome, ChargeRequest, Gateway, Lookup};
use crate::realtime::{ProcessClock, RealClock};
use crate::store::{
    ChargeStatus, Failure, MerchantUidHolder, OneTime, OneTimeCharge, OneTimeKind, Store, ceil_second, from_ts,
};
use anyhow::{Result, bail};
use chrono::Utc;
use std::future::Future;
use std::pin::Pin;

/// The currency of every one-time charge.
pub const CURRENCY: &str = "KRW";

/// What the operator asked for. A rerun of a merchant_uid must ask for the same (kind, billing key, subscription,
/// amount, name): anything else is refused before anything is sent.
pub struct Ask<'a> {
    /// The command, for messages (`charge-once`, `charge-key`).
    pub command: &'static str,
    pub kind: OneTimeKind,
    pub merchant_uid: &'a str,
    pub amount: i64,
    pub name: &'a str,
    /// The billing key charged (kind `Key`).
    pub customer_uid: Option<&'a str>,
    /// The subscription a charge of a billing key is tied to.
    pub subscription_id: Option<&'a str>,
    /// When it is recorded as made (`None`: now, on `clock`): a plan change's charge is made at the change's
    /// instant, on the billing clock (`--as-of`), as a pass's charges are. Quiet periods stay real.
    pub made_at: Option<chrono::DateTime<Utc>>,
    /// The billing instant the command acts at (its `--as-of`, or the wall clock): what it records and the check
    /// times of a pass. Quiet periods are measured on the real clocks whatever it says.
    pub clock: BillingClock,
}

/// The moment the request may leave: awaited by the gateway right before it sends (see [`Gateway::charge`]).
pub type Go = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What a command adds to the protocol: its last checks, and how its request leaves.
pub trait Sender {
    /// The last checks before the intent is committed (nothing is sent if they fail; a refusal says so). Returns
    /// the card to record, masked.
    fn prepare(&mut self) -> Result<String>;
    /// Sends the charge; `go` is awaited right before it leaves (`None`: it said no, nothing was sent).
    fn send(&self, req: &ChargeRequest, go: Go) -> impl Future<Output = Option<ChargeOutcome>>;
}

/// How the protocol ended (each has been said to the operator).
pub enum Done {
    /// Paid by this run (`None`), or already before (`Some`: the card recorded with it, masked): exit 0.
    Paid { imp_uid: String, before: Option<String> },
    /// Not paid (declined, refused, held as a mismatch), or its outcome unknown: exit 1.
    NotPaid,
}

/// The arguments every one-time charge checks first: a merchant_uid the gateway can carry, of printable ASCII
/// ([`crate::ids::merchant_uid_refusal`]) and outside billd's own namespace (in any case), a name of 1-40 characters
/// the customer can read (something visible, no control character, escape, line break or direction override: it
/// is the order name on their receipt), an amount from 1 to `limits.max_amount` (above it only with `above_max`,
/// the operator's explicit word, and never above [`crate::config::MAX_AMOUNT`]).
pub fn check_args(cfg: &Config, merchant_uid: &str, amount: i64, name: &str, above_max: bool) -> Result<()> {
    if let Some(why) = crate::ids::merchant_uid_refusal(merchant_uid) {
        bail!("--merchant-uid {} {why}; nothing was sent", crate::text::quote(merchant_uid));
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
    if amount <= 0 || (amount > cfg.limits.max_amount && !above_max) {
        let hint = if amount > 0 { "; if it is meant, charge-key takes --above-max-amount" } else { "" };
        bail!("--amount {amount} must be between 1 and limits.max_amount ({}){hint}", cfg.limits.max_amount);
    }
    if amount > crate::config::MAX_AMOUNT {
        bail!(
            "--amount {amount} is above {} (10^12), the most billd ever sends, even with --above-max-amount; nothing \
             was sent",
            crate::config::MAX_AMOUNT
        );
    }
    if let Some(why) = crate::text::order_name_refusal(name) {
        bail!("--name {why}; nothing was sent");
    }
    crate::commands::check_free_text(cfg, "--name", name)?;
    Ok(())
}

/// What a lookup by merchant_uid says of a one-time charge.
enum Found {
    /// Paid, as asked (imp_uid), and whether the gateway shows it refunded since (its refunds to be recorded).
    Paid(String, bool),
    /// A paid payment for another amount, currency or card: never taken as this charge.
    Mismatch(String),
    /// A plan change's charge paid and refunded in full before billd recorded it (imp_uid, why): not collected.
    TakenBack(String, String),
    /// A failed payment that is not one already recorded for this charge (imp_uid, reason).
    Declined(String, String),
    /// No record at the gateway.
    Nothing,
}

/// Looks a one-time charge of `kind` up by merchant_uid (paid or refunded since, then failed). `customer_uid`: the
/// billing key it charged (`None`: a key-in charge). `known_failed`: the imp_uid of a decline already recorded for
/// it (a lookup finding that one has found nothing new). Err: the lookup failed.
async fn look_up(
    g: &impl Gateway,
    (merchant_uid, kind): (&str, OneTimeKind),
    amount: i64,
    customer_uid: Option<&str>,
    known_failed: Option<&str>,
) -> Result<Found, String> {
    match g.find_paid(merchant_uid).await {
        Lookup::Found(p) if let Some(why) = change_taken_back(kind, &p) => Ok(Found::TakenBack(p.imp_uid, why)),
        Lookup::Found(p) => Ok(match p.differs_from(amount, CURRENCY, customer_uid) {
            None => Found::Paid(p.imp_uid.clone(), p.refunded()),
            Some(why) => Found::Mismatch(why),
        }),
        Lookup::Error(e) => Err(format!("lookup failed: {e}")),
        Lookup::NotFound => match g.find(merchant_uid, "failed").await {
            Lookup::Found(p) if Some(p.imp_uid.as_str()) == known_failed => Ok(Found::Nothing),
            Lookup::Found(p) if p.differs_from(amount, CURRENCY, customer_uid).is_some() => Ok(Found::Nothing),
            Lookup::Found(p) => Ok(Found::Declined(p.imp_uid, p.fail_reason.unwrap_or_else(|| "declined".into()))),
            Lookup::Error(e) => Err(format!("lookup failed: {e}")),
            Lookup::NotFound => Ok(Found::Nothing),
        },
    }
}

/// The instant, in the billing time zone, for a message.
fn local(cfg: &Config, t: i64) -> String {
    human(from_ts(t), cfg.billing.clock.timezone)
}

/// What a rerun asks that differs from the first try of the merchant_uid (`None`: the same).
fn differs(ask: &Ask<'_>, prev: &crate::store::OneTimeState) -> Option<String> {
    let mut why = Vec::new();
    if prev.kind != ask.kind {
        why.push(match prev.kind {
            OneTimeKind::Card => "a key-in charge of a card (charge-once)".to_string(),
            OneTimeKind::Key => "a charge of a billing key (charge-key)".to_string(),
            OneTimeKind::Proration => "the charge of a plan change (subscriptions change)".to_string(),
        });
    }
    if prev.amount != ask.amount || prev.currency != CURRENCY {
        why.push(format!("amount {} {}", prev.amount, prev.currency));
    }
    // A key-in row of an older billd may carry the key it sent with the charge: compared for charge-key only.
    if ask.kind != OneTimeKind::Card && prev.customer_uid.as_deref() != ask.customer_uid {
        why.push(format!("customer_uid {}", prev.customer_uid.as_deref().unwrap_or("-")));
    }
    if prev.subscription_id.as_deref() != ask.subscription_id {
        why.push(format!("subscription {}", prev.subscription_id.as_deref().unwrap_or("(none)")));
    }
    if ask.kind != OneTimeKind::Card && prev.name != ask.name {
        why.push(format!("name {:?}", prev.name));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Charges `ask` at most once: refuses a merchant_uid held by anything else (without case); on a rerun, asks the
/// gateway before anything is sent again and never sends before the quiet period of an earlier request is over;
/// commits the intent, lets `sender` send, and records the outcome (unknown: settled later by lookup only).
pub fn charge<S: Store, G: Gateway>(
    cfg: &Config,
    store: &S,
    g: &G,
    rt: &tokio::runtime::Runtime,
    ask: &Ask<'_>,
    sender: &mut impl Sender,
) -> Result<Done> {
    let (merchant_uid, amount, cmd) = (ask.merchant_uid, ask.amount, ask.command);
    match store.merchant_uid_holder(merchant_uid)? {
        Some(MerchantUidHolder::OneTime { merchant_uid: m, .. }) if m == merchant_uid => {}
        Some(h) => bail!("--merchant-uid {merchant_uid} is taken (compared without case) by {h}; pick another"),
        None => {}
    }
    // Check times and the gate before a rerun are real time (the wall clock, as every pass's look at a one-time
    // charge is also kept behind its real quiet period): never the billing clock, which `--as-of` moves (an
    // outsider's rerun at a later --as-of skipped the quiet period and charged twice). What is recorded (made,
    // settled) is on `ask.clock`.
    let now = || Utc::now().timestamp();
    // A "not before" instant (a check after a quiet period), rounded up so that rounding never makes it earlier.
    let after = |secs: i64| ceil_second(Utc::now()).timestamp() + secs;
    let timeout = g.timeout();
    // The quiet period after a request whose outcome is unknown: no look at it (and no resend) before it is over.
    let quiet = ((2 * timeout.as_millis() as i64 + 999) / 1000).max(1);
    let prev = store.one_time(merchant_uid)?;
    let prev_tries = prev.as_ref().map(|p| p.tries);
    // The imp_uid a row that is not paid keeps is an earlier try's decline: a lookup that finds it has found nothing
    // of this try (a review found a stale decline settling a try in flight, and a rerun then charged twice).
    // Kept up to date: a decline the lookup below finds and records is known from then on too (an outsider found try
    // 1's decline, found again right after try 2's lost answer, taken for try 2's outcome: the next rerun charged
    // twice).
    let mut known_failed = prev.as_ref().and_then(|p| p.imp_uid.clone());
    // The billing key its payment must carry: the key charged (charge-key), or, for a key-in charge, the key only
    // an older billd (before issue 21) sent with it.
    let charged_with = match &prev {
        Some(p) => p.customer_uid.clone(),
        None => ask.customer_uid.map(str::to_owned),
    };
    let charged_with = charged_with.as_deref();
    let legacy_key_in = prev.as_ref().is_some_and(|p| p.kind == OneTimeKind::Card && p.customer_uid.is_some());
    if let Some(prev) = prev {
        if let Some(why) = differs(ask, &prev) {
            bail!(
                "merchant_uid {merchant_uid} was first tried as {why}; a rerun must ask for the same (or use a new \
                 merchant_uid); nothing sent"
            );
        }
        if prev.status == ChargeStatus::Paid {
            // Paid is what was asked: a rerun of a paid charge succeeds (exit 0) and sends nothing.
            let imp_uid = prev.imp_uid.unwrap_or_default();
            crate::say!("merchant_uid {merchant_uid} is already paid (imp_uid {imp_uid}); nothing sent");
            return Ok(Done::Paid { imp_uid, before: Some(prev.card_masked) });
        }
        if prev.failure == Some(Failure::Mismatch) {
            bail!(
                "merchant_uid {merchant_uid} is held: {} (see `billd charges --failed`)",
                prev.fail_reason.unwrap_or_default()
            );
        }
        // Whatever billd recorded, the gateway is asked before anything is sent again.
        match rt.block_on(look_up(g, (merchant_uid, ask.kind), amount, charged_with, known_failed.as_deref())) {
            Err(e) => bail!("merchant_uid {merchant_uid}: {e}; nothing sent (rerun later)"),
            Ok(Found::Paid(imp, refunded)) => {
                let now = ask.clock.now();
                if !store.finish_one_time(prev.id, prev.tries, ChargeStatus::Paid, None, Some(&imp), None, now)? {
                    bail!(
                        "merchant_uid {merchant_uid} is paid at the gateway (imp_uid {imp}), but another billd \
                         process changed its record meanwhile; nothing sent (rerun to see what is recorded)"
                    );
                }
                crate::say!("merchant_uid {merchant_uid} was already paid (imp_uid {imp}); nothing sent");
                if refunded {
                    record_refunds(store, g, rt, merchant_uid, &imp, ask.clock.now());
                }
                return Ok(Done::Paid { imp_uid: imp, before: Some(prev.card_masked) });
            }
            Ok(Found::Mismatch(why)) => {
                let (status, failure) = (ChargeStatus::Failed, Some(Failure::Mismatch));
                store.finish_one_time(prev.id, prev.tries, status, failure, None, Some(&why), ask.clock.now())?;
                bail!("merchant_uid {merchant_uid}: {why}; not taken as this charge, nothing sent");
            }
            Ok(Found::TakenBack(imp, why)) => {
                let (status, failure) = (ChargeStatus::Failed, Some(Failure::Abandoned));
                store.finish_one_time(prev.id, prev.tries, status, failure, Some(&imp), Some(&why), ask.clock.now())?;
                eprintln!("not paid: {merchant_uid}: {why}; nothing sent");
                return Ok(Done::NotPaid);
            }
            Ok(Found::Declined(imp, reason)) => {
                let (status, failure) = (ChargeStatus::Failed, Some(Failure::Declined));
                let now = ask.clock.now();
                store.finish_one_time(prev.id, prev.tries, status, failure, Some(&imp), Some(&reason), now)?;
                known_failed = Some(imp);
            }
            Ok(Found::Nothing) => {
                let unresolved = prev.status.unresolved();
                // A row from before schema 6 has no check time: the longest a command can take after its last
                // change.
                let check_at = prev.check_at.map(|t| t.timestamp());
                let check_at = check_at.unwrap_or(prev.updated_at.timestamp() + 5 * timeout.as_secs() as i64 + 60);
                // Not before its check time, nor before the quiet period of its last request has passed in real
                // time on every clock (a wall clock stepped forward since does not shorten it).
                let check_at = match &prev.doubt {
                    Some(d) => d.next_look(Some(from_ts(check_at)), &ProcessClock.now()).timestamp(),
                    None => check_at,
                };
                if let Some(at) = Some(check_at).filter(|at| unresolved && *at > now()) {
                    bail!(
                        "merchant_uid {merchant_uid}: outcome unknown: billd will settle it; do not retry before {} \
                         (its first request may still be in progress at the gateway)",
                        local(cfg, at)
                    );
                }
            }
        }
    }
    if legacy_key_in && let Some(c) = charged_with {
        bail!(
            "merchant_uid {merchant_uid} was tried by an earlier billd with billing key {c} sent with the charge, and \
             no payment of it is found; it is not sent again this way: use a new merchant_uid"
        );
    }
    let card_masked = sender.prepare()?;
    crate::failpoint::pause("charge_once_after_check");
    let charge = OneTimeCharge {
        merchant_uid: merchant_uid.to_owned(),
        kind: ask.kind,
        customer_uid: ask.customer_uid.map(str::to_owned),
        subscription_id: ask.subscription_id.map(str::to_owned),
        name: ask.name.to_owned(),
        amount,
        currency: CURRENCY.into(),
        card_masked,
    };
    // The intent is committed before the request leaves. No pass looks at it before the command is surely over
    // (a token, a retried token, the charge and two lookups, each within the timeout) and a quiet period after.
    let worst = 5 * timeout.as_secs() as i64 + quiet + 60;
    let sent = ProcessClock.now();
    let began = store.begin_one_time(
        &charge,
        &sent,
        ask.made_at.unwrap_or_else(|| ask.clock.now()),
        timeout.as_millis() as u64,
        from_ts(after(worst)),
        prev_tries,
    )?;
    let Some((id, tries)) = began else {
        bail!(
            "merchant_uid {merchant_uid}: another `billd {cmd}` of it is running or has just run; nothing sent \
             (rerun to see its outcome)"
        );
    };
    crate::failpoint::failpoint("one_time_after_intent");
    crate::failpoint::pause("one_time_after_intent");
    let req = ChargeRequest {
        customer_uid: ask.customer_uid.unwrap_or_default().to_owned(),
        merchant_uid: merchant_uid.to_owned(),
        amount,
        currency: CURRENCY.into(),
        name: ask.name.to_owned(),
    };
    // The moment the request leaves (after its token and its turn): only if no pass took the charge over meanwhile.
    // On a handle of its own, so that the go may be awaited on any thread.
    let go_store = crate::app::open_store(cfg)?;
    let go: Go = Box::pin(async move { go_store.one_time_go(id, tries, &ProcessClock.now()).unwrap_or(false) });
    let Some(outcome) = rt.block_on(sender.send(&req, go)) else {
        if ask.kind == OneTimeKind::Proration {
            // The go said no: this request never left, and the change is no longer pending or its subscription no
            // longer bills (a cancel or a pause withdrew it): nothing was charged; recorded so at once.
            let why =
                "not sent: its plan change was withdrawn (the subscription stopped billing) before the request left";
            store.finish_one_time(
                id,
                tries,
                ChargeStatus::Failed,
                Some(Failure::Abandoned),
                None,
                Some(why),
                ask.clock.now(),
            )?;
            bail!(
                "merchant_uid {merchant_uid}: not sent: the subscription stopped billing (a cancel or a pause) or its \
                 plan change was withdrawn before the request left; nothing was charged"
            );
        }
        bail!(
            "merchant_uid {merchant_uid}: not sent: a pass or another `billd {cmd}` took it over while this one \
             waited for its access token (rerun to see its outcome; it looks the payment up first)"
        );
    };
    // A lookup right after the answer: Some(outcome) if it settles the charge; None if it found nothing; Err if
    // it failed.
    let settle =
        || match rt.block_on(look_up(g, (merchant_uid, ask.kind), amount, charged_with, known_failed.as_deref())) {
            Ok(Found::Paid(imp, refunded)) => Ok(Some(Ok((imp, refunded)))),
            Ok(Found::Mismatch(m)) => Ok(Some(Err(("mismatch", None, m)))),
            Ok(Found::TakenBack(imp, why)) => Ok(Some(Err(("abandoned", Some(imp), why)))),
            Ok(Found::Declined(imp, reason)) => Ok(Some(Err(("declined", Some(imp), reason)))),
            Ok(Found::Nothing) => Ok(None),
            Err(e) => Err(e),
        };
    let unknown = |why: &str| unknown(cfg, store, (id, tries), ask, why, after(quiet));
    let settled = match outcome {
        ChargeOutcome::Paid { imp_uid } => Ok((imp_uid, false)),
        ChargeOutcome::Declined { imp_uid, reason } => Err(("declined", imp_uid, reason)),
        ChargeOutcome::Rejected { code, message } => match settle() {
            Ok(Some(r)) => r,
            // Refused and no record of it: nothing was charged.
            Ok(None) => Err(("rejected", None, format!("code {code}: {message}"))),
            Err(e) => return unknown(&format!("rejected (code {code}: {message}); {e}")),
        },
        // The request may have been made: unknown until a lookup after the quiet period settles it (a lookup now
        // that finds nothing proves nothing, as the gateway may still be making it).
        ChargeOutcome::Transient(r) | ChargeOutcome::Unknown(r) => match settle() {
            Ok(Some(r)) => r,
            Ok(None) => return unknown(&r),
            Err(e) => return unknown(&format!("{r}; {e}")),
        },
    };
    let what = match ask.customer_uid {
        Some(key) if ask.kind != OneTimeKind::Card => format!("billing key {key} (card {})", charge.card_masked),
        _ => format!("card {}", charge.card_masked),
    };
    match settled {
        Ok((imp, refunded)) => {
            store.finish_one_time(id, tries, ChargeStatus::Paid, None, Some(&imp), None, ask.clock.now())?;
            crate::say!("paid: {merchant_uid} {amount} {CURRENCY} with {what} (imp_uid {imp})");
            if refunded {
                record_refunds(store, g, rt, merchant_uid, &imp, ask.clock.now());
            }
            Ok(Done::Paid { imp_uid: imp, before: None })
        }
        Err((failure, imp, reason)) => {
            let (failed, why) = (Failure::parse(failure), Some(reason.as_str()));
            store.finish_one_time(id, tries, ChargeStatus::Failed, failed, imp.as_deref(), why, ask.clock.now())?;
            let key = ask.customer_uid.unwrap_or_default();
            if failure == "mismatch" {
                tracing::error!(event = "charge.mismatch", merchant_uid, amount, customer_uid = key, reason = %reason,
                    "charge.mismatch: not taken as paid; held for an operator");
            } else {
                tracing::warn!(event = "charge.failed", merchant_uid, amount, customer_uid = key, failure,
                    reason = %reason, "charge.failed");
            }
            eprintln!("not paid ({failure}): {merchant_uid} with {what}: {reason}");
            Ok(Done::NotPaid)
        }
    }
}

/// A paid one-time charge the gateway shows refunded since (in its console): its refunds recorded as `billd refunds
/// --sync` records them, and said; a failure is said (nothing else depends on it).
fn record_refunds<S: Store, G: Gateway>(
    store: &S,
    g: &G,
    rt: &tokio::runtime::Runtime,
    merchant_uid: &str,
    imp_uid: &str,
    now: chrono::DateTime<Utc>,
) {
    let looked = rt.block_on(look_up_and_settle(store, g, &ProcessClock, merchant_uid, imp_uid, now));
    match looked {
        Ok(Ok(_)) => crate::say!("the gateway shows it refunded since; its refunds are recorded (`billd charges`)"),
        Ok(Err(e)) => {
            eprintln!("its refunds at the gateway could not be recorded now ({e}); `billd refunds --sync` does")
        }
        Err(e) => {
            eprintln!("its refunds at the gateway could not be recorded now ({e:#}); `billd refunds --sync` does")
        }
    }
}

/// A one-time charge whose outcome stays unknown: recorded so (no look at it before `check_at`); says what to do.
fn unknown(
    cfg: &Config,
    store: &impl OneTime,
    (id, tries): (i64, i64),
    ask: &Ask<'_>,
    why: &str,
    check_at: i64,
) -> Result<Done> {
    let merchant_uid = ask.merchant_uid;
    store.one_time_unknown(id, tries, why, &ProcessClock.now(), from_ts(check_at), ask.clock.now())?;
    tracing::warn!(event = "charge.unknown", merchant_uid, one_time = true, customer_uid = ask.customer_uid.unwrap_or_default(),
        reason = %why, check_at = %local(cfg, check_at), "charge.unknown");
    eprintln!(
        "outcome unknown: {merchant_uid} ({why}): billd will settle it; do not retry before {} (`billd charges` \
         shows it once settled; a rerun of this command before then sends nothing)",
        local(cfg, check_at)
    );
    Ok(Done::NotPaid)
}
