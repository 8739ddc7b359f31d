//! HTTP surface: the i'mport V1 endpoints, request parsing and validation, the envelope, auth, rate limit, faults and `/__sandbox`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::{TokenStore, token_from_authorization};
use crate::config::{Fault, FaultRule, Latency, SandboxConfig};
use crate::faults::{Applied, FaultBook, RateWindow};
use crate::ledger::{
    Buyer, CancelRequest, CardInput, ChargeRequest, CustomerInfo, Ledger, LedgerEntry, MSG_NO_PAYMENT, Refusal,
    Sorting, Status,
};
use crate::server::ConnControl;

/// `user_agent` of payments whose request had none (what the real API records for API calls).
const NO_USER_AGENT: &str = "sorry_not_supported_user_agent";

/// Largest request body read (the real API's requests are a few hundred bytes).
const BODY_LIMIT: usize = 1 << 20;

/// Everything the handlers share.
pub(crate) struct AppState {
    imp_key: String,
    imp_secret: String,
    latency: Latency,
    seeds: Vec<crate::config::SeedCustomer>,
    initial_faults: Vec<FaultRule>,
    ledger: Mutex<Ledger>,
    tokens: Mutex<TokenStore>,
    faults: Mutex<FaultBook>,
    rate: Option<Mutex<RateWindow>>,
    started: Instant,
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
        let first_imp = rand::random_range(100_000_000_000u64..800_000_000_000);
        let state = AppState {
            ledger: Mutex::new(Ledger::new(first_imp)),
            tokens: Mutex::new(TokenStore::new(cfg.token_ttl)),
            faults: Mutex::new(FaultBook::new(cfg.faults.clone())),
            rate: cfg.rate_limit.map(|l| Mutex::new(RateWindow::new(l))),
            imp_key: cfg.imp_key,
            imp_secret: cfg.imp_secret,
            latency: cfg.latency,
            seeds: cfg.customers,
            initial_faults: cfg.faults,
            started: Instant::now(),
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
        .route("/payments/find/{merchant_uid}/{payment_status}", get(find_with_status))
        .route("/payments/findAll/{merchant_uid}", get(find_all))
        .route("/payments/findAll/{merchant_uid}/{payment_status}", get(find_all_with_status))
        .route("/payments/{imp_uid}", get(get_payment))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let api = authed
        .route("/users/getToken", post(get_token))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let control = Router::new()
        .route("/__sandbox/payments", get(sandbox_payments))
        .route("/__sandbox/faults", get(sandbox_faults).post(sandbox_add_fault).delete(sandbox_clear_faults))
        .route("/__sandbox/reset", post(sandbox_reset))
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

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal { http: 400, code: 1, message: message.into() }
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

// ---------------------------------------------------------------- request parameters

/// A request body (JSON or form) as a map of fields.
struct Params(Map<String, Value>);

impl Params {
    async fn read(headers: &HeaderMap, body: Body) -> Result<Params, Refusal> {
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|e| bad_request(format!("cannot read the request body: {e}")))?;
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
        if form {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&bytes).map_err(|e| bad_request(format!("malformed form body: {e}")))?;
            return Ok(Params(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Params(map)),
            Ok(_) => Err(bad_request("the request body must be a JSON object")),
            Err(e) => Err(bad_request(format!("malformed JSON body: {e}"))),
        }
    }

    /// A string field; numbers are accepted as their text, `null` and `""` count as absent.
    fn opt_str(&self, key: &str, max_chars: Option<usize>) -> Result<Option<String>, Refusal> {
        let s = match self.0.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(bad_request(format!("`{key}` must be a string"))),
        };
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(max) = max_chars {
            let n = s.chars().count();
            if n > max {
                return Err(bad_request(format!("`{key}` is {n} characters long; the maximum is {max}")));
            }
        }
        Ok(Some(s))
    }

    fn req_str(&self, key: &str, max_chars: Option<usize>) -> Result<String, Refusal> {
        self.opt_str(key, max_chars)?.ok_or_else(|| bad_request(format!("`{key}` is required")))
    }

    /// A number field; strings holding a number are accepted (form bodies).
    fn opt_num(&self, key: &str) -> Result<Option<f64>, Refusal> {
        let v = match self.0.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match v {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(bad_request(format!("`{key}` must be a number"))),
        }
    }

    /// A non-negative whole amount.
    fn opt_amount(&self, key: &str) -> Result<Option<i64>, Refusal> {
        match self.opt_num(key)? {
            None => Ok(None),
            Some(x) if x < 0.0 => Err(bad_request(format!("`{key}` must not be negative"))),
            Some(x) if x.fract() != 0.0 || x > 1e15 => Err(bad_request(format!(
                "`{key}` must be a whole amount (the sandbox handles whole currency units only)"
            ))),
            Some(x) => Ok(Some(x as i64)),
        }
    }

