//! The billing pass: sync the config, reconcile unresolved attempts, open due periods, charge, record outcomes.

pub mod metrics;

use crate::billing::dunning::{Decision, Outcome};
use crate::billing::model::merchant_uid;
use crate::billing::sync;
use crate::config::Config;
use crate::gateway::{ChargeOutcome, ChargeRequest, Gateway, Lookup};
use crate::store::{
    Attempt, AttemptResult, ChargeStatus, ClaimStep, DueSubscription, Failure, NewPeriod, Recorded, StatusChange, Store,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use metrics::Metrics;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tracing::{error, info, warn};

/// A pass refused to start: the gateway refused billd's credentials (nothing was claimed or sent).
#[derive(Debug)]
pub struct Unauthorized {
    pub imp_key: String,
    pub reason: String,
}

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the gateway refused gateway.imp_key {:?} and its imp_secret ({}); nothing was sent (check both)",
            self.imp_key, self.reason
        )
    }
}

impl std::error::Error for Unauthorized {}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassReport {
    pub reconciled: usize,
    pub opened: usize,
    pub sent: usize,
    pub paid: usize,
    pub declined: usize,
    pub rejected: usize,
    pub unresolved: usize,
    /// Paid payments found under an attempt's merchant_uid that are not what billd asked for (held).
    pub mismatched: usize,
    pub next_wake: Option<DateTime<Utc>>,
    /// When the pass committed its first intent, and its last outcome (for `charge_ms` in logs and benchmarks).
    pub first_claim: Option<std::time::Instant>,
    pub last_record: Option<std::time::Instant>,
}

impl PassReport {
    /// From the first intent committed to the last outcome recorded (`None` when nothing was sent).
    pub fn charge_time(&self) -> Option<std::time::Duration> {
        Some(self.last_record?.saturating_duration_since(self.first_claim?))
    }

    /// Logs the pass's `pass.done` line (`billd tick` always; `billd run` for passes that did something).
    pub fn log_done(&self, as_of: DateTime<Utc>, took: std::time::Duration) {
        info!(
            event = "pass.done",
            as_of = %as_of.to_rfc3339(),
            pass_ms = ms(took),
            charge_ms = self.charge_time().map(ms).unwrap_or(0.0),
            reconciled = self.reconciled,
            opened = self.opened,
            sent = self.sent,
            paid = self.paid,
            declined = self.declined,
            rejected = self.rejected,
            unresolved = self.unresolved,
            mismatched = self.mismatched,
            next_wake = %self.next_wake.map(|t| t.to_rfc3339()).unwrap_or_else(|| "none".into()),
            "pass.done"
        );
    }
}

