//! again / onetime charges, the test cards, merchant_uid rules, lookups and cancels.

use billd_sandbox::cards;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Env, again_body, env_with_customer, failure, onetime_body, read, success};

#[tokio::test]
async fn again_charges_a_billing_key_and_the_payment_can_be_looked_up() {
    let env = env_with_customer("cust_ok").await;
    let (status, body) = env.again("cust_ok", "order_1").await;
    let paid = success(status, &body);
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount"], 9900);
    assert_eq!(paid["cancel_amount"], 0);
    assert_eq!(paid["currency"], "KRW");
    assert_eq!(paid["channel"], "api");
    assert_eq!(paid["pay_method"], "card");
    assert_eq!(paid["customer_uid"], "cust_ok");
    assert_eq!(paid["customer_uid_usage"], "payment");
    assert_eq!(paid["card_number"], "424242******4242");
    assert_eq!(paid["failed_at"], 0);
    assert!(paid["fail_reason"].is_null());
    assert!(paid["paid_at"].as_i64().unwrap() > 0);
    let imp_uid = paid["imp_uid"].as_str().unwrap();
    assert!(
        imp_uid.len() == 16 && imp_uid.starts_with("imp_") && imp_uid[4..].bytes().all(|b| b.is_ascii_digit()),
        "{imp_uid}"
    );

    for path in [
        format!("/payments/{imp_uid}"),
        "/payments/find/order_1".to_string(),
        "/payments/find/order_1/".to_string(),
        "/payments/find/order_1/paid".to_string(),
    ] {
        let (status, body) = env.get(&path).await;
        assert_eq!(success(status, &body), paid, "{path}");
    }
    let (status, body) = env.get("/payments/find/order_1/failed").await;
    failure(status, &body, StatusCode::NOT_FOUND, 1);

    let ledger = env.sandbox.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].imp_uid, imp_uid);
    assert_eq!(ledger[0].status, "paid");
    assert_eq!(ledger[0].amount, 9900);
    assert_eq!(ledger[0].card_number_masked.as_deref(), Some("424242******4242"));
}

#[tokio::test]
async fn a_paid_merchant_uid_cannot_be_paid_again() {
    let env = env_with_customer("cust_ok").await;
    let (status, body) = env.again("cust_ok", "order_dup").await;
    success(status, &body);
    let (status, body) = env.again("cust_ok", "order_dup").await;
    let msg = failure(status, &body, StatusCode::OK, 1);
    assert!(msg.contains("order_dup"), "{msg}");
    // Not through onetime either.
    let (status, body) = env.post("/subscribe/payments/onetime", &onetime_body("order_dup", cards::APPROVE)).await;
    failure(status, &body, StatusCode::OK, 1);
    assert_eq!(env.sandbox.ledger().len(), 1, "nothing charged twice");
}

#[tokio::test]
async fn a_failed_merchant_uid_can_be_retried_and_every_attempt_is_kept() {
    let env = Env::start().await;
    env.sandbox.register_customer("cust_df", &cards::decline_first(1)).unwrap();
    let (s, b) = env.again("cust_df", "order_retry").await;
    let failed = success(s, &b);
    assert_eq!(failed["status"], "failed");
    let (s, b) = env.again("cust_df", "order_retry").await;
    let paid = success(s, &b);
    assert_eq!(paid["status"], "paid");
    assert_ne!(failed["imp_uid"], paid["imp_uid"]);

    let (s, b) = env.get("/payments/find/order_retry").await;
    assert_eq!(success(s, &b)["imp_uid"], paid["imp_uid"], "find = latest started");
    let (s, b) = env.get("/payments/find/order_retry?sorting=started").await;
    assert_eq!(success(s, &b)["imp_uid"], failed["imp_uid"], "sorting=started = oldest");
    let (s, b) = env.get("/payments/find/order_retry/failed").await;
    assert_eq!(success(s, &b)["imp_uid"], failed["imp_uid"]);

    let (s, b) = env.get("/payments/findAll/order_retry").await;
    let all = success(s, &b);
    assert_eq!(all["total"], 2);
    assert_eq!(all["previous"], 0);
    assert_eq!(all["next"], 0);
    let uids: Vec<&Value> = all["list"].as_array().unwrap().iter().map(|p| &p["imp_uid"]).collect();
    assert_eq!(uids, [&paid["imp_uid"], &failed["imp_uid"]]);

    let (s, b) = env.get("/payments/findAll/order_retry/").await;
    assert_eq!(success(s, &b)["total"], 2, "an empty status segment means any status");
    let (s, b) = env.get("/payments/findAll/order_retry/paid").await;
    assert_eq!(success(s, &b)["total"], 1);
    let (s, b) = env.get("/payments/findAll/order_retry?limit=1&page=2").await;
    let page2 = success(s, &b);
    assert_eq!((page2["previous"].as_i64(), page2["next"].as_i64()), (Some(1), Some(0)));
    assert_eq!(page2["list"][0]["imp_uid"], failed["imp_uid"]);
    let (s, b) = env.get("/payments/findAll/order_retry?limit=1").await;
    assert_eq!(success(s, &b)["next"], 2);

    let ledger = env.sandbox.ledger();
    let statuses: Vec<&str> = ledger.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(statuses, ["failed", "paid"]);
}

