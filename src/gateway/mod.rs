//! i'mport V1 client: token cache, `again` and lookups, and the classification of every outcome.

pub mod card;
pub mod redact;

use crate::config::Secret;
use crate::gateway::redact::Redactor;
use serde::Deserialize;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// One charge of a billing key.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRequest {
    pub customer_uid: String,
    pub merchant_uid: String,
    pub amount: i64,
    pub currency: String,
    pub name: String,
}

/// What one `again` call established.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    /// Approved (HTTP 200, code 0, status paid, for this merchant_uid and amount).
    Paid { imp_uid: String },
    /// Declined by the card company (HTTP 200, code 0, status failed).
    Declined { imp_uid: Option<String>, reason: String },
    /// Refused by the gateway (code != 0): nothing charged.
    Rejected { code: i64, message: String },
    /// Trouble that is not a decline (no connection, 429, 5xx): to be confirmed by a lookup.
    Transient(String),
    /// The request may have been processed but the answer is missing or unreadable.
    Unknown(String),
}

/// A payment as a lookup returns it (only what billd needs).
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub imp_uid: String,
    pub merchant_uid: String,
    pub amount: f64,
    pub currency: Option<String>,
    pub customer_uid: Option<String>,
    pub status: String,
    pub fail_reason: Option<String>,
}

impl Payment {
    /// Why this payment is not the one billd asked for (`None`: it is): its amount, currency or billing key
    /// differs from the request's. `customer_uid`: the billing key charged (`None`: a key-in charge without one,
    /// so a payment made with a billing key is not it).
    pub fn differs_from(&self, amount: i64, currency: &str, customer_uid: Option<&str>) -> Option<String> {
        let mut why = Vec::new();
        if (self.amount - amount as f64).abs() > 0.000_1 {
            why.push(format!("amount {} (billd asked for {amount})", self.amount));
        }
        // The gateway's own currency and customer_uid are not quoted: they are its text, not cleaned.
        if self.currency.as_deref() != Some(currency) {
            why.push(format!("another currency (billd asked for {currency})"));
        }
        match customer_uid {
            Some(c) if self.customer_uid.as_deref() != Some(c) => {
                why.push(format!("another customer_uid (billd asked for {c})"))
            }
            // A key-in charge with no billing key: a payment made with one is not it.
            None if self.customer_uid.as_deref().is_some_and(|c| !c.is_empty()) => {
                why.push("a billing key (billd's was a key-in charge without one)".to_string())
            }
            _ => {}
        }
        (!why.is_empty()).then(|| {
            format!(
                "the gateway holds payment {} under merchant_uid {} with {}",
                self.imp_uid,
                self.merchant_uid,
                why.join(", ")
            )
        })
    }
}

/// What a lookup by merchant_uid established.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Payment),
    NotFound,
    /// The lookup itself failed; nothing can be concluded.
    Error(String),
}

/// Whether the gateway accepts billd's credentials (asked before a pass claims or sends anything).
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Accepted,
    /// The gateway refused them (HTTP 401/403 on the token request): a configuration error, not a charge outcome.
    Refused(String),
    /// No answer, or an unreadable one: nothing can be concluded (charges go on and are classified one by one).
    Unavailable(String),
}

/// The words of a refused token request (see [`Auth::Refused`]).
const CREDENTIALS_REFUSED: &str = "the gateway refused the credentials (gateway.imp_key and its imp_secret)";

/// The gateway operations the engine needs.
pub trait Gateway: Send + Sync + 'static {
    /// How long a request is given to answer: the quiet period before anything sent with it is looked at again
    /// (and so resent) is twice this.
    fn timeout(&self) -> std::time::Duration;
    /// `POST /subscribe/payments/again`, classified. Never retried internally except once after a 401.
    fn charge(&self, req: &ChargeRequest) -> impl Future<Output = ChargeOutcome> + Send;
    /// `GET /payments/find/{merchant_uid}/{status}`.
    fn find(&self, merchant_uid: &str, status: &str) -> impl Future<Output = Lookup> + Send;
    /// Gets (or reuses) an access token: whether the gateway accepts the credentials.
    fn authenticate(&self) -> impl Future<Output = Auth> + Send;
}