/// A duration in milliseconds, rounded to two decimals for a log field (`pass_ms=6.84`).
fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Orchestrates the store and the gateway under the config's rules.
pub struct Engine<S: Store, G: Gateway> {
    store: Arc<Mutex<S>>,
    gateway: Arc<G>,
    cfg: Arc<Config>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl<S: Store, G: Gateway> Clone for Engine<S, G> {
    fn clone(&self) -> Self {
        Engine {
            store: self.store.clone(),
            gateway: self.gateway.clone(),
            cfg: self.cfg.clone(),
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The timeout assumed for a request whose attempt recorded none (a row older than schema 6, whose process may
/// have waited longer than this one does): generous, as the quiet period is twice it.
const LEGACY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// How many refusals of a resend are taken as "the first request may still be in progress" before a refusal is
/// final (see [`Engine::send_as`]): the next one is. Only refused resends count, not other unresolved tries.
const RESEND_REFUSALS_TOLERATED: u32 = 2;

/// A pass's clock: the instant the pass runs at (`as_of`: now, or `tick --as-of`), and the real time since it began,
/// so that what happens late in a long pass is timed as late.
#[derive(Clone, Copy, Debug)]
struct At {
    as_of: DateTime<Utc>,
    started: std::time::Instant,
}

impl At {
    fn start(as_of: DateTime<Utc>) -> At {
        At { as_of, started: std::time::Instant::now() }
    }

    /// The pass's instant plus the real time since it began.
    fn now(self) -> DateTime<Utc> {
        self.as_of + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default()
    }
}

/// How many rows one claim, open or reconcile step handles at once.
const PAGE: usize = 1024;

impl<S: Store, G: Gateway> Engine<S, G> {
    pub fn new(store: S, gateway: G, cfg: Config) -> Self {
        Engine {
            store: Arc::new(Mutex::new(store)),
            gateway: Arc::new(gateway),
            cfg: Arc::new(cfg),
            stop: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Asks a running pass to take no new work: in-flight charges finish and are recorded; claimed attempts not
    /// yet sent are released (their intent rows removed, as no request left).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replaces the config (after a reload); the next pass syncs it.
    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = Arc::new(cfg);
    }

    /// Runs a store operation on the blocking pool.
    pub async fn db<R: Send + 'static>(&self, f: impl FnOnce(&S) -> Result<R> + Send + 'static) -> Result<R> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let guard = store.lock().unwrap_or_else(|p| p.into_inner());
            // Every database error names the file (SQLite's own messages, like "disk I/O error", do not).
            let path = guard.location();
            f(&guard)
                .map_err(|e| if format!("{e:#}").contains(&path) { e } else { e.context(format!("database {path}")) })
        })
        .await
        .context("database task panicked")?
    }

    /// Applies the config to the database. Refuses (and changes nothing) when it would cancel more than 10% of
    /// the billed subscriptions, unless `force`.
    pub async fn sync(&self, now: DateTime<Utc>, force: bool) -> Result<sync::SyncPlan> {
        let cfg = self.cfg.clone();
        self.db(move |s| {
            // Planned from the rows as they are inside the write transaction that applies it.
            let plan = s.sync_with(&cfg.billing.clock, now, |subs, active| {
                let plan = sync::plan(&cfg.wanted_subscriptions(), &cfg.file, subs, cfg.billing.clock.local_date(now));
                for w in &plan.warnings {
                    warn!(event = "config.sync", "{w}");
                }
                if !plan.is_empty() && !force && !sync::cancel_allowed(plan.cancels(), active) {
                    anyhow::bail!(
                        "{}: applying it would cancel {} of {} billed subscriptions; refusing (run `billd sync \
                         --force` if that is intended)",
                        cfg.file.display(),
                        plan.cancels(),
                        active
                    );
                }
                Ok(plan)
            })?;
            for c in &plan.changes {
                match c {
                    sync::Change::Insert(sub) => info!(event = "subscription.created", subscription = %sub.id, plan = %sub.plan_id, start = %sub.start_date, "subscription.created"),
                    sync::Change::Update { after, what, .. } => info!(event = "subscription.updated", subscription = %after.id, changes = %what.join("; "), "subscription.updated"),
                    sync::Change::Cancel { id, reason } => info!(event = "subscription.canceled", subscription = %id, reason = %reason, "subscription.canceled"),
                }
            }
            Ok(plan)
        })
        .await
    }

    /// One full pass at the instant `now` (sync first, then [`Engine::charge_due`]).
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport> {
        if let Err(e) = self.sync(now, false).await {
            error!(event = "config.sync", "config not applied: {e:#}");
        }
        self.charge_due(now).await
    }

    /// Reconciles unresolved attempts only (at startup, before telling systemd we are ready).
    pub async fn reconcile_only(&self, now: DateTime<Utc>) -> Result<usize> {
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let writer = tokio::spawn(writer(self.clone(), rx, now));
        let sem = Arc::new(Semaphore::new(self.cfg.gateway.concurrency));
        let result = match self.check_credentials().await {
            Ok(()) => self.reconcile_stale(At::start(now), &tx, &sem).await,
            Err(e) => Err(e),
        };
        drop(tx);
        writer.await.context("the outcome writer panicked")??;
        result
    }

    async fn reconcile_stale(&self, at: At, tx: &mpsc::Sender<Msg>, sem: &Arc<Semaphore>) -> Result<usize> {
        let now = at.as_of;
        // A page at a time, so a large backlog (say, after a gateway outage) is never held at once.
        let mut n = 0;
        let mut after: Option<(String, u64)> = None;
        'pages: loop {
            let key = after.clone();
            let page =
                self.db(move |s| s.unresolved_after(now, key.as_ref().map(|(s, p)| (s.as_str(), *p)), PAGE)).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.subscription_id.clone(), last.period));
            n += page.len();
            for a in page {
                if self.stopping() {
                    break 'pages;
                }
                let permit = sem.clone().acquire_owned().await?;
                let (me, tx) = (self.clone(), tx.clone());
                tokio::spawn(async move {
                    let rec = me.reconcile(a, at).await;
                    let _ = tx.send(Msg::Record(Box::new(rec))).await;
                    drop(permit);
                });
            }
        }
        // Wait until every reconciliation is recorded before sending anything new.
        let _all = sem.acquire_many(self.cfg.gateway.concurrency as u32).await?;
        drop(_all);
        self.flush(tx).await?;
        Ok(n + self.reconcile_one_time(now).await?)
    }

    /// Settles one-time charges (`billd charge-once`) left pending or unknown, by lookup only: a one-time charge is
    /// never resent (billd does not keep the card). Only once its check time has come: the quiet period after its
    /// last request (twice the timeout it was sent with), or, for one still pending, after the longest a
    /// `charge-once` can take, so one still waiting for an answer is left alone. Paid at the gateway (as asked):
    /// recorded so; paid with another amount, currency or card: held as a mismatch; declined: recorded so; no
    /// record there: closed as abandoned (rerunning the command looks it up, then sends it). A failed lookup leaves
    /// it for the next pass.
    async fn reconcile_one_time(&self, now: DateTime<Utc>) -> Result<usize> {
        // Rows from before schema 6 have no check time: the old rule (five timeouts and a minute after the change).
        let fallback = chrono::Duration::seconds(5 * self.gateway.timeout().as_secs() as i64 + 60);
        let page = self.db(move |s| s.unresolved_one_time(now, fallback, PAGE)).await?;
        let mut settled = 0;
        for c in page {
            if self.stopping() {
                break;
            }
            let merchant_uid = c.merchant_uid.clone();
            let failed_lookup = |e: String| {
                warn!(event = "charge.unknown", merchant_uid = %c.merchant_uid, one_time = true, reason = %e,
                    "charge.unknown: the one-time charge's lookup failed; looking again in the next pass");
            };
            let (status, failure, imp_uid, reason) = match self.gateway.find(&merchant_uid, "paid").await {
                Lookup::Found(p) => match p.differs_from(c.amount, &c.currency, c.customer_uid.as_deref()) {
                    None => (ChargeStatus::Paid, None, Some(p.imp_uid), None),
                    Some(why) => (ChargeStatus::Failed, Some(Failure::Mismatch), None, Some(why)),
                },
                Lookup::Error(e) => {
                    failed_lookup(e);
                    continue;
                }
                Lookup::NotFound => match self.gateway.find(&merchant_uid, "failed").await {
                    Lookup::Found(p) => (
                        ChargeStatus::Failed,
                        Some(Failure::Declined),
                        Some(p.imp_uid),
                        Some(p.fail_reason.unwrap_or_else(|| "declined (no reason given)".into())),
                    ),
                    Lookup::Error(e) => {
                        failed_lookup(e);
                        continue;
                    }
                    Lookup::NotFound => (
                        ChargeStatus::Failed,
                        Some(Failure::Abandoned),
                        None,
                        Some(
                            "no record at the gateway after the quiet period: nothing was charged (rerun \
                             charge-once to send it; it looks the payment up first)"
                                .into(),
                        ),
                    ),
                },
            };
            crate::failpoint::pause("one_time_after_lookup");
            let (imp, why) = (imp_uid.clone(), reason.clone());
            let (id, tries) = (c.id, c.tries);
            // Recorded only if no rerun of charge-once began another send of it while the lookups ran.
            let done = self
                .db(move |s| s.finish_one_time(id, tries, status, failure, imp.as_deref(), why.as_deref(), now))
                .await?;
            if !done {
                continue;
            }
            settled += 1;
            match (status, failure) {
                (ChargeStatus::Paid, _) => info!(event = "charge.paid", merchant_uid = %merchant_uid, one_time = true,
                    imp_uid = %imp_uid.unwrap_or_default(), "charge.paid"),
                (_, Some(Failure::Abandoned)) => info!(event = "charge.abandoned", merchant_uid = %merchant_uid,
                    one_time = true, reason = %reason.unwrap_or_default(), "charge.abandoned"),
                (_, Some(Failure::Mismatch)) => error!(event = "charge.mismatch", merchant_uid = %merchant_uid,
                    one_time = true, reason = %reason.unwrap_or_default(),
                    "charge.mismatch: not taken as paid; held for an operator"),
                _ => warn!(event = "charge.failed", merchant_uid = %merchant_uid, one_time = true,
                    failure = "declined", reason = %reason.unwrap_or_default(), "charge.failed"),
            }
        }
        Ok(settled)
    }

    /// Reconciles unresolved attempts, then charges everything due at or before `now`, oldest period first.
    pub async fn charge_due(&self, now: DateTime<Utc>) -> Result<PassReport> {
        let mut report = PassReport::default();
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let writer = tokio::spawn(writer(self.clone(), rx, now));
        let sem = Arc::new(Semaphore::new(self.cfg.gateway.concurrency));
        let result = self.drive(At::start(now), &tx, &sem, &mut report).await;
        drop(tx);
        let tally = writer.await.context("the outcome writer panicked")??;
        result?;
        report.paid = tally.paid;
        report.declined = tally.declined;
        report.rejected = tally.rejected;
        report.unresolved = tally.unresolved;
        report.mismatched = tally.mismatched;
        report.last_record = tally.last_commit;
        report.next_wake = self.db(|s| s.next_wake()).await?;
        if self.log_over_amount_limit(now).await? > 0 {
            // Held-back periods stay due: do not wake for them again at once.
            report.next_wake = report.next_wake.map(|t| t.max(now + chrono::Duration::minutes(1)));
        }
        self.metrics.last_success.store(now.timestamp(), Ordering::Relaxed);
        self.metrics.beat();
        Ok(report)
    }

    async fn drive(&self, at: At, tx: &mpsc::Sender<Msg>, sem: &Arc<Semaphore>, report: &mut PassReport) -> Result<()> {
        let now = at.as_of;
        self.check_credentials().await?;
        // Every charge request of this pass counts against limits.max_charges_per_pass, resends included.
        let sent_before = self.metrics.charges_sent.load(Ordering::Relaxed);
        // 1. Reconcile what earlier passes (or a crashed process) left unresolved.
        report.reconciled = self.reconcile_stale(at, tx, sem).await?;

        // 2. Open due periods and send their attempts, until nothing more falls due at `now`.
        loop {
            if self.stopping() {
                return Ok(());
            }
            let sent = self.metrics.charges_sent.load(Ordering::Relaxed).saturating_sub(sent_before);
            self.check_charges_per_pass(now, sent as usize).await?;
            // A round opens at most one period per subscription due at its start (a later period of the same
            // subscription waits for the next round, after the outcome of this one).
            let max_amount = self.cfg.limits.max_amount;
            let to_open = self.db(move |s| s.subscriptions_to_open_count(now, max_amount)).await?;
            let mut opened = 0;
            let mut claimed_any = false;
            // Pages are opened and claimed one step ahead, in a task of their own: the next page's intents commit
            // while this page's requests go out, so sending never waits for the database (every attempt's intent
            // is still committed before its request leaves). `concurrency` senders take claimed attempts from a
            // queue (no task and no semaphore wake-up per charge).
            let queue = Arc::new(Queue::new(self.cfg.gateway.concurrency));
            let sent = Arc::new(AtomicUsize::new(0));
            let mut senders = Senders { queue: queue.clone(), set: tokio::task::JoinSet::new() };
            let mut halted = false;
            let mut next = Some(tokio::spawn(self.clone().open_and_claim(now, to_open)));
            while let Some(step) = next.take() {
                let (n, batch) = step.await.context("the claim task panicked")??;
                opened += n;
                if batch.is_empty() && n == 0 {
                    break;
                }
                if !self.stopping() {
                    next = Some(tokio::spawn(self.clone().open_and_claim(now, to_open.saturating_sub(opened))));
                }
                if batch.is_empty() {
                    continue;
                }
                if !claimed_any {
                    claimed_any = true;
                    report.first_claim.get_or_insert_with(std::time::Instant::now);
                    failpoint("after_intent_commit");
                    for _ in 0..self.cfg.gateway.concurrency {
                        queue.senders.fetch_add(1, Ordering::SeqCst);
                        senders.set.spawn(self.clone().sender(queue.clone(), tx.clone(), sent.clone(), at));
                    }
                }
                if self.stopping() {
                    // Claimed as the stop came: never pushed, released below.
                    queue.lock().0.extend(batch);
                    halted = true;
                    break;
                }
                queue.push(batch);
                // Stay one page ahead, no more: the next page is pushed when this one runs low.
                queue.wait_low(|| self.stopping()).await;
                if self.stopping() || queue.senders.load(Ordering::SeqCst) == 0 {
                    halted = true;
                    break;
                }
            }
            queue.close();
            while let Some(done) = senders.set.join_next().await {
                done.context("a sender panicked")?;
            }
            report.sent += sent.load(Ordering::Relaxed);
            if halted || self.stopping() {
                // Claimed but never sent (the senders stop taking work): remove their intents.
                let mut unsent: Vec<i64> = queue.take_all().iter().map(|a| a.id).collect();
                if let Some(step) = next.take() {
                    let (_, ahead) = step.await.context("the claim task panicked")??;
                    unsent.extend(ahead.iter().map(|a| a.id));
                }
                let n = unsent.len();
                self.db(move |s| s.release(&unsent, now)).await?;
                info!(event = "pass.stopping", released = n, "stopping: {n} claimed charges were not sent");
            }
            report.opened += opened;
            // Outcomes decide whether later periods of the same subscriptions may open (catch-up, oldest first).
            self.flush(tx).await?;
            if (opened == 0 && !claimed_any) || self.stopping() {
                return Ok(());
            }
        }
    }

    /// One of a round's senders: sends claimed attempts from the queue until it is closed and empty, or the engine
    /// stops (a charge already taken is still sent and recorded).
    /// A sender also stops if the outcome writer has failed (nothing more can be recorded).
    async fn sender(self, queue: Arc<Queue>, tx: mpsc::Sender<Msg>, sent: Arc<AtomicUsize>, at: At) {
        // However the sender ends (a panic included), the claimer is told, so it never waits for it forever.
        let _gone = SenderGone(queue.clone());
        while !self.stopping() {
            let Some(a) = queue.pop().await else { break };
            if self.stopping() {
                // Woken by a page pushed as the stop came: not sent, so released with the rest.
                queue.lock().0.push_front(a);
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            self.metrics.beat();
            let rec = self.send(a, at).await;
            if tx.send(Msg::Record(Box::new(rec))).await.is_err() {
                break;
            }
        }
    }

    /// Before a pass claims or sends anything: a refused credential is a configuration error (one
    /// `gateway.unauthorized` ERROR line and an [`Unauthorized`] error), never an unknown outcome per charge. A
    /// gateway that does not answer is not a refusal: the pass goes on.
    async fn check_credentials(&self) -> Result<()> {
        if let crate::gateway::Auth::Refused(reason) = self.gateway.authenticate().await {
            let imp_key = self.cfg.gateway.imp_key.clone();
            error!(event = "gateway.unauthorized", imp_key = %imp_key, reason = %reason,
                "gateway.unauthorized: the gateway refused gateway.imp_key and its imp_secret; nothing is sent");
            return Err(Unauthorized { imp_key, reason }.into());
        }
        Ok(())
    }

    /// Waits until the writer has committed everything sent to it so far.
    async fn flush(&self, tx: &mpsc::Sender<Msg>) -> Result<()> {
        let (ack, done) = oneshot::channel();
        tx.send(Msg::Flush(ack)).await.ok().context("the outcome writer stopped")?;
        done.await.context("the outcome writer stopped")
    }

    /// Safety rail `limits.max_charges_per_pass`: before each round of a pass, refuses (an error; nothing of the
    /// round is sent) when what was sent so far in the pass (every charge request: earlier catch-up rounds and
    /// reconciliation's resends included) plus what is due now exceeds the limit.
    async fn check_charges_per_pass(&self, now: DateTime<Utc>, sent: usize) -> Result<()> {
        let max = self.cfg.limits.max_charges_per_pass;
        let due = self.db(move |s| s.due_backlog(now)).await?.max(0) as usize;
        if sent + due > max {
            let file = self.cfg.file.display();
            error!(
                event = "pass.refused",
                due,
                sent,
                max_charges_per_pass = max,
                "pass.refused: {due} charges are due, above limits.max_charges_per_pass ({max}); none of them is sent"
            );
            anyhow::bail!(
                "{file}: limits.max_charges_per_pass: {due} charges are due (after {sent} sent in this pass), more \
                 than the limit of {max}; refusing to send any of them (raise the limit if this is intended)"
            );
        }
        Ok(())
    }

    /// Safety rail `limits.max_amount`: logs every due charge held back because its amount is above the limit
    /// (the store never opens or claims them); returns how many there are.
    async fn log_over_amount_limit(&self, now: DateTime<Utc>) -> Result<usize> {
        let max = self.cfg.limits.max_amount;
        let held = self.db(move |s| s.over_amount_limit(now, max)).await?;
        for (sub, period, amount) in &held {
            error!(event = "charge.refused", subscription = %sub, period, amount, max_amount = max,
                "charge.refused: the amount is above limits.max_amount in {}; not charged", self.cfg.file.display());
        }
        Ok(held.len())
    }

    /// One step of a pass, one transaction: claims (commits the intents of) up to a page of attempts: due ones of
    /// open periods first, then first attempts of newly opened periods (at most `open_at_most` of them). Returns
    /// how many periods it opened and the claimed attempts.
    async fn open_and_claim(self, now: DateTime<Utc>, open_at_most: usize) -> Result<(usize, Vec<Attempt>)> {
        let cfg = self.cfg.clone();
        let timeout_ms = self.timeout_ms();
        let ClaimStep { opened, attempts, refused } = self
            .db(move |s| {
                let max_amount = cfg.limits.max_amount;
                s.open_and_claim(now, PAGE, open_at_most, max_amount, timeout_ms, |d| new_period(&cfg, d))
            })
            .await?;
        // Not opened: the period's merchant_uid is taken; its subscription was suspended (and the page went on).
        for r in &refused {
            error!(event = "charge.refused", subscription = %r.subscription_id, merchant_uid = %r.merchant_uid,
                "charge.refused: {}", r.reason);
        }
        Ok((opened, attempts))
    }

    /// The timeout this process's gateway client sends requests with (recorded with each attempt it sends).
    fn timeout_ms(&self) -> u64 {
        self.gateway.timeout().as_millis().min(u64::MAX as u128) as u64
    }
}

