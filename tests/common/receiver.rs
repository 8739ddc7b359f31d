//! The merchant app in the webhook tests: a real HTTP server on 127.0.0.1 that verifies every delivery's Standard
//! Webhooks signature with `billd::webhooks::sign`, keeps each delivery as it arrived, and answers as told (a
//! script of statuses, then 200, 500, no answer at all, occasional 500s, some latency), or is down (its port
//! closed) and up again on the same port. A test file takes it with `#[path = "common/receiver.rs"] mod receiver;`
//! beside `mod common;` (not through `common`: every other test binary would build an HTTP server it never uses).
#![allow(dead_code)] // each test file uses its own part of it

use crate::common::{Rng, wait_for};
use billd::config::WebhookSecret;
use billd::webhooks::sign;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The secret the tests give billd (`BILLD_WEBHOOKS__SECRET`) and the receiver verifies with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One delivery as the receiver got it (recorded when it arrived, before any latency).
#[derive(Debug, Clone)]
pub struct Got {
    /// `webhook-id`.
    pub id: String,
    pub body: Value,
    /// The body exactly as sent.
    pub raw: String,
    pub verified: bool,
    /// The status it was answered with (0: never answered).
    pub status: u16,
}

impl Got {
    /// The event's subscription (`""` for none) and its sequence number.
    pub fn stream(&self) -> (String, u64) {
        (
            self.body["subscription_id"].as_str().unwrap_or_default().to_owned(),
            self.body["sequence"].as_u64().unwrap_or_default(),
        )
    }

    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

/// How the receiver answers once its script is empty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// 200.
    Ok,
    /// This status, every time.
    Status(u16),
    /// Never answers.
    Hang,
    /// 500 once in `n` deliveries (drawn from the receiver's seeded generator), else 200.
    Flaky(u64),
}

struct State {
    got: Vec<Got>,
    script: VecDeque<u16>,
    answer: Answer,
    /// Each answer is held back this many milliseconds, drawn in `min..=max`.
    latency_ms: (u64, u64),
    rng: Rng,
}

/// The receiver: answers each POST to `/hook` with the next status of its script (0: never answers), then as its
/// [`Answer`] says; never to an event of subscription `hang`.
pub struct Receiver {
    port: u16,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    rt: tokio::runtime::Runtime,
}

impl Receiver {
    /// A receiver answering 200 at once.
    pub fn start() -> Receiver {
        Receiver::seeded(1)
    }

    /// A receiver whose [`Answer::Flaky`] failures and latencies are drawn from `seed`.
    pub fn seeded(seed: u64) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let state = Arc::new(Mutex::new(State {
            got: Vec::new(),
            script: VecDeque::new(),
            answer: Answer::Ok,
            latency_ms: (0, 0),
            rng: Rng::new(seed),
        }));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Receiver { port, state, server: Mutex::new(None), rt };
        r.serve(listener);
        r
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let secret = WebhookSecret::parse(SECRET).unwrap();
                    let now = chrono::Utc::now().timestamp();
                    let (id, at, signature) = (h(sign::ID), h(sign::TIMESTAMP), h(sign::SIGNATURE));
                    let verified = sign::verify(&secret, &id, &at, &signature, &body, now).is_ok();
                    let raw = String::from_utf8_lossy(&body).into_owned();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let hang = body["subscription_id"] == "hang";
                    let (status, wait) = {
                        let mut s = state.lock().unwrap();
                        let status = match (hang, s.script.pop_front(), s.answer) {
                            (true, ..) => 0,
                            (false, Some(scripted), _) => scripted,
                            (false, None, Answer::Ok) => 200,
                            (false, None, Answer::Status(code)) => code,
                            (false, None, Answer::Hang) => 0,
                            (false, None, Answer::Flaky(n)) => {
                                if s.rng.below(n) == 0 {
                                    500
                                } else {
                                    200
                                }
                            }
                        };
                        let (min, max) = s.latency_ms;
                        let wait = min + s.rng.below(max.saturating_sub(min) + 1);
                        s.got.push(Got { id, body, raw, verified, status });
                        (status, wait)
                    };
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    if status == 0 {
                        std::future::pending::<()>().await;
                    }
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let server = self.rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        *self.server.lock().unwrap() = Some(server);
    }

    /// Closes its port: a delivery finds no one there (connection refused) until [`Receiver::up`].
    pub fn down(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
            let _ = self.rt.block_on(server);
        }
        let port = self.port;
        wait_for("the receiver's port closed", || std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    /// Listens again, on the same port.
    pub fn up(&self) {
        let addr = ("127.0.0.1", self.port);
        let listener = self.rt.block_on(tokio::net::TcpListener::bind(addr)).expect("the receiver's port again");
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every delivery so far, in the order they arrived.
    pub fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    /// (type, subscription, sequence) of what it got, in order.
    pub fn kinds(&self) -> Vec<(String, String, u64)> {
        self.got()
            .iter()
            .map(|g| {
                let (sub, n) = g.stream();
                (g.kind().to_owned(), sub, n)
            })
            .collect()
    }

    /// The next deliveries are answered with these statuses (0: no answer), in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.state.lock().unwrap().script.extend(statuses);
    }

    /// Forgets the scripted statuses not used yet.
    pub fn clear_script(&self) {
        self.state.lock().unwrap().script.clear();
    }

    /// How it answers once the script is empty.
    pub fn answer(&self, answer: Answer) {
        self.state.lock().unwrap().answer = answer;
    }

    /// Each answer is held back `min..=max` milliseconds.
    pub fn latency(&self, min: u64, max: u64) {
        self.state.lock().unwrap().latency_ms = (min, max);
    }
}
