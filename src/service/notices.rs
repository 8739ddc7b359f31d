//! `billd run`'s receiver of i'mport's notifications (issue 26): `POST /iamport/notice` on `[notices] listen`, answered at once; a bounded queue of distinct notifications, settled after the answer by `Engine::settle_notice`.
//!
//! The body (JSON or a form: `imp_uid`, `merchant_uid`, `status`) is unsigned, so it is never believed: it only
//! says which payment to look up. What the receiver bounds, so that no sender (i'mport, or anyone who can reach the
//! port) can make billd do unbounded work: the connections and their age ([`serve_bounded`]), the body
//! ([`MAX_BODY`]), the notifications admitted and not yet settled ([`QUEUE`], each once: a duplicate of one
//! admitted is answered 200 and dropped), and how many are settled at once ([`WORKERS`]: so at most that many
//! gateway lookups at a time). Log lines name the imp_uid and merchant_uid, only once they are ids
//! billd may log (never a card number, never a secret); a refused body is never quoted.

use crate::clock::BillingClock;
use crate::engine::Engine;
use crate::engine::notices::{Notice, Noticed};
use crate::gateway::Gateway;
use crate::gateway::redact::Redactor;
use crate::service::metrics::{BIND_RETRY, serve_bounded};
use crate::store::Store;
use axum::http::{HeaderMap, StatusCode, header};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{error, info, warn};

/// The path notifications are posted to.
pub const PATH: &str = "/iamport/notice";
/// The largest body read (i'mport's are under a hundred bytes): a larger one is answered 413, unread.
pub const MAX_BODY: usize = 8 * 1024;
/// Notifications admitted and not yet settled, at most (queued, being settled, or waiting for their charge's
/// sender): beyond it a notification is answered 503 (i'mport, if its resends are on, sends it again later; the
/// charge is settled by its own lookup anyway).
pub const QUEUE: usize = 1024;
/// Notifications settled at once, at most: so at most this many gateway lookups of notifications at a time.
pub const WORKERS: usize = 2;
/// The first wait before a notification whose charge is still pending is looked at again (doubling, up to
/// [`WAIT_STEP_MAX`]).
const WAIT_FIRST: Duration = Duration::from_millis(200);
const WAIT_STEP_MAX: Duration = Duration::from_secs(5);
/// How often at most a line says notifications were refused because the queue is full.
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Reads a notification's body: JSON (an object) or a form (`application/x-www-form-urlencoded`), as the content
/// type says (without one: JSON, else a form). `imp_uid` must be a plain identifier billd may look up and log
/// (holding nothing like a card number), and `merchant_uid` an id billd could have sent; `status` (optional) a short
/// lowercase word; `cancellation_id` (optional) a plain identifier. Other fields are ignored. `Err`: why it is
/// refused, never quoting it.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Notice, String> {
    let kind = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let fields: Vec<(String, String)> = match kind.as_deref() {
        Some("application/json") => json_fields(body)?,
        Some("application/x-www-form-urlencoded") => form_fields(body),
        None => json_fields(body).or_else(|_| Ok::<_, String>(form_fields(body)))?,
        Some(_) => return Err("the content type is neither JSON nor a form".into()),
    };
    let field = |name: &str| -> Result<Option<&str>, String> {
        let mut values = fields.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("{name} is given twice"));
        }
        Ok(first)
    };
    let imp_uid = field("imp_uid")?.ok_or("no imp_uid")?;
    let merchant_uid = field("merchant_uid")?.ok_or("no merchant_uid")?;
    if !Redactor::default().plain_id(imp_uid) {
        return Err("the imp_uid is not a plain identifier (1-80 letters, digits, _ - .)".into());
    }
    // One with a run of 13 or more digits is an id billd may have sent (`charge-key --merchant-uid order-2026…`):
    // taken, and logged only masked (`Notice::shown_merchant_uid`), since it could be a card number.
    if crate::ids::refusal(merchant_uid, crate::ids::CUSTOMER_UID_MAX).is_some() {
        return Err("the merchant_uid is not an id billd could have sent".into());
    }
    let status = field("status")?.unwrap_or("");
    if status.len() > 20 || !status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err("the status is not a short lowercase word".into());
    }
    let cancellation_id = field("cancellation_id")?;
    if cancellation_id.is_some_and(|id| !Redactor::default().plain_id(id)) {
        return Err("the cancellation_id is not a plain identifier".into());
    }
    Ok(Notice {
        imp_uid: imp_uid.to_owned(),
        merchant_uid: merchant_uid.to_owned(),
        status: status.to_owned(),
        cancellation_id: cancellation_id.map(str::to_owned),
    })
}