#[tokio::test]
async fn an_unregistered_customer_gets_code_minus_one() {
    let env = Env::start().await;
    let (status, body) = env.again("nobody", "order_x").await;
    let msg = failure(status, &body, StatusCode::OK, -1);
    assert_eq!(msg, "등록되지 않은 구매자입니다.");
    assert!(env.sandbox.ledger().is_empty());
}

#[tokio::test]
async fn each_test_card_answers_as_documented() {
    let env = Env::start().await;
    let cases = [
        (cards::APPROVE, "paid", None),
        ("5555555555554444", "paid", None),
        (cards::DECLINE_INSUFFICIENT_FUNDS, "failed", Some("잔액부족")),
        (cards::DECLINE_LOST, "failed", Some("분실")),
        (cards::DECLINE_STOLEN, "failed", Some("도난")),
    ];
    for (i, (card, want_status, reason)) in cases.into_iter().enumerate() {
        let uid = format!("cust_card_{i}");
        let (s, b) = env.register(&uid, card).await;
        success(s, &b);
        let (s, b) = env.again(&uid, &format!("order_card_{i}")).await;
        let p = success(s, &b);
        assert_eq!(p["status"], want_status, "{card}: {p}");
        match reason {
            None => {
                assert!(p["fail_reason"].is_null(), "{p}");
                assert_eq!(p["failed_at"], 0);
                assert!(p["paid_at"].as_i64().unwrap() > 0);
            }
            Some(r) => {
                assert!(p["fail_reason"].as_str().unwrap().contains(r), "{card}: {p}");
                assert_eq!(p["paid_at"], 0, "a decline is not paid");
                assert!(p["failed_at"].as_i64().unwrap() > 0);
            }
        }
    }
}

