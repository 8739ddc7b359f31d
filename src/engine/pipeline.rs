//! A round's pipeline: `concurrency` senders take claimed attempts from a queue; one gate makes the "go" writes that
//! let their requests leave, and one writer commits their outcomes, each in groups (one transaction per group).

use super::report::{MassRejected, Tally, log_changes, log_outcome};
use super::{At, Engine};
use crate::gateway::Gateway;
use crate::store::{Attempt, AttemptResult, Recorded, Store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, oneshot};

impl<S: Store, G: Gateway> Engine<S, G> {
    /// One of a round's senders: sends claimed attempts from the queue until it is closed and empty, or the engine
    /// stops (a charge already taken is still sent and recorded).
    /// A sender also stops if the outcome writer has failed (nothing more can be recorded).
    pub(super) async fn sender(
        self,
        queue: Arc<Queue>,
        tx: mpsc::Sender<Msg>,
        go: mpsc::Sender<Go>,
        n: Counts,
        at: At,
    ) {
        // However the sender ends (a panic included), the claimer is told, so it never waits for it forever.
        let _gone = SenderGone(queue.clone());
        while !self.stopping() {
            let Some(a) = queue.pop().await else { break };
            if self.stopping() {
                // Woken by a page pushed as the stop came: not sent, so released with the rest.
                queue.lock().0.push_front(a);
                break;
            }
            // The moment its request leaves is decided by the gate's write, which the gateway asks for right before
            // it sends (after any wait for a rate-limit turn or a token): refused if a cancel, a pause or a sync
            // voided it meanwhile, or its subscription no longer bills (then it is released, never sent).
            let id = a.id;
            let ask = async {
                let (reply, allowed) = oneshot::channel();
                let allowed = go.send(Go { id, reply }).await.is_ok() && allowed.await.unwrap_or(false);
                if allowed {
                    n.sent.fetch_add(1, Ordering::Relaxed);
                }
                allowed
            };
            self.metrics.beat();
            let Some(rec) = self.send(a, at, ask).await else {
                n.withdrawn.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if tx.send(Msg::Record(Box::new(rec))).await.is_err() {
                break;
            }
        }
    }

    /// Waits until the writer has committed everything sent to it so far (held rejections stay held).
    pub(super) async fn flush(&self, tx: &mpsc::Sender<Msg>) -> Result<()> {
        self.ask_writer(tx, false).await
    }

    /// At the end of a round: the writer judges the rejections it holds on the pass's answers so far (every
    /// subscription due at the round's start has been answered once), records them, and commits everything.
    pub(super) async fn end_round(&self, tx: &mpsc::Sender<Msg>) -> Result<()> {
        self.ask_writer(tx, true).await
    }

    async fn ask_writer(&self, tx: &mpsc::Sender<Msg>, judge: bool) -> Result<()> {
        let (ack, done) = oneshot::channel();
        tx.send(Msg::Flush { ack, judge }).await.ok().context("the outcome writer stopped")?;
        done.await.context("the outcome writer stopped")
    }
}

/// A round's senders. If the round ends early (an error), they are left to finish the charges they hold (never
/// cut off mid-request) and take nothing more; queued attempts stay pending, to be reconciled by the next pass.
pub(super) struct Senders {
    pub(super) queue: Arc<Queue>,
    pub(super) set: tokio::task::JoinSet<()>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.queue.take_all();
        self.queue.close();
        self.set.detach_all();
    }
}

/// Counts a sender out when it ends, however it ends.
pub(super) struct SenderGone(Arc<Queue>);

impl Drop for SenderGone {
    fn drop(&mut self) {
        self.0.senders.fetch_sub(1, Ordering::SeqCst);
        self.0.drained.notify_one();
    }
}

/// A round's claimed attempts waiting for a sender.
pub(super) struct Queue {
    state: Mutex<(VecDeque<Attempt>, bool)>,
    /// Senders wait here for attempts (or the close).
    filled: Notify,
    /// The claimer waits here for the queue to run low.
    drained: Notify,
    /// "Low": as many attempts as there are senders.
    low: usize,
    /// Senders still running.
    pub(super) senders: AtomicUsize,
}

