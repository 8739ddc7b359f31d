//! The webhook delivery service: sends the outbox's deliverable events to `[webhooks] url`, signed, at least once,
//! in order per subscription and in parallel across them, with its own HTTP client, off the charging path.

use super::body::render;
use super::schedule::after_failure;
use super::sign;
use crate::config::{self, Config, WebhookSecret};
use crate::engine::metrics::Metrics;
use crate::store::{Delivery, DeliveryAttempt, OutboxEvent, Store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many deliverable events one read returns at most.
const ROUND: usize = 256;
/// How long `billd tick` delivers at most (or twice `webhooks.timeout`, if longer).
pub const TICK_BUDGET: Duration = Duration::from_secs(60);
/// While deliveries are out, how often the outbox is looked at again for new events.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// How often at most the backlog gauges are read while a round's deliveries are out.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// What delivery needs from the config, read once (a reload builds a new one).
#[derive(Clone)]
pub struct Settings {
    /// Where and how events are sent; `None`: webhooks are off (events are kept, then given up after `max_age`).
    pub send: Option<Sending>,
    pub max_age: chrono::Duration,
    /// How long a delivered or given-up event is kept.
    pub retain: chrono::Duration,
    /// The billing time zone (instants in `data` are written with its offset, as the listings write them).
    pub tz: Tz,
    /// The dunning policy's retries (a subscription's `retries_left`).
    pub retries: usize,
}

/// `[webhooks] url` and what sending there takes.
#[derive(Clone)]
pub struct Sending {
    pub url: String,
    pub secret: WebhookSecret,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl Settings {
    /// The settings of `cfg`, its secret read now.
    pub fn of(cfg: &Config) -> Result<Settings> {
        let hooks = cfg.webhooks.as_ref();
        let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let send = match hooks {
            None => None,
            Some(h) => Some(Sending {
                url: h.url.to_string(),
                secret: h.secret.resolve().map_err(anyhow::Error::msg)?,
                timeout: h.timeout,
                concurrency: h.concurrency,
            }),
        };
        Ok(Settings {
            send,
            max_age: age(hooks.map_or(config::WEBHOOK_DEFAULT_MAX_AGE, |h| h.max_age)),
            retain: age(hooks.map_or(config::WEBHOOK_DEFAULT_RETAIN, |h| h.retain)),
            tz: cfg.billing.clock.timezone,
            retries: cfg.dunning.retry_after.len(),
        })
    }
}

/// Prunes the events delivered or given up more than `retain` ago; with webhooks off, gives up the events older than
/// `max_age` that were never sent (turned on later, webhooks send only what is recent; the rest can be replayed).
pub async fn housekeep<S: Store>(store: &Arc<Mutex<S>>, settings: &Settings, now: DateTime<Utc>) -> Result<()> {
    let (retain, max_age, off) = (settings.retain, settings.max_age, settings.send.is_none());
    let (pruned, expired) = db(store, move |s| {
        let expired =
            if off { s.expire_unsent(now - max_age, "not sent: webhooks are off ([webhooks] url)", now)? } else { 0 };
        Ok((s.prune_outbox(now - retain)?, expired))
    })
    .await?;
    if pruned + expired > 0 {
        tracing::info!(
            event = "webhook.housekeeping",
            pruned,
            expired,
            "webhook.housekeeping: {pruned} old event(s) pruned, {expired} never sent given up"
        );
    }
    Ok(())
}

/// Delivery with its settings and its own HTTP client (one connection pool for the life of the settings).
pub struct Deliverer {
    pub settings: Settings,
    client: Option<reqwest::Client>,
}

impl Deliverer {
    /// The delivery of `cfg`: its secret read now (an error names where it came from, never the secret).
    pub fn new(cfg: &Config) -> Result<Deliverer> {
        let settings = Settings::of(cfg)?;
        let client = settings.send.as_ref().map(client).transpose()?;
        Ok(Deliverer { settings, client })
    }

    /// `billd tick`'s delivery, on `store`: housekeeping, then the events deliverable at `now`, each tried at most
    /// once, for at most [`TICK_BUDGET`] or twice `timeout` (the rest stay pending: never lost, sent by the next tick
    /// or the daemon).
    pub async fn once<S: Store>(&self, store: S, metrics: &Metrics, now: DateTime<Utc>) -> Result<Round> {
        let store = Arc::new(Mutex::new(store));
        housekeep(&store, &self.settings, now).await?;
        let Some(sending) = &self.settings.send else {
            return self.deliver_due(&store, metrics, || now, || false).await;
        };
        let budget = TICK_BUDGET.max(sending.timeout * 2);
        let round = match tokio::time::timeout(budget, self.deliver_due(&store, metrics, || now, || false)).await {
            Ok(round) => round?,
            Err(_) => {
                tracing::warn!(
                    event = "webhook.round",
                    "webhook.round: stopped after {budget:?} (the app is slow or \
                    does not answer); the events not delivered are sent by the next tick or the daemon"
                );
                Round::default()
            }
        };
        if round != Round::default() {
            tracing::info!(
                event = "webhook.round",
                delivered = round.delivered,
                retried = round.retried,
                gave_up = round.gave_up,
                "webhook.round: {} delivered, {} to be tried again, {} given up",
                round.delivered,
                round.retried,
                round.gave_up
            );
        }
        Ok(round)
    }

    /// [`deliver_due`] with these settings (nothing when webhooks are off). `now`: the billing clock, read at each
    /// step (events written meanwhile, by a pass, are delivered in the same call); `stop`: read at each step, true
    /// to stop sending (what is out is answered and recorded first).
    pub async fn deliver_due<S: Store>(
        &self,
        store: &Arc<Mutex<S>>,
        metrics: &Metrics,
        now: impl Fn() -> DateTime<Utc>,
        stop: impl Fn() -> bool,
    ) -> Result<Round> {
        match &self.client {
            Some(c) => deliver_due(store, c, &self.settings, metrics, now, stop).await,
            None => Ok(Round::default()),
        }
    }
}

/// The delivery service's own client: its own connection pool and timeout, and no redirects (a 3xx is a failed
/// delivery: the signed request goes only where it was configured to).
fn client(settings: &Sending) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Never through a proxy from the environment (HTTP_PROXY, ALL_PROXY): the signed events go straight to the
        // configured url, as the gateway's requests do.
        .no_proxy()
        .user_agent(concat!("billd/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the webhook HTTP client")
}

/// What a round of deliveries did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Round {
    pub delivered: usize,
    /// Failed attempts to be tried again.
    pub retried: usize,
    /// Failed attempts given up (their `max_age` passed).
    pub gave_up: usize,
}

/// Delivers every event deliverable at `now` (billing clock), `concurrency` at a time, until none is: an event
/// delivered makes the next one of its subscription deliverable; a failed one waits for its retry. Each event is
/// tried at most once per call. A pipeline, not rounds: an app that never answers holds back only its own
/// subscription's events (up to `timeout`), never another's. The app never waits on the database: the next page of
/// deliverable events is read while the last one's are sent, and the outcomes that come in while one transaction
/// is written are written together in the next (one commit for many; an outcome not written yet is an event sent
/// again after a crash, as at-least-once allows).
async fn deliver_due<S: Store>(
    store: &Arc<Mutex<S>>,
    client: &reqwest::Client,
    settings: &Settings,
    metrics: &Metrics,
    now: impl Fn() -> DateTime<Utc>,
    stop: impl Fn() -> bool,
) -> Result<Round> {
    let mut total = Round::default();
    let Some(sending) = &settings.send else {
        return Ok(total);
    };
    let concurrency = sending.concurrency.max(1);
    let mut tried = std::collections::HashSet::new();
    // Events read and not sent yet, each with the instant it was read at.
    let mut ready = std::collections::VecDeque::new();
    let mut inflight = futures::stream::FuturesUnordered::new();
    // Outcomes known and not written yet; the page being read (and when); the outcomes being written.
    let mut outcomes: Vec<DeliveryAttempt> = Vec::new();
    let mut reading: Option<(Task<Vec<OutboxEvent>>, DateTime<Utc>)> = None;
    let mut writing: Option<Task<Vec<DeliveryAttempt>>> = None;
    // Forward over the outbox by position. At its end, again from the start (not waiting for what is out) only if
    // something was settled (delivered or given up) since the last start: that makes the next event of its
    // stream deliverable, perhaps behind the cursor.
    let (mut after, mut at_end, mut settled_since_start) = (0, false, false);
    // The backlog gauges are read at the start and every few seconds while deliveries are out (an app that hangs
    // holds a round for its timeout: the gauges read 0 while 200 events waited).
    refresh_gauges(store, metrics, now()).await?;
    let mut gauged = std::time::Instant::now();
    let mut look_again = tokio::time::interval_at(tokio::time::Instant::now() + LOOK_AGAIN, LOOK_AGAIN);
    look_again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Told to stop (the settings changed: webhooks off, another url or secret): nothing more is sent; what is
        // out is answered and recorded first.
        let stopping = stop();
        while !stopping
            && inflight.len() < concurrency
            && let Some((e, at)) = ready.pop_front()
        {
            inflight.push(attempt(store, client, settings, sending, metrics, e, at));
        }
        // At the cursor's end with something settled since the last start: again from the start at once, without
        // waiting for what is still out (a hung app's request held every other subscription's next event, behind
        // the cursor, for its whole timeout). What is out or was tried is not read twice (`tried`).
        if !stopping && reading.is_none() && at_end && settled_since_start {
            (after, at_end, settled_since_start) = (0, false, false);
        }
        if !stopping && reading.is_none() && !at_end && ready.len() < concurrency {
            let at = now();
            reading = Some((blocking(store, move |s| s.deliverable(at, after, ROUND)), at));
        }
        if writing.is_none() && !outcomes.is_empty() {
            let (batch, at) = (std::mem::take(&mut outcomes), now());
            writing = Some(blocking(store, move |s| s.deliveries_attempted(&batch, at).map(|_| batch)));
        }
        if reading.is_none() && writing.is_none() && inflight.is_empty() && (ready.is_empty() || stopping) {
            // At the end (else a read would be under way), everything sent and written.
            break;
        }
        tokio::select! {
            page = async { (&mut reading.as_mut().expect("reading").0).await }, if reading.is_some() => {
                let (_, at) = reading.take().expect("reading");
                let page = page.context("database task panicked")??;
                at_end = page.len() < ROUND;
                if let Some(last) = page.last() {
                    after = last.position;
                }
                ready.extend(page.into_iter().filter(|e| tried.insert(e.id.clone())).map(|e| (e, at)));
            }
            batch = async { writing.as_mut().expect("writing").await }, if writing.is_some() => {
                writing = None;
                for a in batch.context("database task panicked")?? {
                    match a.outcome {
                        Delivery::Delivered => total.delivered += 1,
                        Delivery::RetryAt(..) => total.retried += 1,
                        Delivery::GaveUp(_) => total.gave_up += 1,
                    }
                    if !matches!(a.outcome, Delivery::RetryAt(..)) {
                        // Settled: the next event of its stream is deliverable (beyond the cursor, or behind it).
                        (at_end, settled_since_start) = (false, true);
                    }
                }
            }
            Some(taken) = inflight.next(), if !inflight.is_empty() => match taken? {
                Taken::Attempted(a) => outcomes.push(a),
                // No longer deliverable (a replay made an earlier event of its stream pending again, another
                // process tried it): left to a later read, from the start (the replayed ones are behind the cursor).
                Taken::Skipped(id) => {
                    tried.remove(&id);
                    (at_end, settled_since_start) = (false, true);
                }
            },
            // While some are out, look again for new events every second (a pass writes them; a slow app's
            // attempt must not hold them back).
            _ = look_again.tick() => {
                at_end = false;
                if gauged.elapsed() >= GAUGES_EVERY {
                    refresh_gauges(store, metrics, now()).await?;
                    gauged = std::time::Instant::now();
                }
            }
        }
    }
    refresh_gauges(store, metrics, now()).await?;
    Ok(total)
}