#[tokio::test]
async fn decline_first_n_declines_n_times_per_billing_key_then_approves() {
    let env = Env::start().await;
    let card = cards::decline_first(3);
    env.sandbox.register_customer("k1", &card).unwrap();
    env.sandbox.register_customer("k2", &card).unwrap();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let (s, b) = env.again("k1", &format!("k1_{i}")).await;
        statuses.push(success(s, &b)["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["failed", "failed", "failed", "paid", "paid"]);
    let (s, b) = env.again("k2", "k2_0").await;
    assert_eq!(success(s, &b)["status"], "failed", "k2 has its own count");
}

#[tokio::test]
async fn again_validates_required_fields_and_lengths() {
    let env = env_with_customer("cust_v").await;
    let base = again_body("cust_v", "order_v");
    let long_merchant = "m".repeat(41);
    let long_customer = "c".repeat(81);
    let long_name = "n".repeat(41);
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("name", None),
        ("name", Some(json!(long_name))),
        ("merchant_uid", None),
        ("merchant_uid", Some(json!(long_merchant))),
        ("customer_uid", None),
        ("customer_uid", Some(json!(long_customer))),
        ("amount", None),
        ("amount", Some(json!(0))),
        ("amount", Some(json!(-5))),
        ("amount", Some(json!("lots"))),
        ("amount", Some(json!(99.5))),
        ("buyer_name", Some(json!("b".repeat(17)))),
        ("buyer_email", Some(json!("e".repeat(65)))),
        ("buyer_postcode", Some(json!("123456789"))),
        ("product_type", Some(json!("virtual"))),
        ("card_quota", Some(json!(-1))),
    ];
    for (field, value) in cases {
        let mut body = base.clone();
        match &value {
            None => {
                body.as_object_mut().unwrap().remove(field);
            }
            Some(v) => body[field] = v.clone(),
        }
        let (status, resp) = env.post("/subscribe/payments/again", &body).await;
        let msg = failure(status, &resp, StatusCode::BAD_REQUEST, 1);
        assert!(msg.contains(field), "{field}={value:?}: {msg}");
    }
    // Exactly at the limits is fine.
    let mut body = base.clone();
    body["merchant_uid"] = json!("m".repeat(40));
    body["name"] = json!("이".repeat(40));
    let (status, resp) = env.post("/subscribe/payments/again", &body).await;
    success(status, &resp);
    assert_eq!(env.sandbox.ledger().len(), 1, "only the valid request was recorded");
}

#[tokio::test]
async fn malformed_bodies_are_400_with_an_envelope() {
    let env = env_with_customer("cust_m").await;
    for (content_type, body) in [
        ("application/json", "{\"customer_uid\": "),
        ("application/json", "[1, 2]"),
        ("application/json", "\u{0}\u{1}"),
    ] {
        let resp = env
            .http
            .post(env.url("/subscribe/payments/again"))
            .bearer_auth(&env.token)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, resp) = read(resp).await;
        failure(status, &resp, StatusCode::BAD_REQUEST, 1);
    }
    assert!(env.sandbox.ledger().is_empty());
}

#[tokio::test]
async fn form_encoded_again_works_like_json() {
    let env = env_with_customer("cust_f").await;
    let resp = env
        .http
        .post(env.url("/subscribe/payments/again"))
        .header("Authorization", env.token.as_str())
        .form(&[("customer_uid", "cust_f"), ("merchant_uid", "order_form"), ("amount", "12000"), ("name", "Form plan")])
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    let p = success(status, &body);
    assert_eq!(p["amount"], 12000);
    assert_eq!(p["name"], "Form plan");
}

#[tokio::test]
async fn onetime_charges_a_card_and_optionally_stores_the_key() {
    let env = Env::start().await;
    let (s, b) = env.post("/subscribe/payments/onetime", &onetime_body("order_one", cards::APPROVE)).await;
    let p = success(s, &b);
    assert_eq!(p["status"], "paid");
    assert!(p["customer_uid_usage"].is_null(), "plain key-in payment");
    assert!(p.get("customer_uid").is_none());

    let mut body = onetime_body("order_one_key", cards::DECLINE_INSUFFICIENT_FUNDS);
    body["customer_uid"] = json!("cust_one");
    body["buyer_name"] = json!("홍길동");
    let (s, b) = env.post("/subscribe/payments/onetime", &body).await;
    let p = success(s, &b);
    assert_eq!(p["status"], "failed");
    assert_eq!(p["customer_uid"], "cust_one");
    assert_eq!(p["customer_uid_usage"], "issue");
    let (s, b) = env.get("/subscribe/customers/cust_one").await;
    let key = success(s, &b);
    assert_eq!(key["card_number"], "400000******9995");
    assert_eq!(key["customer_name"], "홍길동", "buyer_* become customer_*");
    let (s, b) = env.again("cust_one", "order_one_again").await;
    assert_eq!(success(s, &b)["status"], "failed", "the stored key keeps the card's behaviour");
}

