//! Billing keys: issue, look up, replace, delete; card validation; only masked cards are kept.

use billd_sandbox::cards;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Env, failure, success};

#[tokio::test]
async fn issue_get_and_delete_a_billing_key() {
    let env = Env::start().await;
    let (status, body) = env
        .post(
            "/subscribe/customers/cust_1",
            &json!({
                "card_number": "4242-4242-4242-4242",
                "expiry": "2099-12",
                "birth": "900101",
                "pwd_2digit": "12",
                "customer_name": "홍길동",
                "customer_email": "hong@example.com",
            }),
        )
        .await;
    let issued = success(status, &body);
    assert_eq!(issued["customer_uid"], "cust_1");
    assert_eq!(issued["card_number"], "424242******4242");
    assert_eq!(issued["customer_name"], "홍길동");
    assert_eq!(issued["pg_provider"], "kcp");
    assert_eq!(issued["sandbox"], true);
    assert!(issued["inserted"].as_i64().unwrap() > 0);
    assert_eq!(issued["updated"], 0);

    let (status, body) = env.get("/subscribe/customers/cust_1").await;
    assert_eq!(success(status, &body), issued);

    let (status, body) = env.delete("/subscribe/customers/cust_1").await;
    assert_eq!(success(status, &body), issued, "DELETE returns the deleted key");

    let (status, body) = env.get("/subscribe/customers/cust_1").await;
    let msg = failure(status, &body, StatusCode::NOT_FOUND, 1);
    assert!(msg.contains("cust_1"), "{msg}");
    let (status, body) = env.delete("/subscribe/customers/cust_1").await;
    failure(status, &body, StatusCode::NOT_FOUND, 1);
    let (status, body) = env.again("cust_1", "after_delete").await;
    failure(status, &body, StatusCode::OK, -1);
}

#[tokio::test]
async fn reissuing_replaces_the_card_and_sets_updated() {
    let env = Env::start().await;
    let (s, b) = env.register("cust_r", cards::DECLINE_LOST).await;
    let first = success(s, &b);
    let (s, b) = env.register("cust_r", "5555555555554444").await;
    let second = success(s, &b);
    assert_eq!(second["card_number"], "555555******4444");
    assert_eq!(second["inserted"], first["inserted"]);
    assert!(second["updated"].as_i64().unwrap() >= first["inserted"].as_i64().unwrap());
    let (s, b) = env.again("cust_r", "m_after_replace").await;
    assert_eq!(success(s, &b)["status"], "paid", "the new card is charged");
}

#[tokio::test]
async fn invalid_card_data_fails_with_code_minus_one_and_stores_nothing() {
    let env = Env::start().await;
    let valid = json!({"card_number": cards::APPROVE, "expiry": "2099-12", "birth": "900101", "pwd_2digit": "12"});
    let cases = [
        ("card_number", json!("4242424242424241")), // Luhn
        ("card_number", json!("4242")),             // too short
        ("expiry", json!("2001-01")),               // expired
        ("expiry", json!("12/99")),                 // format
        ("birth", json!("901399")),                 // no such month
        ("pwd_2digit", json!("123")),
    ];
    for (field, value) in cases {
        let mut body = valid.clone();
        body[field] = value.clone();
        let (status, resp) = env.post("/subscribe/customers/bad_card", &body).await;
        let msg = failure(status, &resp, StatusCode::OK, -1);
        assert!(msg.starts_with("카드정보 인증 및 빌키 발급에 실패하였습니다."), "{field}={value}: {msg}");
    }
    let (status, body) = env.get("/subscribe/customers/bad_card").await;
    failure(status, &body, StatusCode::NOT_FOUND, 1);
}

#[tokio::test]
async fn missing_fields_and_long_customer_uid_are_rejected_as_bad_requests() {
    let env = Env::start().await;
    let (status, body) = env.post("/subscribe/customers/c", &json!({"expiry": "2099-12", "birth": "900101"})).await;
    let msg = failure(status, &body, StatusCode::BAD_REQUEST, 1);
    assert!(msg.contains("card_number"), "{msg}");
    let long = "c".repeat(81);
    let (status, body) = env.register(&long, cards::APPROVE).await;
    failure(status, &body, StatusCode::BAD_REQUEST, 1);
    let (status, body) = env.register(&"c".repeat(80), cards::APPROVE).await;
    success(status, &body);
    let (status, body) = env
        .post(
            "/subscribe/customers/c",
            &json!({"card_number": cards::APPROVE, "expiry": "2099-12", "birth": "900101", "customer_name": "x".repeat(21)}),
        )
        .await;
    failure(status, &body, StatusCode::BAD_REQUEST, 1);
}

#[tokio::test]
async fn full_card_numbers_never_leave_the_sandbox() {
    let env = Env::start().await;
    let mut seen = String::new();
    for (uid, card) in [("a", cards::APPROVE), ("b", cards::DECLINE_STOLEN)] {
        let (_, body) = env.register(uid, card).await;
        seen.push_str(&body.to_string());
        let (_, body) = env.again(uid, &format!("m_{uid}")).await;
        seen.push_str(&body.to_string());
    }
    let (_, body) =
        env.post("/subscribe/payments/onetime", &crate::helpers::onetime_body("m_one", cards::DECLINE_LOST)).await;
    seen.push_str(&body.to_string());
    let ledger = env.http.get(env.url("/__sandbox/payments")).send().await.unwrap().text().await.unwrap();
    seen.push_str(&ledger);
    assert!(seen.contains("424242******4242"));
    for card in [cards::APPROVE, cards::DECLINE_STOLEN, cards::DECLINE_LOST] {
        assert!(!seen.contains(card), "{card} leaked");
    }
}

#[tokio::test]
async fn register_customer_from_rust_refuses_invalid_cards() {
    let env = Env::start().await;
    let err = env.sandbox.register_customer("c", "4242424242424241").unwrap_err();
    assert!(!format!("{err:#}").contains("4242424242424241"), "{err:#}");
    env.sandbox.register_customer("c", cards::APPROVE).unwrap();
    let (status, body) = env.get("/subscribe/customers/c").await;
    assert_eq!(success(status, &body)["card_number"], "424242******4242");
}