/// One attempt of `e`: its body (kept from its first attempt), sent signed; the outcome, to be recorded.
async fn attempt<S: Store>(
    store: &Arc<Mutex<S>>,
    client: &reqwest::Client,
    settings: &Settings,
    sending: &Sending,
    metrics: &Metrics,
    e: OutboxEvent,
    now: DateTime<Utc>,
) -> Result<Taken> {
    // Read ahead, perhaps a while ago: sent only if it is deliverable still (order per stream after a replay, and
    // no second sending of what another process just tried).
    let (id, tries) = (e.id.clone(), e.attempts);
    let still =
        blocking(store, move |s| s.still_deliverable(&id, tries, now)).await.context("database task panicked")??;
    if !still {
        return Ok(Taken::Skipped(e.id));
    }
    let body = match &e.body {
        Some(b) => b.clone(),
        None => render(&e, settings.tz, settings.retries),
    };
    let outcome = match send(client, sending, &e.id, &body).await {
        Ok(()) => Delivery::Delivered,
        Err(error) => after_failure(e.attempts, e.created_at, e.give_up_at, settings.max_age, now, error),
    };
    // (Test hook: the app has it, billd has not recorded it: a kill here delivers it again.)
    crate::failpoint::failpoint("webhook_after_send");
    log(&e, &outcome, metrics);
    Ok(Taken::Attempted(DeliveryAttempt { id: e.id, body, outcome }))
}