/// The string fields of a JSON object (other values are not fields billd reads).
fn json_fields(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| "the body is not a JSON object".to_string())?;
    Ok(map.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned()))).collect())
}

fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A notification admitted, with what is known of it so far.
struct Item {
    notice: Notice,
    /// The payment as an earlier look found it (the charge was still pending then).
    looked: Option<crate::gateway::Payment>,
    /// When it was admitted, and how many times its charge was found pending.
    since: Instant,
    waits: u32,
}

/// What the receiver admitted and not yet settled.
pub struct Inbox {
    /// Every notification admitted and not yet done (its imp_uid, merchant_uid, status and cancellation_id: an
    /// approval and a cancel of one payment, or two cancels, are different notifications): a duplicate is not
    /// admitted, and their number bounds the queue.
    open: Mutex<HashSet<Notice>>,
    tx: mpsc::UnboundedSender<Item>,
    refused_full: AtomicU64,
    full_logged: Mutex<Option<Instant>>,
}

/// What the receiver did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queued,
    /// The same notification is already queued or being settled.
    Duplicate,
    /// [`QUEUE`] notifications are admitted and not yet settled.
    Full,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    /// An empty inbox, and the receiving end its worker takes notifications from.
    fn new() -> (Arc<Inbox>, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox =
            Inbox { open: Mutex::default(), tx, refused_full: AtomicU64::new(0), full_logged: Mutex::default() };
        (Arc::new(inbox), rx)
    }

    /// Admits a notification unless the same one is open or [`QUEUE`] are.
    pub fn admit(&self, notice: Notice) -> Admission {
        let mut open = lock(&self.open);
        if open.contains(&notice) {
            return Admission::Duplicate;
        }
        if open.len() >= QUEUE {
            return Admission::Full;
        }
        open.insert(notice.clone());
        drop(open);
        let _ = self.tx.send(Item { notice, looked: None, since: Instant::now(), waits: 0 });
        Admission::Queued
    }

    /// The notification is settled (or given up): the same one may be admitted again.
    fn done(&self, n: &Notice) {
        lock(&self.open).remove(n);
    }

    /// Counts a notification refused for a full queue; says so at most every [`FULL_LOG_EVERY`].
    fn refused_full(&self) {
        let n = self.refused_full.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = lock(&self.full_logged);
        if last.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
            *last = Some(Instant::now());
            warn!(
                event = "notice.busy",
                refused = n,
                "notice.busy: {QUEUE} notifications are waiting to be settled; further ones are answered 503 ({n} so \
                 far); their charges are settled by their own lookups"
            );
        }
    }
}

/// Serves `POST /iamport/notice` on `addr` and settles what it admits with the engine `engines` holds (replaced on a
/// reload), at the billing instant `clock` gives. A port that cannot be bound never stops billing: an ERROR line,
/// and another try every [`BIND_RETRY`].
pub async fn run<S: Store, G: Gateway>(addr: SocketAddr, engines: watch::Receiver<Engine<S, G>>, clock: BillingClock) {
    let (inbox, rx) = Inbox::new();
    tokio::spawn(work(inbox.clone(), rx, engines, clock));
    let mut said = false;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if !said => {
                said = true;
                error!(event = "notices.error", address = %addr,
                    "notices.error: cannot bind notices.listen {addr}: {e}; billing goes on, and i'mport's \
                     notifications are not taken (charges are settled by their own lookups); trying again every {} s",
                    BIND_RETRY.as_secs());
            }
            Err(_) => {}
        }
        tokio::time::sleep(BIND_RETRY).await;
    };
    info!(event = "notices.listening", address = %addr, "notices.listening: POST {PATH}");
    if let Err(e) = serve_bounded(listener, router(inbox), "notices").await {
        error!(event = "notices.error", "the notifications' receiver stopped: {e}");
    }
}

/// The one route.
pub fn router(inbox: Arc<Inbox>) -> axum::Router {
    axum::Router::new().route(PATH, axum::routing::post(receive)).with_state(inbox)
}

/// Answers at once: 200 once the notification is admitted (or is a duplicate of one), 400 for a body that is not a
/// notification, 413 for one too large, 503 when the queue is full. Nothing is looked up before answering.
async fn receive(
    axum::extract::State(inbox): axum::extract::State<Arc<Inbox>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, &'static str) {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        warn!(event = "notice.refused", "notice.refused: a body larger than {MAX_BODY} bytes, or cut off; not read");
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large\n");
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let notice = match parse(content_type, &bytes) {
        Ok(n) => n,
        Err(why) => {
            warn!(event = "notice.refused", reason = %why, "notice.refused: not a notification billd can read");
            return (StatusCode::BAD_REQUEST, "not a notification\n");
        }
    };
    let (imp_uid, merchant_uid, status) = (notice.imp_uid.clone(), notice.shown_merchant_uid(), notice.status.clone());
    match inbox.admit(notice) {
        Admission::Queued => {
            // Quoted (`?`): the notification is unsigned, and its words must not read as fields of the line.
            info!(event = "notice.received", imp_uid = ?imp_uid, merchant_uid = ?merchant_uid, status = ?status,
                "notice.received: looked up after this answer");
            (StatusCode::OK, "ok\n")
        }
        Admission::Duplicate => (StatusCode::OK, "ok (already queued)\n"),
        Admission::Full => {
            inbox.refused_full();
            (StatusCode::SERVICE_UNAVAILABLE, "busy\n")
        }
    }
}

