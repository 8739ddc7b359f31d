//! A gateway that echoes every request (its body, its `Authorization` header, the card's digits regrouped, a forged
//! log line with terminal escapes, a megabyte of text) into every string of its answers: refusal messages, fail
//! reasons, statuses, imp_uids, merchant_uids, card names, and a refused `getToken`'s message. Every command that
//! talks to the gateway is run against it, with console and JSON logs; then every line billd printed and the
//! database files are searched for each secret billd sent (the card number in any grouping, the birth date, the PIN
//! digits, the imp_secret, the access token, the channel key), and for raw control characters or forged lines.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use common::{MONTHLY, Setup, World, sub};
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const CARD: &str = "4532-0151-1283-0366";
const CARD_DIGITS: &str = "4532015112830366";
const BIRTH: &str = "870215";
const PIN: &str = "73";
const SECRET: &str = "S3cr3t-echo-imp-secret-Zq";
const TOKEN: &str = "tokEchoACCESSTokenQx0123";
const CHANNEL_KEY: &str = "channel-key-echo-Vw";
/// A forged console line, a forged JSON line, terminal escapes (clear screen, window title, bell), CR, U+2028.
const FORGERY: &str = "\nFORGED-LINE  INFO charge.paid: charge.paid subscription=FORGED\n\
    {\"forged\":true,\"level\":\"INFO\",\"fields\":{\"event\":\"charge.paid\"}}\x1b[2J\x1b]0;owned\x07\r\u{2028}end";

/// The echoing gateway, on its own thread and runtime.
struct Echo {
    addr: SocketAddr,
    state: Arc<EchoState>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Default)]
struct EchoState {
    /// Refuse `getToken` (code -1) with the request echoed in the message.
    refuse_token: AtomicBool,
    /// Every request body received.
    bodies: Mutex<Vec<String>>,
}

impl Echo {
    fn start() -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = Arc::new(EchoState::default());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(answer).with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Echo { addr, state, _runtime: runtime }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn json_answer(status: StatusCode, v: Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

/// The request, echoed: its body, its Authorization header, the card's digits regrouped three ways, the birth date,
/// the PIN digits standing alone, the secret and channel key again, then the forgery.
fn echo_of(auth: &str, path: &str, body: &str) -> String {
    let mut t = format!("{body} | authorization: {auth} |");
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let digits: String = s("card_number").chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            let groups: Vec<&str> = digits.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect();
            t += &format!(" card {} / {} / {digits}", groups.join(" "), groups.join("."));
        }
        for (k, label) in
            [("birth", "born"), ("pwd_2digit", "PIN digits"), ("imp_secret", "key"), ("channel_key", "channel")]
        {
            if !s(k).is_empty() {
                t += &format!(" {label} [{}]", s(k));
            }
        }
    }
    t += &format!(" {path}{FORGERY}");
    t
}

/// A payment of `customer_uid` (the key charged; `None` for a key-in payment), in KRW: billd takes an answer for
/// only what it asked for (issue 24 hardening, F7).
fn payment(
    merchant_uid: &str,
    amount: i64,
    status: &str,
    imp_uid: &str,
    echo: &str,
    customer_uid: Option<&str>,
) -> Value {
    let short: String = echo.chars().take(4096).collect();
    json!({
        "imp_uid": imp_uid, "merchant_uid": merchant_uid, "amount": amount, "currency": "KRW", "status": status,
        "customer_uid": customer_uid, "fail_reason": echo, "card_name": short, "card_number": short,
    })
}