/// The period a due subscription opens next.
fn new_period(cfg: &Config, d: &DueSubscription) -> NewPeriod {
    let sub = &d.sub;
    let cal = sub.calendar();
    let due = |p| cal.due_at(&cfg.billing.clock, p);
    let following = sub.following(sub.next_period, |p| due(p).map(|t| t.timestamp()));
    NewPeriod {
        subscription_id: sub.id.clone(),
        period: sub.next_period,
        due_at: d.next_due_at,
        merchant_uid: merchant_uid(&cfg.billing.merchant_uid_prefix, &sub.id, sub.next_period),
        customer_uid: sub.customer_uid.clone(),
        amount: sub.amount,
        currency: sub.currency.clone(),
        name: sub.plan_name.clone(),
        following_period: following,
        following_due_at: due(following),
        skip_ahead: sub.skip_ahead_of(due(following).map(|t| t.timestamp())),
    }
}

impl<S: Store, G: Gateway> Engine<S, G> {
    fn request(a: &Attempt) -> ChargeRequest {
        ChargeRequest {
            customer_uid: a.customer_uid.clone(),
            merchant_uid: a.merchant_uid.clone(),
            amount: a.amount,
            currency: a.currency.clone(),
            name: a.name.clone(),
        }
    }

    /// Sends one committed attempt and decides what its outcome means.
    async fn send(&self, a: Attempt, at: At) -> Recorded {
        self.send_as(a, at, false).await
    }

