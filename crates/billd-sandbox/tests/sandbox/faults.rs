//! Fault injection: 500s, lost and dropped responses, garbage, latency, rate limit, `times`, and the `/__sandbox` endpoints.

use std::time::{Duration, Instant};

use billd_sandbox::{Fault, FaultRule, Latency, SandboxConfig, SeedCustomer, cards};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Env, again_body, env_with_customer, failure, read, success};

fn rule(customer_uid: Option<&str>, fault: Fault, times: Option<u32>) -> FaultRule {
    FaultRule { customer_uid: customer_uid.map(str::to_string), fault, times }
}

#[tokio::test]
async fn http500_answers_500_and_charges_nothing_for_times_requests() {
    let env = env_with_customer("cust_500").await;
    env.sandbox.add_fault(rule(Some("cust_500"), Fault::Http500, Some(2)));
    for _ in 0..2 {
        let (status, body) = env.again("cust_500", "order_500").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_ne!(body["code"], 0);
    }
    assert!(env.sandbox.ledger().is_empty(), "nothing charged");
    let (status, body) = env.again("cust_500", "order_500").await;
    assert_eq!(success(status, &body)["status"], "paid", "the fault is used up");
    assert_eq!(env.sandbox.ledger().len(), 1);
}

#[tokio::test]
async fn faults_for_one_customer_leave_the_others_alone() {
    let env = env_with_customer("cust_a").await;
    env.sandbox.register_customer("cust_b", cards::APPROVE).unwrap();
    env.sandbox.add_fault(rule(Some("cust_a"), Fault::Http500, None));
    let (status, _) = env.again("cust_b", "order_b").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env.again("cust_a", "order_a").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    env.sandbox.clear_faults();
    let (status, _) = env.again("cust_a", "order_a").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn lose_response_after_charge_times_the_client_out_but_the_charge_is_recorded() {
    let env = env_with_customer("cust_lose").await;
    env.sandbox.add_fault(rule(None, Fault::LoseResponseAfterCharge { hold: Duration::from_millis(1500) }, Some(1)));
    let err = env
        .http
        .post(env.url("/subscribe/payments/again"))
        .bearer_auth(&env.token)
        .timeout(Duration::from_millis(300))
        .json(&again_body("cust_lose", "order_lose"))
        .send()
        .await
        .expect_err("the client must time out");
    assert!(err.is_timeout(), "{err:?}");
    let ledger = env.sandbox.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].merchant_uid.as_str(), ledger[0].status.as_str()), ("order_lose", "paid"));
    // Reconciliation finds it, and a retry is refused as already paid.
    let (s, b) = env.get("/payments/find/order_lose/paid").await;
    success(s, &b);
    let (s, b) = env.again("cust_lose", "order_lose").await;
    failure(s, &b, StatusCode::OK, 1);
}

#[tokio::test]
async fn drop_after_charge_closes_the_connection_but_the_charge_is_recorded() {
    let env = Env::start().await;
    env.sandbox.register_customer("cust_drop", cards::DECLINE_LOST).unwrap();
    env.sandbox.add_fault(rule(Some("cust_drop"), Fault::DropAfterCharge, Some(1)));
    let started = Instant::now();
    let err = env.again_raw("cust_drop", "order_drop").await.expect_err("no HTTP response");
    assert!(!err.is_timeout(), "a dropped connection, not a timeout: {err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let ledger = env.sandbox.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].status, "failed", "recorded as the card decided");
    // The next request is answered normally.
    let (status, body) = env.again("cust_drop", "order_drop").await;
    assert_eq!(success(status, &body)["status"], "failed");
}

#[tokio::test]
async fn garbage_answers_200_with_a_non_json_body_and_charges_nothing() {
    let env = env_with_customer("cust_g").await;
    env.sandbox.add_fault(rule(None, Fault::Garbage, Some(1)));
    let resp = env.again_raw("cust_g", "order_g").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert!(env.sandbox.ledger().is_empty());
}

#[tokio::test]
async fn configured_latency_delays_charges_after_recording_them() {
    let cfg = SandboxConfig {
        latency: Latency::Fixed(Duration::from_millis(250)),
        customers: vec![SeedCustomer { customer_uid: "cust_slow".into(), card_number: cards::APPROVE.into() }],
        ..SandboxConfig::default()
    };
    let env = Env::with(cfg).await;
    let started = Instant::now();
    let (status, body) = env.again("cust_slow", "order_slow").await;
    success(status, &body);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    // Lookups are not delayed.
    let started = Instant::now();
    let (status, _) = env.get("/payments/find/order_slow").await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
}

#[tokio::test]
async fn random_latency_stays_within_its_bounds() {
    let cfg = SandboxConfig {
        latency: Latency::Random { min: Duration::from_millis(50), max: Duration::from_millis(150) },
        ..SandboxConfig::default()
    };
    let env = Env::with(cfg).await;
    for i in 0..3 {
        let started = Instant::now();
        let (s, b) = env.register(&format!("cust_{i}"), cards::APPROVE).await;
        success(s, &b);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(50) && took < Duration::from_millis(1000), "{took:?}");
    }
}