async fn answer(State(st): State<Arc<EchoState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    st.bodies.lock().unwrap().push(body.clone());
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let path = parts.uri.path().to_owned();
    let echo = echo_of(&auth, &path, &body);
    let refuse = |echo: &str| json_answer(StatusCode::OK, json!({ "code": -1, "message": echo, "response": null }));
    let ok = |v: Value| json_answer(StatusCode::OK, json!({ "code": 0, "message": null, "response": v }));
    let last = path.rsplit('/').next().unwrap_or_default().to_owned();
    if path == "/users/getToken" {
        if st.refuse_token.load(Ordering::SeqCst) {
            return refuse(&echo);
        }
        let now = chrono::Utc::now().timestamp();
        return ok(json!({ "access_token": TOKEN, "now": now, "expired_at": now + 1800 }));
    }
    if path.starts_with("/subscribe/customers/") {
        if parts.method == "POST" && last.starts_with("refuse") {
            return refuse(&echo);
        }
        // The key asked for (a key answered for another customer_uid is not taken), echoing in every other field.
        return ok(json!({
            "customer_uid": last, "card_name": echo, "card_number": echo, "pg_provider": echo, "pg_id": echo,
            "inserted": 0, "updated": 0,
        }));
    }
    if path == "/subscribe/payments/onetime" || path == "/subscribe/payments/again" {
        let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let m = req["merchant_uid"].as_str().unwrap_or_default().to_owned();
        let amount = req["amount"].as_i64().unwrap_or(0);
        let key = req["customer_uid"].as_str();
        let card: String =
            req["card_number"].as_str().unwrap_or_default().chars().filter(char::is_ascii_digit).collect();
        let sneaky = if card.is_empty() { format!("imp_{TOKEN}") } else { format!("imp_{card}") };
        // A megabyte of fail reason (the answer stays under the 1 MiB billd reads).
        let huge = format!("{echo}{}", "x".repeat(1_000_000));
        return match () {
            _ if m.contains("declined") => ok(payment(&m, amount, "failed", "imp_1", &echo, key)),
            _ if m.contains("rejected") => refuse(&echo),
            _ if m.contains("odd-imp") => ok(payment(&m, amount, "paid", &echo, &echo, key)),
            _ if m.contains("sneaky-imp") => ok(payment(&m, amount, "paid", &sneaky, &echo, key)),
            _ if m.contains("odd-status") => ok(payment(&m, amount, &echo, "imp_1", &echo, key)),
            _ if m.contains("other-muid") => ok(payment(&echo, amount, "paid", "imp_1", &echo, key)),
            _ if m.contains("huge") => ok(payment(&m, amount, "failed", "imp_1", &huge, key)),
            _ => ok(payment(&m, amount, "paid", "imp_1", &echo, key)),
        };
    }
    if path.starts_with("/payments/find/") {
        let m = path.trim_start_matches("/payments/find/").split('/').next().unwrap_or_default().to_owned();
        if m.contains("rejected") && last == "failed" {
            return ok(payment(&m, 5000, "failed", "imp_2", &echo, None));
        }
        return json_answer(StatusCode::NOT_FOUND, json!({ "code": 1, "message": echo, "response": null }));
    }
    json_answer(StatusCode::NOT_FOUND, json!({ "code": 1, "message": echo, "response": null }))
}

/// Every output of one run through the commands, with what it was.
struct Run {
    outputs: Vec<(String, Output)>,
}