/// The i'mport REST client.
pub struct Iamport {
    http: reqwest::Client,
    /// `base_url` parsed once (request URLs are built from it).
    base: Option<reqwest::Url>,
    base_url: String,
    imp_key: String,
    imp_secret: Secret,
    timeout: Duration,
    token: Mutex<Option<Token>>,
    /// `{base_url}/subscribe/payments/again`, built once (a charge is the hot path of a billing day).
    again: Option<reqwest::Url>,
    /// `gateway.rate_limit`: every request waits for a permit (see [`Iamport::with_rate_limit`]).
    rate: Option<RateLimit>,
    /// The secret values this client sent (imp_secret, access tokens, a card's data): every string of an answer is
    /// cleaned of them, and of whatever else could be card data, before it leaves this module ([`Redactor::clean`]).
    sent: std::sync::RwLock<Redactor>,
}

/// A token bucket holding one request (no bursts: at most one request every 1/rate seconds, which never exceeds
/// the rate in any window); waiters queue in order on the mutex instead of all polling the bucket.
struct RateLimit {
    bucket: governor::DefaultDirectRateLimiter,
    queue: Mutex<()>,
}

#[derive(Clone)]
struct Token {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    message: Option<String>,
    response: Option<serde_json::Value>,
}

/// An envelope whose `response` stays raw JSON text, read straight into what billd needs (no `Value` tree: a
/// payment has some forty fields).
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    code: i64,
    message: Option<String>,
    #[serde(borrow)]
    response: Option<&'a serde_json::value::RawValue>,
}

/// An envelope with its payment, read in one pass (the same fields [`RawEnvelope`] reads, so it accepts no body
/// that the general path would refuse).
#[derive(Deserialize)]
struct PaymentEnvelope {
    code: i64,
    #[serde(rename = "message")]
    _message: Option<String>,
    response: PaymentBody,
}

/// The JSON body of an `again` request.
#[derive(serde::Serialize)]
struct AgainBody<'a> {
    customer_uid: &'a str,
    merchant_uid: &'a str,
    amount: i64,
    currency: &'a str,
    name: &'a str,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    now: i64,
    expired_at: i64,
}

#[derive(Deserialize)]
struct PaymentBody {
    imp_uid: String,
    merchant_uid: String,
    amount: f64,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    customer_uid: Option<String>,
    status: String,
    #[serde(default)]
    fail_reason: Option<String>,
}

/// Refresh this long before the server says the token expires (a tenth of short lifetimes).
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

enum Sent {
    Response(u16, String),
    Error(reqwest::Error),
}

impl Iamport {
    pub fn new(base_url: &str, imp_key: &str, imp_secret: Secret, timeout: Duration, concurrency: usize) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(concurrency)
            // i'mport answers in place; a payment request is never re-sent to another address (a 3xx answer is an
            // unknown outcome, settled by lookup). Without the redirect layer reqwest also parses each URL once less.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("billd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        let mut sent = Redactor::default();
        sent.sent_word(imp_secret.expose());
        let mut me = Iamport {
            http,
            base: reqwest::Url::parse(base_url.trim_end_matches('/')).ok(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            again: None,
            imp_key: imp_key.to_owned(),
            imp_secret,
            timeout,
            token: Mutex::new(None),
            rate: None,
            sent: std::sync::RwLock::new(sent),
        };
        me.again = me.base.is_some().then(|| me.url(&["subscribe", "payments", "again"]));
        me
    }

    /// Sends at most `per_second` requests per second (token, charge and lookup requests alike; `None`: no limit).
    pub fn with_rate_limit(mut self, per_second: Option<f64>) -> Self {
        self.rate = per_second.filter(|r| r.is_finite() && *r > 0.0).and_then(|r| {
            let period = Duration::from_secs_f64(1.0 / r).max(Duration::from_nanos(1));
            governor::Quota::with_period(period)
                .map(|q| RateLimit { bucket: governor::RateLimiter::direct(q), queue: Mutex::new(()) })
        });
        self
    }

