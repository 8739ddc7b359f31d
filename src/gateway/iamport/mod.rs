//! The i'mport (PortOne V1) client: access tokens, the rate limit, sending, and the engine's `Gateway` (charge, lookups, refunds); answers are read in `classify`, billing keys in `keys`, refund requests in `refunds` (long: the one sending path every request takes, tokens and the go included, is kept in one file).

mod classify;
mod keys;
mod refunds;

pub use classify::{classify_charge_body, classify_refund_body, parse_payment_body};
pub use keys::parse_key_body;

use crate::config::Secret;
use crate::gateway::redact::Redactor;
use crate::gateway::{self as gw, Auth, ChargeOutcome, ChargeRequest, Gateway, Lookup};
use classify::{Envelope, classify_charge, parse_payment, snippet};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The words of a refused token request (see [`Auth::Refused`]).
const CREDENTIALS_REFUSED: &str = "the gateway refused the credentials (gateway.imp_key and its imp_secret)";

/// The i'mport REST client.
pub struct Iamport {
    http: reqwest::Client,
    /// `base_url` parsed once (request URLs are built from it).
    base: Option<reqwest::Url>,
    base_url: String,
    imp_key: String,
    imp_secret: Secret,
    timeout: Duration,
    /// The API answered HTTP 401 to a request with an access token getToken gave, and nothing was accepted since:
    /// [`Gateway::authenticate`] then checks with a lookup that a fresh token works (see there).
    api_refused: std::sync::atomic::AtomicBool,
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

/// Refresh this long before the server says the token expires (a tenth of short lifetimes).
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// The longest token lifetime billd believes (i'mport's tokens live 30 minutes): a token said to live longer, or
/// not at all (`expired_at` at or before `now`, or beyond any clock), is used for the request at hand only.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(6 * 3600);

/// The longest access token billd sends.
const MAX_TOKEN_LEN: usize = 4096;

/// A getToken answer billd can use: a token it can send, and how long to use it.
struct TokenAnswer {
    value: String,
    life: Duration,
}

/// Why no access token could be had.
#[derive(Debug)]
enum TokenError {
    /// The gateway refused the credentials, or gave twice a token billd cannot send: an authentication failure.
    Refused(String),
    /// No answer, or an unreadable one: nothing can be concluded.
    Unavailable(String),
    /// The gateway gave a token billd cannot send (asked once more before it is a refusal).
    Unusable(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Refused(e) | TokenError::Unavailable(e) | TokenError::Unusable(e) => f.write_str(e),
        }
    }
}

impl From<TokenError> for String {
    fn from(e: TokenError) -> String {
        e.to_string()
    }
}

/// How long to use a token the server says was issued at `now` and expires at `expired_at` (Unix seconds, on the
/// server's clock): their difference when it is a sane lifetime (up to [`MAX_TOKEN_LIFE`]), else zero (the token
/// serves the request at hand, and the next one asks for a new token).
fn token_life(now: i64, expired_at: i64) -> Duration {
    expired_at
        .checked_sub(now)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .filter(|life| *life <= MAX_TOKEN_LIFE)
        .unwrap_or(Duration::ZERO)
}

/// Whether billd can send `token` in an `Authorization` header as it is: 1 to [`MAX_TOKEN_LEN`] visible ASCII
/// characters (no control character, no space).
fn usable_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads a getToken answer (HTTP status and body). Its strings are cleaned; the token itself is never quoted.
fn read_token(status: u16, text: &str, red: &Redactor) -> Result<TokenAnswer, TokenError> {
    if status == 401 || status == 403 {
        return Err(TokenError::Refused(format!("getToken: HTTP {status}: {CREDENTIALS_REFUSED}")));
    }
    let env: Envelope = serde_json::from_str(text)
        // No excerpt: a token answer, even a mangled one, may carry an access token.
        .map_err(|_| {
            TokenError::Unavailable(format!("getToken: HTTP {status} with an unreadable body ({} bytes)", text.len()))
        })?;
    if status != 200 || env.code != 0 {
        // The refusal's words may echo the request, imp_secret included: cleaned like every gateway string.
        let message = red.clean(&env.message.unwrap_or_default());
        return Err(TokenError::Unavailable(format!("getToken: HTTP {status}, code {}: {message}", env.code)));
    }
    let tok: TokenBody = env.response.and_then(|r| serde_json::from_value(r).ok()).ok_or_else(|| {
        TokenError::Unavailable("getToken: the response has no access_token/now/expired_at".to_string())
    })?;
    if !usable_token(&tok.access_token) {
        return Err(TokenError::Unusable(format!(
            "getToken: the gateway's access token cannot be sent in a header (it is not 1 to {MAX_TOKEN_LEN} \
             visible ASCII characters)"
        )));
    }
    // The server's own clock: the lifetime is expired_at - now, whatever billd's clock says.
    Ok(TokenAnswer { life: token_life(tok.now, tok.expired_at), value: tok.access_token })
}

