//! The request log (`GET /__sandbox/requests`, `Sandbox::requests`): every `again`, `onetime` and `cancel` on arrival,
//! classified `new`, `paid` or `in_flight`.

use std::time::Duration;

use billd_sandbox::{AtArrival, Endpoint, Fault, FaultRule, RequestLogEntry, cards};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Env, env_with_customer, failure, onetime_body, success};

fn classes(env: &Env) -> Vec<(Endpoint, String, AtArrival)> {
    env.sandbox.requests().into_iter().map(|e| (e.endpoint, e.merchant_uid.unwrap_or_default(), e.at_arrival)).collect()
}

#[tokio::test]
async fn a_paid_merchant_uid_sent_again_is_logged_paid() {
    let env = env_with_customer("c").await;
    let (status, body) = env.again("c", "m1").await;
    assert_eq!(success(status, &body)["status"], "paid");
    let (status, body) = env.again("c", "m1").await;
    failure(status, &body, StatusCode::OK, 1);
    let (status, body) = env.again("c", "m2").await;
    success(status, &body);
    assert_eq!(
        classes(&env),
        [
            (Endpoint::Again, "m1".into(), AtArrival::New),
            (Endpoint::Again, "m1".into(), AtArrival::Paid),
            (Endpoint::Again, "m2".into(), AtArrival::New),
        ]
    );
    let log = env.sandbox.requests();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(log.iter().all(|e| e.amount == Some(9900) && e.customer_uid.as_deref() == Some("c")));
    assert!(log.windows(2).all(|w| w[0].arrived_at_ms <= w[1].arrived_at_ms));
}

/// i'mport lets a declined merchant_uid be tried again (dunning): such a retry is `new`, every time.
#[tokio::test]
async fn a_declined_merchant_uid_tried_again_is_new() {
    let env = Env::start().await;
    env.sandbox.register_customer("c", &cards::decline_first(2)).unwrap();
    for want in ["failed", "failed", "paid"] {
        let (status, body) = env.again("c", "m").await;
        assert_eq!(success(status, &body)["status"], want);
    }
    let (status, body) = env.again("c", "m").await;
    failure(status, &body, StatusCode::OK, 1);
    let at: Vec<AtArrival> = env.sandbox.requests().into_iter().map(|e| e.at_arrival).collect();
    assert_eq!(at, [AtArrival::New, AtArrival::New, AtArrival::New, AtArrival::Paid]);
}

/// Under `charge_later` the first request is still being charged when the second arrives: `in_flight`, and the
/// sandbox charges both, as i'mport would.
#[tokio::test]
async fn a_request_while_the_first_is_still_charging_is_in_flight() {
    let env = env_with_customer("c").await;
    env.sandbox.add_fault(FaultRule {
        customer_uid: Some("c".into()),
        fault: Fault::ChargeLater { after: Duration::from_millis(800) },
        times: Some(1),
    });
    let first = tokio::spawn({
        let (http, url, token) = (env.http.clone(), env.url("/subscribe/payments/again"), env.token.clone());
        async move {
            let body = json!({"customer_uid": "c", "merchant_uid": "m", "amount": 9900, "name": "Monthly plan"});
            http.post(url).bearer_auth(token).json(&body).send().await.expect("send").status()
        }
    });
    while env.sandbox.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = env.again("c", "m").await;
    assert_eq!(success(status, &body)["status"], "paid", "charged: the first is not paid yet");
    assert_eq!(first.await.expect("first"), StatusCode::OK);
    let (status, body) = env.again("c", "m").await;
    failure(status, &body, StatusCode::OK, 1);
    assert_eq!(
        env.sandbox.requests().into_iter().map(|e| e.at_arrival).collect::<Vec<_>>(),
        [AtArrival::New, AtArrival::InFlight, AtArrival::Paid]
    );
    assert_eq!(env.sandbox.ledger().iter().filter(|p| p.status == "paid").count(), 2, "the hazard: two charges");
}