    /// What this client has sent so far, to clean answers with.
    fn sent(&self) -> std::sync::RwLockReadGuard<'_, Redactor> {
        self.sent.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the secret fields of a request body before it leaves (a card's number, birth date and PIN digits,
    /// a channel key), so that an answer echoing them is cleaned of them.
    fn note_sent(&self, body: &serde_json::Map<String, serde_json::Value>) {
        let mut sent = self.sent.write().unwrap_or_else(|p| p.into_inner());
        for (key, value) in body {
            let Some(v) = value.as_str() else { continue };
            match key.as_str() {
                "card_number" | "birth" | "pwd_2digit" => sent.sent_digits(v),
                "channel_key" => sent.sent_word(v),
                _ => {}
            }
        }
    }

    /// Waits until the rate limit lets one more request leave.
    async fn permit(&self) {
        if let Some(rate) = &self.rate {
            let _turn = rate.queue.lock().await;
            rate.bucket.until_ready().await;
        }
    }

    /// A valid access token, fetching one if the cached one is near expiry (or `stale` was rejected).
    async fn token(&self, stale: Option<&Secret>) -> Result<Secret, String> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let rejected = stale.is_some_and(|s| s == &t.value);
            if !rejected && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let body = serde_json::json!({ "imp_key": self.imp_key, "imp_secret": self.imp_secret.expose() });
        self.permit().await;
        let resp = self
            .http
            .post(format!("{}/users/getToken", self.base_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("getToken: {}", describe(&e)))?;
        let status = resp.status().as_u16();
        let text = read_body(resp).await.map_err(|e| format!("getToken: {}", describe(&e)))?;
        if status == 401 || status == 403 {
            return Err(format!("getToken: HTTP {status}: {CREDENTIALS_REFUSED}"));
        }
        let env: Envelope = serde_json::from_str(&text)
            // No excerpt: a token answer, even a mangled one, may carry an access token.
            .map_err(|_| format!("getToken: HTTP {status} with an unreadable body ({} bytes)", text.len()))?;
        if status != 200 || env.code != 0 {
            // The refusal's words may echo the request, imp_secret included: cleaned like every gateway string.
            let message = self.sent().clean(&env.message.unwrap_or_default());
            return Err(format!("getToken: HTTP {status}, code {}: {message}", env.code));
        }
        let tok: TokenBody = env
            .response
            .and_then(|r| serde_json::from_value(r).ok())
            .ok_or_else(|| "getToken: the response has no access_token/now/expired_at".to_string())?;
        // Use the server's own clock: the lifetime is expired_at - now, whatever our clock says.
        let life = Duration::from_secs(tok.expired_at.saturating_sub(tok.now).max(0) as u64);
        self.sent.write().unwrap_or_else(|p| p.into_inner()).sent_token(&tok.access_token);
        let token = Token {
            value: Secret::new(tok.access_token),
            refresh_at: Instant::now() + life.saturating_sub(TOKEN_MARGIN),
        };
        *cached = Some(token.clone());
        Ok(token.value)
    }

    async fn send(&self, req: reqwest::RequestBuilder, token: &Secret) -> Sent {
        self.permit().await;
        match req.bearer_auth(token.expose()).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_body(resp).await {
                    Ok(t) => Sent::Response(status, t),
                    Err(e) => Sent::Error(e),
                }
            }
            Err(e) => Sent::Error(e),
        }
    }

    /// Sends an authenticated request, re-authenticating once on a 401.
    async fn authed(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Sent, String> {
        let token = self.token(None).await?;
        match self.send(build(), &token).await {
            Sent::Response(401, _) => {
                let fresh = self.token(Some(&token)).await?;
                Ok(self.send(build(), &fresh).await)
            }
            other => Ok(other),
        }
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = match &self.base {
            Some(base) => base.clone(),
            None => reqwest::Url::parse(&self.base_url).expect("base_url was validated with the config"),
        };
        url.path_segments_mut().expect("http(s) URLs have paths").pop_if_empty().extend(segments);
        url
    }
}

/// A parsed i'mport envelope, for the card commands: its message and every string of its response cleaned
/// ([`Redactor::clean`]; a `card_number` masked).
#[derive(Debug, Clone)]
pub struct ApiAnswer {
    pub status: u16,
    pub code: i64,
    pub message: Option<String>,
    pub response: Option<serde_json::Value>,
}