#[tokio::test]
async fn per_customer_latency_fault_slows_only_that_customer() {
    let env = env_with_customer("cust_lat").await;
    env.sandbox.register_customer("cust_fast", cards::APPROVE).unwrap();
    env.sandbox.add_fault(rule(Some("cust_lat"), Fault::Latency(Duration::from_millis(300)), None));
    let started = Instant::now();
    let (s, b) = env.again("cust_fast", "o_fast").await;
    success(s, &b);
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    let started = Instant::now();
    let (s, b) = env.again("cust_lat", "o_lat").await;
    success(s, &b);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn requests_above_the_rate_limit_get_429() {
    let cfg = SandboxConfig { rate_limit: Some(5), ..SandboxConfig::default() };
    let env = Env::with(cfg).await; // getToken counted as one request
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, body) = env.get("/payments/find/x").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            failure(status, &body, StatusCode::TOO_MANY_REQUESTS, -1);
        }
        statuses.push(status);
    }
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    // At most 5 per one-second window; 12 requests take far less than two windows.
    assert!(limited >= 2, "{statuses:?}");
    // /__sandbox is never limited.
    for _ in 0..10 {
        let resp = env.http.get(env.url("/__sandbox/payments")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = env.get("/payments/find/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "admitted again in a new window");
}

#[tokio::test]
async fn faults_configured_at_start_apply() {
    let cfg = SandboxConfig::from_toml_str(
        r#"
        [[customers]]
        customer_uid = "seeded"
        card_number = "4242424242424242"

        [[faults]]
        customer_uid = "seeded"
        fault = "http500"
        times = 1
        "#,
    )
    .unwrap();
    let env = Env::with(cfg).await;
    let (s, _) = env.again("seeded", "o1").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let (s, b) = env.again("seeded", "o1").await;
    success(s, &b);
}

#[tokio::test]
async fn sandbox_http_endpoints_manage_faults_and_show_the_ledger() {
    let env = env_with_customer("cust_h").await;
    let post = |body: Value| env.http.post(env.url("/__sandbox/faults")).json(&body).send();
    let (s, active) =
        read(post(json!({"customer_uid": "cust_h", "fault": "http500", "times": 1})).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(active, json!([{"customer_uid": "cust_h", "fault": "http500", "times": 1}]));
    let (s, active) =
        read(post(json!({"fault": {"lose_response_after_charge": {"hold": "2s"}}, "times": 0})).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(active.as_array().map(Vec::len), Some(1), "times 0 is never active: {active}");

    let (s, err) = read(post(json!({"fault": "explode"})).await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("explode"), "{err}");

    let (s, _) = env.again("cust_h", "o_h").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let (s, b) = env.again("cust_h", "o_h").await;
    success(s, &b);

    let (s, active) = read(post(json!({"fault": "garbage"})).await.unwrap()).await;
    assert_eq!((s, active.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (s, cleared) = read(env.http.delete(env.url("/__sandbox/faults")).send().await.unwrap()).await;
    assert_eq!((s, cleared), (StatusCode::OK, json!([])));

    let (s, ledger) = read(env.http.get(env.url("/__sandbox/payments")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let ledger = ledger.as_array().unwrap().clone();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["merchant_uid"], "o_h");
    assert_eq!(ledger[0]["status"], "paid");
    let typed: Vec<billd_sandbox::LedgerEntry> = serde_json::from_value(Value::Array(ledger)).unwrap();
    assert_eq!(typed, env.sandbox.ledger());

    let (s, _) = read(env.http.post(env.url("/__sandbox/reset")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(env.sandbox.ledger().is_empty());
    let (s, b) = env.again("cust_h", "o_h").await;
    failure(s, &b, StatusCode::OK, -1); // cust_h was registered at runtime, not seeded
}

impl Env {
    async fn again_raw(&self, customer_uid: &str, merchant_uid: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(self.url("/subscribe/payments/again"))
            .bearer_auth(&self.token)
            .json(&again_body(customer_uid, merchant_uid))
            .send()
            .await
    }
}

/// Issue 24: a refund whose answer is lost. The cancel is made, then the connection is closed without an answer;
/// charges are not touched by the rule, and a lookup shows the refund.
#[tokio::test]
async fn drop_after_cancel_makes_the_cancel_and_loses_its_answer() {
    let env = env_with_customer("cust_dc").await;
    env.sandbox.add_fault(rule(Some("cust_dc"), Fault::DropAfterCancel, Some(1)));
    let (status, body) = env.again("cust_dc", "order_dc").await;
    let imp_uid = success(status, &body)["imp_uid"].as_str().unwrap().to_string();
    let sent = env
        .http
        .post(env.url("/payments/cancel"))
        .bearer_auth(&env.token)
        .json(&json!({"imp_uid": imp_uid, "amount": 900, "checksum": 9900, "reason": "lost"}))
        .send()
        .await;
    let err = sent.expect_err("no HTTP response");
    assert!(!err.is_timeout(), "a dropped connection, not a timeout: {err:?}");
    let (status, body) = env.get(&format!("/payments/{imp_uid}")).await;
    let p = success(status, &body);
    assert_eq!((p["status"].as_str(), p["cancel_amount"].as_i64()), (Some("paid"), Some(900)));
    assert_eq!(p["cancel_history"][0]["amount"], 900);
    // Once: the next cancel is answered.
    let (status, body) =
        env.post("/payments/cancel", &json!({"imp_uid": imp_uid, "amount": 100, "checksum": 9000})).await;
    assert_eq!(success(status, &body)["cancel_amount"], 1000);
}

/// Issue 24, second review: a cancel that reaches the gateway late. It is held, then checked and made (its checksum
/// against the balance of that moment) even though the client gave up; until then no lookup shows it.
#[tokio::test]
async fn cancel_later_makes_the_cancel_late_even_if_the_client_has_gone() {
    let env = env_with_customer("cust_cl").await;
    let hold = std::time::Duration::from_millis(600);
    env.sandbox.add_fault(rule(Some("cust_cl"), Fault::CancelLater { after: hold }, Some(1)));
    let (status, body) = env.again("cust_cl", "order_cl").await;
    let imp_uid = success(status, &body)["imp_uid"].as_str().unwrap().to_string();
    let sent = env
        .http
        .post(env.url("/payments/cancel"))
        .bearer_auth(&env.token)
        .timeout(std::time::Duration::from_millis(100))
        .json(&json!({"imp_uid": imp_uid, "amount": 900, "checksum": 9900, "reason": "late"}))
        .send()
        .await;
    assert!(sent.expect_err("the client gives up first").is_timeout());
    let (status, body) = env.get(&format!("/payments/{imp_uid}")).await;
    assert_eq!(success(status, &body)["cancel_amount"], 0, "made before it was held");
    let start = std::time::Instant::now();
    loop {
        let (status, body) = env.get(&format!("/payments/{imp_uid}")).await;
        if success(status, &body)["cancel_amount"] == 900 {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the held cancel was never made");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
