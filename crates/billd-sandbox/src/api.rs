//! HTTP surface: the i'mport V1 endpoints, request parsing and validation, the envelope, auth, rate limit, faults and `/__sandbox`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;

use crate::auth::{TokenStore, token_from_authorization};
use crate::config::{Fault, FaultRule, Latency, SandboxConfig};
use crate::faults::{Applied, Delays, FaultBook, RateWindow};
use crate::ledger::{CancelRequest, CustomerInfo, Ledger, LedgerEntry, MSG_NO_PAYMENT, Refusal, Sorting, Status};
use crate::params::{Params, bad_request, card_input, charge_request};
use crate::requests::{Arrived, Endpoint, RequestLog, RequestLogEntry};
use crate::server::ConnControl;

/// Everything the handlers share.
pub(crate) struct AppState {
    imp_key: String,
    imp_secret: String,
    latency: Latency,
    lookup_latency: Latency,
    seeds: Vec<crate::config::SeedCustomer>,
    initial_faults: Vec<FaultRule>,
    ledger: Mutex<Ledger>,
    tokens: Mutex<TokenStore>,
    faults: Mutex<FaultBook>,
    rate: Option<Mutex<RateWindow>>,
    delays: Mutex<Delays>,
    /// Lock order: `requests` before `ledger` (never the other way round).
    requests: Mutex<RequestLog>,
    started: Instant,
    /// Posts i'mport's notifications (`notice_url`), if set.
    notifier: Option<crate::notices::Notifier>,
}

pub(crate) type Shared = Arc<AppState>;

/// Locks, recovering from a poisoned lock (the state stays usable after a panic elsewhere).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn now_s() -> i64 {
    now_ms() / 1000
}

impl AppState {
    /// Checks the configuration and builds the initial state (seeded keys, configured faults).
    pub(crate) fn new(cfg: SandboxConfig) -> anyhow::Result<AppState> {
        cfg.validate()?;
        let notifier =
            cfg.notice_url.as_deref().map(|url| crate::notices::Notifier::start(url, cfg.notice_format)).transpose()?;
        let first_imp = rand::random_range(100_000_000_000u64..800_000_000_000);
        let state = AppState {
            ledger: Mutex::new(Ledger::new(first_imp)),
            tokens: Mutex::new(TokenStore::new(cfg.token_ttl)),
            faults: Mutex::new(FaultBook::new(cfg.faults.clone())),
            rate: cfg.rate_limit.map(|l| Mutex::new(RateWindow::new(l))),
            requests: Mutex::new(RequestLog::default()),
            delays: Mutex::new(Delays::new(cfg.seed)),
            imp_key: cfg.imp_key,
            imp_secret: cfg.imp_secret,
            latency: cfg.latency,
            lookup_latency: cfg.lookup_latency,
            seeds: cfg.customers,
            initial_faults: cfg.faults,
            started: Instant::now(),
            notifier,
        };
        state.seed()?;
        Ok(state)
    }

    fn seed(&self) -> anyhow::Result<()> {
        let mut ledger = lock(&self.ledger);
        for s in &self.seeds {
            ledger
                .seed_key(now_s(), &s.customer_uid, &s.card_number)
                .map_err(|why| anyhow::anyhow!("seed customer {}: {why}", s.customer_uid))?;
        }
        Ok(())
    }

    pub(crate) fn ledger_entries(&self) -> Vec<LedgerEntry> {
        lock(&self.ledger).entries()
    }

    pub(crate) fn requests_in_progress(&self) -> usize {
        lock(&self.requests).in_progress()
    }

    pub(crate) fn request_entries(&self) -> Vec<RequestLogEntry> {
        lock(&self.requests).entries()
    }

    pub(crate) fn notice_entries(&self) -> Vec<crate::notices::NoticeLogEntry> {
        self.notifier.as_ref().map(|n| n.entries()).unwrap_or_default()
    }

    /// A charge was made: an approval is notified (an ordinary decline is not, as i'mport does).
    fn notify_paid(&self, made: &Result<crate::ledger::Payment, Refusal>) {
        if let (Some(n), Ok(p)) = (&self.notifier, made)
            && p.status == Status::Paid
        {
            n.notify(&p.imp_uid, &p.merchant_uid, "paid", None);
        }
    }