impl Iamport {
    /// An authenticated call (re-authenticating once on 401) whose answer is an envelope.
    pub async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<ApiAnswer, String> {
        if let Some(serde_json::Value::Object(fields)) = body {
            self.note_sent(fields);
        }
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let sent = self
            .authed(|| {
                let rb = self.http.request(method.clone(), url.clone());
                match body {
                    Some(b) => rb.json(b),
                    None => rb,
                }
            })
            .await?;
        let red = self.sent();
        match sent {
            Sent::Error(e) => Err(describe(&e)),
            Sent::Response(status, text) => {
                let env: Envelope = serde_json::from_str(&text)
                    .map_err(|_| format!("HTTP {status} with an unreadable body: {}", snippet(&red, &text)))?;
                Ok(ApiAnswer {
                    status,
                    code: env.code,
                    message: env.message.map(|m| red.clean(&m)),
                    response: env.response.map(|r| clean_value(r, &red)),
                })
            }
        }
    }

    /// `POST /subscribe/payments/onetime`: a key-in payment (with `customer_uid`, the card is also saved as a
    /// billing key), classified like a charge.
    pub async fn charge_once(
        &self,
        req: &ChargeRequest,
        card: &crate::gateway::card::Card,
        customer_uid: Option<&str>,
    ) -> ChargeOutcome {
        let mut body = card.request_fields();
        body.insert("merchant_uid".into(), req.merchant_uid.clone().into());
        body.insert("amount".into(), req.amount.into());
        body.insert("currency".into(), req.currency.clone().into());
        body.insert("name".into(), req.name.clone().into());
        if let Some(c) = customer_uid {
            body.insert("customer_uid".into(), c.into());
        }
        self.note_sent(&body);
        let body = serde_json::Value::Object(body);
        let url = self.url(&["subscribe", "payments", "onetime"]);
        match self.authed(|| self.http.post(url.clone()).json(&body)).await {
            Ok(sent) => classify_charge(sent, req, self.timeout, &self.sent()),
            Err(e) => ChargeOutcome::Transient(e),
        }
    }
}

impl Gateway for Iamport {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn authenticate(&self) -> Auth {
        match self.token(None).await {
            Ok(_) => Auth::Accepted,
            Err(e) if e.contains(CREDENTIALS_REFUSED) => Auth::Refused(e),
            Err(e) => Auth::Unavailable(e),
        }
    }

    async fn charge(&self, req: &ChargeRequest) -> ChargeOutcome {
        let body = AgainBody {
            customer_uid: &req.customer_uid,
            merchant_uid: &req.merchant_uid,
            amount: req.amount,
            currency: &req.currency,
            name: &req.name,
        };
        let url = self.again.clone().unwrap_or_else(|| self.url(&["subscribe", "payments", "again"]));
        let sent = match self.authed(|| self.http.post(url.clone()).json(&body)).await {
            Ok(s) => s,
            // No token: the charge request never left.
            Err(e) => return ChargeOutcome::Transient(e),
        };
        classify_charge(sent, req, self.timeout, &self.sent())
    }

    async fn find(&self, merchant_uid: &str, status: &str) -> Lookup {
        let url = self.url(&["payments", "find", merchant_uid, status]);
        let sent = match self.authed(|| self.http.get(url.clone())).await {
            Ok(s) => s,
            Err(e) => return Lookup::Error(e),
        };
        let red = self.sent();
        match sent {
            Sent::Error(e) => Lookup::Error(describe(&e)),
            Sent::Response(404, _) => Lookup::NotFound,
            Sent::Response(200, text) => match parse_payment(&text, &red) {
                Ok(Some(p)) if p.merchant_uid == merchant_uid => Lookup::Found(p),
                Ok(Some(p)) => Lookup::Error(format!(
                    "lookup of {merchant_uid} answered a payment for merchant_uid {}",
                    red.clean_to(&p.merchant_uid, 80)
                )),
                Ok(None) => Lookup::Error(format!("lookup answered no payment: {}", snippet(&red, &text))),
                Err(e) => Lookup::Error(e),
            },
            Sent::Response(status, text) => Lookup::Error(format!("lookup: HTTP {status}: {}", snippet(&red, &text))),
        }
    }
}