#[tokio::test]
async fn onetime_rejects_bad_cards_and_missing_fields() {
    let env = Env::start().await;
    let (s, b) = env.post("/subscribe/payments/onetime", &onetime_body("o1", "4242424242424241")).await;
    let msg = failure(s, &b, StatusCode::OK, -1);
    assert!(msg.starts_with("유효하지않은 카드번호를 입력하셨습니다."), "{msg}");
    let mut body = onetime_body("o2", cards::APPROVE);
    body["expiry"] = json!("2000-01");
    let (s, b) = env.post("/subscribe/payments/onetime", &body).await;
    let msg = failure(s, &b, StatusCode::OK, -1);
    assert!(msg.starts_with("카드정보 인증에 실패하였습니다."), "{msg}");
    for field in ["merchant_uid", "amount", "card_number", "expiry"] {
        let mut body = onetime_body("o3", cards::APPROVE);
        body.as_object_mut().unwrap().remove(field);
        let (s, b) = env.post("/subscribe/payments/onetime", &body).await;
        let msg = failure(s, &b, StatusCode::BAD_REQUEST, 1);
        assert!(msg.contains(field), "{msg}");
    }
    assert!(env.sandbox.ledger().is_empty());
}

#[tokio::test]
async fn decline_first_counts_keyless_onetime_attempts_too() {
    let env = Env::start().await;
    let card = cards::decline_first(1);
    let (s, b) = env.post("/subscribe/payments/onetime", &onetime_body("kl_1", &card)).await;
    assert_eq!(success(s, &b)["status"], "failed");
    let (s, b) = env.post("/subscribe/payments/onetime", &onetime_body("kl_1", &card)).await;
    assert_eq!(success(s, &b)["status"], "paid");
}

#[tokio::test]
async fn lookups_of_unknown_payments_are_404_and_bad_parameters_400() {
    let env = env_with_customer("cust_l").await;
    let (s, b) = env.get("/payments/imp_999999999999").await;
    failure(s, &b, StatusCode::NOT_FOUND, 1);
    let (s, b) = env.get("/payments/find/nothing").await;
    failure(s, &b, StatusCode::NOT_FOUND, 1);
    let (s, b) = env.get("/payments/findAll/nothing").await;
    failure(s, &b, StatusCode::NOT_FOUND, 1);
    let (s, b) = env.again("cust_l", "order_l").await;
    success(s, &b);
    for path in [
        "/payments/find/order_l/done",
        "/payments/find/order_l?sorting=newest",
        "/payments/findAll/order_l?limit=1001",
        "/payments/findAll/order_l?limit=0",
        "/payments/findAll/order_l?page=0",
        "/payments/findAll/order_l/bogus",
    ] {
        let (s, b) = env.get(path).await;
        failure(s, &b, StatusCode::BAD_REQUEST, 1);
    }
    let (s, b) = env.get("/payments/findAll/order_l?page=5").await;
    let empty_page = success(s, &b);
    assert_eq!((empty_page["total"].as_i64(), empty_page["list"].as_array().map(Vec::len)), (Some(1), Some(0)));
}

#[tokio::test]
async fn cancel_partially_then_fully() {
    let env = env_with_customer("cust_c").await;
    let (s, b) = env.again("cust_c", "order_c").await;
    let paid = success(s, &b);
    let imp_uid = paid["imp_uid"].as_str().unwrap();

    let (s, b) =
        env.post("/payments/cancel", &json!({"imp_uid": imp_uid, "amount": 900, "reason": "partial refund"})).await;
    let partial = success(s, &b);
    assert_eq!(partial["status"], "paid");
    assert_eq!(partial["cancel_amount"], 900);
    assert_eq!(partial["cancel_history"].as_array().unwrap().len(), 1);
    assert_eq!(partial["cancel_history"][0]["amount"], 900);
    assert_eq!(partial["cancel_history"][0]["reason"], "partial refund");

    let (s, b) = env.post("/payments/cancel", &json!({"merchant_uid": "order_c", "amount": 10000})).await;
    failure(s, &b, StatusCode::OK, 1);

    let (s, b) =
        env.post("/payments/cancel", &json!({"merchant_uid": "order_c", "checksum": 9000, "reason": "churn"})).await;
    let full = success(s, &b);
    assert_eq!(full["status"], "cancelled");
    assert_eq!(full["cancel_amount"], 9900);
    assert_eq!(full["cancel_reason"], "churn");
    assert!(full["cancelled_at"].as_i64().unwrap() > 0);

    let (s, b) = env.post("/payments/cancel", &json!({"imp_uid": imp_uid})).await;
    failure(s, &b, StatusCode::OK, 1);
    let (s, b) = env.get("/payments/find/order_c/cancelled").await;
    assert_eq!(success(s, &b)["imp_uid"], imp_uid);
    let ledger = env.sandbox.ledger();
    assert_eq!((ledger[0].status.as_str(), ledger[0].cancel_amount), ("cancelled", 9900));
    assert!(ledger[0].cancelled_at > 0);
}

