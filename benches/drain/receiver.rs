//! The merchant's app in the webhook phases: an HTTP server on 127.0.0.1, in the harness process, that answers
//! every delivery 200, at once or after a latency with at most a given number answered at a time, and keeps what
//! the figures need (distinct `webhook-id`s, when the first arrived and the last was answered, the most in progress).

use billd::config::WebhookSecret;
use billd::webhooks::sign;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret billd signs with (`BILLD_WEBHOOKS__SECRET`) in these phases.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    deliveries: usize,
    /// Deliveries whose signature did not verify (checked only by a receiver with a limit).
    unverified: usize,
    first_arrived: Option<Instant>,
    last_answered: Option<Instant>,
}

pub struct Receiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    peak: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    /// Answers 200 at once and checks only that a signature header is there (the phase measures billd, not the app).
    pub fn fast() -> Receiver {
        Receiver::start(None)
    }

    /// Answers each delivery 200 after `latency`, at most `concurrency` at a time (the others wait their turn, as
    /// behind an app's worker pool), and verifies every signature: the app's limit is `concurrency / latency`.
    pub fn limited(concurrency: usize, latency: Duration) -> Receiver {
        Receiver::start(Some((concurrency, latency)))
    }

    fn start(limit: Option<(usize, Duration)>) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (peak, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let permits = Arc::new(tokio::sync::Semaphore::new(limit.map_or(1, |(c, _)| c)));
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (s, p) = (seen.clone(), peak.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (seen, peak, busy, permits, secret) =
                    (s.clone(), p.clone(), busy.clone(), permits.clone(), secret.clone());
                async move {
                    let arrived = Instant::now();
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let id = h(sign::ID);
                    let ok = match limit {
                        None => h(sign::SIGNATURE).starts_with("v1,"),
                        Some(_) => {
                            let now = chrono::Utc::now().timestamp();
                            sign::verify(&secret, &id, &h(sign::TIMESTAMP), &h(sign::SIGNATURE), &body, now).is_ok()
                        }
                    };
                    {
                        let mut s = seen.lock().unwrap();
                        s.first_arrived.get_or_insert(arrived);
                        s.deliveries += 1;
                        s.unverified += usize::from(!ok);
                        s.ids.insert(id);
                    }
                    if let Some((_, latency)) = limit {
                        let _permit = permits.acquire().await.unwrap();
                        let now = busy.fetch_add(1, Ordering::Relaxed) + 1;
                        peak.fetch_max(now, Ordering::Relaxed);
                        tokio::time::sleep(latency).await;
                        busy.fetch_sub(1, Ordering::Relaxed);
                    }
                    seen.lock().unwrap().last_answered = Some(Instant::now());
                    axum::http::StatusCode::OK
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { port, seen, peak, _rt: rt }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Distinct events received.
    pub fn events(&self) -> usize {
        self.seen.lock().unwrap().ids.len()
    }

    /// Deliveries received (an event sent twice counts twice).
    pub fn deliveries(&self) -> usize {
        self.seen.lock().unwrap().deliveries
    }

    pub fn unverified(&self) -> usize {
        self.seen.lock().unwrap().unverified
    }

    /// From the first delivery's arrival to the last one's answer, in seconds.
    pub fn span_s(&self) -> f64 {
        let s = self.seen.lock().unwrap();
        match (s.first_arrived, s.last_answered) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// The most deliveries answered at once (a receiver with a limit only).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Waits until `n` distinct events have arrived, up to `limit`; whether they did.
    pub fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let t = Instant::now();
        while self.events() < n {
            if t.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}