/// What became of an event taken from the events read ahead.
enum Taken {
    Attempted(DeliveryAttempt),
    /// Not deliverable any more: not sent.
    Skipped(String),
}

/// One line and one count per attempt.
fn log(e: &OutboxEvent, outcome: &Delivery, metrics: &Metrics) {
    match outcome {
        Delivery::Delivered => {
            metrics.webhooks_delivered.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(event = "webhook.delivered", id = %e.id, kind = %e.kind, "webhook.delivered");
        }
        Delivery::RetryAt(at, error) => {
            metrics.webhooks_retried.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = "webhook.retry", id = %e.id, kind = %e.kind, attempt = e.attempts + 1,
                next_attempt = %at.to_rfc3339(), "webhook.retry: {error}; next try at {at}");
        }
        Delivery::GaveUp(error) => {
            metrics.webhooks_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(event = "webhook.failed", id = %e.id, kind = %e.kind, attempts = e.attempts + 1,
                "webhook.failed: {error}; given up (max_age passed); `billd webhooks replay {}` sends it again",
                e.id);
        }
    }
}

/// Sets the backlog gauges from the outbox.
pub async fn refresh_gauges<S: Store>(store: &Arc<Mutex<S>>, metrics: &Metrics, now: DateTime<Utc>) -> Result<()> {
    let stats = db(store, |s| s.outbox_stats()).await?;
    metrics.webhook_backlog.store(stats.pending as i64, Ordering::Relaxed);
    let age = stats.oldest_pending.map_or(0, |t| (now - t).num_seconds().max(0));
    metrics.webhook_oldest_pending_seconds.store(age, Ordering::Relaxed);
    Ok(())
}