/// Parses an envelope carrying a payment: `Ok(None)` when code != 0. Its strings are cleaned (the merchant_uid is
/// compared with the one looked up by the caller, and quoted only cleaned); an imp_uid that is not a plain
/// identifier is refused.
fn parse_payment(text: &str, red: &Redactor) -> Result<Option<Payment>, String> {
    let env: RawEnvelope<'_> =
        serde_json::from_str(text).map_err(|_| format!("unreadable response body: {}", snippet(red, text)))?;
    if env.code != 0 {
        return Ok(None);
    }
    let p: PaymentBody =
        env.response.filter(|r| r.get() != "null").ok_or_else(|| "code 0 without a payment".to_string()).and_then(
            |r| {
                serde_json::from_str(r.get()).map_err(|e| {
                    format!("malformed payment ({}): {}", red.clean_to(&e.to_string(), 120), snippet(red, text))
                })
            },
        )?;
    if !red.plain_id(&p.imp_uid) {
        return Err(odd_imp_uid(&p.imp_uid, red));
    }
    Ok(Some(Payment {
        imp_uid: p.imp_uid,
        merchant_uid: p.merchant_uid,
        amount: p.amount,
        // Kept as they came, only to compare with what billd sent (never printed or stored: see
        // Payment::differs_from).
        currency: p.currency,
        customer_uid: p.customer_uid,
        status: red.clean_to(&p.status, 40),
        fail_reason: p.fail_reason.map(|r| red.clean(&r)),
    }))
}

/// Why an answer's imp_uid is refused (it is never stored or printed as it is).
fn odd_imp_uid(imp_uid: &str, red: &Redactor) -> String {
    format!("the answer's imp_uid {:?} is not a plain identifier; not recorded", red.clean_to(imp_uid, 40))
}

fn classify_charge(sent: Sent, req: &ChargeRequest, timeout: Duration, red: &Redactor) -> ChargeOutcome {
    let (status, text) = match sent {
        Sent::Error(e) if e.is_connect() => return ChargeOutcome::Transient(describe(&e)),
        Sent::Error(e) if e.is_timeout() => {
            return ChargeOutcome::Unknown(format!("no answer within {}", crate::config::duration::format(timeout)));
        }
        Sent::Error(e) => return ChargeOutcome::Unknown(describe(&e)),
        Sent::Response(s, t) => (s, t),
    };
    match status {
        401 => {
            return ChargeOutcome::Transient("HTTP 401 twice: the gateway refused the access token".into());
        }
        429 => return ChargeOutcome::Transient("HTTP 429: rate limited by the gateway".into()),
        500..=599 => return ChargeOutcome::Transient(format!("HTTP {status}: {}", snippet(red, &text))),
        _ => {}
    }
    let p = match serde_json::from_str::<PaymentEnvelope>(&text) {
        // The usual answer, read in one pass. Whatever this accepts, the general path below reads the same way.
        Ok(env) if env.code == 0 && status == 200 => env.response,
        _ => match read_charge_answer(status, &text, red) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        },
    };
    // A payment in another currency is not this charge either (settled later by lookup, as a mismatch).
    if p.currency.as_deref().is_some_and(|c| c != req.currency) {
        return ChargeOutcome::Unknown(format!(
            "the answer is for merchant_uid {} in another currency than {}",
            red.clean_to(&p.merchant_uid, 80),
            req.currency
        ));
    }
    if p.merchant_uid != req.merchant_uid || (p.amount - req.amount as f64).abs() > 0.000_1 {
        return ChargeOutcome::Unknown(format!(
            "the answer is for merchant_uid {} amount {}, not {} amount {}",
            red.clean_to(&p.merchant_uid, 80),
            p.amount,
            req.merchant_uid,
            req.amount
        ));
    }
    if matches!(p.status.as_str(), "paid" | "failed") && !red.plain_id(&p.imp_uid) {
        return ChargeOutcome::Unknown(odd_imp_uid(&p.imp_uid, red));
    }
    match p.status.as_str() {
        "paid" => ChargeOutcome::Paid { imp_uid: p.imp_uid },
        "failed" => ChargeOutcome::Declined {
            imp_uid: Some(p.imp_uid),
            reason: p
                .fail_reason
                .map(|r| red.clean(&r))
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "declined (no reason given)".into()),
        },
        other => ChargeOutcome::Unknown(format!("payment status {:?}", red.clean_to(other, 40))),
    }
}

