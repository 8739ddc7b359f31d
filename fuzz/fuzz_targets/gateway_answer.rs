//! Classification of an `again` answer and parsing of a lookup answer: never panics, and an answer is taken as
//! paid only when it says paid, with HTTP 200 and code 0, for this merchant_uid, amount, currency and billing key,
//! with a plain imp_uid.

#![no_main]

use billd::gateway::iamport::{classify_charge_body, parse_payment_body};
use billd::gateway::{ChargeOutcome, ChargeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) % 600, String::from_utf8_lossy(rest)),
        _ => return,
    };
    let req = ChargeRequest {
        customer_uid: "cust-1".into(),
        merchant_uid: "billd-sub-1-0".into(),
        amount: 9900,
        currency: "KRW".into(),
        name: "Plan".into(),
    };
    if let ChargeOutcome::Paid { .. } = classify_charge_body(status, &body, &req) {
        let v: serde_json::Value = serde_json::from_str(&body).expect("a paid answer is JSON");
        assert_eq!(status, 200);
        assert_eq!(v["code"], 0);
        assert_eq!(v["response"]["status"], "paid");
        assert_eq!(v["response"]["merchant_uid"], "billd-sub-1-0");
        assert_eq!(v["response"]["amount"].as_f64(), Some(9900.0));
        assert_eq!(v["response"]["currency"], "KRW");
        assert_eq!(v["response"]["customer_uid"], "cust-1");
        let imp_uid = v["response"]["imp_uid"].as_str().expect("a paid answer has an imp_uid");
        assert!(imp_uid.len() <= 80 && imp_uid.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
    }
    let _ = parse_payment_body(&body);
});