/// Logged on arrival, before the token check and faults: requests that charge nothing are logged too.
#[tokio::test]
async fn requests_refused_before_the_charge_are_logged() {
    let env = env_with_customer("c").await;
    env.sandbox.add_fault(FaultRule { customer_uid: None, fault: Fault::Http500, times: Some(1) });
    let (status, _) = env.again("c", "m").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = env.raw_post("/subscribe/payments/again", &crate::helpers::again_body("c", "m")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = env.post("/subscribe/payments/again", &json!({"merchant_uid": "m"})).await;
    failure(status, &body, StatusCode::BAD_REQUEST, 1);
    assert_eq!(env.sandbox.requests().len(), 3);
    assert!(env.sandbox.requests().iter().all(|e| e.at_arrival == AtArrival::New), "{:?}", env.sandbox.requests());
    assert!(env.sandbox.ledger().is_empty());
}

#[tokio::test]
async fn onetime_is_logged_without_card_data() {
    let env = Env::start().await;
    let (status, body) = env.post("/subscribe/payments/onetime", &onetime_body("o1", cards::APPROVE)).await;
    success(status, &body);
    let (status, body) = env.post("/subscribe/payments/onetime", &onetime_body("o1", cards::APPROVE)).await;
    failure(status, &body, StatusCode::OK, 1);
    assert_eq!(
        classes(&env),
        [(Endpoint::Onetime, "o1".into(), AtArrival::New), (Endpoint::Onetime, "o1".into(), AtArrival::Paid)]
    );
    let text = serde_json::to_string(&env.sandbox.requests()).unwrap();
    assert!(!text.contains("4242"), "card data in the log: {text}");
}

/// A cancel is classified by the payment it names: `paid` once that payment is fully refunded (a repeat).
#[tokio::test]
async fn a_cancel_is_classified_by_the_payment_it_names() {
    let env = env_with_customer("c").await;
    let (status, body) = env.again("c", "m").await;
    let imp_uid = success(status, &body)["imp_uid"].as_str().unwrap().to_string();
    let (status, body) = env.post("/payments/cancel", &json!({"merchant_uid": "m", "amount": 900})).await;
    success(status, &body);
    let (status, body) = env.post("/payments/cancel", &json!({"imp_uid": imp_uid})).await;
    success(status, &body);
    let (status, body) = env.post("/payments/cancel", &json!({"imp_uid": imp_uid})).await;
    failure(status, &body, StatusCode::OK, 1);
    let (status, body) = env.post("/payments/cancel", &json!({"merchant_uid": "nothing"})).await;
    failure(status, &body, StatusCode::OK, 1);
    let log = env.sandbox.requests();
    assert_eq!(
        classes(&env)[1..],
        [
            (Endpoint::Cancel, "m".into(), AtArrival::New),
            (Endpoint::Cancel, "m".into(), AtArrival::New),
            (Endpoint::Cancel, "m".into(), AtArrival::Paid),
            (Endpoint::Cancel, "nothing".into(), AtArrival::New),
        ]
    );
    assert_eq!(log[2].imp_uid.as_deref(), Some(imp_uid.as_str()));
    assert_eq!(log[2].customer_uid.as_deref(), Some("c"), "the named payment's key");
}

#[tokio::test]
async fn the_http_view_matches_and_reset_clears_it() {
    let env = env_with_customer("c").await;
    env.again("c", "m").await;
    env.again("c", "m").await;
    let resp = env.http.get(env.url("/__sandbox/requests")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let parsed: Vec<RequestLogEntry> = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed, env.sandbox.requests());
    assert_eq!(body[1]["at_arrival"], "paid");
    assert_eq!(body[1]["endpoint"], "again");
    let resp = env.http.post(env.url("/__sandbox/reset")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(env.sandbox.requests().is_empty());
}

/// `charge_later_random`: each charge after its own delay (at most `max`), made even when the client gave up
/// waiting; until then the request is in progress, and a second one for the same merchant_uid is `in_flight`.
#[tokio::test]
async fn charge_later_random_charges_after_the_client_has_gone() {
    let env = Env::with(billd_sandbox::SandboxConfig { seed: Some(1), ..Default::default() }).await;
    env.sandbox.register_customer("c", cards::APPROVE).unwrap();
    env.sandbox.add_fault(FaultRule {
        customer_uid: None,
        fault: Fault::ChargeLaterRandom { max: Duration::from_millis(600) },
        times: None,
    });
    let sends: Vec<_> = ["m1", "m2", "m3"]
        .into_iter()
        .map(|m| {
            let (http, url, token) = (env.http.clone(), env.url("/subscribe/payments/again"), env.token.clone());
            tokio::spawn(async move {
                http.post(url).bearer_auth(token).json(&crate::helpers::again_body("c", m)).send().await
            })
        })
        .collect();
    while env.sandbox.requests().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client goes away (its connections close), answered or not.
    for s in sends {
        s.abort();
    }
    for _ in 0..500 {
        if env.sandbox.requests_in_progress() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.sandbox.requests_in_progress(), 0, "every delayed charge is made");
    let paid: Vec<String> = env.sandbox.ledger().into_iter().map(|p| p.merchant_uid).collect();
    assert_eq!(paid.len(), 3, "{paid:?}");
    assert!(env.sandbox.requests().iter().all(|r| r.at_arrival == AtArrival::New));
}