/// Settles admitted notifications, [`WORKERS`] at a time. One whose charge is still pending (its request in flight)
/// is looked at again shortly, for as long as that request may take and a minute more; then it is left to the
/// charge's own lookups.
async fn work<S: Store, G: Gateway>(
    inbox: Arc<Inbox>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    engines: watch::Receiver<Engine<S, G>>,
    clock: BillingClock,
) {
    let workers = Arc::new(Semaphore::new(WORKERS));
    while let Some(item) = rx.recv().await {
        let Ok(permit) = workers.clone().acquire_owned().await else { return };
        let engine = engines.borrow().clone();
        if engine.stopping() {
            return;
        }
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let n = item.notice.clone();
            let shown = n.shown_merchant_uid();
            let (imp_uid, merchant_uid) = (n.imp_uid.as_str(), shown.as_str());
            match engine.settle_notice(&n, item.looked.clone(), clock.now()).await {
                Ok(Noticed::Wait(p)) if item.since.elapsed() < patience(&engine) => {
                    drop(permit);
                    let wait = WAIT_FIRST.saturating_mul(1 << item.waits.min(8)).min(WAIT_STEP_MAX);
                    tokio::time::sleep(wait).await;
                    let again = Item { looked: p, waits: item.waits + 1, ..item };
                    if inbox.tx.send(again).is_err() {
                        inbox.done(&n);
                    }
                    return;
                }
                Ok(Noticed::Wait(_)) => info!(
                    event = "notice.ignored",
                    imp_uid,
                    merchant_uid,
                    reason = "its charge is still pending (its request in flight); left to its sender and its lookups",
                    "notice.ignored"
                ),
                Ok(Noticed::Settled(what)) => {
                    info!(event = "notice.settled", imp_uid, merchant_uid, "notice.settled: {what}")
                }
                Ok(Noticed::Ignored(why)) => info!(event = "notice.ignored", imp_uid, merchant_uid, reason = %why,
                    "notice.ignored"),
                Err(e) => error!(
                    event = "notice.error",
                    imp_uid,
                    merchant_uid,
                    "notice.error: nothing recorded; the charge is settled by its own lookups: {e:#}"
                ),
            }
            inbox.done(&n);
            drop(permit);
        });
    }
}