/// One POST of `body`, signed now (receivers compare the timestamp with their clock): `Err` with why it failed
/// (an HTTP status, a timeout, no connection), never with the answer's body or the URL.
async fn send(client: &reqwest::Client, settings: &Sending, id: &str, body: &str) -> Result<(), String> {
    let timestamp = Utc::now().timestamp();
    let signature = sign::signature(&settings.secret, id, timestamp, body.as_bytes());
    let answer = client
        .post(&settings.url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await;
    match answer {
        Ok(a) if a.status().is_success() => Ok(()),
        Ok(a) => Err(format!("HTTP {}", a.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("no answer within {:?}", settings.timeout)),
        Err(e) if e.is_connect() => Err("no connection".to_owned()),
        // With its causes (a status line or header the app got wrong, a connection it closed), never the URL.
        Err(e) => {
            let e = e.without_url();
            let mut why = format!("request failed: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            Err(why)
        }
    }
}

pub(crate) async fn db<S: Store, R: Send + 'static>(
    store: &Arc<Mutex<S>>,
    f: impl FnOnce(&mut S) -> Result<R> + Send + 'static,
) -> Result<R> {
    blocking(store, f).await.context("database task panicked")?
}

/// A database call running on its own thread.
type Task<R> = tokio::task::JoinHandle<Result<R>>;

/// Starts `f` on the store on a blocking thread (it runs to its end even if the task is dropped).
fn blocking<S: Store, R: Send + 'static>(
    store: &Arc<Mutex<S>>,
    f: impl FnOnce(&mut S) -> Result<R> + Send + 'static,
) -> Task<R> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
}