    /// Logs a request on arrival, classified against the ledger and the requests still in flight; it stays in
    /// flight until the returned mark is dropped.
    fn arrive(self: &Arc<Self>, endpoint: Endpoint, mut fields: Arrived) -> InFlight {
        let now = now_ms();
        let mut log = lock(&self.requests);
        let done = {
            let ledger = lock(&self.ledger);
            match endpoint {
                Endpoint::Cancel => {
                    match ledger.cancel_target(fields.imp_uid.as_deref(), fields.merchant_uid.as_deref()) {
                        Some((merchant_uid, customer_uid, fully_refunded)) => {
                            fields.merchant_uid = Some(merchant_uid);
                            fields.customer_uid = fields.customer_uid.or(customer_uid);
                            fully_refunded
                        }
                        None => false,
                    }
                }
                Endpoint::Again | Endpoint::Onetime => {
                    fields.merchant_uid.as_deref().is_some_and(|m| ledger.is_paid(m))
                }
            }
        };
        let merchant_uid = fields.merchant_uid.clone();
        log.arrive(now, endpoint, fields, done);
        InFlight { st: self.clone(), merchant_uid }
    }

    pub(crate) fn add_fault(&self, rule: FaultRule) {
        lock(&self.faults).add(rule);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn register_customer(&self, customer_uid: &str, card_number: &str) -> anyhow::Result<()> {
        if customer_uid.is_empty() || customer_uid.chars().count() > 80 {
            anyhow::bail!("customer_uid must be 1 to 80 characters");
        }
        lock(&self.ledger).seed_key(now_s(), customer_uid, card_number).map(|_| ()).map_err(|why| {
            anyhow::anyhow!("cannot register {customer_uid} with card {}: {why}", crate::cards::mask(card_number))
        })
    }

    /// Back to the state at start: no payments, the seeded keys, the configured faults.
    pub(crate) fn reset(&self) {
        *lock(&self.ledger) = Ledger::new(rand::random_range(100_000_000_000u64..800_000_000_000));
        *lock(&self.faults) = FaultBook::new(self.initial_faults.clone());
        lock(&self.requests).clear();
        lock(&self.delays).restart();
        if let Some(n) = &self.notifier {
            n.clear();
        }
        // Seeds were valid at start, so this cannot fail.
        let _ = self.seed();
    }
}

/// The whole application: API routes (rate-limited, most of them authenticated) and `/__sandbox`.
pub(crate) fn router(state: Shared) -> Router {
    let authed = Router::new()
        .route("/subscribe/customers/{customer_uid}", post(issue_customer).get(get_customer).delete(delete_customer))
        .route("/subscribe/payments/onetime", post(onetime))
        .route("/subscribe/payments/again", post(again))
        .route("/payments/cancel", post(cancel))
        .route("/payments/find/{merchant_uid}", get(find))
        .route("/payments/find/{merchant_uid}/", get(find))
        .route("/payments/find/{merchant_uid}/{payment_status}", get(find_with_status))
        .route("/payments/findAll/{merchant_uid}", get(find_all))
        .route("/payments/findAll/{merchant_uid}/", get(find_all))
        .route("/payments/findAll/{merchant_uid}/{payment_status}", get(find_all_with_status))
        .route("/payments/{imp_uid}", get(get_payment))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let api = authed
        .route("/users/getToken", post(get_token))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), log_request));
    let control = Router::new()
        .route("/__sandbox/payments", get(sandbox_payments))
        .route("/__sandbox/requests", get(sandbox_requests))
        .route("/__sandbox/faults", get(sandbox_faults).post(sandbox_add_fault).delete(sandbox_clear_faults))
        .route("/__sandbox/reset", post(sandbox_reset))
        .route("/__sandbox/notices", get(sandbox_notices))
        .route("/__sandbox/console/cancel", post(sandbox_console_cancel))
        .route("/__sandbox/receipts/{imp_uid}", get(sandbox_receipt));
    api.merge(control).fallback(not_found).with_state(state)
}

// ---------------------------------------------------------------- envelope

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    code: i64,
    message: Option<&'a str>,
    response: Option<T>,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