    /// [`Engine::send`]; `resend`: the attempt was sent before (by a process that died or lost the answer) and the
    /// lookups found nothing, so that request may still be in progress at the gateway: a refusal of this one (say,
    /// a duplicate merchant_uid) is not taken as final unless a lookup settles it.
    async fn send_as(&self, a: Attempt, at: At, resend: bool) -> Recorded {
        let req = Self::request(&a);
        let started = std::time::Instant::now();
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.charges_sent.fetch_add(1, Ordering::Relaxed);
        let charge = self.gateway.charge(&req);
        let outcome = if failpoint_armed("after_send") {
            tokio::pin!(charge);
            tokio::select! {
                o = &mut charge => o,
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => { failpoint("after_send"); unreachable!() }
            }
        } else {
            charge.await
        };
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics.observe_latency(started.elapsed());
        failpoint("after_response");
        let result = match outcome {
            ChargeOutcome::Paid { imp_uid } => AttemptResult::Paid { imp_uid },
            ChargeOutcome::Declined { imp_uid, reason } => AttemptResult::Declined { imp_uid, reason },
            ChargeOutcome::Rejected { code, message } => {
                // A refusal may mean "already paid" (a resend after a lost answer): confirm before giving up.
                match self.gateway.find(&a.merchant_uid, "paid").await {
                    Lookup::Found(p) => self.paid_or_mismatch(&a, p),
                    // A few refusals of a resend only (counted apart from other unresolved tries): after the quiet
                    // period and the backoff, the first request is long over.
                    Lookup::NotFound if resend && a.refused_resends < RESEND_REFUSALS_TOLERATED => {
                        AttemptResult::ResendRefused {
                            reason: format!(
                                "the resend was refused (code {code}: {message}); the first may be in progress"
                            ),
                        }
                    }
                    Lookup::NotFound => AttemptResult::Rejected { reason: format!("code {code}: {message}") },
                    Lookup::Error(e) => AttemptResult::Unresolved {
                        reason: format!("rejected (code {code}: {message}) but the confirming lookup failed: {e}"),
                    },
                }
            }
            ChargeOutcome::Transient(r) => AttemptResult::Unresolved { reason: format!("transient: {r}") },
            ChargeOutcome::Unknown(r) => AttemptResult::Unresolved { reason: format!("unknown outcome: {r}") },
        };
        self.decide(a, result, at)
    }

