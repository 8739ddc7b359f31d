//! billd-sandbox: a local i'mport (PortOne V1) REST API server for demos, tests and benchmarks.
//!
//! It speaks the subset of the V1 API that a billing-key client needs — `getToken`, billing
//! keys, `again`, `onetime`, lookups and cancel — with the real envelope, status codes and
//! payment shape (checked against the official OpenAPI document in the tests), plus
//! deterministic test cards ([`cards`]), fault injection ([`Fault`]), a ledger of every
//! attempt ([`Sandbox::ledger`], `GET /__sandbox/payments`), a log of every charge and cancel request as it
//! arrived, saying whether it repeated a paid or in-flight merchant_uid ([`Sandbox::requests`],
//! `GET /__sandbox/requests`), and i'mport's notifications, posted to `notice_url` on approvals and console cancels
//! ([`Sandbox::notices`], `GET /__sandbox/notices`).
//!
//! In a test:
//!
//! ```no_run
//! use billd_sandbox::{Sandbox, SandboxConfig, cards};
//!
//! let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
//! sandbox.register_customer("cust_1", cards::APPROVE).unwrap();
//! let base = sandbox.base_url(); // point the client under test here
//! // ... charge cust_1 through `base`, then:
//! assert!(sandbox.ledger().iter().all(|p| p.status == "paid"));
//! ```
//!
//! From a binary, [`serve`] runs the server on a listener until a shutdown future completes.

#![warn(missing_docs)]

mod api;
mod auth;
pub mod cards;
mod config;
mod faults;
mod hostile;
mod ledger;
mod notices;
mod params;
mod requests;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::oneshot;

pub use config::{
    DEFAULT_IMP_KEY, DEFAULT_IMP_SECRET, DEFAULT_TOKEN_TTL, Fault, FaultRule, Latency, SandboxConfig, SeedCustomer,
    duration,
};
pub use ledger::LedgerEntry;
pub use notices::{NoticeFormat, NoticeLogEntry};
pub use requests::{AtArrival, Endpoint, RequestLogEntry};

/// Serves the sandbox on `listener` until `shutdown` completes (for the `billd sandbox` command).
///
/// In-flight requests get up to a second to finish after `shutdown`.
pub async fn serve(
    cfg: SandboxConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(api::AppState::new(cfg)?);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("i'mport sandbox listening on http://{addr}");
    }
    server::run(api::router(state), listener, shutdown).await
}

/// A sandbox running on its own thread and tokio runtime; usable from plain `#[test]` functions.
///
/// Dropping it (or [`Sandbox::shutdown`]) stops the server and waits for its thread.
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<api::AppState>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Starts a sandbox on `127.0.0.1` with a free port.
    pub fn start(cfg: SandboxConfig) -> anyhow::Result<Sandbox> {
        Sandbox::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a sandbox on `addr` (port 0 picks a free port).
    pub fn start_on(cfg: SandboxConfig, addr: SocketAddr) -> anyhow::Result<Sandbox> {
        let state = Arc::new(api::AppState::new(cfg)?);
        let std_listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind the sandbox to {addr}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("billd-sandbox")
            .enable_all()
            .build()
            .context("cannot start the sandbox's tokio runtime")?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = api::router(state.clone());
        let thread = std::thread::Builder::new()
            .name(format!("billd-sandbox-{}", addr.port()))
            .spawn(move || {
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                if let Err(e) = runtime.block_on(server::run(app, listener, shutdown)) {
                    tracing::error!("sandbox on {addr} stopped: {e:#}");
                }
            })
            .context("cannot spawn the sandbox thread")?;
        Ok(Sandbox { addr, state, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every payment attempt ever stored, in order (the same as `GET /__sandbox/payments`).
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state.ledger_entries()
    }

    /// Every `again`, `onetime` and `cancel` request in the order they arrived, each with what the sandbox
    /// already knew about its merchant_uid (the same as `GET /__sandbox/requests`; see [`AtArrival`]).
    pub fn requests(&self) -> Vec<RequestLogEntry> {
        self.state.request_entries()
    }

    /// How many logged requests are still being processed: arrived, their charge (or cancel) not yet made or
    /// refused, like a `charge_later` charge whose client has gone. A test that moves its client's clock ahead
    /// faster than real time waits for 0 first: by then the real gateway would have finished them.
    pub fn requests_in_progress(&self) -> usize {
        self.state.requests_in_progress()
    }

    /// Adds a fault rule (after the ones already active).
    pub fn add_fault(&self, rule: FaultRule) {
        self.state.add_fault(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// Registers (or replaces) a billing key for a card number, like
    /// `POST /subscribe/customers/{customer_uid}`; fails on an invalid card number.
    pub fn register_customer(&self, customer_uid: &str, card_number: &str) -> anyhow::Result<()> {
        self.state.register_customer(customer_uid, card_number)
    }

    /// Refunds a paid payment as an operator does in i'mport's console, outside any API client (`amount` `None`:
    /// the whole balance left): the payment's `cancel_amount` and `cancel_history` grow as for
    /// `POST /payments/cancel`, which this request does not go through (nor its request log). Fails as the API
    /// refuses such a cancel (a payment not paid, fully refunded already, or an amount above its balance). With a
    /// `notice_url`, a `cancelled` notification is posted, as i'mport posts one for a console cancel (the same as
    /// `POST /__sandbox/console/cancel`).
    pub fn refund_in_console(&self, imp_uid: &str, amount: Option<i64>, reason: &str) -> anyhow::Result<()> {
        self.state
            .console_cancel(imp_uid, amount, reason)
            .map(|_| ())
            .map_err(|r| anyhow::anyhow!("cancel of {imp_uid} refused: code {}: {}", r.code, r.message))
    }

    /// Every notification posted to `notice_url` so far, in order, with the receiver's answer (the same as
    /// `GET /__sandbox/notices`).
    pub fn notices(&self) -> Vec<NoticeLogEntry> {
        self.state.notice_entries()
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("addr", &self.addr).finish()
    }
}
