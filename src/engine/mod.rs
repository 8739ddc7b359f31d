//! The billing pass (long: the engine's state and its pass, step by step, in one place): sync the config, reconcile
//! unresolved attempts, open due periods, charge, record outcomes.

mod changes;
mod charge;
mod lease;
mod lifecycle;
pub mod metrics;
pub mod notices;
mod pipeline;
mod reconcile;
pub mod refunds;
mod report;
mod scope;
#[cfg(test)]
mod tests;

pub use report::{ConfigRefused, MassRejected, PassReport, SafetyStopped, Unauthorized};

use crate::billing::model::merchant_uid;
use crate::billing::sync;
use crate::config::Config;
use crate::failpoint::failpoint;
use crate::gateway::Gateway;
use crate::realtime::{RealClock, SystemClock};
use crate::store::{Attempt, ClaimStep, DueSubscription, NewPeriod, Scope, Store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use metrics::Metrics;
use pipeline::{Counts, Go, Msg, Queue, Senders, gate, writer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info, warn};

/// Orchestrates the store and the gateway under the config's rules.
pub struct Engine<S: Store, G: Gateway> {
    store: Arc<Mutex<S>>,
    gateway: Arc<G>,
    cfg: Arc<Config>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// The real clocks the quiet period is measured on (never the billing clock).
    clock: Arc<dyn RealClock>,
    /// Why the config's last sync was refused (`None`: it was applied): while set, no pass sends anything.
    refused: Arc<Mutex<Option<String>>>,
    /// Set by the outcome writer when the running pass's rejections became a mass rejection: nothing more is sent.
    mass_rejected: Arc<AtomicBool>,
    /// The charge requests the running pass may still send (`limits.max_charges_per_pass`, less what it sent: first
    /// sends at the gate, resends at their go).
    budget: Arc<AtomicU64>,
    /// The running pass runs under a safety stop an operator released: it may send up to the limit, in part of a
    /// round, then the stop trips again if more is due.
    released: Arc<AtomicBool>,
    /// A resend of the running pass was held back because the budget was spent.
    resend_capped: Arc<AtomicBool>,
    /// Held while a pass reconciles and while a notification settles a charge (`notices`): one of them at a time, so
    /// that neither records over what the other is deciding.
    settling: Arc<tokio::sync::Mutex<()>>,
    /// Payments (merchant_uid, imp_uid) the running pass's lookups took as charges' payments and found refunded at
    /// the gateway: their refunds are recorded at the end of the pass, once the charges are recorded paid
    /// ([`Engine::record_refunds_found`]).
    refunds_found: Arc<Mutex<Vec<(String, String)>>>,
    /// The one subscription its passes charge (a command that charges one now: `retry`, `reactivate --charge-now`,
    /// `subscriptions add --charge-now`); `None`: every subscription (`run`, `tick`).
    only: Option<String>,
    /// This process's membership of the book (`None`: not joined, as in the engine's own tests).
    member: Option<Arc<lease::Member<S>>>,
}

impl<S: Store, G: Gateway> Clone for Engine<S, G> {
    fn clone(&self) -> Self {
        Engine {
            store: self.store.clone(),
            gateway: self.gateway.clone(),
            cfg: self.cfg.clone(),
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            refused: self.refused.clone(),
            mass_rejected: self.mass_rejected.clone(),
            budget: self.budget.clone(),
            released: self.released.clone(),
            resend_capped: self.resend_capped.clone(),
            settling: self.settling.clone(),
            refunds_found: self.refunds_found.clone(),
            only: self.only.clone(),
            member: self.member.clone(),
        }
    }
}

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

/// How many due charges a pass claims at a time ([`PAGE`] at most): four rounds of its `concurrency` senders, at
/// least 64 (each page's intents commit in one transaction). A claimed charge is this daemon's until it is sent, so
/// daemons sharing a book share a billing day to its end only if none holds far more than it can send at once.
fn claim_page(concurrency: usize) -> usize {
    concurrency.saturating_mul(4).clamp(64, PAGE)
}

impl<S: Store, G: Gateway> Engine<S, G> {
    pub fn new(store: S, gateway: G, cfg: Config) -> Self {
        Engine {
            store: Arc::new(Mutex::new(store)),
            gateway: Arc::new(gateway),
            cfg: Arc::new(cfg),
            stop: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(Metrics::default()),
            clock: Arc::new(SystemClock),
            refused: Arc::new(Mutex::new(None)),
            mass_rejected: Arc::new(AtomicBool::new(false)),
            budget: Arc::new(AtomicU64::new(0)),
            released: Arc::new(AtomicBool::new(false)),
            resend_capped: Arc::new(AtomicBool::new(false)),
            settling: Arc::new(tokio::sync::Mutex::new(())),
            refunds_found: Arc::new(Mutex::new(Vec::new())),
            only: None,
            member: None,
        }
    }

    /// The same engine measuring real time on `clock` instead of the system's clocks: for a model of the protocol
    /// whose time is simulated (the property tests). The binary never calls it.
    pub fn with_real_clock(mut self, clock: impl RealClock) -> Self {
        self.clock = Arc::new(clock);
        self
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
    pub async fn db<R: Send + 'static>(&self, f: impl FnOnce(&mut S) -> Result<R> + Send + 'static) -> Result<R> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
            // Every database error names the file (SQLite's own messages, like "disk I/O error", do not).
            let path = guard.location();
            f(&mut guard)
                .map_err(|e| if format!("{e:#}").contains(&path) { e } else { e.context(format!("database {path}")) })
        })
        .await
        .context("database task panicked")?
    }

    /// Applies the config to the database. Refuses (and changes nothing) when it would cancel more than 10% of
    /// the billed subscriptions it manages ([`sync::refusal`]), unless `force`. A refused sync (for that or any
    /// other reason) stops every pass of this engine from sending anything until a sync succeeds
    /// ([`ConfigRefused`]).
    pub async fn sync(&self, now: DateTime<Utc>, force: bool) -> Result<sync::SyncPlan> {
        let result = self.apply_config(now, force).await;
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = result.as_ref().err().map(|e| format!("{e:#}"));
        result
    }

    /// [`Engine::sync`] by a daemon: only the one holding the one-at-a-time jobs applies its config to a book several
    /// daemons share (so two servers whose files differ for a moment never undo each other's changes); the others
    /// leave it and say so (`None`).
    pub async fn sync_if_jobs(&self, now: DateTime<Utc>) -> Result<Option<sync::SyncPlan>> {
        if !self.holds_jobs().await? {
            info!(
                event = "config.not_applied",
                "config.not_applied: another daemon does the one-at-a-time jobs and \
                applies its config to the book (`billd status` shows which); give every server the same file and reload \
                them all"
            );
            return Ok(None);
        }
        self.sync(now, false).await.map(Some)
    }

    /// Why the config was refused at its last sync (`None`: applied).
    pub fn config_refused(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the running pass's rejections became a mass rejection (then it sends nothing more).
    fn mass_rejected(&self) -> bool {
        self.mass_rejected.load(Ordering::SeqCst)
    }

    /// The error every path that would send answers while the config is refused.
    fn refuse_if_config_refused(&self) -> Result<()> {
        match self.config_refused() {
            Some(why) => Err(ConfigRefused(why).into()),
            None => Ok(()),
        }
    }

    async fn apply_config(&self, now: DateTime<Utc>, force: bool) -> Result<sync::SyncPlan> {
        let cfg = self.cfg.clone();
        let applied = self
            .db(move |s| {
                let mut refused = None;
                // Planned from the rows as they are inside the write transaction that applies it.
                let plan = s.sync_with(&cfg.billing.clock, now, |subs| {
                    let today = cfg.billing.clock.local_date(now);
                    let plan = cfg.sync_plan(subs, today);
                    for w in &plan.warnings {
                        warn!(event = "config.sync", "{w}");
                    }
                    for r in &plan.refused {
                        error!(event = "config.sync", "{r}");
                    }
                    refused = sync::refusal(&plan, subs, &cfg.file).filter(|_| !force);
                    match &refused {
                        Some(why) => anyhow::bail!("{why}"),
                        None => Ok(plan),
                    }
                });
                // The guard's refusal is about the file, not the database: returned as it is.
                let plan = match (plan, refused) {
                    (Err(_), Some(why)) => return Ok(Err(why)),
                    (plan, _) => plan?,
                };
                if let Some(r) = &plan.retimed {
                    info!(event = "billing.clock_changed", "billing.clock_changed: {r}");
                }
                for c in &plan.changes {
                    match c {
                        sync::Change::Insert(sub) => info!(event = "subscription.created", subscription = %sub.id, plan = %sub.plan_id, start = %sub.start_date, terms = %crate::billing::terms::describe(sub, &cfg.billing.clock), "subscription.created"),
                        sync::Change::Update { after, what, .. } => info!(event = "subscription.updated", subscription = %after.id, changes = %what.join("; "), "subscription.updated"),
                        sync::Change::Cancel { id, reason } => info!(event = "subscription.canceled", subscription = %id, reason = %reason, "subscription.canceled"),
                    }
                }
                Ok(Ok(plan))
            })
            .await?;
        applied.map_err(|why| anyhow::anyhow!(why))
    }

    /// One full pass at the instant `now`: sync first, then [`Engine::charge_due`]; a refused config charges
    /// nothing ([`ConfigRefused`]). Every path that charges (`tick`, and the commands that charge now) goes
    /// through here, so the config in force is applied, under the same guard, before anything is sent.
    ///
    /// On a book several daemons share, only the one holding the one-at-a-time jobs syncs (the others charge the book
    /// as it synced it: every daemon's config should be the same file).
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport> {
        if let Err(e) = self.sync_if_jobs(now).await {
            error!(event = "config.refused", "config.refused: nothing is charged: {e:#}");
        }
        self.charge_due(now).await
    }

    /// Whether this process does the book's one-at-a-time jobs (config sync, sweeps, catch-up, pruning) in its
    /// passes: always when it has not joined the book as a daemon; otherwise while it holds them
    /// ([`crate::store::Daemons::try_jobs`], tried again at each pass: a daemon that stopped gives them up).
    async fn holds_jobs(&self) -> Result<bool> {
        let Some(lease) = self.lease() else { return Ok(true) };
        let jobs = self.db(|s| s.try_jobs(crate::store::Jobs::Billing)).await?;
        if jobs != lease.jobs.swap(jobs, Ordering::SeqCst) {
            info!(
                event = "daemon.jobs",
                daemon = lease.id,
                jobs,
                "daemon.jobs: this daemon {} the one-at-a-time jobs",
                if jobs { "now does" } else { "does not do" }
            );
        }
        Ok(jobs)
    }

    /// Reconciles unresolved attempts, then charges everything due at or before `now`, oldest period first.
    /// Refuses ([`ConfigRefused`]) while the config's last sync is refused.
    pub async fn charge_due(&self, now: DateTime<Utc>) -> Result<PassReport> {
        self.refuse_if_config_refused()?;
        self.open_budget().await?;
        self.mass_rejected.store(false, Ordering::SeqCst);
        let mut report = PassReport::default();
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let writer = tokio::spawn(writer(self.clone(), rx, now));
        let (go, go_rx) = mpsc::channel::<Go>(4096);
        let gate = tokio::spawn(gate(self.clone(), go_rx, now));
        let sem = Arc::new(Semaphore::new(self.cfg.gateway.concurrency));
        let result = self.drive(At::start(now), &tx, &go, &sem, &mut report).await;
        drop((tx, go));
        let tally = writer.await.context("the outcome writer panicked")??;
        let gated = gate.await.context("the gate panicked")?;
        self.record_refunds_found(now).await;
        result?;
        gated?;
        report.paid = tally.paid;
        report.declined = tally.declined;
        report.rejected = tally.rejected;
        report.withheld = tally.withheld;
        report.unresolved = tally.unresolved;
        report.mismatched = tally.mismatched;
        report.last_record = tally.last_commit;
        report.next_wake = self.db(|s| s.next_wake()).await?;
        // Every instant this pass leaves behind it is one it could not settle now: held back (over the amount limit,
        // a failed lookup, a pause not ended), left to the daemon doing the one-at-a-time jobs (pauses that end,
        // periods past the catch-up window), or another live daemon's charge in doubt (its check time passed while
        // its lease lives: an outside review saw the jobs holder run 5,000 passes in 93 s beside a stopped daemon).
        // None wakes it at once (it would spin); an instant still ahead wakes it when it comes, every daemon alike,
        // so a billing day is shared from its first second.
        self.log_over_amount_limit(now).await?;
        report.next_wake = report.next_wake.map(|t| wake_after_held(t, now));
        self.metrics.mass_rejection.store(tally.mass_rejection.is_some(), Ordering::Relaxed);
        if let Some(mass) = tally.mass_rejection {
            return Err(mass.into());
        }
        if self.released.load(Ordering::SeqCst) && self.only.is_none() {
            // The pass an operator allowed ended without tripping again: billing goes on.
            let why = "the pass after the operator's release sent what was due within the limit";
            self.db(move |s| s.lift_safety_stop(why, false, chrono::Utc::now())).await?;
        }
        self.metrics.last_success.store(now.timestamp(), Ordering::Relaxed);
        self.metrics.beat();
        Ok(report)
    }

    async fn drive(
        &self,
        at: At,
        tx: &mpsc::Sender<Msg>,
        go: &mpsc::Sender<Go>,
        sem: &Arc<Semaphore>,
        report: &mut PassReport,
    ) -> Result<()> {
        let now = at.as_of;
        self.check_credentials().await?;
        // Every charge request of this pass counts against limits.max_charges_per_pass, resends included.
        let sent_before = self.metrics.charges_sent.load(Ordering::Relaxed);
        // 1. Reconcile what earlier passes (or a crashed process) left unresolved.
        (report.reconciled, report.deferred) = self.reconcile_stale(at, tx, sem).await?;
        // The one-at-a-time jobs (on a book several daemons share, one of them does them).
        let jobs = self.holds_jobs().await?;
        if jobs {
            self.settle_held_changes(now).await?;
        }
        self.trip_if_resends_capped(now).await?;
        if jobs {
            self.sweep(now, report).await?;
        }
        let scope = self.scope(now);

        // 2. Open due periods and send their attempts, until nothing more falls due at `now`.
        self.rounds(at, tx, go, report, scope, sent_before).await
    }

    /// One-at-a-time jobs of a pass, before anything opens: cancel dates, pauses that end, periods older than the
    /// catch-up window, trial endings.
    async fn sweep(&self, now: DateTime<Utc>, report: &mut PassReport) -> Result<()> {
        // Pauses that end now resume (as of their end); periods due longer ago than billing.catch_up_window are looked
        // up and recorded paid or skipped, never charged; both before anything opens.
        // Cancel dates first: a pause that skips what falls due ends at its cancel date, never resumed past it.
        self.end_canceling(now).await?;
        (_, report.resumes_failed) = self.resume_due(now).await?;
        let stale = self.settle_stale(now).await?;
        (report.skipped, report.found_paid, report.stale_left) = (stale.skipped, stale.found_paid, stale.left);
        self.announce_trials_ending(now).await
    }

    /// The rounds of a pass: open due periods and send their attempts, until nothing more falls due at `now`.
    #[allow(clippy::too_many_arguments)]
    async fn rounds(
        &self,
        at: At,
        tx: &mpsc::Sender<Msg>,
        go: &mpsc::Sender<Go>,
        report: &mut PassReport,
        scope: Scope,
        sent_before: u64,
    ) -> Result<()> {
        let now = at.as_of;
        loop {
            if self.stopping() {
                return Ok(());
            }
            // A config refused during the pass (a SIGHUP): nothing more is claimed (the gate already sends nothing).
            self.refuse_if_config_refused()?;
            if self.mass_rejected() {
                return Ok(());
            }
            let sent = self.metrics.charges_sent.load(Ordering::Relaxed).saturating_sub(sent_before);
            // How many charges this round may claim (all that is due, or, after an operator's release, what is left
            // of the limit).
            let allowed = self.check_charges_per_pass(&scope, now, sent as usize).await?;
            // A round opens at most one period per subscription due at its start (a later period of the same
            // subscription waits for the next round, after the outcome of this one).
            let max_amount = self.cfg.limits.max_amount;
            let within = scope.clone();
            let to_open =
                self.db(move |s| s.subscriptions_to_open_count_within(&within, now, max_amount)).await?.min(allowed);
            let mut claim_left = allowed;
            let mut opened = 0;
            let mut claimed_any = false;
            // Pages are opened and claimed one step ahead, in a task of their own: the next page's intents commit
            // while this page's requests go out, so sending never waits for the database (every attempt's intent
            // is still committed before its request leaves). `concurrency` senders take claimed attempts from a
            // queue (no task and no semaphore wake-up per charge).
            let queue = Arc::new(Queue::new(self.cfg.gateway.concurrency));
            let counts = Counts::default();
            let mut senders = Senders { queue: queue.clone(), set: tokio::task::JoinSet::new() };
            let mut halted = false;
            let page = claim_page(self.cfg.gateway.concurrency);
            let mut next =
                Some(tokio::spawn(self.clone().open_and_claim(scope.clone(), now, to_open, claim_left.min(page))));
            // A stop, a config refused during the pass (a SIGHUP), or a mass rejection: no more claims; what is
            // claimed and unsent is released below (the gate already lets nothing leave).
            let halt = || self.stopping() || self.config_refused().is_some() || self.mass_rejected();
            while let Some(step) = next.take() {
                let (n, batch) = step.await.context("the claim task panicked")??;
                opened += n;
                claim_left = claim_left.saturating_sub(batch.len());
                if batch.is_empty() && n == 0 {
                    break;
                }
                if !halt() && claim_left > 0 {
                    let (open, page) = (to_open.saturating_sub(opened), claim_left.min(page));
                    next = Some(tokio::spawn(self.clone().open_and_claim(scope.clone(), now, open, page)));
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
                        let (queue, tx, go, counts) = (queue.clone(), tx.clone(), go.clone(), counts.clone());
                        senders.set.spawn(self.clone().sender(queue, tx, go, counts, at));
                    }
                }
                if halt() {
                    // Claimed as the stop (or a refused reload) came: never pushed, released below.
                    queue.lock().0.extend(batch);
                    halted = true;
                    break;
                }
                queue.push(batch);
                // Stay one page ahead, no more: the next page is pushed when this one runs low.
                queue.wait_low(&halt).await;
                if halt() || queue.senders.load(Ordering::SeqCst) == 0 {
                    halted = true;
                    break;
                }
            }
            queue.close();
            while let Some(done) = senders.set.join_next().await {
                done.context("a sender panicked")?;
            }
            report.sent += counts.sent.load(Ordering::Relaxed);
            report.withdrawn += counts.withdrawn.load(Ordering::Relaxed);
            if halted || halt() {
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
            // Outcomes decide whether later periods of the same subscriptions may open (catch-up, oldest first); the
            // round's rejections are judged (a mass rejection, or the customers').
            self.end_round(tx).await?;
            if (opened == 0 && !claimed_any) || self.stopping() {
                return Ok(());
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

    /// Safety rail `limits.max_charges_per_pass`: before each round of a pass, the number of charges the round may
    /// claim. What is due now must fit in what is left of the limit for this pass (every charge request counts:
    /// earlier catch-up rounds and reconciliation's resends included); otherwise nothing of the round is sent and
    /// billing stops in the book ([`crate::store::Book::stop_billing`]) until an operator acts, so that a later pass,
    /// in this process or another, does not start again with a fresh count. After an operator's release the round
    /// may send what is left of the limit, part of what is due.
    async fn check_charges_per_pass(&self, scope: &Scope, now: DateTime<Utc>, sent: usize) -> Result<usize> {
        let max_amount = self.cfg.limits.max_amount;
        let scope = scope.clone();
        let due = self.db(move |s| s.due_backlog_within(&scope, now, max_amount)).await?.max(0) as usize;
        let left = self.budget.load(Ordering::SeqCst) as usize;
        if due <= left {
            return Ok(due);
        }
        if self.released.load(Ordering::SeqCst) && left > 0 {
            return Ok(left);
        }
        let are_due = if due == 1 { "1 charge is due".to_string() } else { format!("{due} charges are due") };
        self.trip(format!(
            "limits.max_charges_per_pass: {are_due} after {sent} sent in one pass, more than the limit of {}",
            self.cfg.limits.max_charges_per_pass
        ))
        .await
    }

    /// Stops billing in the book for `reason` (one `pass.refused` ERROR line) and returns [`SafetyStopped`].
    async fn trip<T>(&self, reason: String) -> Result<T> {
        let max = self.cfg.limits.max_charges_per_pass;
        error!(
            event = "pass.refused",
            max_charges_per_pass = max,
            "pass.refused: {reason}; nothing more is sent, and billing stops until an operator acts"
        );
        let stop =
            crate::store::SafetyStop { reason, max_charges_per_pass: max as u64, at: Utc::now(), released: false };
        let kept = stop.clone();
        self.db(move |s| s.stop_billing(&kept)).await?;
        self.metrics.safety_stop.store(true, Ordering::Relaxed);
        Err(SafetyStopped { stop, file: self.cfg.file.display().to_string(), tz: self.cfg.billing.clock.timezone }
            .into())
    }

    /// After reconciliation: if a resend was held back because the limit was spent, billing stops.
    async fn trip_if_resends_capped(&self, _now: DateTime<Utc>) -> Result<()> {
        if self.resend_capped.swap(false, Ordering::SeqCst) {
            return self
                .trip(format!(
                    "limits.max_charges_per_pass: unresolved charges still wait for a resend after {} sent in one \
                     pass",
                    self.cfg.limits.max_charges_per_pass
                ))
                .await;
        }
        Ok(())
    }

    /// Takes one charge request from the pass's budget (a resend at its go); `false` when it is spent.
    fn take_one(&self) -> bool {
        self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_ok()
    }

    /// Takes `n` charge requests from the pass's budget (first sends at the gate; the round was sized to fit).
    fn spend(&self, n: usize) {
        let _ = self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| Some(b.saturating_sub(n as u64)));
    }

    /// Before a pass (or the start-up reconciliation) sends anything: sets its budget to `limits.max_charges_per_pass`,
    /// and refuses ([`SafetyStopped`]) while a safety stop is in force in the book, unless an operator released it
    /// (then the pass runs in released mode) or the config in force raised the limit above the one that tripped (an
    /// operator's act: the stop is lifted).
    async fn open_budget(&self) -> Result<()> {
        let max = self.cfg.limits.max_charges_per_pass as u64;
        self.budget.store(max, Ordering::SeqCst);
        self.released.store(false, Ordering::SeqCst);
        self.resend_capped.store(false, Ordering::SeqCst);
        let stop = self.db(|s| s.safety_stop()).await?;
        match stop {
            None => {}
            Some(stop) if stop.lifted_by(self.cfg.limits.max_charges_per_pass) => {
                let why = format!("limits.max_charges_per_pass raised from {} to {max}", stop.max_charges_per_pass);
                let said = why.clone();
                self.db(move |s| s.lift_safety_stop(&said, false, Utc::now())).await?;
                info!(event = "billing.resumed", reason = %why, "billing.resumed: {why}");
            }
            Some(stop) if stop.released => {
                // The release is used up as this pass starts: a pass that ends early (a process killed in a crash
                // loop) leaves billing stopped, instead of each restart sending up to the limit again. (A command's
                // pass for one subscription leaves the release to the next full pass.)
                const UNFINISHED: &str = " (released; the pass it allowed did not finish: release again)";
                let reason = stop.reason.trim_end_matches(UNFINISHED);
                let running = crate::store::SafetyStop {
                    reason: format!("{reason}{UNFINISHED}"),
                    max_charges_per_pass: stop.max_charges_per_pass,
                    at: stop.at,
                    released: false,
                };
                if self.only.is_none() {
                    self.db(move |s| s.stop_billing(&running)).await?;
                }
                self.released.store(true, Ordering::SeqCst);
            }
            Some(stop) => {
                self.metrics.safety_stop.store(true, Ordering::Relaxed);
                let (file, tz) = (self.cfg.file.display().to_string(), self.cfg.billing.clock.timezone);
                return Err(SafetyStopped { stop, file, tz }.into());
            }
        }
        self.metrics.safety_stop.store(false, Ordering::Relaxed);
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
    async fn open_and_claim(
        self,
        scope: Scope,
        now: DateTime<Utc>,
        open_at_most: usize,
        page: usize,
    ) -> Result<(usize, Vec<Attempt>)> {
        let cfg = self.cfg.clone();
        let timeout_ms = self.timeout_ms();
        let ClaimStep { opened, attempts, refused } = self
            .db(move |s| {
                let max_amount = cfg.limits.max_amount;
                s.open_and_claim_within(&scope, now, page, open_at_most, max_amount, timeout_ms, |d| {
                    new_period(&cfg, d)
                })
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
        amount: sub.amount_of(sub.next_period),
        currency: sub.currency.clone(),
        name: sub.plan_name.clone(),
        following_period: following,
        // None at or after cancel_at: no period due then ever opens.
        following_due_at: sub.billed_due(&cfg.billing.clock, following),
        skip_ahead: sub.skip_ahead_of(due(following).map(|t| t.timestamp())),
    }
}

/// When a pass's daemon wakes next, the book's earliest instant being `t`: at `t` while it is still ahead (a billing
/// day wakes every daemon when it begins), else a minute from now (an instant already past is one the pass could not
/// settle: held back, another daemon's jobs, another live daemon's charge in doubt; waking for it at once would spin).
fn wake_after_held(t: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if t > now { t } else { now + chrono::Duration::minutes(1) }
}
