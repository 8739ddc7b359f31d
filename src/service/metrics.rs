//! The metrics listener: serves the engine's counters at `/metrics` and the health check at `/healthz`.

use crate::engine::metrics::Metrics;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// Connections the metrics listener serves at once. A new connection beyond it closes the oldest one (a slow or idle
/// client: a request is answered in microseconds), so a new client, a health probe, is always served.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this; a half-sent request, or a keep-alive connection idle this long, is
/// closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Any connection is closed after this long, whatever it is doing (a body trickled in byte by byte).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);
/// How often billd tries again to bind `[metrics] listen` when it could not.
pub const BIND_RETRY: Duration = Duration::from_secs(10);

/// What `/healthz` judges and says: the loop is stale after `stale_after` without a beat; under simulated time, the
/// simulated instant is shown.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub stale_after: Duration,
    pub clock: crate::clock::BillingClock,
}

/// Binds `[metrics] listen`. A failure never stops billing: it is one `metrics.error` ERROR line, and
/// `metrics.listener_down` is set (systemd STATUS says so) until [`listen`] binds it.
pub async fn bind(addr: SocketAddr, metrics: &Metrics) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(event = "metrics.listening", address = %addr, "metrics.listening");
            Some(listener)
        }
        Err(e) => {
            metrics.listener_down.store(true, Ordering::Relaxed);
            tracing::error!(event = "metrics.error", address = %addr,
                "metrics.error: cannot bind metrics.listen {addr}: {e}; billing goes on without /metrics and \
                 /healthz; trying again every {} s", BIND_RETRY.as_secs());
            None
        }
    }
}

/// Serves `/metrics` and `/healthz` on `listener`; without one (see [`bind`]), tries to bind `addr` again every
/// [`BIND_RETRY`], quietly, and once it is bound logs it (one INFO line), clears `metrics.listener_down`, wakes
/// `changed` (for the STATUS line) and serves.
pub async fn listen(
    listener: Option<TcpListener>,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    changed: Arc<tokio::sync::Notify>,
) {
    let listener = match listener {
        Some(l) => l,
        None => loop {
            tokio::time::sleep(BIND_RETRY).await;
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    metrics.listener_down.store(false, Ordering::Relaxed);
                    tracing::info!(event = "metrics.listening", address = %addr,
                        "metrics.listening: bound metrics.listen {addr} at last");
                    changed.notify_one();
                    break l;
                }
                Err(e) => tracing::debug!("metrics.listen {addr}: still cannot bind: {e}"),
            }
        },
    };
    if let Err(e) = serve(listener, metrics, health).await {
        tracing::error!(event = "metrics.error", "the metrics server stopped: {e}");
    }
}

/// Serves `/metrics` and `/healthz` until the task is dropped. `/healthz` is 200 while the loop beats within
/// `health.stale_after`, else 503. Slow clients can neither stall billing by taking file descriptors nor keep a health
/// probe out ([`serve_bounded`]): at most [`MAX_CONNECTIONS`] connections are open at once (a new one closes the
/// oldest), each must send its headers within [`HEADER_READ_TIMEOUT`], and none lives longer than
/// [`MAX_CONNECTION_AGE`].
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Health) -> std::io::Result<()> {
    serve_bounded(listener, router(metrics, health), "metrics").await
}

/// Serves `app` on `listener` until the task is dropped, within the bounds every listener of billd keeps (the
/// metrics listener's, and the notifications' receiver's): at most [`MAX_CONNECTIONS`] connections open at once (a
/// new one closes the oldest), headers within [`HEADER_READ_TIMEOUT`], no connection older than
/// [`MAX_CONNECTION_AGE`]. `name` names the listener in its log lines (`{name}.error`).
pub async fn serve_bounded(listener: TcpListener, app: axum::Router, name: &'static str) -> std::io::Result<()> {
    let event = format!("{name}.error");
    // The open connections, oldest first, each with its id (to remove itself when it ends).
    let open: Arc<Mutex<VecDeque<(u64, AbortHandle)>>> = Arc::default();
    for id in 0u64.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(event = %event, "{name} listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        // Held while the task is spawned and listed, so that it cannot remove itself before it is listed.
        let mut list = open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.clone();
        let task = tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_CONNECTION_AGE, conn).await;
            mine.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
        });
        list.push_back((id, task.abort_handle()));
        while list.len() > MAX_CONNECTIONS {
            // Aborting the task drops its connection: the socket is closed.
            if let Some((_, oldest)) = list.pop_front() {
                oldest.abort();
            }
        }
        drop(list);
    }
    Ok(())
}

/// The routes: `/metrics` and `/healthz`.
fn router(metrics: Arc<Metrics>, Health { stale_after, clock }: Health) -> axum::Router {
    use axum::{Router, routing::get};
    let m1 = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    let (code, why) = health(&m, stale_after);
                    match clock {
                        // UTC, as in the log lines (the listener does not know the billing time zone's rules).
                        crate::clock::BillingClock::Simulated { .. } => {
                            (code, format!("{why}{}\n", clock.describe(chrono_tz::UTC)))
                        }
                        crate::clock::BillingClock::Wall => (code, why),
                    }
                }
            }),
        )
}

/// `/healthz`'s answer: 503 and why while billing is stopped or the loop stalls, else 200.
fn health(m: &Metrics, stale_after: Duration) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let since = m.since_beat();
    if m.config_refused.load(Ordering::Relaxed) {
        let why = "config refused: the config on disk was not applied (see the config.refused log \
                   line); nothing is charged until it is fixed or applied with `billd sync --force`\n";
        (StatusCode::SERVICE_UNAVAILABLE, why.to_string())
    } else if m.unauthorized.load(Ordering::Relaxed) {
        let why = "unauthorized: the gateway refuses gateway.imp_key and its imp_secret; nothing is \
                   charged until they are fixed\n";
        (StatusCode::SERVICE_UNAVAILABLE, why.to_string())
    } else if m.safety_stop.load(Ordering::Relaxed) {
        let why = "safety stop: limits.max_charges_per_pass tripped (see the pass.refused log line); \
                   nothing is charged until an operator raises the limit or runs `billd safety \
                   release`\n";
        (StatusCode::SERVICE_UNAVAILABLE, why.to_string())
    } else if m.mass_rejection.load(Ordering::Relaxed) {
        let why = "mass rejection: the gateway rejected limits.mass_rejection_count or more charges \
                   of the last pass, at least limits.mass_rejection_percent of its answers (see the \
                   pass.mass_rejection log line); they were withheld and billd tries again later\n";
        (StatusCode::SERVICE_UNAVAILABLE, why.to_string())
    } else if since <= stale_after {
        (StatusCode::OK, format!("ok: scheduler loop alive ({}s ago)\n", since.as_secs()))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("stale: no progress for {}s\n", since.as_secs()))
    }
}