/// An `again` answer that is not a plain payment: a refusal (code != 0) or something unreadable.
fn read_charge_answer(status: u16, text: &str, red: &Redactor) -> Result<PaymentBody, ChargeOutcome> {
    let env: RawEnvelope<'_> = serde_json::from_str(text).map_err(|_| {
        ChargeOutcome::Unknown(format!("HTTP {status} with an unreadable body: {}", snippet(red, text)))
    })?;
    if env.code != 0 {
        // The refusal's own words, cleaned (it may echo the request).
        let message = env.message.map(|m| red.clean(&m)).filter(|m| !m.trim().is_empty());
        return Err(ChargeOutcome::Rejected {
            code: env.code,
            message: message.unwrap_or_else(|| format!("HTTP {status}, code {}", env.code)),
        });
    }
    if status != 200 {
        return Err(ChargeOutcome::Unknown(format!("HTTP {status} with code 0: {}", snippet(red, text))));
    }
    match env.response.map(|r| serde_json::from_str(r.get())) {
        Some(Ok(p)) => Ok(p),
        _ => Err(ChargeOutcome::Unknown(format!("code 0 without a readable payment: {}", snippet(red, text)))),
    }
}

/// The most billd reads of one answer; i'mport's are a few KB.
pub const MAX_BODY: usize = 1 << 20;