impl Run {
    fn all_text(&self) -> String {
        self.outputs
            .iter()
            .map(|(what, o)| {
                format!("== {what}\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
            })
            .collect()
    }
}

const SUBS: [&str; 8] = ["declined", "rejected", "odd-imp", "sneaky-imp", "odd-status", "other-muid", "huge", "plain"];

fn world(echo: &Echo) -> World {
    let mut body = MONTHLY.to_string();
    for s in SUBS {
        body += &sub(s, &format!("cust-{s}"), "monthly", "2025-01-01");
    }
    body += &sub("later", "cust-later", "monthly", "2025-01-02");
    let w = World::new(Setup { body: &body, timeout: "2s", ..Default::default() });
    let text = std::fs::read_to_string(&w.config).unwrap().replace(&w.sandbox.base_url(), &echo.base_url());
    std::fs::write(&w.config, text).unwrap();
    w
}

fn card_json() -> String {
    format!(r#"{{"card_number": "{CARD}", "expiry": "2031-12", "birth": "{BIRTH}", "pwd_2digit": "{PIN}"}}"#)
}

/// Runs one command (card JSON on stdin when `card`), in the given log format, against the echoing gateway.
fn billd(w: &World, format: &str, args: &[&str], card: bool) -> Output {
    let mut c = w.billd();
    c.env("BILLD_GATEWAY__IMP_SECRET", SECRET).args(["--log-format", format]).args(args);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if card {
        stdin.write_all(card_json().as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Every command that talks to the gateway, against the echo, in one log format.
fn run_all(format: &str) -> (World, Echo, Run) {
    let echo = Echo::start();
    let w = world(&echo);
    let mut outputs = Vec::new();
    let mut run = |what: &str, args: &[&str], card: bool| {
        let out = billd(&w, format, args, card);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{what}");
        outputs.push((format!("{format}: {what}"), out));
    };
    // The echo answers every key lookup with a "key": --replace-key, so that the card and channel key are sent.
    run(
        "register refused",
        &["customers", "register", "refuse-1", "--replace-key", "--channel-key", CHANNEL_KEY],
        true,
    );
    run("register", &["customers", "register", "ok-1", "--replace-key", "--channel-key", CHANNEL_KEY], true);
    run("show", &["customers", "show", "ok-1"], false);
    for m in ["declined", "rejected", "odd-imp", "sneaky-imp", "odd-status", "other-muid", "huge", "plain"] {
        let merchant_uid = format!("once-{m}");
        let args = ["charge-once", "--merchant-uid", &merchant_uid, "--amount", "5000", "--name", "Setup fee"];
        run(&format!("charge-once {m}"), &args, true);
    }
    let add = ["subscriptions", "add", "--id", "added", "--customer-uid", "refuse-2", "--plan", "monthly"];
    run("subscriptions add --register-card", &[&add[..], &["--register-card", "--replace-key"]].concat(), true);
    run("tick", &["tick", "--as-of", "2025-01-01T10:00:00+09:00"], false);
    // The gateway now refuses tokens, echoing the imp_secret: the next pass's lookups and its new charge, and a card
    // command.
    echo.state.refuse_token.store(true, Ordering::SeqCst);
    run("tick, token refused", &["tick", "--as-of", "2025-01-02T10:00:00+09:00"], false);
    run("show, token refused", &["customers", "show", "ok-1"], false);
    run("charges", &["charges"], false);
    run("charges --json", &["charges", "--json"], false);
    (w, echo, Run { outputs })
}

fn digits(bytes: &[u8]) -> String {
    bytes.iter().filter(|b| b.is_ascii_digit()).map(|&b| b as char).collect()
}

/// The secrets, none of which may appear: (what, the exact text).
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("card number", CARD.to_string()),
        ("card number", CARD_DIGITS.to_string()),
        ("card number", "4532 0151 1283 0366".to_string()),
        ("card number", "4532.0151.1283.0366".to_string()),
        ("birth", BIRTH.to_string()),
        ("PIN digits", format!("\"pwd_2digit\":\"{PIN}\"")),
        ("PIN digits", format!("pwd_2digit\\\":\\\"{PIN}")),
        ("PIN digits", format!("[{PIN}]")),
        ("imp_secret", SECRET.to_string()),
        ("access token", TOKEN.to_string()),
        ("channel key", CHANNEL_KEY.to_string()),
    ]
}

/// What leaked where, each kind once per place: (place, what).
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, what: &str, problem: String) {
        let p = format!("{what}: {problem}");
        if !self.0.contains(&p) {
            self.0.push(p);
        }
    }
}

fn check_no_secret(what: &str, bytes: &[u8], problems: &mut Problems) {
    let text = String::from_utf8_lossy(bytes);
    for (name, secret) in secrets() {
        if text.contains(&secret) {
            problems.add(what, format!("the {name} leaked: …{}…", excerpt(&text, &secret)));
        }
    }
    // The card number in any grouping: no run of its digits, whatever separates them.
    for line in text.lines() {
        if digits(line.as_bytes()).contains(CARD_DIGITS) {
            problems.add(what, "the card number's digits (some grouping) leaked".into());
        }
    }
}

/// The text just around the first `needle`.
fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let before = text[..at].chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<String>();
    let after: String = text[at..].chars().take(needle.chars().count() + 20).collect();
    format!("{before}{after}").escape_debug().to_string()
}