    /// Resolves an unresolved attempt by looking its merchant_uid up; resends only if the gateway never saw it, and
    /// an attempt left `pending` only after a quiet period (see [`Engine::quiet_period`]).
    async fn reconcile(&self, a: Attempt, at: At) -> Recorded {
        let result = match self.gateway.find(&a.merchant_uid, "paid").await {
            Lookup::Found(p) => Some(self.paid_or_mismatch(&a, p)),
            Lookup::Error(e) => Some(AttemptResult::Unresolved { reason: format!("lookup failed: {e}") }),
            Lookup::NotFound => match self.gateway.find(&a.merchant_uid, "failed").await {
                Lookup::Error(e) => Some(AttemptResult::Unresolved { reason: format!("lookup failed: {e}") }),
                // A failed payment for another amount, currency or card is not this attempt's.
                Lookup::Found(p) if p.differs_from(a.amount, &a.currency, Some(&a.customer_uid)).is_some() => None,
                Lookup::Found(p) => {
                    let (sub, period) = (a.subscription_id.clone(), a.period);
                    match self.db(move |s| s.known_imp_uids(&sub, period)).await {
                        // An earlier decline of this period: the gateway never saw this attempt.
                        Ok(known) if known.contains(&p.imp_uid) => None,
                        Ok(_) => Some(AttemptResult::Declined {
                            imp_uid: Some(p.imp_uid),
                            reason: p.fail_reason.unwrap_or_else(|| "declined (no reason given)".into()),
                        }),
                        // Without the earlier declines, an old one could be taken for a new one: look again later.
                        Err(e) => Some(AttemptResult::Unresolved { reason: format!("database: {e:#}") }),
                    }
                }
                Lookup::NotFound => None,
            },
        };
        match result {
            Some(r) => self.decide(a, r, at),
            // Left pending by a process that stopped (or a pass that ended early): its request may have left and
            // still be in progress at the gateway, where a lookup may not find it yet (and a merchant_uid is
            // refused only once it is paid), so a resend now could be a second charge. Neither resent nor given up
            // now: looked up again after the quiet period.
            // (A wait, not a failure: the quiet period exactly, not the unresolved backoff.)
            None if a.status == ChargeStatus::Pending => {
                let reason = "no record at the gateway yet; a request sent before billd stopped may still be in \
                              progress, so it is looked up again after the quiet period before anything else";
                let decision = Decision::CheckAt(at.now() + self.quiet_period(&a));
                Recorded { attempt: a, result: AttemptResult::Unresolved { reason: reason.into() }, decision }
            }
            None if !a.billing => self.decide(
                a,
                AttemptResult::Abandoned {
                    reason: "never reached the gateway; the subscription no longer bills".into(),
                },
                at,
            ),
            None => {
                // The gateway has no record of it, at least a quiet period after the last send: resend the same
                // merchant_uid (a paid one cannot be paid twice).
                let (id, timeout_ms) = (a.id, self.timeout_ms());
                if let Err(e) = self.db(move |s| s.mark_resending(id, at.as_of, timeout_ms)).await {
                    return self.decide(a, AttemptResult::Unresolved { reason: format!("database: {e:#}") }, at);
                }
                info!(event = "charge.resend", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                    "the gateway has no record of this attempt; sending it again");
                let a = Attempt { timeout_ms: Some(timeout_ms), ..a };
                Box::pin(self.send_as(a, at, true)).await
            }
        }
    }

