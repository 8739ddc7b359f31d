//! i'mport's notifications (`notice_url`, `GET /__sandbox/notices`): posted on approvals and on console cancels
//! (`POST /__sandbox/console/cancel`), never on a decline nor on a cancel through the API; JSON or a form.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use billd_sandbox::{NoticeFormat, SandboxConfig, cards};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Env, success};

/// A receiver on 127.0.0.1 that answers 200 to everything and keeps each request (its head and body).
fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
            kept.lock().unwrap().push(String::from_utf8_lossy(&buf).to_string());
        }
    });
    (port, got)
}

async fn env_posting_to(port: u16, format: NoticeFormat) -> Env {
    let url = format!("http://127.0.0.1:{port}/iamport/notice");
    let env = Env::with(SandboxConfig { notice_url: Some(url), notice_format: format, ..Default::default() }).await;
    env.sandbox.register_customer("ok", cards::APPROVE).unwrap();
    env.sandbox.register_customer("poor", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    env
}

/// Waits until the sandbox has had `n` notifications answered.
async fn delivered(env: &Env, n: usize) {
    for _ in 0..500 {
        if env.sandbox.notices().iter().filter(|e| e.http_status.is_some()).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} notifications not delivered: {:?}", env.sandbox.notices());
}

#[tokio::test]
async fn approvals_and_console_cancels_are_notified_declines_and_api_cancels_are_not() {
    let (port, got) = receiver();
    let env = env_posting_to(port, NoticeFormat::Json).await;
    let (status, body) = env.again("ok", "m-paid").await;
    let paid = success(status, &body);
    let (status, body) = env.again("poor", "m-declined").await;
    assert_eq!(success(status, &body)["status"], "failed");
    let imp_uid = paid["imp_uid"].as_str().unwrap().to_string();
    // A cancel through the API: no notification (i'mport sends one only with enable_webhook).
    let (status, body) = env.post("/payments/cancel", &json!({"imp_uid": imp_uid, "amount": 1000})).await;
    success(status, &body);
    // A cancel in the console: one, with its cancellation_id.
    let resp = env
        .http
        .post(env.url("/__sandbox/console/cancel"))
        .json(&json!({"imp_uid": imp_uid, "amount": 2000, "reason": "console"}))
        .send()
        .await
        .unwrap();
    let (status, body): (StatusCode, Value) = (resp.status(), resp.json().await.unwrap());
    assert_eq!(success(status, &body)["cancel_amount"], 3000);
    delivered(&env, 2).await;
    let log = env.sandbox.notices();
    let seen: Vec<(&str, &str, &str)> =
        log.iter().map(|e| (e.imp_uid.as_str(), e.merchant_uid.as_str(), e.status.as_str())).collect();
    assert_eq!(seen, [(imp_uid.as_str(), "m-paid", "paid"), (imp_uid.as_str(), "m-paid", "cancelled")]);
    assert!(log.iter().all(|e| e.http_status == Some(200)), "{log:?}");
    let id = log[1].cancellation_id.clone().expect("a cancel's id");
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies[0].starts_with("POST /iamport/notice HTTP/1.1\r\n"), "{}", bodies[0]);
    assert!(bodies[0].to_ascii_lowercase().contains("content-type: application/json"), "{}", bodies[0]);
    assert!(bodies[0].ends_with(&format!(r#"{{"imp_uid":"{imp_uid}","merchant_uid":"m-paid","status":"paid"}}"#)));
    assert!(bodies[1].contains(&format!(r#""cancellation_id":"{id}""#)), "{}", bodies[1]);
    // The same list over HTTP.
    let listed: Value = env.http.get(env.url("/__sandbox/notices")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}

#[tokio::test]
async fn a_form_notification_and_an_unreachable_receiver() {
    let (port, got) = receiver();
    let env = env_posting_to(port, NoticeFormat::Form).await;
    let (status, body) = env.again("ok", "m-1").await;
    let imp_uid = success(status, &body)["imp_uid"].as_str().unwrap().to_string();
    delivered(&env, 1).await;
    let body = got.lock().unwrap()[0].clone();
    assert!(body.to_ascii_lowercase().contains("content-type: application/x-www-form-urlencoded"), "{body}");
    assert!(body.ends_with(&format!("imp_uid={imp_uid}&merchant_uid=m-1&status=paid")), "{body}");
    // A receiver that is down: the charge is made all the same; the notification says why it was not delivered.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = env_posting_to(dead, NoticeFormat::Json).await;
    let (status, body) = env.again("ok", "m-2").await;
    assert_eq!(success(status, &body)["status"], "paid");
    for _ in 0..500 {
        if env.sandbox.notices().first().is_some_and(|e| e.error.is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no delivery error: {:?}", env.sandbox.notices());
}

#[test]
fn a_notice_url_must_be_http_with_a_port() {
    for bad in ["https://127.0.0.1:1/x", "http://127.0.0.1/x", "127.0.0.1:1"] {
        let text = format!("notice_url = \"{bad}\"\n");
        assert!(SandboxConfig::from_toml_str(&text).is_err(), "{bad}");
    }
    let cfg = SandboxConfig::from_toml_str(
        "notice_url = \"http://127.0.0.1:8789/iamport/notice\"\nnotice_format = \"form\"\n",
    )
    .unwrap();
    assert_eq!(cfg.notice_format, NoticeFormat::Form);
}