    fn opt_int(&self, key: &str, min: i64) -> Result<Option<i64>, Refusal> {
        match self.opt_num(key)? {
            None => Ok(None),
            Some(x) if x.fract() != 0.0 || x < min as f64 || x > 1e15 => {
                Err(bad_request(format!("`{key}` must be an integer of at least {min}")))
            }
            Some(x) => Ok(Some(x as i64)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, Refusal> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" || s == "0" || s.is_empty() => Ok(Some(false)),
            Some(_) => Err(bad_request(format!("`{key}` must be true or false"))),
        }
    }

    fn opt_enum(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, Refusal> {
        match self.opt_str(key, None)? {
            Some(v) if !allowed.contains(&v.as_str()) => {
                Err(bad_request(format!("`{key}` must be one of {}", allowed.join(", "))))
            }
            v => Ok(v),
        }
    }

    /// `custom_data` is documented as a string; objects are accepted and kept as JSON text.
    fn custom_data(&self) -> Option<String> {
        match self.0.get("custom_data") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }
}

fn buyer(p: &Params) -> Result<Buyer, Refusal> {
    Ok(Buyer {
        buyer_name: p.opt_str("buyer_name", Some(16))?,
        buyer_email: p.opt_str("buyer_email", Some(64))?,
        buyer_tel: p.opt_str("buyer_tel", Some(16))?,
        buyer_addr: p.opt_str("buyer_addr", Some(128))?,
        buyer_postcode: p.opt_str("buyer_postcode", Some(8))?,
    })
}

/// The fields `again` and `onetime` share, checked against the spec's types and lengths.
fn charge_request(p: &Params, headers: &HeaderMap, name_required: bool) -> Result<ChargeRequest, Refusal> {
    let merchant_uid = p.req_str("merchant_uid", Some(40))?;
    let amount = p.opt_amount("amount")?.ok_or_else(|| bad_request("`amount` is required"))?;
    if amount == 0 {
        return Err(bad_request("`amount` must be greater than 0"));
    }
    let name = if name_required { Some(p.req_str("name", Some(40))?) } else { p.opt_str("name", Some(40))? };
    if let Some(tax_free) = p.opt_amount("tax_free")?
        && tax_free > amount
    {
        return Err(bad_request("`tax_free` must not exceed `amount`"));
    }
    p.opt_amount("vat_amount")?;
    p.opt_amount("vat")?;
    for key in ["interest_free_by_merchant", "use_card_point"] {
        p.opt_bool(key)?;
    }
    for key in ["notice_url", "browser_ip", "bypass", "promotion_id"] {
        p.opt_str(key, None)?;
    }
    p.opt_enum("product_type", &["real", "digital"])?;
    p.opt_enum("cash_receipt_type", &["person", "company", "anonymous"])?;
    p.opt_int("product_count", 1)?;
    p.opt_str("channel_key", Some(55))?;
    if let Some(extra) = p.0.get("extra")
        && !matches!(extra, Value::Object(_) | Value::Null | Value::String(_))
    {
        return Err(bad_request("`extra` must be an object"));
    }
    Ok(ChargeRequest {
        merchant_uid,
        amount,
        currency: p.opt_str("currency", None)?.unwrap_or_else(|| "KRW".to_string()),
        name,
        buyer: buyer(p)?,
        custom_data: p.custom_data(),
        card_quota: p.opt_int("card_quota", 0)?.unwrap_or(0),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .filter(|ua| !ua.is_empty())
            .map_or_else(|| NO_USER_AGENT.to_string(), |ua| ua.chars().take(256).collect()),
        receipt_base: headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .map(|host| format!("http://{host}/__sandbox/receipts")),
    })
}

fn card_input(p: &Params) -> Result<CardInput, Refusal> {
    p.opt_str("cvc", None)?;
    Ok(CardInput {
        card_number: p.req_str("card_number", None)?,
        expiry: p.req_str("expiry", None)?,
        birth: p.opt_str("birth", None)?,
        pwd_2digit: p.opt_str("pwd_2digit", None)?,
    })
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

/// Runs a charge with its faults: Http500 and Garbage skip the charge; otherwise the charge is
/// recorded first, then latency, then a held or dropped response.
async fn charge(
    st: Shared,
    req: Request,
    process: impl FnOnce(&AppState, &Params, &HeaderMap) -> Result<crate::ledger::Payment, Refusal>,
) -> Response {
    let (parts, body) = req.into_parts();
    let p = match Params::read(&parts.headers, body).await {
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
        _ => reply(process(&st, &p, &parts.headers)),
    };
    sleep(st.latency.sample() + applied.extra_latency).await;
    match applied.outcome {
        Some(Fault::LoseResponseAfterCharge { hold }) => sleep(hold).await,
        Some(Fault::DropAfterCharge) => {
            if let Some(conn) = parts.extensions.get::<ConnControl>() {
                conn.drop_connection();
                std::future::pending::<()>().await;
            }
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
    reply(path_value(path).and_then(|m| do_find(&st, &m, None, q)))
}

async fn find_with_status(
    State(st): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
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
    reply(path_value(path).and_then(|m| do_find_all(&st, &m, None, q)))
}

async fn find_all_with_status(
    State(st): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    reply(path_value(path).and_then(|(m, s)| do_find_all(&st, &m, Some(&s), q)))
}

async fn cancel(State(st): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let p = Params::read(&parts.headers, body).await?;
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
        lock(&st.ledger).cancel(now_s(), req)
    }
    .await;
    reply(result)
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