    /// The least time between an unresolved outcome and the next look at it (so also between a send and any
    /// resend): twice the time the attempt's latest request was given to answer (recorded with the attempt: a
    /// reload or a restart with a shorter `gateway.timeout` never shortens it), a margin for a request still in
    /// progress at the gateway. (The gateway documents no time limit of its own, so this is a margin, not a
    /// guarantee.) A row that recorded no timeout (written by an older billd) gets the longer of this client's and
    /// [`LEGACY_TIMEOUT`].
    fn quiet_period(&self, a: &Attempt) -> chrono::Duration {
        let sent_with = a
            .timeout_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or_else(|| self.gateway.timeout().max(LEGACY_TIMEOUT));
        chrono::Duration::from_std(2 * sent_with).unwrap_or(chrono::Duration::hours(1))
    }

    /// A paid payment found under the attempt's merchant_uid: paid if it is what billd asked for; otherwise a
    /// mismatch, never taken as paid (a key-in payment under a subscription's merchant_uid, say).
    fn paid_or_mismatch(&self, a: &Attempt, p: crate::gateway::Payment) -> AttemptResult {
        match p.differs_from(a.amount, &a.currency, Some(&a.customer_uid)) {
            None => AttemptResult::Paid { imp_uid: p.imp_uid },
            Some(reason) => AttemptResult::Mismatch { reason },
        }
    }

    fn decide(&self, a: Attempt, result: AttemptResult, at: At) -> Recorded {
        let policy = &self.cfg.dunning;
        let now = at.as_of;
        let decision = match &result {
            AttemptResult::Paid { .. } => policy.decide(Outcome::Paid, a.declines, 0, now),
            AttemptResult::Declined { .. } => policy.decide(Outcome::Declined, a.declines + 1, 0, now),
            AttemptResult::Rejected { .. } => policy.decide(Outcome::Rejected, a.declines, 0, now),
            // Timed from now in the pass (a request may leave well after the pass began), and never sooner than
            // the quiet period.
            AttemptResult::Unresolved { .. } | AttemptResult::ResendRefused { .. } => {
                match policy.decide(Outcome::Unresolved, a.declines, a.tries + 1, at.now()) {
                    Decision::CheckAt(t) => Decision::CheckAt(t.max(at.now() + self.quiet_period(&a))),
                    other => other,
                }
            }
            AttemptResult::Mismatch { .. } => Decision::Hold,
            AttemptResult::Abandoned { .. } => Decision::Paid,
        };
        Recorded { attempt: a, result, decision }
    }
}

/// A round's senders. If the round ends early (an error), they are left to finish the charges they hold (never
/// cut off mid-request) and take nothing more; queued attempts stay pending, to be reconciled by the next pass.
struct Senders {
    queue: Arc<Queue>,
    set: tokio::task::JoinSet<()>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.queue.take_all();
        self.queue.close();
        self.set.detach_all();
    }
}

/// Counts a sender out when it ends, however it ends.
struct SenderGone(Arc<Queue>);

impl Drop for SenderGone {
    fn drop(&mut self) {
        self.0.senders.fetch_sub(1, Ordering::SeqCst);
        self.0.drained.notify_one();
    }
}

/// A round's claimed attempts waiting for a sender.
struct Queue {
    state: Mutex<(VecDeque<Attempt>, bool)>,
    /// Senders wait here for attempts (or the close).
    filled: Notify,
    /// The claimer waits here for the queue to run low.
    drained: Notify,
    /// "Low": as many attempts as there are senders.
    low: usize,
    /// Senders still running.
    senders: AtomicUsize,
}

impl Queue {
    fn new(low: usize) -> Queue {
        Queue {
            state: Mutex::new((VecDeque::new(), false)),
            filled: Notify::new(),
            drained: Notify::new(),
            low,
            senders: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Attempt>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, batch: Vec<Attempt>) {
        self.lock().0.extend(batch);
        self.filled.notify_waiters();
    }

    /// No more attempts will come: senders finish what is queued, then stop.
    fn close(&self) {
        self.lock().1 = true;
        self.filled.notify_waiters();
    }

    fn take_all(&self) -> Vec<Attempt> {
        self.lock().0.drain(..).collect()
    }

    fn try_pop(&self) -> Result<Attempt, bool> {
        let mut state = self.lock();
        match state.0.pop_front() {
            Some(a) => {
                if state.0.len() == self.low {
                    self.drained.notify_one();
                }
                Ok(a)
            }
            None => Err(state.1),
        }
    }

    /// The next attempt, or `None` once the queue is closed and empty.
    async fn pop(&self) -> Option<Attempt> {
        loop {
            match self.try_pop() {
                Ok(a) => return Some(a),
                Err(true) => return None,
                Err(false) => {}
            }
            // Register before looking again, so a push between the two is not missed.
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            match self.try_pop() {
                Ok(a) => return Some(a),
                Err(true) => return None,
                Err(false) => filled.await,
            }
        }
    }

    /// Returns once the queue holds `low` attempts or fewer, every sender has stopped, or `stop()`.
    async fn wait_low(&self, stop: impl Fn() -> bool) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.lock().0.len() <= self.low || self.senders.load(Ordering::SeqCst) == 0 || stop() {
                return;
            }
            drained.await;
        }
    }
}

#[derive(Default)]
struct Tally {
    paid: usize,
    declined: usize,
    rejected: usize,
    unresolved: usize,
    mismatched: usize,
    last_commit: Option<std::time::Instant>,
}

/// A message to the outcome writer.
enum Msg {
    Record(Box<Recorded>),
    /// Acknowledged once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
}