fn check_run(w: &World, echo: &Echo, run: &Run) {
    // The echo really reached billd: the requests carried the secrets.
    let bodies = echo.state.bodies.lock().unwrap().join("\n");
    for sent in [CARD, BIRTH, SECRET, CHANNEL_KEY] {
        assert!(bodies.contains(sent), "{sent} was never sent: the test proves nothing");
    }
    let mut problems = Problems::default();
    for (what, out) in &run.outputs {
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let what = format!("{what} ({stream})");
            check_no_secret(&what, bytes, &mut problems);
            let text = String::from_utf8_lossy(bytes);
            for c in ['\x1b', '\r', '\x07', '\u{2028}'] {
                if text.contains(c) {
                    problems.add(&what, format!("raw {c:?} from the gateway"));
                }
            }
            for line in text.lines() {
                if line.starts_with("FORGED-LINE") || line.starts_with("{\"forged\"") {
                    problems.add(&what, format!("a forged log line: {}", excerpt(line, "")));
                }
                if line.chars().count() > 2000 {
                    problems.add(&what, format!("a {}-character line", line.chars().count()));
                }
            }
        }
    }
    // The database files, and the text billd stored in them.
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("billd.sqlite3") {
            let bytes = std::fs::read(&path).unwrap();
            check_no_secret(&name, &bytes, &mut problems);
            if digits(&bytes).contains(CARD_DIGITS) {
                problems.add(&name, "the card number's digits".into());
            }
        }
    }
    let db = w.db();
    for (table, column) in [("attempts", "fail_reason"), ("attempts", "imp_uid"), ("one_time_charges", "fail_reason")]
        .into_iter()
        .chain([("one_time_charges", "imp_uid"), ("events", "detail")])
    {
        let mut st = db.prepare(&format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL")).unwrap();
        let texts: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        for t in texts {
            if t.chars().any(|c| c.is_control()) {
                problems.add(&format!("database {table}.{column}"), "control characters stored".into());
            }
            if t.chars().count() > 2000 {
                problems.add(&format!("database {table}.{column}"), format!("{} characters stored", t.chars().count()));
            }
        }
    }
    // Nothing from an echo was taken for a payment.
    let mut paid: Vec<String> = db
        .prepare(
            "SELECT merchant_uid FROM one_time_charges WHERE status = 'paid'
             UNION ALL SELECT merchant_uid FROM attempts WHERE status = 'paid'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    paid.sort();
    if paid != ["billd-plain-0", "once-plain"] {
        problems.add("database", format!("paid: {paid:?}; only the plain answers are payments"));
    }
    assert!(problems.0.is_empty(), "{} problems:\n{}", problems.0.len(), problems.0.join("\n"));
    // The megabyte of fail reason was cut.
    let huge: String = db
        .query_row("SELECT fail_reason FROM one_time_charges WHERE merchant_uid = 'once-huge'", [], |r| r.get(0))
        .unwrap();
    assert!(huge.ends_with('…') && huge.chars().count() <= 400, "{} characters stored", huge.chars().count());
}

#[test]
fn an_echoing_gateway_gets_no_secret_into_console_output_or_the_database() {
    let (w, echo, run) = run_all("console");
    let all = run.all_text();
    println!("{all}");
    check_run(&w, &echo, &run);
    // The cleaning did the work (the echo was shown, with the secrets taken out), not a lucky cut.
    for marker in ["authorization: Bearer [redacted]", "PIN digits [**]", r#""pwd_2digit":"***""#, "key [[redacted]]"] {
        assert!(all.contains(marker), "{marker:?} not in the output:\n{all}");
    }
}

#[test]
fn an_echoing_gateway_gets_no_secret_into_json_logs_or_the_database() {
    let (w, echo, run) = run_all("json");
    println!("{}", run.all_text());
    check_run(&w, &echo, &run);
}

/// The channel key need not be on the command line: from `BILLD_CHANNEL_KEY` or `--channel-key-file`, it reaches the
/// gateway, and an echo of it is cleaned from the output like any other secret billd sent.
#[test]
fn a_channel_key_from_the_environment_or_a_file_reaches_the_gateway_and_never_the_output() {
    let echo = Echo::start();
    let w = world(&echo);
    let file = w.dir.path().join("channel_key");
    std::fs::write(&file, format!("{CHANNEL_KEY}-file\n")).unwrap();
    let from_env = {
        let mut c = w.billd();
        c.env("BILLD_GATEWAY__IMP_SECRET", SECRET).env("BILLD_CHANNEL_KEY", CHANNEL_KEY);
        c.args(["customers", "register", "ok-env", "--replace-key"]);
        c
    };
    let from_file = {
        let mut c = w.billd();
        c.env("BILLD_GATEWAY__IMP_SECRET", SECRET).args(["customers", "register", "ok-file", "--replace-key"]);
        c.arg("--channel-key-file");
        c.arg(&file);
        c
    };
    for (mut c, key) in [(from_env, CHANNEL_KEY.to_string()), (from_file, format!("{CHANNEL_KEY}-file"))] {
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(card_json().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        let sent = echo.state.bodies.lock().unwrap().last().cloned().unwrap_or_default();
        assert!(sent.contains(&format!("\"channel_key\":\"{key}\"")), "the channel key was not sent: {sent}");
        assert!(!text.contains(&key), "the channel key was echoed: {text}");
    }
}