/// How long a notification waits for its pending charge to be answered: the longest its request may take (twice
/// the gateway timeout) and a minute more.
fn patience<S: Store, G: Gateway>(engine: &Engine<S, G>) -> Duration {
    2 * engine.config().gateway.timeout + Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_is_read_from_json_or_a_form() {
        let want = Notice {
            imp_uid: "imp_123".into(),
            merchant_uid: "billd-s1-0".into(),
            status: "paid".into(),
            cancellation_id: None,
        };
        let json = br#"{"imp_uid":"imp_123","merchant_uid":"billd-s1-0","status":"paid","other":1}"#;
        assert_eq!(parse(Some("application/json; charset=utf-8"), json), Ok(want.clone()));
        assert_eq!(parse(None, json), Ok(want.clone()));
        let form = b"imp_uid=imp_123&merchant_uid=billd-s1-0&status=paid";
        assert_eq!(parse(Some("application/x-www-form-urlencoded"), form), Ok(want.clone()));
        assert_eq!(parse(None, form), Ok(want.clone()));
        let cancel = b"imp_uid=imp_123&merchant_uid=billd-s1-0&status=paid&cancellation_id=c_1";
        assert_eq!(parse(None, cancel), Ok(Notice { cancellation_id: Some("c_1".into()), ..want }));
        let korean = "imp_uid=imp_1&merchant_uid=%EC%A3%BC%EB%AC%B8-1".as_bytes();
        assert_eq!(parse(None, korean).unwrap().merchant_uid, "주문-1");
    }

    #[test]
    fn what_billd_could_not_look_up_or_log_is_refused_unquoted() {
        let card = "4242424242424242";
        for body in [
            format!(r#"{{"imp_uid":"{card}","merchant_uid":"m-1"}}"#),
            r#"{"imp_uid":"../payments","merchant_uid":"m-1"}"#.to_string(),
            r#"{"imp_uid":"imp_1","merchant_uid":"m\u001b[2J"}"#.to_string(),
            r#"{"imp_uid":"imp_1","merchant_uid":"m-1","status":"PAID\n"}"#.to_string(),
            format!(r#"{{"imp_uid":"imp_1","merchant_uid":"m-1","cancellation_id":"{card}"}}"#),
            r#"{"imp_uid":1,"merchant_uid":"m-1"}"#.to_string(),
            r#"{"merchant_uid":"m-1"}"#.to_string(),
            "imp_uid=imp_1&imp_uid=imp_2&merchant_uid=m-1".to_string(),
            "[1,2]".to_string(),
        ] {
            let why = parse(None, body.as_bytes()).expect_err(&body);
            assert!(!why.contains(card) && !why.contains("imp_1"), "{why}");
        }
        assert!(parse(Some("text/plain"), br#"{"imp_uid":"imp_1","merchant_uid":"m-1"}"#).is_err());
    }

    /// Notices review F3: a merchant_uid with a run of 13 or more digits (an order number with a timestamp, which
    /// `charge-key --merchant-uid` accepts) was refused, so its charge waited for its lookups. It is taken, and shown
    /// in log lines with its digits masked (it could be a card number: the body is unsigned).
    #[test]
    fn a_merchant_uid_with_a_long_run_of_digits_is_taken_and_logged_masked() {
        let n = parse(None, br#"{"imp_uid":"imp_1","merchant_uid":"order-20261207123456789","status":"paid"}"#)
            .expect("taken");
        assert_eq!(n.merchant_uid, "order-20261207123456789");
        let shown = n.shown_merchant_uid();
        assert!(!shown.contains("20261207123456789") && shown.starts_with("order-"), "{shown}");
        let card = parse(None, br#"{"imp_uid":"imp_1","merchant_uid":"4242424242424242"}"#).unwrap();
        assert!(!card.shown_merchant_uid().contains("4242424242424242"));
        let plain = parse(None, br#"{"imp_uid":"imp_1","merchant_uid":"billd-s1-0"}"#).unwrap();
        assert_eq!(plain.shown_merchant_uid(), "billd-s1-0");
    }

    #[tokio::test]
    async fn a_body_too_large_or_unreadable_is_refused_before_anything_is_queued() {
        let (inbox, mut rx) = Inbox::new();
        let post = |body: Vec<u8>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            receive(axum::extract::State(inbox.clone()), headers, axum::body::Body::from(body))
        };
        let big = format!(r#"{{"imp_uid":"imp_1","merchant_uid":"m-1","pad":"{}"}}"#, " ".repeat(MAX_BODY));
        assert_eq!(post(big.into_bytes()).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(post(b"{".to_vec()).await.0, StatusCode::BAD_REQUEST);
        assert!(rx.try_recv().is_err(), "something was queued");
        assert_eq!(post(br#"{"imp_uid":"imp_1","merchant_uid":"m-1"}"#.to_vec()).await.0, StatusCode::OK);
        assert_eq!(rx.try_recv().unwrap().notice.imp_uid, "imp_1");
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_the_queue_is_bounded() {
        let (inbox, mut rx) = Inbox::new();
        let n = |i: usize| Notice {
            imp_uid: format!("imp_{i}"),
            merchant_uid: "m-1".into(),
            status: "paid".into(),
            cancellation_id: None,
        };
        assert_eq!(inbox.admit(n(0)), Admission::Queued);
        assert_eq!(inbox.admit(n(0)), Admission::Duplicate);
        // Another merchant_uid with the same imp_uid is another notification (a forged one cannot crowd out the
        // real one), and so is a cancel of the payment whose approval is being settled.
        let other = Notice { merchant_uid: "m-2".into(), ..n(0) };
        assert_eq!(inbox.admit(other), Admission::Queued);
        let cancel = Notice { status: "cancelled".into(), cancellation_id: Some("c_1".into()), ..n(0) };
        assert_eq!(inbox.admit(cancel), Admission::Queued);
        for i in 1..QUEUE - 2 {
            assert_eq!(inbox.admit(n(i)), Admission::Queued);
        }
        assert_eq!(inbox.admit(n(QUEUE)), Admission::Full);
        let first = rx.recv().await.unwrap();
        assert_eq!(first.notice, n(0));
        inbox.done(&first.notice);
        assert_eq!(inbox.admit(n(0)), Admission::Queued, "a settled one frees its place and may come again");
        assert_eq!(inbox.admit(n(QUEUE)), Admission::Full);
    }
}
