//! The i'mport (PortOne V1) client: access tokens, the rate limit, sending, and the engine's `Gateway` (charge, lookups); answers are read in `classify`, billing keys in `keys`.

mod classify;
mod keys;

pub use classify::{classify_charge_body, parse_payment_body};

use crate::config::Secret;
use crate::gateway::redact::Redactor;
use crate::gateway::{Auth, ChargeOutcome, ChargeRequest, Gateway, Lookup};
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

/// What sending a request gave: an answer (HTTP status and body, read by [`read_body`]) or a transport error.
enum Sent {
    Response(u16, String),
    Error(reqwest::Error),
    /// Nothing was processed at the gateway (no token, or the token was refused): why.
    Refused(String),
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
        self.send_now(req, token).await
    }

    /// A charge request (a payment's): a token and a rate-limit turn first, then the caller's `go`, and at once the
    /// request, sent once. `None`: the go said no, nothing was sent. A 401 (the token was refused, so the request
    /// was not processed) is not sent again here, where no go would cover it: the token is renewed for later
    /// requests and the outcome is transient (looked up, and resent only after the quiet period, with a go of its
    /// own).
    async fn send_after_go(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        go: impl Future<Output = bool>,
    ) -> Option<Sent> {
        let token = match self.token(None).await {
            Ok(t) => t,
            // No token: the request never left.
            Err(e) => return Some(Sent::Refused(e)),
        };
        self.permit().await;
        if !go.await {
            return None;
        }
        Some(match self.send_now(build(), &token).await {
            Sent::Response(401, _) => {
                let renewed = self.token(Some(&token)).await.err().map(|e| format!("; {e}")).unwrap_or_default();
                Sent::Refused(format!("HTTP 401: the access token was refused, nothing was charged{renewed}"))
            }
            other => other,
        })
    }

    /// Sends a request at once (its rate-limit turn already taken).
    async fn send_now(&self, req: reqwest::RequestBuilder, token: &Secret) -> Sent {
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

    async fn authenticate(&self) -> Auth {
        match self.token(None).await {
            Ok(_) => Auth::Accepted,
            Err(e) if e.contains(CREDENTIALS_REFUSED) => Auth::Refused(e),
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
        // An id that a lookup's URL could not carry would be charged and then never found: refused before sending.
        if let Err(e) = crate::ids::path_segment(&req.merchant_uid).and(crate::ids::path_segment(&req.customer_uid)) {
            return Some(ChargeOutcome::Transient(format!("not sent: {e}")));
        }
        let url = match &self.again {
            Some(u) => u.clone(),
            None => match self.url(&["subscribe", "payments", "again"]) {
                Ok(u) => u,
                Err(e) => return Some(ChargeOutcome::Transient(e)),
            },
        };
        let sent = self.send_after_go(|| self.http.post(url.clone()).json(&body), go).await?;
        Some(classify_charge(sent, req, self.timeout, &self.sent()))
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
    fn no_rate_makes_the_limiter_panic() {
        let client = || Iamport::new("http://127.0.0.1:9", "k", Secret::new("s"), Duration::from_secs(5), 4);
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
        let client = Iamport::new(&format!("http://{addr}"), "k", Secret::new("s"), Duration::from_secs(5), 4);
        let request = client.http.post(client.url(&["subscribe", "payments", "again"]).unwrap()).body("{}");
        let sent = client.send(request, &Secret::new("t")).await;
        assert!(matches!(sent, Sent::Response(307, _)), "the redirect is the answer");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "no second request was made");
    }
}