/// Reads a getToken answer's body as [`Iamport`] does, for fuzzing: the lifetime billd would use the token for, or
/// why no token can be used.
pub fn parse_token_body(status: u16, body: &str) -> Result<Duration, String> {
    read_token(status, body, &Redactor::default()).map(|t| t.life).map_err(String::from)
}

/// What sending a request gave: an answer (HTTP status and body, read by [`read_body`]) or a transport error.
enum Sent {
    Response(u16, String),
    Error(reqwest::Error),
    /// Nothing was processed at the gateway (no token, or the token was refused): why.
    Refused(String),
}

impl Iamport {
    /// A client of the gateway at `base_url`; requests go through `proxy` if given, else straight (never through a
    /// proxy named in the environment: it would receive the imp_secret and, on `http://`, card data).
    pub fn new(
        base_url: &str,
        imp_key: &str,
        imp_secret: Secret,
        timeout: Duration,
        concurrency: usize,
        proxy: Option<&str>,
    ) -> Self {
        let builder = match proxy.map(reqwest::Proxy::all) {
            Some(Ok(p)) => reqwest::Client::builder().proxy(p),
            // (A proxy that does not parse was refused with the config; none at all is a direct connection.)
            _ => reqwest::Client::builder().no_proxy(),
        };
        let http = builder
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
            api_refused: std::sync::atomic::AtomicBool::new(false),
            rate: None,
            sent: std::sync::RwLock::new(sent),
        };
        me.again = me.base.is_some().then(|| me.url(&["subscribe", "payments", "again"]).ok()).flatten();
        me
    }

    /// Sends at most `per_second` requests per second (token, charge and lookup requests alike; `None`: no limit).
    /// A rate outside [`RATE_LIMIT`](crate::config::RATE_LIMIT) (which the config refuses) is taken as its nearest
    /// bound: no rate can make the time between two requests overflow.
    pub fn with_rate_limit(mut self, per_second: Option<f64>) -> Self {
        let (slowest, fastest) = (*crate::config::RATE_LIMIT.start(), *crate::config::RATE_LIMIT.end());
        self.rate = per_second.filter(|r| r.is_finite() && *r > 0.0).and_then(|r| {
            let r = r.clamp(slowest, fastest);
            let period = Duration::try_from_secs_f64(1.0 / r).ok()?.max(Duration::from_nanos(1));
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

    /// A valid access token, fetching one if the cached one is near expiry (or `stale` was rejected). A token billd
    /// cannot send is asked for once more; a second one is a refusal ([`TokenError::Refused`]).
    async fn token(&self, stale: Option<&Secret>) -> Result<Secret, TokenError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let rejected = stale.is_some_and(|s| s == &t.value);
            if !rejected && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let tok = match self.fetch_token().await {
            Err(TokenError::Unusable(_)) => match self.fetch_token().await {
                Err(TokenError::Unusable(why)) => Err(TokenError::Refused(format!("{why}, twice"))),
                other => other,
            },
            other => other,
        }?;
        self.sent.write().unwrap_or_else(|p| p.into_inner()).sent_token(&tok.value);
        let token = Token {
            value: Secret::new(tok.value),
            refresh_at: Instant::now().checked_add(tok.life.saturating_sub(TOKEN_MARGIN)).unwrap_or_else(Instant::now),
        };
        *cached = Some(token.clone());
        Ok(token.value)
    }

    /// One getToken request, its answer read by [`read_token`].
    async fn fetch_token(&self) -> Result<TokenAnswer, TokenError> {
        let body = serde_json::json!({ "imp_key": self.imp_key, "imp_secret": self.imp_secret.expose() });
        self.permit().await;
        let failed = |e: reqwest::Error| TokenError::Unavailable(format!("getToken: {}", describe(&e)));
        let resp =
            self.http.post(format!("{}/users/getToken", self.base_url)).json(&body).send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let text = read_body(resp).await.map_err(failed)?;
        read_token(status, &text, &self.sent())
    }

    async fn send(&self, req: reqwest::RequestBuilder, token: &Secret) -> Sent {
        let request = match build(req, token) {
            Ok(r) => r,
            Err(why) => return Sent::Refused(why),
        };
        self.permit().await;
        self.send_now(request).await
    }

    /// A charge request (a payment's): a token and a rate-limit turn first, then the caller's `go`, and at once the
    /// request, sent once. `None`: the go said no, nothing was sent. A 401 (the token was refused, so the request
    /// was not processed) is not sent again here, where no go would cover it: the token is renewed for later
    /// requests and the outcome is transient (looked up, and resent only after the quiet period, with a go of its
    /// own).
    async fn send_after_go(&self, req: reqwest::RequestBuilder, go: impl Future<Output = bool>) -> Option<Sent> {
        let token = match self.token(None).await {
            Ok(t) => t,
            // No token: the request never left.
            Err(e) => return Some(Sent::Refused(e.into())),
        };
        // Built whole before the go: once it may leave, nothing is left to fail but the sending.
        let request = match build(req, &token) {
            Ok(r) => r,
            Err(why) => return Some(Sent::Refused(why)),
        };
        self.permit().await;
        if !go.await {
            return None;
        }
        let sent = self.send_now(request).await;
        self.note_api(&sent);
        Some(match sent {
            Sent::Response(401, _) => {
                let renewed = self.token(Some(&token)).await.err().map(|e| format!("; {e}")).unwrap_or_default();
                Sent::Refused(format!("HTTP 401: the access token was refused, nothing was charged{renewed}"))
            }
            other => other,
        })
    }

    /// Sends a built request at once (its rate-limit turn already taken).
    async fn send_now(&self, request: reqwest::Request) -> Sent {
        match self.http.execute(request).await {
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
        let sent = match self.send(build(), &token).await {
            Sent::Response(401, _) => {
                let fresh = self.token(Some(&token)).await?;
                self.send(build(), &fresh).await
            }
            other => other,
        };
        self.note_api(&sent);
        Ok(sent)
    }

    /// Notes whether the API took the access token of an answered request (a 401 refused it).
    fn note_api(&self, sent: &Sent) {
        if let Sent::Response(status, _) = sent {
            self.api_refused.store(*status == 401, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The URL of `segments` under the base URL, each one path segment byte for byte ([`crate::ids`]); `Err`
    /// (nothing is sent) when one cannot be carried as it is.
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, String> {
        let mut url = match &self.base {
            Some(base) => base.clone(),
            None => reqwest::Url::parse(&self.base_url).expect("base_url was validated with the config"),
        };
        let mut path = url.path().trim_end_matches('/').to_string();
        for s in segments {
            path.push('/');
            path.push_str(&crate::ids::path_segment(s).map_err(|e| format!("not sent: {e}"))?);
        }
        url.set_path(&path);
        Ok(url)
    }
}

impl Gateway for Iamport {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A token from getToken, and, once the API refused one (HTTP 401), a lookup with a fresh token that shows
    /// whether the API takes tokens at all: a gateway that gives tokens and refuses them (a proxy dropping the
    /// Authorization header, say) is an authentication failure, not an unknown outcome per charge.
    async fn authenticate(&self) -> Auth {
        match self.token(None).await {
            Ok(_) => {}
            Err(TokenError::Refused(e)) => return Auth::Refused(e),
            Err(e) => return Auth::Unavailable(e.into()),
        }
        if !self.api_refused.load(std::sync::atomic::Ordering::Relaxed) {
            return Auth::Accepted;
        }
        let url = match self.url(&["payments", "find", "billd-auth-probe", "paid"]) {
            Ok(u) => u,
            Err(e) => return Auth::Unavailable(e),
        };
        match self.authed(|| self.http.get(url.clone())).await {
            Ok(Sent::Response(401, _)) => Auth::Refused(
                "the gateway gives access tokens but its API refuses them (HTTP 401 with a fresh token): a proxy \
                 dropping the Authorization header, or an account without API access"
                    .into(),
            ),
            Ok(Sent::Response(..)) => Auth::Accepted,
            Ok(Sent::Error(e)) => Auth::Unavailable(describe(&e)),
            Ok(Sent::Refused(e)) => Auth::Unavailable(e),
            Err(e) => Auth::Unavailable(e),
        }
    }

    async fn charge(&self, req: &ChargeRequest, go: impl Future<Output = bool> + Send) -> Option<ChargeOutcome> {
        let body = AgainBody {
            customer_uid: &req.customer_uid,
            merchant_uid: &req.merchant_uid,
            amount: req.amount,
            currency: &req.currency,
            name: &req.name,
        };
        // An id that a lookup's URL could not carry would be charged and then never found, and an amount above the
        // ceiling is never meant: refused before sending.
        let checked = crate::ids::path_segment(&req.merchant_uid)
            .and(crate::ids::path_segment(&req.customer_uid))
            .and_then(|_| crate::gateway::sendable_amount(req.amount));
        if let Err(e) = checked {
            return Some(ChargeOutcome::Transient(format!("not sent: {e}")));
        }
        let url = match &self.again {
            Some(u) => u.clone(),
            None => match self.url(&["subscribe", "payments", "again"]) {
                Ok(u) => u,
                Err(e) => return Some(ChargeOutcome::Transient(e)),
            },
        };
        let sent = self.send_after_go(self.http.post(url).json(&body), go).await?;
        Some(classify_charge(sent, req, self.timeout, &self.sent()))
    }

    async fn refund(
        &self,
        req: &gw::RefundRequest,
        go: impl Future<Output = bool> + Send,
    ) -> Option<gw::RefundOutcome> {
        self.cancel(req, go).await
    }

    async fn refunds(&self, imp_uid: &str, merchant_uid: &str) -> gw::RefundsLookup {
        self.payment_refunds(imp_uid, merchant_uid).await
    }

    async fn payment(&self, imp_uid: &str) -> Lookup {
        let url = match self.url(&["payments", imp_uid]) {
            Ok(u) => u,
            Err(e) => return Lookup::Error(e),
        };
        let sent = match self.authed(|| self.http.get(url.clone())).await {
            Ok(s) => s,
            Err(e) => return Lookup::Error(e),
        };
        let red = self.sent();
        match sent {
            Sent::Error(e) => Lookup::Error(describe(&e)),
            Sent::Refused(why) => Lookup::Error(why),
            Sent::Response(404, _) => Lookup::NotFound,
            Sent::Response(200, text) => match parse_payment(&text, &red) {
                Ok(Some(p)) if p.imp_uid == imp_uid => Lookup::Found(p),
                Ok(Some(_)) => Lookup::Error(format!("lookup of {imp_uid} answered another payment")),
                Ok(None) => Lookup::Error(format!("lookup answered no payment: {}", snippet(&red, &text))),
                Err(e) => Lookup::Error(e),
            },
            Sent::Response(status, text) => Lookup::Error(format!("lookup: HTTP {status}: {}", snippet(&red, &text))),
        }
    }

    async fn find(&self, merchant_uid: &str, status: &str) -> Lookup {
        let url = match self.url(&["payments", "find", merchant_uid, status]) {
            Ok(u) => u,
            Err(e) => return Lookup::Error(e),
        };
        let sent = match self.authed(|| self.http.get(url.clone())).await {
            Ok(s) => s,
            Err(e) => return Lookup::Error(e),
        };
        let red = self.sent();
        match sent {
            Sent::Error(e) => Lookup::Error(describe(&e)),
            Sent::Refused(why) => Lookup::Error(why),
            Sent::Response(404, _) => Lookup::NotFound,
            Sent::Response(200, text) => match parse_payment(&text, &red) {
                Ok(Some(p)) if p.merchant_uid == merchant_uid && p.status == status => Lookup::Found(p),
                // What came back is described, not quoted.
                Ok(Some(p)) if p.merchant_uid == merchant_uid => Lookup::Error(format!(
                    "a lookup of {status} payments under {merchant_uid} answered a payment of another status"
                )),
                Ok(Some(_)) => {
                    Lookup::Error(format!("lookup of {merchant_uid} answered a payment for another merchant_uid"))
                }
                Ok(None) => Lookup::Error(format!("lookup answered no payment: {}", snippet(&red, &text))),
                Err(e) => Lookup::Error(e),
            },
            Sent::Response(status, text) => Lookup::Error(format!("lookup: HTTP {status}: {}", snippet(&red, &text))),
        }
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

/// `req` with its access token, built whole (headers included); `Err`: it cannot be, so nothing is sent (the token
/// was checked when it came, so this is a request billd could not make, never an unknown outcome).
fn build(req: reqwest::RequestBuilder, token: &Secret) -> Result<reqwest::Request, String> {
    req.bearer_auth(token.expose()).build().map_err(|e| {
        use std::error::Error;
        let why = e.source().map_or_else(|| e.to_string(), ToString::to_string);
        format!("not sent: the request could not be built ({why})")
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lifetime_outside_sane_bounds_is_used_for_one_request_only() {
        assert_eq!(token_life(1_700_000_000, 1_700_001_800), Duration::from_secs(1800));
        for (now, expired_at) in [
            (1_700_000_000, i64::MAX),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (0, i64::MAX),
            (1_700_000_000, 1_700_000_000),
            (1_700_000_000, 1_699_999_000),
            (1_700_000_000, 1_700_000_000 + 6 * 3600 + 1),
        ] {
            assert_eq!(token_life(now, expired_at), Duration::ZERO, "{now} {expired_at}");
        }
    }

    #[test]
    fn a_token_no_header_can_carry_is_not_used() {
        let answer = |t: &str| {
            let body = serde_json::json!({"code": 0, "message": null,
                "response": {"access_token": t, "now": 1_700_000_000, "expired_at": 1_700_001_800}});
            read_token(200, &body.to_string(), &Redactor::default())
        };
        assert_eq!(answer("a1b2c3").map(|t| (t.value, t.life)).unwrap(), ("a1b2c3".into(), Duration::from_secs(1800)));
        for bad in ["tok\u{1}en", "tok\nen", "tok en", "", "tök", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            match answer(bad) {
                Err(TokenError::Unusable(why)) => assert!(!why.contains(bad) || bad.is_empty(), "{why}"),
                other => panic!("{bad:?}: {:?}", other.map(|t| t.life)),
            }
        }
    }

    #[test]
    fn no_rate_makes_the_limiter_panic() {
        let client = || Iamport::new("http://127.0.0.1:9", "k", Secret::new("s"), Duration::from_secs(5), 4, None);
        for r in [1e-300, 5e-324, f64::MIN_POSITIVE, 1e-12, 0.001, 1.0, 1e6, 1e300, f64::MAX] {
            assert!(client().with_rate_limit(Some(r)).rate.is_some(), "{r:e}: no limiter");
        }
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(client().with_rate_limit(Some(r)).rate.is_none(), "{r}: a limiter");
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
        let client = Iamport::new(&format!("http://{addr}"), "k", Secret::new("s"), Duration::from_secs(5), 4, None);
        let request = client.http.post(client.url(&["subscribe", "payments", "again"]).unwrap()).body("{}");
        let sent = client.send(request, &Secret::new("t")).await;
        assert!(matches!(sent, Sent::Response(307, _)), "the redirect is the answer");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "no second request was made");
    }
}