#[tokio::test]
async fn cancel_of_nothing_is_code_1() {
    let env = env_with_customer("cust_n").await;
    let (s, b) = env.post("/payments/cancel", &json!({"imp_uid": "imp_000000000001"})).await;
    assert_eq!(failure(s, &b, StatusCode::OK, 1), "취소할 결제건이 존재하지 않습니다.");
    let (s, b) = env.post("/payments/cancel", &json!({"merchant_uid": "never"})).await;
    assert_eq!(failure(s, &b, StatusCode::OK, 1), "취소할 결제건이 존재하지 않습니다.");
    let (s, b) = env.post("/payments/cancel", &json!({"reason": "?"})).await;
    failure(s, &b, StatusCode::BAD_REQUEST, 1);
    env.sandbox.register_customer("cust_lost", cards::DECLINE_LOST).unwrap();
    let (s, b) = env.again("cust_lost", "order_failed").await;
    let failed = success(s, &b);
    let (s, b) = env.post("/payments/cancel", &json!({"imp_uid": failed["imp_uid"]})).await;
    failure(s, &b, StatusCode::OK, 1);
}

#[tokio::test]
async fn unknown_routes_are_404_envelopes() {
    let env = Env::start().await;
    let (s, b) = env.get("/no/such/endpoint").await;
    failure(s, &b, StatusCode::NOT_FOUND, 1);
}

/// Issue 24: a cancel of a payment that was not paid, a stale checksum after a partial cancel, and a refund made
/// in the console (outside the API) are what i'mport answers: refused, refused, seen by the next lookup.
#[tokio::test]
async fn cancel_refuses_an_unpaid_payment_and_a_stale_checksum_and_sees_console_refunds() {
    let env = env_with_customer("cust_r").await;
    env.sandbox.register_customer("cust_declined", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    let (s, b) = env.again("cust_declined", "order_failed").await;
    let failed = success(s, &b)["imp_uid"].as_str().unwrap().to_string();
    let (s, b) = env.post("/payments/cancel", &json!({"imp_uid": failed, "reason": "x"})).await;
    failure(s, &b, StatusCode::OK, 1);

    let (s, b) = env.again("cust_r", "order_r").await;
    let imp_uid = success(s, &b)["imp_uid"].as_str().unwrap().to_string();
    env.sandbox.refund_in_console(&imp_uid, Some(1900), "console").unwrap();
    // billd's view (nothing refunded) is stale: refused, nothing changed.
    let (s, b) = env.post("/payments/cancel", &json!({"imp_uid": imp_uid, "amount": 100, "checksum": 9900})).await;
    failure(s, &b, StatusCode::OK, 1);
    let (s, b) = env.get(&format!("/payments/{imp_uid}")).await;
    let p = success(s, &b);
    assert_eq!((p["cancel_amount"].as_i64(), p["status"].as_str()), (Some(1900), Some("paid")));
    assert_eq!(p["cancel_history"].as_array().map(Vec::len), Some(1));
    assert_eq!(p["cancel_history"][0]["reason"], "console");
    assert!(env.sandbox.refund_in_console(&imp_uid, Some(8001), "too much").is_err());
    env.sandbox.refund_in_console(&imp_uid, None, "the rest").unwrap();
    let (s, b) = env.get(&format!("/payments/{imp_uid}")).await;
    let p = success(s, &b);
    assert_eq!((p["cancel_amount"].as_i64(), p["status"].as_str()), (Some(9900), Some("cancelled")));
    assert!(env.sandbox.refund_in_console(&imp_uid, None, "again").is_err(), "a fully cancelled payment");
}