fn envelope<T: Serialize>(status: StatusCode, code: i64, message: Option<&str>, response: Option<T>) -> Response {
    match serde_json::to_vec(&Envelope { code, message, response }) {
        Ok(body) => json_response(status, body),
        Err(e) => {
            tracing::error!("cannot serialize a response: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `{code: 0, message: null, response}`.
fn ok<T: Serialize>(response: T) -> Response {
    envelope(StatusCode::OK, 0, None, Some(response))
}

fn refused(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.http).unwrap_or(StatusCode::BAD_REQUEST);
    envelope::<()>(status, r.code, Some(&r.message), None)
}

fn reply<T: Serialize>(result: Result<T, Refusal>) -> Response {
    match result {
        Ok(v) => ok(v),
        Err(r) => refused(r),
    }
}

fn not_found_refusal(message: impl Into<String>) -> Refusal {
    Refusal { http: 404, code: 1, message: message.into() }
}

fn unauthorized(message: &str) -> Response {
    envelope::<()>(StatusCode::UNAUTHORIZED, -1, Some(message), None)
}

async fn not_found() -> Response {
    refused(not_found_refusal("Not Found"))
}

// ---------------------------------------------------------------- middleware

/// A logged request's in-flight mark: until it is dropped, another request for the same merchant_uid is
/// logged as `in_flight`.
pub(crate) struct InFlight {
    st: Shared,
    merchant_uid: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(m) = &self.merchant_uid {
            lock(&self.st.requests).settled(m);
        }
    }
}

/// What [`log_request`] hands the handler: the body it read and the request's in-flight mark.
struct Arrival {
    params: Result<Params, Refusal>,
    in_flight: InFlight,
}

/// A request extension (which must be `Clone`) holding the [`Arrival`] until the handler takes it.
#[derive(Clone)]
struct ArrivalSlot(Arc<Mutex<Option<Arrival>>>);

/// Outermost layer: logs `again`, `onetime` and `cancel` on arrival (before the rate limit and the token check),
/// reading the body once for the log and the handler.
async fn log_request(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let endpoint = match (req.method() == Method::POST, req.uri().path()) {
        (true, "/subscribe/payments/again") => Endpoint::Again,
        (true, "/subscribe/payments/onetime") => Endpoint::Onetime,
        (true, "/payments/cancel") => Endpoint::Cancel,
        _ => return next.run(req).await,
    };
    let (mut parts, body) = req.into_parts();
    let params = Params::read(&parts.headers, body).await;
    let fields = match &params {
        Ok(p) => Arrived {
            merchant_uid: p.opt_str("merchant_uid", None).ok().flatten(),
            amount: p.opt_amount("amount").ok().flatten(),
            customer_uid: p.opt_str("customer_uid", None).ok().flatten(),
            imp_uid: if endpoint == Endpoint::Cancel { p.opt_str("imp_uid", None).ok().flatten() } else { None },
        },
        Err(_) => Arrived::default(),
    };
    let in_flight = st.arrive(endpoint, fields);
    parts.extensions.insert(ArrivalSlot(Arc::new(Mutex::new(Some(Arrival { params, in_flight })))));
    next.run(Request::from_parts(parts, Body::empty())).await
}

/// The body [`log_request`] read and the request's in-flight mark (the body itself if the request was not logged).
async fn arrived(parts: &axum::http::request::Parts, body: Body) -> (Result<Params, Refusal>, Option<InFlight>) {
    match parts.extensions.get::<ArrivalSlot>().and_then(|slot| lock(&slot.0).take()) {
        Some(a) => (a.params, Some(a.in_flight)),
        None => (Params::read(&parts.headers, body).await, None),
    }
}

async fn rate_limit(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(rate) = &st.rate {
        let second = st.started.elapsed().as_secs();
        let mut w = lock(rate);
        if !w.admit(second) {
            let limit = w.limit();
            drop(w);
            let mut r = envelope::<()>(
                StatusCode::TOO_MANY_REQUESTS,
                -1,
                Some(&format!("Too Many Requests (sandbox rate limit: {limit} requests per second)")),
                None,
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    }
    next.run(req).await
}

/// Accepts `Authorization: Bearer X`, `Authorization: X` and the legacy `X-ImpTokenHeader: X`.
async fn require_token(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let presented: Vec<&str> = [
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(token_from_authorization),
        req.headers().get("x-imptokenheader").and_then(|v| v.to_str().ok()).map(str::trim),
    ]
    .into_iter()
    .flatten()
    .collect();
    if presented.is_empty() {
        return unauthorized("Unauthorized: no access token (send Authorization: Bearer <token>)");
    }
    let now = now_ms();
    let valid = {
        let tokens = lock(&st.tokens);
        presented.iter().any(|t| tokens.is_valid(now, t))
    };
    if !valid {
        return unauthorized("Unauthorized: the access token is invalid or has expired");
    }
    next.run(req).await
}

// ---------------------------------------------------------------- auth endpoint

#[derive(Serialize)]
struct AuthAnnotation<'a> {
    access_token: &'a str,
    now: i64,
    expired_at: i64,
}

async fn get_token(State(st): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let p = match Params::read(&parts.headers, body).await {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let (key, secret) = match (p.opt_str("imp_key", None), p.opt_str("imp_secret", None)) {
        (Ok(Some(k)), Ok(Some(s))) => (k, s),
        _ => return unauthorized("imp_key, imp_secret 파라메터가 누락되었습니다."),
    };
    if key != st.imp_key || secret != st.imp_secret {
        return unauthorized("Unauthorized: wrong imp_key or imp_secret");
    }
    let now = now_ms();
    let token = lock(&st.tokens).issue(now, new_token_value);
    ok(AuthAnnotation { access_token: &token.value, now: now / 1000, expired_at: token.expires_at_ms / 1000 })
}

fn new_token_value() -> String {
    let bytes: [u8; 20] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- billing keys

fn path_value<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Refusal> {
    p.map(|Path(v)| v).map_err(|e| bad_request(format!("invalid path: {e}")))
}

fn customer_not_found(customer_uid: &str) -> Refusal {
    not_found_refusal(format!("요청하신 customer_uid({customer_uid})로 등록된 정보를 찾을 수 없습니다."))
}

async fn issue_customer(State(st): State<Shared>, path: Result<Path<String>, PathRejection>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let customer_uid = path_value(path)?;
        if customer_uid.chars().count() > 80 {
            return Err(bad_request("`customer_uid` is longer than 80 characters"));
        }
        let p = Params::read(&parts.headers, body).await?;
        let card = card_input(&p)?;
        p.opt_str("pg", Some(80))?;
        p.opt_str("channel_key", Some(55))?;
        p.opt_str("channel_group_id", Some(55))?;
        let info = CustomerInfo {
            customer_id: p.opt_str("customer_id", None)?,
            customer_name: p.opt_str("customer_name", Some(20))?,
            customer_tel: p.opt_str("customer_tel", Some(20))?,
            customer_email: p.opt_str("customer_email", Some(200))?,
            customer_addr: p.opt_str("customer_addr", Some(200))?,
            customer_postcode: p.opt_str("customer_postcode", Some(8))?,
        };
        lock(&st.ledger).issue_key(now_s(), &customer_uid, &card, info)
    }
    .await;
    let response = reply(result);
    sleep(st.latency.sample()).await;
    response
}

async fn get_customer(State(st): State<Shared>, path: Result<Path<String>, PathRejection>) -> Response {
    reply(
        path_value(path)
            .and_then(|uid| lock(&st.ledger).customer(&uid).cloned().ok_or_else(|| customer_not_found(&uid))),
    )
}

async fn delete_customer(State(st): State<Shared>, path: Result<Path<String>, PathRejection>) -> Response {
    reply(
        path_value(path).and_then(|uid| lock(&st.ledger).delete_customer(&uid).ok_or_else(|| customer_not_found(&uid))),
    )
}

// ---------------------------------------------------------------- charges

async fn again(State(st): State<Shared>, req: Request) -> Response {
    charge(st, req, |st, p, headers| {
        let customer_uid = p.req_str("customer_uid", Some(80))?;
        let req = charge_request(p, headers, true)?;
        lock(&st.ledger).again(now_s(), &customer_uid, req)
    })
    .await
}

async fn onetime(State(st): State<Shared>, req: Request) -> Response {
    charge(st, req, |st, p, headers| {
        let customer_uid = p.opt_str("customer_uid", Some(80))?;
        p.opt_str("pg", Some(80))?;
        p.opt_str("channelGroupId", Some(55))?;
        let card = card_input(p)?;
        let req = charge_request(p, headers, false)?;
        lock(&st.ledger).onetime(now_s(), customer_uid.as_deref(), &card, req)
    })
    .await
}

/// Runs a charge with its faults: Http500, Garbage and Html502 skip the charge; ChargeLater and
/// ChargeLaterRandom check it on arrival and make it after a delay, in a task of its own; otherwise the charge is
/// recorded first, then latency, then a held, dropped or hostile response (see `hostile`).
async fn charge(
    st: Shared,
    req: Request,
    process: impl FnOnce(&AppState, &Params, &HeaderMap) -> Result<crate::ledger::Payment, Refusal> + Send + 'static,
) -> Response {
    let (parts, body) = req.into_parts();
    let (params, mut in_flight) = arrived(&parts, body).await;
    let p = match params {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let customer_uid = match p.0.get("customer_uid") {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let applied: Applied = lock(&st.faults).take(customer_uid);
    let response = match &applied.outcome {
        Some(Fault::Http500) => envelope::<()>(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            Some("Internal Server Error (sandbox fault: http500, nothing was charged)"),
            None,
        ),
        Some(Fault::Garbage) => {
            let mut r =
                Response::new(Body::from("<html><body><h1>502 Bad Gateway</h1>sandbox fault: garbage</body></html>"));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
        Some(Fault::Html502) => crate::hostile::html_502(),
        Some(fault @ (Fault::ChargeLater { .. } | Fault::ChargeLaterRandom { .. })) => {
            let after = match fault {
                Fault::ChargeLaterRandom { max } => lock(&st.delays).draw(*max),
                Fault::ChargeLater { after } => *after,
                _ => Duration::ZERO,
            };
            let merchant_uid = p.0.get("merchant_uid").and_then(Value::as_str).unwrap_or_default().to_string();
            let arrival = lock(&st.ledger).check_on_arrival(&merchant_uid);
            match arrival {
                Err(r) => reply::<crate::ledger::Payment>(Err(r)),
                Ok(()) => {
                    // In a task of its own: the charge is made even if the client has gone meanwhile.
                    let (st, headers, mark) = (st.clone(), parts.headers.clone(), in_flight.take());
                    let made = tokio::spawn(async move {
                        sleep(after).await;
                        lock(&st.ledger).checked_on_arrival(&merchant_uid);
                        let made = process(&st, &p, &headers);
                        st.notify_paid(&made);
                        lock(&st.ledger).arrival_check_done(&merchant_uid);
                        drop(mark);
                        made
                    });
                    match made.await {
                        Ok(result) => reply(result),
                        Err(e) => envelope::<()>(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            -1,
                            Some(&format!("sandbox: the charge task failed: {e}")),
                            None,
                        ),
                    }
                }
            }
        }
        _ => {
            let made = process(&st, &p, &parts.headers);
            st.notify_paid(&made);
            reply(made)
        }
    };
    // Charged or refused: no longer in flight (a `charge_later` charge settles in its own task).
    drop(in_flight);
    sleep(st.latency.sample() + applied.extra_latency).await;
    match applied.outcome {
        Some(Fault::LoseResponseAfterCharge { hold }) => sleep(hold).await,
        Some(Fault::DropAfterCharge) => {
            if let Some(conn) = parts.extensions.get::<ConnControl>() {
                conn.drop_connection();
                std::future::pending::<()>().await;
            }
        }
        Some(f) if crate::hostile::mangles(&f) => {
            return crate::hostile::mangle(&f, response, parts.extensions.get::<ConnControl>().cloned()).await;
        }
        _ => {}
    }
    response
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

// ---------------------------------------------------------------- lookups and cancel

async fn get_payment(State(st): State<Shared>, path: Result<Path<String>, PathRejection>) -> Response {
    sleep(st.lookup_latency.sample()).await;
    reply(path_value(path).and_then(|imp_uid| {
        lock(&st.ledger).payment(&imp_uid).cloned().ok_or_else(|| not_found_refusal(MSG_NO_PAYMENT))
    }))
}

fn query_pairs(q: Option<String>) -> Result<Vec<(String, String)>, Refusal> {
    serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))
}

fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn status_segment(s: Option<&str>) -> Result<Option<Status>, Refusal> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => Status::parse(s)
            .map(Some)
            .ok_or_else(|| bad_request("payment_status must be one of ready, paid, failed, cancelled")),
    }
}

fn sorting(pairs: &[(String, String)]) -> Result<Sorting, Refusal> {
    match query_get(pairs, "sorting") {
        None => Ok(Sorting::default()),
        Some(s) => Sorting::parse(s)
            .ok_or_else(|| bad_request("sorting must be one of -started, started, -paid, paid, -updated, updated")),
    }
}

fn do_find(
    st: &AppState,
    merchant_uid: &str,
    status: Option<&str>,
    q: Option<String>,
) -> Result<crate::ledger::Payment, Refusal> {
    let pairs = query_pairs(q)?;
    let status = status_segment(status)?;
    let sorting = sorting(&pairs)?;
    lock(&st.ledger).find(merchant_uid, status, sorting).cloned().ok_or_else(|| not_found_refusal(MSG_NO_PAYMENT))
}

async fn find(State(st): State<Shared>, path: Result<Path<String>, PathRejection>, RawQuery(q): RawQuery) -> Response {
    sleep(st.lookup_latency.sample()).await;
    reply(path_value(path).and_then(|m| do_find(&st, &m, None, q)))
}

async fn find_with_status(
    State(st): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    sleep(st.lookup_latency.sample()).await;
    reply(path_value(path).and_then(|(m, s)| do_find(&st, &m, Some(&s), q)))
}

fn do_find_all(
    st: &AppState,
    merchant_uid: &str,
    status: Option<&str>,
    q: Option<String>,
) -> Result<crate::ledger::Paged, Refusal> {
    let pairs = query_pairs(q)?;
    let status = status_segment(status)?;
    let sorting = sorting(&pairs)?;
    let page = match query_get(&pairs, "page") {
        None => 1,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| bad_request("page must be an integer of at least 1"))?,
    };
    let limit = match query_get(&pairs, "limit") {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| bad_request("limit must be an integer from 1 to 1000"))?,
    };
    let paged = lock(&st.ledger).find_all(merchant_uid, status, sorting, page, limit);
    if paged.total == 0 {
        return Err(not_found_refusal(MSG_NO_PAYMENT));
    }
    Ok(paged)
}

async fn find_all(
    State(st): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    sleep(st.lookup_latency.sample()).await;
    reply(path_value(path).and_then(|m| do_find_all(&st, &m, None, q)))
}

async fn find_all_with_status(
    State(st): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    sleep(st.lookup_latency.sample()).await;
    reply(path_value(path).and_then(|(m, s)| do_find_all(&st, &m, Some(&s), q)))
}

async fn cancel(State(st): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (params, mut in_flight) = arrived(&parts, body).await;
    let result = async {
        let p = params?;
        let req = CancelRequest {
            imp_uid: p.opt_str("imp_uid", None)?,
            merchant_uid: p.opt_str("merchant_uid", None)?,
            amount: p.opt_amount("amount")?,
            checksum: p.opt_amount("checksum")?,
            reason: p.opt_str("reason", None)?,
        };
        p.opt_amount("tax_free")?;
        p.opt_amount("vat_amount")?;
        if req.imp_uid.is_none() && req.merchant_uid.is_none() {
            return Err(bad_request("one of `imp_uid` or `merchant_uid` is required"));
        }
        // The faults of cancels match the billing key of the payment the cancel names.
        let key = lock(&st.ledger).cancel_target(req.imp_uid.as_deref(), req.merchant_uid.as_deref()).and_then(|t| t.1);
        let applied = lock(&st.faults).take_cancel(key.as_deref());
        let Some(Fault::CancelLater { after }) = applied.outcome else {
            return Ok((lock(&st.ledger).cancel(now_s(), req), applied));
        };
        // Held, then made in a task of its own: made even if the client has gone meanwhile.
        let (st, mark) = (st.clone(), in_flight.take());
        let made = tokio::spawn(async move {
            sleep(after).await;
            let made = lock(&st.ledger).cancel(now_s(), req);
            drop(mark);
            made
        });
        let made = made.await.map_err(|e| Refusal {
            http: 500,
            code: -1,
            message: format!("sandbox: the cancel task failed: {e}"),
        })?;
        Ok((made, applied))
    }
    .await;
    drop(in_flight);
    let (result, applied) = match result {
        Ok((r, applied)) => (r, applied),
        Err(refusal) => (Err(refusal), Applied::default()),
    };
    sleep(applied.extra_latency).await;
    // The cancel is made (or refused); only its answer is lost.
    if applied.outcome == Some(Fault::DropAfterCancel)
        && let Some(conn) = parts.extensions.get::<ConnControl>()
    {
        conn.drop_connection();
        std::future::pending::<()>().await;
    }
    reply(result)
}

impl AppState {
    /// A cancel made outside the API's client (as an operator does in i'mport's console): `amount` `None` cancels
    /// the whole balance.
    /// i'mport posts a `cancelled` notification for it (a cancel through the API posts none).
    pub(crate) fn console_cancel(
        &self,
        imp_uid: &str,
        amount: Option<i64>,
        reason: &str,
    ) -> Result<crate::ledger::Payment, Refusal> {
        let req = CancelRequest {
            imp_uid: Some(imp_uid.to_owned()),
            amount,
            reason: Some(reason.to_owned()),
            ..Default::default()
        };
        let p = lock(&self.ledger).cancel(now_s(), req)?;
        if let Some(n) = &self.notifier {
            let id = p.cancel_history.last().map(|c| c.cancellation_id.as_str());
            n.notify(&p.imp_uid, &p.merchant_uid, "cancelled", id);
        }
        Ok(p)
    }
}

// ---------------------------------------------------------------- /__sandbox

fn plain_json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status, body),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn sandbox_payments(State(st): State<Shared>) -> Response {
    plain_json(StatusCode::OK, &st.ledger_entries())
}

async fn sandbox_requests(State(st): State<Shared>) -> Response {
    plain_json(StatusCode::OK, &st.request_entries())
}

async fn sandbox_faults(State(st): State<Shared>) -> Response {
    let rules = lock(&st.faults).rules().to_vec();
    plain_json(StatusCode::OK, &rules)
}

async fn sandbox_add_fault(State(st): State<Shared>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            st.add_fault(rule);
            sandbox_faults(State(st)).await
        }
        Err(e) => {
            plain_json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": format!("invalid fault rule: {e}") }))
        }
    }
}