/// Reads an answer's body, at most [`MAX_BODY`] bytes: a larger one is never buffered whole and is replaced by a
/// marker that is not JSON, so it classifies as unreadable (an unknown outcome), never as paid.
async fn read_body(mut resp: reqwest::Response) -> Result<String, reqwest::Error> {
    let too_large = || format!("<billd: the answer is larger than {} KiB; not read>", MAX_BODY / 1024);
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(too_large());
    }
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Ok(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Classifies an `again` answer (HTTP status and body) for `req`, as [`Gateway::charge`] does (for fuzzing).
pub fn classify_charge_body(status: u16, body: &str, req: &ChargeRequest) -> ChargeOutcome {
    classify_charge(Sent::Response(status, body.to_owned()), req, Duration::from_secs(30), &Redactor::default())
}

/// Parses a lookup answer's body as [`Gateway::find`] does: `Ok(None)` when code != 0 (for fuzzing).
pub fn parse_payment_body(body: &str) -> Result<Option<Payment>, String> {
    parse_payment(body, &Redactor::default())
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The start of an answer, for an error message: cleaned ([`Redactor::clean`]: a proxy may echo the request, and a
/// key-in request carries the card), one line, at most 120 characters.
fn snippet(red: &Redactor, text: &str) -> String {
    red.clean_to(text, 120)
}

/// An answer's JSON with every string cleaned; a `card_number` is shown masked (as the gateway masks it, or masked
/// here when it came whole).
fn clean_value(v: serde_json::Value, red: &Redactor) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(red.clean(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| clean_value(x, red)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| {
                    let x = match x {
                        Value::String(s) if k == "card_number" => Value::String(shown_card(&s, red)),
                        other => clean_value(other, red),
                    };
                    (red.clean_to(&k, 80), x)
                })
                .collect(),
        ),
        other => other,
    }
}

/// A key's card number as the gateway shows it: a whole card number (13-19 digits, spaces and dashes) masked; a
/// mask (`424242******4242`: digits, `*`, `-` and spaces, at most 10 digits, nothing billd sent) kept; anything else
/// cleaned.
fn shown_card(s: &str, red: &Redactor) -> String {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let card_chars = s.len() <= 40 && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '*' | '-' | ' '));
    if card_chars && (13..=19).contains(&digits) && !s.contains('*') {
        crate::gateway::card::mask(s)
    } else if card_chars && digits <= 10 && s.contains('*') && !red.holds_sent(s) {
        s.to_owned()
    } else {
        red.clean_to(s, 40)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ChargeRequest {
        ChargeRequest {
            customer_uid: "c".into(),
            merchant_uid: "m-1".into(),
            amount: 9900,
            currency: "KRW".into(),
            name: "n".into(),
        }
    }

    fn classify(status: u16, body: &str) -> ChargeOutcome {
        classify_charge(Sent::Response(status, body.into()), &req(), Duration::from_secs(30), &Redactor::default())
    }

    #[test]
    fn classifies_paid_declined_rejected() {
        let paid = r#"{"code":0,"message":null,"response":{"imp_uid":"imp_1","merchant_uid":"m-1","amount":9900,"status":"paid"}}"#;
        assert_eq!(classify(200, paid), ChargeOutcome::Paid { imp_uid: "imp_1".into() });
        let failed = r#"{"code":0,"message":null,"response":{"imp_uid":"imp_2","merchant_uid":"m-1","amount":9900,"status":"failed","fail_reason":"잔액부족"}}"#;
        assert_eq!(
            classify(200, failed),
            ChargeOutcome::Declined { imp_uid: Some("imp_2".into()), reason: "잔액부족".into() }
        );
        let rejected = r#"{"code":-1,"message":"등록되지 않은 구매자입니다.","response":null}"#;
        assert!(matches!(classify(200, rejected), ChargeOutcome::Rejected { code: -1, .. }));
    }

    #[test]
    fn an_answer_echoing_a_card_is_quoted_without_it() {
        // Some proxies answer an error page that echoes the request: a key-in request carries the card.
        let echo = r#"bad request: {"birth":"900101","card_number":"4242424242424242","expiry":"2031-12","pwd_2digit":"73"} card 4242424242424242"#;
        for outcome in [classify(500, echo), classify(200, echo), classify(302, echo)] {
            let text = format!("{outcome:?}");
            for secret in ["900101", "4242424242424242", "2031-12", "\"73\""] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains(r#"\"card_number\":\"***\""#), "{text}");
        }
        // A refusal whose message quotes the card (say, "invalid card number …") is logged without it.
        let refusal = r#"{"code":-1,"message":"invalid card 4242424242424242 (birth 900101)","response":null}"#;
        let ChargeOutcome::Rejected { code: -1, message } = classify(200, refusal) else { panic!("a refusal") };
        assert_eq!(message, "invalid card 424242******4242 (birth ******)");
    }

    #[test]
    fn a_redirect_is_an_unknown_outcome_never_followed() {
        let paid = r#"{"code":0,"message":null,"response":{"imp_uid":"imp_1","merchant_uid":"m-1","amount":9900,"status":"paid"}}"#;
        for status in [301, 302, 303, 307, 308] {
            assert!(matches!(classify(status, "<html>Moved</html>"), ChargeOutcome::Unknown(_)), "{status}");
            assert!(matches!(classify(status, paid), ChargeOutcome::Unknown(_)), "{status} with a payment body");
        }
    }

    #[tokio::test]
    async fn the_client_does_not_follow_redirects() {
        // A server that answers every request with a redirect to itself, and counts the requests.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{addr}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        let client = Iamport::new(&format!("http://{addr}"), "k", Secret::new("s"), Duration::from_secs(5), 4);
        let request = client.http.post(client.url(&["subscribe", "payments", "again"])).body("{}");
        let sent = client.send(request, &Secret::new("t")).await;
        assert!(matches!(sent, Sent::Response(307, _)), "the redirect is the answer");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "no second request was made");
    }

    #[test]
    fn garbage_and_mismatches_are_unknown_never_paid() {
        for body in [
            "<html>502 Bad Gateway</html>",
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"m-1","amount":9900"#,
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"OTHER","amount":9900,"status":"paid"}}"#,
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"m-1","amount":1,"status":"paid"}}"#,
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"m-1","amount":"9900","status":"paid"}}"#,
            r#"{"code":0,"message":null,"response":null}"#,
        ] {
            assert!(matches!(classify(200, body), ChargeOutcome::Unknown(_)), "{body}");
        }
        assert!(matches!(classify(500, "oops"), ChargeOutcome::Transient(_)));
        assert!(matches!(classify(429, ""), ChargeOutcome::Transient(_)));
    }
}
