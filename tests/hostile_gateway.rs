//! A hostile gateway (issue 22, points 1, 2, 7, 8 and 11): a front that forwards every request to the real sandbox
//! and rewrites chosen answers. An absurd token lifetime must not panic billd; an access token no header can carry is
//! refused once, then the gateway is unauthorized (nothing claimed or sent, `/healthz` not ok); numbers in a key-in
//! answer (the card number as `amount` or `code`) and encoded echoes of the request (percent-encoded, JSON-escaped,
//! base64) leave no card data, birth date or PIN digits in any output or in the database. Requests go only where
//! the config says: no `http://` to a remote host, no proxy from the environment, the configured proxy only.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use common::{MONTHLY, Setup, World, cards, sub, text};
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DUE: &str = "2025-01-01T10:00:00+09:00";
/// The card billd sends in the key-in tests (the sandbox approves it).
const CARD: &str = "4242-4242-4242-4242";
const CARD_DIGITS: &str = cards::APPROVE;
const BIRTH: &str = "870215";
const PIN: &str = "37";

/// How a rewrite changes one answer: `(request body, HTTP status, answer)` to the new status and answer.
type Rewrite = Box<dyn Fn(&str, u16, Value) -> (u16, Value) + Send + Sync>;

/// A rewrite of the answers to requests whose path starts with `path`, at most `times` times.
struct Rule {
    path: String,
    times: usize,
    rewrite: Rewrite,
}

#[derive(Default)]
struct FrontState {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    /// Every request received: its method and its request target as sent (absolute when it came as to a proxy).
    seen: Mutex<Vec<String>>,
}

/// The front, on its own thread and runtime.
struct Front {
    addr: SocketAddr,
    state: Arc<FrontState>,
    _runtime: tokio::runtime::Runtime,
}

