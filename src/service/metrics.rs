//! The metrics listener: serves the engine's counters at `/metrics` and the health check at `/healthz`.

use crate::engine::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Connections the metrics listener serves at once. One more is accepted and closed at once (so slow or idle clients
/// can neither hold more file descriptors nor fill the kernel's backlog ahead of a health check).
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this; a half-sent request, or a keep-alive connection idle this long, is
/// closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Any connection is closed after this long, whatever it is doing (a body trickled in byte by byte).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);

/// Serves `/metrics` and `/healthz` until the task is dropped. `/healthz` is 200 while the loop beats within
/// `stale_after`, else 503. Slow clients cannot stall billing by taking file descriptors: at most
/// [`MAX_CONNECTIONS`] connections are served at once (one more is closed at once), each must send its headers
/// within [`HEADER_READ_TIMEOUT`], and none lives longer than [`MAX_CONNECTION_AGE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    stale_after: Duration,
) -> std::io::Result<()> {
    let app = router(metrics, stale_after);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(event = "metrics.error", "metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: closed at once
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_CONNECTION_AGE, conn).await;
        });
    }
}

/// The routes: `/metrics` and `/healthz`.
fn router(metrics: std::sync::Arc<Metrics>, stale_after: Duration) -> axum::Router {
    use axum::{Router, http::StatusCode, routing::get};
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
                        let why = "mass rejection: the gateway rejected most charges of the last pass (see the \
                                   pass.mass_rejection log line); billd stopped sending and tries again later\n";
                        (StatusCode::SERVICE_UNAVAILABLE, why.to_string())
                    } else if since <= stale_after {
                        (StatusCode::OK, format!("ok: scheduler loop alive ({}s ago)\n", since.as_secs()))
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, format!("stale: no progress for {}s\n", since.as_secs()))
                    }
                }
            }),
        )
}