async fn sandbox_clear_faults(State(st): State<Shared>) -> Response {
    st.clear_faults();
    sandbox_faults(State(st)).await
}

async fn sandbox_notices(State(st): State<Shared>) -> Response {
    plain_json(StatusCode::OK, &st.notice_entries())
}

/// `{"imp_uid": "...", "amount": 3000, "reason": "..."}` (`amount` omitted: the whole balance left): a cancel as an
/// operator makes it in i'mport's console, answered like `POST /payments/cancel`.
async fn sandbox_console_cancel(State(st): State<Shared>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConsoleCancel {
        imp_uid: String,
        amount: Option<i64>,
        #[serde(default)]
        reason: String,
    }
    match serde_json::from_slice::<ConsoleCancel>(&body) {
        Ok(c) => reply(st.console_cancel(&c.imp_uid, c.amount, &c.reason)),
        Err(e) => plain_json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": format!("invalid cancel: {e}") })),
    }
}

async fn sandbox_reset(State(st): State<Shared>) -> Response {
    st.reset();
    plain_json(StatusCode::OK, &serde_json::json!({ "reset": true }))
}

/// The page a payment's `receipt_url` points at.
async fn sandbox_receipt(State(st): State<Shared>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(imp_uid) = path_value(path) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(p) = lock(&st.ledger).payment(&imp_uid).cloned() else {
        return (StatusCode::NOT_FOUND, "no such payment\n").into_response();
    };
    let text = format!(
        "i'mport sandbox receipt (not a real sales slip)\n\nimp_uid:      {}\nmerchant_uid: {}\nname:         {}\namount:       {} {}\ncancelled:    {}\nstatus:       {}\ncard:         {} {}\napply_num:    {}\n",
        p.imp_uid,
        p.merchant_uid,
        p.name.as_deref().unwrap_or("-"),
        p.amount,
        p.currency,
        p.cancel_amount,
        p.status.as_str(),
        p.card_name,
        p.card_number,
        p.apply_num.as_deref().unwrap_or("-"),
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}