impl Front {
    fn start(upstream: String) -> Front {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = Arc::new(FrontState { upstream, ..Default::default() });
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Front { addr, state, _runtime: runtime }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Rewrites the answers to requests on `path…`, `times` times.
    fn rewrite(&self, path: &str, times: usize, f: impl Fn(&str, u16, Value) -> (u16, Value) + Send + Sync + 'static) {
        self.state.rules.lock().unwrap().push(Rule { path: path.into(), times, rewrite: Box::new(f) });
    }

    fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    fn token_requests(&self) -> usize {
        self.seen().iter().filter(|s| s.ends_with("/users/getToken")).count()
    }
}

async fn forward(State(st): State<Arc<FrontState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    st.seen.lock().unwrap().push(format!("{} {}", parts.method, parts.uri));
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut out = client.request(method, format!("{}{path}", st.upstream)).body(body.clone());
    for h in ["authorization", "content-type"] {
        if let Some(v) = parts.headers.get(h).and_then(|v| v.to_str().ok()) {
            out = out.header(h, v);
        }
    }
    let answer = out.send().await.unwrap();
    let mut status = answer.status().as_u16();
    let mut text = answer.text().await.unwrap();
    {
        let mut rules = st.rules.lock().unwrap();
        if let Some(rule) = rules.iter_mut().find(|r| r.times > 0 && path.starts_with(&r.path)) {
            rule.times -= 1;
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let (s, v) = (rule.rewrite)(&body, status, value);
            (status, text) = (s, v.to_string());
        }
    }
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

/// A world with subscription s1 (billing key c1, due at [`DUE`]) whose gateway is `front` (forwarding to its
/// sandbox); `extra` is added to the config.
fn world_behind_front(extra: &str) -> (World, Front) {
    let body = format!("{extra}{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, timeout: "2s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let front = Front::start(w.sandbox.base_url());
    let config = std::fs::read_to_string(&w.config).unwrap().replace(&w.sandbox.base_url(), &front.url());
    std::fs::write(&w.config, config).unwrap();
    (w, front)
}

fn attempts(w: &World) -> Vec<(String, String)> {
    let db = w.db();
    let mut st = db.prepare("SELECT status, coalesce(fail_reason, '') FROM attempts ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn tick(w: &World) -> Output {
    w.billd().args(["tick", "--as-of", DUE]).output().unwrap()
}

/// Sets `access_token`, `now` and `expired_at` of a getToken answer (those given).
fn token_answer(mut v: Value, token: Option<&str>, now: Option<i64>, expired_at: Option<i64>) -> Value {
    let r = &mut v["response"];
    if let Some(t) = token {
        r["access_token"] = t.into();
    }
    if let Some(n) = now {
        r["now"] = n.into();
    }
    if let Some(e) = expired_at {
        r["expired_at"] = e.into();
    }
    v
}

// ---- Point 1: numbers from the gateway are bounded before use.

#[test]
fn an_absurd_token_lifetime_neither_panics_nor_stops_billing() {
    let now = chrono::Utc::now().timestamp();
    for (n, e) in [(now, i64::MAX), (i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, i64::MAX), (now, now - 3600)] {
        let (w, front) = world_behind_front("");
        front.rewrite("/users/getToken", usize::MAX, move |_, s, v| (s, token_answer(v, None, Some(n), Some(e))));
        let out = tick(&w);
        assert!(out.status.success(), "now {n}, expired_at {e}: {}\n{}", out.status, text(&out));
        assert!(!text(&out).contains("panicked"), "{}", text(&out));
        assert_eq!(attempts(&w), [("paid".to_string(), String::new())], "now {n}, expired_at {e}: {}", text(&out));
        w.assert_consistent();
    }
}

// ---- Point 2: a token billd cannot use is an authentication failure.

/// An access token no HTTP header can carry (a control character in it).
const UNSENDABLE: &str = "tok\u{1}en\nX-Injected: 1";

#[test]
fn a_token_no_header_can_carry_is_refused_after_one_refresh_and_nothing_is_claimed() {
    let (w, front) = world_behind_front("");
    front.rewrite("/users/getToken", usize::MAX, |_, s, v| (s, token_answer(v, Some(UNSENDABLE), None, None)));
    let out = tick(&w);
    let stderr = World::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("gateway.unauthorized")).count(), 1, "{stderr}");
    assert!(stderr.contains("access token"), "the reason says what is wrong: {stderr}");
    assert!(!stderr.contains("charge.unknown") && !stderr.contains("tok\u{1}en"), "{stderr}");
    assert_eq!(front.token_requests(), 2, "one token, one refresh: {:?}", front.seen());
    assert!(front.seen().iter().all(|s| s.ends_with("/users/getToken")), "only token requests: {:?}", front.seen());
    assert!(attempts(&w).is_empty(), "nothing is claimed or recorded: {:?}", attempts(&w));
    assert!(w.ledger().is_empty());
}

#[test]
fn a_token_no_header_can_carry_is_replaced_by_the_refresh() {
    let (w, front) = world_behind_front("");
    front.rewrite("/users/getToken", 1, |_, s, v| (s, token_answer(v, Some(UNSENDABLE), None, None)));
    let out = tick(&w);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(front.token_requests(), 2, "{:?}", front.seen());
    assert_eq!(attempts(&w), [("paid".to_string(), String::new())], "{}", text(&out));
    w.assert_consistent();
}

#[test]
fn the_daemon_with_a_token_no_header_can_carry_says_unauthorized_on_healthz() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (w, front) = world_behind_front(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    front.rewrite("/users/getToken", usize::MAX, |_, s, v| (s, token_answer(v, Some(UNSENDABLE), None, None)));
    let mut child = w.billd().arg("run").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let health = loop {
        match common::http_get(port, "/healthz") {
            Some((503, t)) => break t,
            _ if start.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                panic!(
                    "/healthz never said 503: {}",
                    String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr)
                );
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(health.contains("unauthorized"), "{health}");
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("gateway.unauthorized") && !stderr.contains("charge.unknown"), "{stderr}");
    assert!(attempts(&w).is_empty(), "{:?}", attempts(&w));
    assert!(w.ledger().is_empty());
}

// ---- Points 7 and 8: nothing from the gateway echoes card data, numbers and encoded forms included.

fn card_json() -> String {
    format!(r#"{{"card_number": "{CARD}", "expiry": "2031-12", "birth": "{BIRTH}", "pwd_2digit": "{PIN}"}}"#)
}

/// `billd charge-once --merchant-uid M` with the card on stdin.
fn charge_once(w: &World, merchant_uid: &str) -> Output {
    let mut child = w
        .billd()
        .args(["charge-once", "--merchant-uid", merchant_uid, "--amount", "5000", "--name", "Setup fee"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(card_json().as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Everything billd wrote: the command's output and every database file.
fn everything(w: &World, out: &Output) -> String {
    let mut all = text(out);
    for e in std::fs::read_dir(w.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("billd.sqlite3") {
            all += &String::from_utf8_lossy(&std::fs::read(&p).unwrap());
        }
    }
    all
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn json_escaped(s: &str) -> String {
    s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
}

/// The base64 text of `s` at each of the three alignments it may have inside a longer encoded text.
fn base64_forms(s: &str) -> Vec<String> {
    (0..3)
        .map(|skip| {
            let b = &s.as_bytes()[skip..];
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&b[..b.len() / 3 * 3])
        })
        .collect()
}

/// The card data billd sent, in every form an echo may carry it; none may appear in `all`.
fn assert_no_card_data(what: &str, all: &str) {
    let pin_field = format!("\"pwd_2digit\":\"{PIN}\"");
    let birth_field = format!("\"birth\":\"{BIRTH}\"");
    for secret in [CARD, CARD_DIGITS, BIRTH, &pin_field, &birth_field] {
        let mut forms = vec![secret.to_string(), percent(secret), json_escaped(secret)];
        forms.extend(base64_forms(secret));
        for form in forms {
            assert!(!all.contains(&form), "{what}: {secret:?} is in the output as {form:?}:\n{all}");
        }
    }
    for line in all.lines() {
        let digits: String = line.chars().filter(char::is_ascii_digit).collect();
        assert!(!digits.contains(CARD_DIGITS), "{what}: the card's digits in: {line}");
    }
}

#[test]
fn the_card_number_as_a_key_in_answers_amount_leaves_no_trace() {
    let (w, front) = world_behind_front("");
    let card: i64 = CARD_DIGITS.parse().unwrap();
    // The answer and the lookup say the payment is for an amount that is the card number.
    let amount = move |_: &str, s: u16, mut v: Value| {
        if v["response"].is_object() {
            v["response"]["amount"] = card.into();
        }
        (s, v)
    };
    front.rewrite("/subscribe/payments/onetime", 1, amount);
    front.rewrite("/payments/find/once-amount", usize::MAX, amount);
    let out = charge_once(&w, "once-amount");
    assert!(!out.status.success(), "not taken as paid: {}", text(&out));
    assert!(text(&out).contains("5000"), "the message quotes what billd asked for: {}", text(&out));
    assert_no_card_data("amount", &everything(&w, &out));
}

#[test]
fn the_card_number_as_a_key_in_answers_code_leaves_no_trace() {
    let (w, front) = world_behind_front("");
    let card: i64 = CARD_DIGITS.parse().unwrap();
    // A refusal whose code is the card number (and no payment to be found).
    front.rewrite("/subscribe/payments/onetime", 1, move |_, s, _| {
        (s, json!({ "code": card, "message": "refused", "response": null }))
    });
    front.rewrite("/payments/find/once-code", usize::MAX, |_, _, _| {
        (404, json!({ "code": 1, "message": "no such payment", "response": null }))
    });
    let out = charge_once(&w, "once-code");
    assert!(!out.status.success(), "{}", text(&out));
    assert_no_card_data("code", &everything(&w, &out));
}

/// A refusal (and no payment to be found) whose message quotes the key-in request as `encode` encodes it.
fn refusal_echoing_the_request(name: &str, encode: fn(&str) -> String) {
    let (w, front) = world_behind_front("");
    front.rewrite("/subscribe/payments/onetime", 1, move |body, _, _| {
        (200, json!({ "code": -1, "message": format!("bad request: {}", encode(body)), "response": null }))
    });
    let merchant_uid = format!("once-{name}");
    front.rewrite(&format!("/payments/find/{merchant_uid}"), usize::MAX, |_, _, _| {
        (404, json!({ "code": 1, "message": "no such payment", "response": null }))
    });
    let out = charge_once(&w, &merchant_uid);
    assert!(!out.status.success(), "{name}: {}", text(&out));
    assert!(text(&out).contains("bad request"), "{name}: the refusal is quoted: {}", text(&out));
    assert_no_card_data(name, &everything(&w, &out));
}

#[test]
fn a_refusal_echoing_the_request_percent_encoded_keeps_no_card_data() {
    refusal_echoing_the_request("percent", percent);
}

#[test]
fn a_refusal_echoing_the_request_json_escaped_keeps_no_card_data() {
    refusal_echoing_the_request("json", json_escaped);
}

#[test]
fn a_refusal_echoing_the_request_base64_encoded_keeps_no_card_data() {
    refusal_echoing_the_request("base64", |s| base64::engine::general_purpose::STANDARD.encode(s));
}

// ---- Point 11: requests go only where the config says.

#[test]
fn check_refuses_http_to_a_remote_host_and_allows_it_for_loopback() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    let config = std::fs::read_to_string(&w.config).unwrap();
    for (url, ok) in [
        ("http://api.iamport.kr", false),
        ("http://10.0.0.7:8080", false),
        ("http://127.0.0.1.example.com", false),
        ("https://api.iamport.kr", true),
        ("http://127.0.0.2:9", true),
        ("http://localhost:9", true),
        ("http://[::1]:9", true),
    ] {
        std::fs::write(&w.config, config.replace(&w.sandbox.base_url(), url)).unwrap();
        let out = w.billd().arg("check").output().unwrap();
        assert_eq!(out.status.success(), ok, "{url}: {}", text(&out));
        if !ok {
            assert!(text(&out).contains("gateway.base_url") && text(&out).contains("https"), "{}", text(&out));
        }
    }
}

#[test]
fn proxies_from_the_environment_are_not_used() {
    let (w, front) = world_behind_front("");
    // Straight to the sandbox; the front stands for a proxy named in the environment.
    let config = std::fs::read_to_string(&w.config).unwrap().replace(&front.url(), &w.sandbox.base_url());
    std::fs::write(&w.config, config).unwrap();
    let mut cmd = w.billd();
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env(var, front.url());
    }
    let out = cmd.env_remove("NO_PROXY").env_remove("no_proxy").args(["tick", "--as-of", DUE]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(front.seen(), Vec::<String>::new(), "the proxy from the environment got requests");
    assert_eq!(attempts(&w), [("paid".to_string(), String::new())], "{}", text(&out));
}

#[test]
fn the_configured_proxy_carries_every_request() {
    let (w, front) = world_behind_front("");
    let config = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace(&front.url(), &w.sandbox.base_url())
        .replace("[gateway]\n", &format!("[gateway]\nproxy = \"{}\"\n", front.url()));
    std::fs::write(&w.config, config).unwrap();
    let out = tick(&w);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(attempts(&w), [("paid".to_string(), String::new())], "{}", text(&out));
    let seen = front.seen();
    let sandbox = w.sandbox.base_url();
    assert!(seen.contains(&format!("POST {sandbox}/users/getToken")), "{seen:?}");
    assert!(seen.contains(&format!("POST {sandbox}/subscribe/payments/again")), "{seen:?}");
}

/// A review of point 2: a gateway that gives access tokens but refuses them on its API (HTTP 401 to every charge and
/// lookup; a proxy dropping the Authorization header does that) left every charge unknown, pass after pass, with
/// `/healthz` ok. Once the API refused a token, the next pass checks with a fresh one and stops as unauthorized.
#[test]
fn an_api_that_refuses_every_token_is_an_authentication_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive().to_string();
    let body =
        format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n{MONTHLY}{}", sub("s1", "c1", "monthly", &yesterday));
    let w = World::new(Setup { body: &body, timeout: "2s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let front = Front::start(w.sandbox.base_url());
    let config = std::fs::read_to_string(&w.config).unwrap().replace(&w.sandbox.base_url(), &front.url());
    std::fs::write(&w.config, config).unwrap();
    let refuse = |_: &str, _: u16, _: Value| (401, json!({"code": -1, "message": "Unauthorized", "response": null}));
    front.rewrite("/subscribe/payments/again", usize::MAX, refuse);
    front.rewrite("/payments/find", usize::MAX, refuse);
    let run = w.billd().arg("run").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    common::wait_for("the charge refused with 401", || {
        front.seen().iter().any(|s| s.contains("/subscribe/payments/again"))
    });
    // The next pass (a reload starts one at once) checks the API with a fresh token.
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::process::Command::new("kill").args(["-HUP", &run.id().to_string()]).status().unwrap().success());
    common::wait_for("/healthz 503", || common::http_get(port, "/healthz").is_some_and(|(c, _)| c == 503));
    let (_, health) = common::http_get(port, "/healthz").unwrap();
    assert!(health.contains("unauthorized"), "{health}");
    assert!(std::process::Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap().success());
    let out = run.wait_with_output().unwrap();
    let log = World::stderr(&out);
    assert!(log.contains("gateway.unauthorized") && log.contains("refuses them"), "{log}");
}

/// A lookup "was it paid?" answered with a payment of another status (a declined one, under the charge's own
/// merchant_uid, amount and key) is no answer: the charge stays unknown. It used to be taken as paid (the lookup's
/// status was never read), so a declined period was recorded paid and never charged again.
#[test]
fn a_paid_lookup_answered_with_a_declined_payment_is_not_taken_as_paid() {
    let (w, front) = world_behind_front("");
    w.sandbox.register_customer("c1", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    let drop = billd_sandbox::Fault::DropAfterCharge;
    w.sandbox.add_fault(billd_sandbox::FaultRule { customer_uid: Some("c1".into()), fault: drop, times: Some(1) });
    assert!(tick(&w).status.success());
    assert_eq!(attempts(&w)[0].0, "unknown");
    let failed = w.ledger().into_iter().find(|e| e.merchant_uid == "billd-s1-0").expect("declined at the gateway");
    let imp_uid = failed.imp_uid.clone();
    front.rewrite("/payments/find/billd-s1-0/paid", usize::MAX, move |_, _, _| {
        let payment = json!({ "imp_uid": imp_uid, "merchant_uid": "billd-s1-0", "amount": 9900, "currency": "KRW",
            "customer_uid": "c1", "status": "failed", "fail_reason": "잔액부족" });
        (200, json!({ "code": 0, "message": null, "response": payment }))
    });
    w.wait_quiet();
    let out = w.billd().args(["tick", "--as-of", "2025-01-01T10:05:00+09:00"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let recorded = attempts(&w);
    assert!(recorded.iter().all(|(s, _)| s != "paid"), "a declined payment was taken as paid: {recorded:?}");
    assert!(text(&out).contains("another status"), "{}", text(&out));
}