/// Commits outcomes in groups (one transaction per group), then logs them.
async fn writer<S: Store, G: Gateway>(
    engine: Engine<S, G>,
    mut rx: mpsc::Receiver<Msg>,
    now: DateTime<Utc>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(512);
    while rx.recv_many(&mut buf, 512).await > 0 {
        let mut batch = Vec::with_capacity(buf.len());
        let mut acks = Vec::new();
        for m in buf.drain(..) {
            match m {
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(ack) => acks.push(ack),
            }
        }
        if !batch.is_empty() {
            let (batch, changes) = engine
                .db(move |s| {
                    let changes = s.record(&batch, now)?;
                    Ok((batch, changes))
                })
                .await?;
            tally.last_commit = Some(std::time::Instant::now());
            let before = (tally.paid, tally.declined, tally.rejected, tally.unresolved);
            for r in &batch {
                log_outcome(r, &mut tally);
            }
            log_changes(&changes);
            let m = &engine.metrics;
            m.paid.fetch_add((tally.paid - before.0) as u64, Ordering::Relaxed);
            m.declined.fetch_add((tally.declined - before.1) as u64, Ordering::Relaxed);
            m.rejected.fetch_add((tally.rejected - before.2) as u64, Ordering::Relaxed);
            m.unresolved.fetch_add((tally.unresolved - before.3) as u64, Ordering::Relaxed);
            m.beat();
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
    Ok(tally)
}

fn log_outcome(r: &Recorded, tally: &mut Tally) {
    let a = &r.attempt;
    match (&r.result, r.decision) {
        (AttemptResult::Paid { imp_uid }, _) => {
            tally.paid += 1;
            info!(event = "charge.paid", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                imp_uid = %imp_uid, "charge.paid");
        }
        (AttemptResult::Declined { reason, .. } | AttemptResult::Rejected { reason }, decision) => {
            let failure = if matches!(r.result, AttemptResult::Declined { .. }) {
                tally.declined += 1;
                "declined"
            } else {
                tally.rejected += 1;
                "rejected"
            };
            let (next_retry, final_action) = match decision {
                Decision::RetryAt(t) => (t.to_rfc3339(), "retry"),
                Decision::Exhausted(x) => ("none".to_string(), x.as_str()),
                _ => ("none".to_string(), "none"),
            };
            warn!(event = "charge.failed", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, failure, reason = %reason,
                attempt = a.attempt, next_retry = %next_retry, final_action, "charge.failed");
        }
        (AttemptResult::Mismatch { reason }, _) => {
            tally.mismatched += 1;
            error!(event = "charge.mismatch", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                reason = %reason, "charge.mismatch: not taken as paid; the period is held for an operator");
        }
        (AttemptResult::Unresolved { reason } | AttemptResult::ResendRefused { reason }, decision) => {
            tally.unresolved += 1;
            let check_at = match decision {
                Decision::CheckAt(t) => t.to_rfc3339(),
                _ => String::new(),
            };
            warn!(event = "charge.unknown", subscription = %a.subscription_id, customer_uid = %a.customer_uid,
                merchant_uid = %a.merchant_uid, amount = a.amount, currency = %a.currency, attempt = a.attempt,
                reason = %reason, check_at = %check_at, "charge.unknown");
        }
        (AttemptResult::Abandoned { reason }, _) => {
            info!(event = "charge.abandoned", subscription = %a.subscription_id, merchant_uid = %a.merchant_uid,
                reason = %reason, "charge.abandoned");
        }
    }
}

fn log_changes(changes: &[StatusChange]) {
    for c in changes {
        let event = format!("subscription.{}", c.to.as_str());
        match c.to {
            crate::billing::model::Status::Active => {
                info!(event = %event, subscription = %c.subscription_id, from = %c.from, "{event}")
            }
            _ => {
                warn!(event = %event, subscription = %c.subscription_id, from = %c.from, "{event}")
            }
        }
    }
}

use crate::failpoint::{armed as failpoint_armed, failpoint};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Book, Ledger, PeriodState, Views};

    /// The status of subscription s0's latest attempt, its period's state, and (while it is unresolved) its tries,
    /// refused resends, check time and recorded timeout, read through the contract.
    fn latest<G: Gateway>(
        e: &Engine<SqliteStore, G>,
    ) -> (ChargeStatus, PeriodState, u32, u32, Option<DateTime<Utc>>, Option<u64>) {
        let s = e.store.lock().unwrap();
        let (periods, _) = s.subscription_story("s0").unwrap();
        let p = periods.last().expect("a period");
        let a = p.attempts.last().expect("an attempt");
        let open = s.unresolved(DateTime::<Utc>::MAX_UTC, 10).unwrap();
        let (tries, refused, timeout) =
            open.first().map(|u| (u.tries, u.refused_resends, u.timeout_ms)).unwrap_or((0, 0, None));
        (a.status, p.state, tries, refused, a.check_at, timeout)
    }

    /// A gateway whose charge panics (a bug in a sender's path).
    struct Panicky;

    impl Gateway for Panicky {
        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(5)
        }
        async fn authenticate(&self) -> crate::gateway::Auth {
            crate::gateway::Auth::Accepted
        }
        async fn charge(&self, _: &ChargeRequest) -> ChargeOutcome {
            panic!("a bug in a sender")
        }
        async fn find(&self, _: &str, _: &str) -> Lookup {
            Lookup::NotFound
        }
    }

    /// A gateway that loses the first answer, then refuses every request, and has no record of anything.
    #[derive(Default)]
    struct RefusesResends(AtomicUsize);

    impl Gateway for RefusesResends {
        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(5)
        }
        async fn authenticate(&self) -> crate::gateway::Auth {
            crate::gateway::Auth::Accepted
        }
        async fn charge(&self, _: &ChargeRequest) -> ChargeOutcome {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => ChargeOutcome::Unknown("no answer".into()),
                _ => ChargeOutcome::Rejected { code: 1, message: "duplicate merchant_uid".into() },
            }
        }
        async fn find(&self, _: &str, _: &str) -> Lookup {
            Lookup::NotFound
        }
    }

    /// A gateway that answers charges from a script (then refuses) and has no record of anything.
    struct Scripted(Mutex<VecDeque<ChargeOutcome>>);

    impl Gateway for Scripted {
        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(5)
        }
        async fn authenticate(&self) -> crate::gateway::Auth {
            crate::gateway::Auth::Accepted
        }
        async fn charge(&self, _: &ChargeRequest) -> ChargeOutcome {
            let next = self.0.lock().unwrap().pop_front();
            next.unwrap_or(ChargeOutcome::Rejected { code: 1, message: "refused".into() })
        }
        async fn find(&self, _: &str, _: &str) -> Lookup {
            Lookup::NotFound
        }
    }

    /// Issue 12, hole 5: other unresolved tries (a lost answer, then 5xx answers to two resends) do not count as
    /// refused resends; the first refusal of a resend is not final (the first request may be in progress).
    #[test]
    fn unresolved_tries_do_not_use_up_the_tolerated_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1, 1);
        let script = [
            ChargeOutcome::Unknown("no answer".into()),
            ChargeOutcome::Transient("HTTP 503".into()),
            ChargeOutcome::Transient("HTTP 503".into()),
        ];
        let gateway = Scripted(Mutex::new(script.into_iter().collect()));
        let engine = Engine::new(SqliteStore::open(&cfg.billing.database).unwrap(), gateway, cfg);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let state = |e: &Engine<SqliteStore, Scripted>| {
            let (status, state, tries, refused, _, _) = latest(e);
            (status, state, tries, refused)
        };
        let mut at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
        rt.block_on(engine.pass(at)).unwrap();
        for _ in 0..2 {
            at += chrono::Duration::hours(2);
            rt.block_on(engine.pass(at)).unwrap();
        }
        assert_eq!(
            state(&engine),
            (ChargeStatus::Unknown, PeriodState::Open, 3, 0),
            "a lost answer and two 5xx resends"
        );
        // The first refused resend: still unresolved, counted.
        at += chrono::Duration::hours(2);
        rt.block_on(engine.pass(at)).unwrap();
        assert_eq!(
            state(&engine),
            (ChargeStatus::Unknown, PeriodState::Open, 4, 1),
            "the first refusal was taken as final"
        );
        assert_eq!(
            engine.store.lock().unwrap().subscription("s0").unwrap().unwrap().status,
            crate::billing::model::Status::Active
        );
    }

    /// Issue 12, hole 2: a reload (SIGHUP) replaces the config, but the HTTP client keeps the timeout it was built
    /// with. The quiet period after a lost answer is twice the timeout the request was sent with (35 s here), not the
    /// reloaded config's (1 s): the request may be in progress at the gateway for that long.
    #[test]
    fn a_reload_with_a_shorter_timeout_does_not_shorten_the_quiet_period() {
        struct Slow;
        impl Gateway for Slow {
            fn timeout(&self) -> std::time::Duration {
                std::time::Duration::from_secs(35)
            }
            async fn authenticate(&self) -> crate::gateway::Auth {
                crate::gateway::Auth::Accepted
            }
            async fn charge(&self, _: &ChargeRequest) -> ChargeOutcome {
                ChargeOutcome::Unknown("no answer within 35s".into())
            }
            async fn find(&self, _: &str, _: &str) -> Lookup {
                Lookup::NotFound
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1, 1);
        let mut engine = Engine::new(SqliteStore::open(&cfg.billing.database).unwrap(), Slow, cfg.clone());
        let mut reloaded = cfg;
        reloaded.gateway.timeout = std::time::Duration::from_secs(1);
        engine.set_config(reloaded);
        let at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
        tokio::runtime::Runtime::new().unwrap().block_on(engine.pass(at)).unwrap();
        let (_, _, _, _, check_at, timeout_ms) = latest(&engine);
        let check_at = check_at.expect("a check time").timestamp();
        assert_eq!(timeout_ms, Some(35_000), "the timeout the request was sent with is recorded");
        let at = at.timestamp();
        assert!(check_at >= at + 70, "looked at again {} s after the lost answer, not 70 s", check_at - at);
    }

    fn config(dir: &std::path::Path, concurrency: usize, subscriptions: usize) -> Config {
        let mut text = format!(
            "[billing]\ntimezone = \"Asia/Seoul\"\ncharge_time = \"10:00\"\n\n[gateway]\nbase_url = \
             \"http://127.0.0.1:9\"\nimp_key = \"k\"\nimp_secret = \"s\"\nconcurrency = {concurrency}\n\n[[plans]]\n\
             id = \"p\"\nname = \"Plan\"\namount = 9900\ninterval = \"1 month\"\n"
        );
        for i in 0..subscriptions {
            text += &format!(
                "[[subscriptions]]\nid = \"s{i}\"\ncustomer_uid = \"c{i}\"\nplan = \"p\"\nstart = \"2025-01-01\"\n"
            );
        }
        crate::config::parse_str(&text, &dir.join("schedules.toml")).unwrap()
    }

    #[test]
    fn a_refused_resend_is_not_final_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1, 1);
        let engine = Engine::new(SqliteStore::open(&cfg.billing.database).unwrap(), RefusesResends::default(), cfg);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let status = |e: &Engine<SqliteStore, RefusesResends>| {
            let (status, state, ..) = latest(e);
            (status, state)
        };
        let mut at = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
        rt.block_on(engine.pass(at)).unwrap();
        assert_eq!(status(&engine), (ChargeStatus::Unknown, PeriodState::Open), "the first answer was lost");
        // Each later pass finds no record and resends; the refusals are taken as final only after a few.
        let mut seen = Vec::new();
        for _ in 0..6 {
            at += chrono::Duration::hours(2);
            rt.block_on(engine.pass(at)).unwrap();
            seen.push(status(&engine));
        }
        let until_final = seen.iter().position(|s| s.1 != PeriodState::Open).expect("a refusal becomes final at last");
        assert_eq!(until_final as u32, RESEND_REFUSALS_TOLERATED, "{seen:?}");
        assert_eq!(seen[until_final], (ChargeStatus::Failed, PeriodState::GivenUp), "{seen:?}");
    }

    #[test]
    fn a_pass_whose_senders_all_panic_ends_with_an_error_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        // More than a page, so the claimer is waiting for the queue to run low when the senders die.
        let cfg = config(dir.path(), 2, PAGE + 100);
        let engine = Engine::new(SqliteStore::open(&cfg.billing.database).unwrap(), Panicky, cfg);
        let now = DateTime::parse_from_rfc3339("2025-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let result =
            rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), engine.pass(now)).await });
        let err = result.expect("the pass hung").expect_err("a pass whose senders panicked cannot succeed");
        assert!(format!("{err:#}").contains("a sender panicked"), "{err:#}");
    }
}