impl Queue {
    pub(super) fn new(low: usize) -> Queue {
        Queue {
            state: Mutex::new((VecDeque::new(), false)),
            filled: Notify::new(),
            drained: Notify::new(),
            low,
            senders: AtomicUsize::new(0),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Attempt>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn push(&self, batch: Vec<Attempt>) {
        self.lock().0.extend(batch);
        self.filled.notify_waiters();
    }

    /// No more attempts will come: senders finish what is queued, then stop.
    pub(super) fn close(&self) {
        self.lock().1 = true;
        self.filled.notify_waiters();
    }

    pub(super) fn take_all(&self) -> Vec<Attempt> {
        self.lock().0.drain(..).collect()
    }

    pub(super) fn try_pop(&self) -> Result<Attempt, bool> {
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
    pub(super) async fn pop(&self) -> Option<Attempt> {
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
    pub(super) async fn wait_low(&self, stop: impl Fn() -> bool) {
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

/// What a round's senders did: sent, or withdrawn at the gate.
#[derive(Clone, Default)]
pub(super) struct Counts {
    pub(super) sent: Arc<AtomicUsize>,
    pub(super) withdrawn: Arc<AtomicUsize>,
}

/// A sender's request to let a claimed attempt's request leave, answered with whether it may.
pub(super) struct Go {
    id: i64,
    reply: oneshot::Sender<bool>,
}

/// The gate: the moment requests leave, decided in groups (one write transaction per group,
/// [`crate::store::Ledger::begin_send`]): each attempt is checked to be still wanted and its subscription still
/// billed, and stamped as sent at the real instant, before its sender may send it. A failed write lets nothing
/// leave (the attempts stay claimed; the next pass reconciles them).
pub(super) async fn gate<S: Store, G: Gateway>(
    engine: Engine<S, G>,
    mut rx: mpsc::Receiver<Go>,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(256);
    let mut failed = None;
    while rx.recv_many(&mut buf, 256).await > 0 {
        let ids: Vec<i64> = buf.iter().map(|g| g.id).collect();
        let at = engine.clock.now();
        // A config refused meanwhile (a SIGHUP during the pass), or a mass rejection: nothing more leaves; the
        // claims are released.
        // So is a lease not renewed in time (this daemon may be about to lose its work to another).
        let refused = engine.config_refused().is_some()
            || engine.mass_rejected()
            || !engine.may_send(crate::realtime::steady_ms());
        let allowed = match engine
            .db(move |s| if refused { s.release(&ids, now).map(|()| Vec::new()) } else { s.begin_send(&ids, &at, now) })
            .await
        {
            Ok(ids) => {
                engine.spend(ids.len());
                ids.into_iter().collect::<std::collections::HashSet<i64>>()
            }
            Err(e) => {
                tracing::error!(
                    event = "pass.error",
                    "cannot record that charges are being sent; not sending them: {e:#}"
                );
                failed = Some(e);
                Default::default()
            }
        };
        for g in buf.drain(..) {
            let _ = g.reply.send(allowed.contains(&g.id));
        }
    }
    failed.map_or(Ok(()), Err)
}

/// A message to the outcome writer.
pub(super) enum Msg {
    Record(Box<Recorded>),
    /// Acknowledged once everything sent before it is committed; `judge`: the held rejections are judged first
    /// (the end of a round).
    Flush {
        ack: oneshot::Sender<()>,
        judge: bool,
    },
}

/// Commits outcomes in groups (one transaction per group), then logs them.
///
/// Rejections are held until the pass ends (their attempts stay pending meanwhile, so nothing else is claimed for
/// their periods): if the whole pass's rejections are a mass rejection ([`crate::billing::rails::MassRejection`]),
/// they are recorded as withheld (their periods stay open, no status changes); otherwise as rejections, the
/// customer's. A pass whose answers so far are all rejections, many of them, stops sending at once.
pub(super) async fn writer<S: Store, G: Gateway>(
    engine: Engine<S, G>,
    mut rx: mpsc::Receiver<Msg>,
    now: DateTime<Utc>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(512);
    let threshold = engine.cfg.limits.mass_rejection;
    let mut held: Vec<Recorded> = Vec::new();
    // Answers of the pass so far other than the held rejections: paid, declined, mismatched, and rejections already
    // judged the customers'.
    let mut answers = 0usize;
    let mut rejected_so_far = 0usize;
    loop {
        let open = rx.recv_many(&mut buf, 512).await > 0;
        let mut batch = Vec::with_capacity(buf.len());
        let mut acks = Vec::new();
        let mut judge = !open;
        for m in buf.drain(..) {
            match m {
                Msg::Record(r) if matches!(r.result, AttemptResult::Rejected { .. }) => held.push(*r),
                Msg::Record(r) => {
                    answers += matches!(
                        r.result,
                        AttemptResult::Paid { .. } | AttemptResult::Declined { .. } | AttemptResult::Mismatch { .. }
                    ) as usize;
                    batch.push(*r)
                }
                Msg::Flush { ack, judge: j } => {
                    judge |= j;
                    acks.push(ack)
                }
            }
        }
        // Judged at the end of each round (on the pass's answers so far: every subscription due at the round's start
        // has been answered once) and when the pass ends; in between, only when every answer so far is a rejection
        // and there are many of them (then nothing more is sent).
        let answered = answers + held.len();
        let rejected = rejected_so_far + held.len();
        let tripped =
            if judge { threshold.tripped(rejected, answered) } else { threshold.beyond_doubt(rejected, answered) };
        if tripped {
            engine.mass_rejected.store(true, Ordering::SeqCst);
        }
        let mass = engine.mass_rejected();
        if mass && !open {
            let example = held.first().map(|r| match &r.result {
                AttemptResult::Rejected { reason } => reason.clone(),
                _ => String::new(),
            });
            let mass = MassRejected {
                rejected: held.len(),
                answers: answered,
                example: example.unwrap_or_default(),
                file: engine.cfg.file.display().to_string(),
            };
            tracing::error!(
                event = "pass.mass_rejection",
                rejected = mass.rejected,
                answers = mass.answers,
                mass_rejection_count = threshold.count,
                mass_rejection_percent = threshold.percent,
                "pass.mass_rejection: {mass}"
            );
            tally.mass_rejection = Some(mass);
            batch.extend(held.drain(..).map(|mut r| {
                if let AttemptResult::Rejected { reason } = &r.result {
                    r.result =
                        AttemptResult::Withheld { reason: format!("mass rejection (not the customer's): {reason}") };
                    // Not the dunning policy's final action: the period waits for a later pass.
                    r.decision = crate::billing::dunning::Decision::Hold;
                }
                r
            }));
        } else if judge && !mass {
            // Below the threshold: the customers' own rejections, recorded as such (the dunning policy applies). They
            // stay counted: the pass's later rejections are judged with them.
            rejected_so_far += held.len();
            answers += held.len();
            batch.append(&mut held);
        }
        if !batch.is_empty() {
            let (mut batch, changes, fenced) = engine
                .db(move |s| {
                    let (changes, fenced) = s.record_fenced(&batch, now)?;
                    Ok((batch, changes, fenced))
                })
                .await?;
            // Fenced off (another daemon took them over): not this daemon's outcomes to count or log.
            batch.retain(|r| !fenced.contains(&r.attempt.id));
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
        if !open {
            return Ok(tally);
        }
    }
}
