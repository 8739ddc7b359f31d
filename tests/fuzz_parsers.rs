//! The stable-toolchain counterpart of the cargo-fuzz targets in `fuzz/` (which need a nightly compiler): random
//! and mutated input for the config parser, the gateway's answer classification, and the token and billing-key
//! answers. None may panic; a config error always names the file; an answer is taken as paid only when it really
//! says paid, for this merchant_uid and this amount, with HTTP 200 and code 0; a token is used only when a header
//! can carry it, for a bounded lifetime; a key's strings are clean and its card masked. Set `PROPTEST_CASES` for a
//! longer run.

use billd::gateway::iamport::{classify_charge_body, parse_key_body, parse_payment_body, parse_token_body};
use billd::gateway::{ChargeOutcome, ChargeRequest};
use proptest::prelude::*;
use std::path::Path;

const GOOD: &str = include_str!("bad_configs/_good.toml");

/// The number of cases: `PROPTEST_CASES` when set (a longer run), else this test's default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Tokens that make mutations land on interesting parser paths.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\n",
    "#",
    "{",
    "}",
    ",",
    "0",
    "-1",
    "99999999999999999999",
    "1e400",
    "nan",
    "true",
    "\"\"",
    "\"2025-02-30\"",
    "2025-01-31",
    "\"1 month\"",
    "\"0s\"",
    "\"Asia/Seoul\"",
    "\u{0}",
    "\u{feff}",
    "plans",
    "[[subscriptions]]",
    "[billing]",
    "amount",
    "\"\\u0000\"",
    "\"\\",
    "inf",
    "\u{1F600}",
];

fn mutated_config() -> impl Strategy<Value = String> {
    let edit = (
        0usize..GOOD.len(),
        0usize..40,
        prop_oneof![proptest::sample::select(TOKENS).prop_map(str::to_string), any::<String>(),],
    );
    proptest::collection::vec(edit, 1..6).prop_map(|edits| {
        let mut text = GOOD.to_string();
        for (at, cut, insert) in edits {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(at..end, &insert);
        }
        text
    })
}

fn req() -> ChargeRequest {
    ChargeRequest {
        customer_uid: "cust-1".into(),
        merchant_uid: "billd-sub-1-0".into(),
        amount: 9900,
        currency: "KRW".into(),
        name: "Plan".into(),
    }
}

fn answer() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(serde_json::json!("paid")),
        Just(serde_json::json!("failed")),
        Just(serde_json::json!("billd-sub-1-0")),
        Just(serde_json::json!("billd-sub-1-1")),
        Just(serde_json::json!(9900)),
        Just(serde_json::json!(9900.0)),
        Just(serde_json::json!("9900")),
        Just(serde_json::json!(-9900)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    let key = proptest::sample::select(&["imp_uid", "merchant_uid", "amount", "status", "fail_reason", "extra"][..]);
    let payment = proptest::collection::btree_map(key, value.clone(), 0..6);
    (prop_oneof![Just(0i64), Just(1), Just(-1), any::<i64>()], payment, any::<bool>(), 0usize..4).prop_map(
        |(code, payment, response_null, damage)| {
            let response = if response_null { serde_json::Value::Null } else { serde_json::json!(payment) };
            let text = serde_json::json!({ "code": code, "message": null, "response": response }).to_string();
            match damage {
                0 => text.chars().take(text.chars().count() / 2).collect(),
                1 => format!("{text} trailing"),
                _ => text,
            }
        },
    )
}

/// Answers biased toward the edge of "paid": a genuine paid answer for [`req`], then up to two small changes (a
/// field a little off, dropped, retyped or duplicated, the code or the envelope altered), so that the "taken as paid
/// only when really paid" property is exercised on near misses, not only on noise.
fn near_paid() -> impl Strategy<Value = String> {
    let change = prop_oneof![
        Just(("amount", serde_json::json!(9901))),
        Just(("amount", serde_json::json!(9899.999))),
        Just(("amount", serde_json::json!("9900"))),
        Just(("amount", serde_json::json!(9900.0))),
        Just(("merchant_uid", serde_json::json!("billd-sub-1-1"))),
        Just(("merchant_uid", serde_json::json!("BILLD-SUB-1-0"))),
        Just(("merchant_uid", serde_json::json!("billd-sub-1-0 "))),
        Just(("status", serde_json::json!("Paid"))),
        Just(("status", serde_json::json!("ready"))),
        Just(("status", serde_json::json!("cancelled"))),
        Just(("status", serde_json::json!(null))),
        Just(("imp_uid", serde_json::json!("imp_1\u{1b}[2J"))),
        Just(("imp_uid", serde_json::json!(""))),
        Just(("imp_uid", serde_json::json!(12345))),
        Just(("fail_reason", serde_json::json!("declined"))),
        Just(("currency", serde_json::json!("USD"))),
        Just(("extra", serde_json::json!({"nested": [1, 2]}))),
        Just(("-amount", serde_json::json!(null))),
        Just(("-status", serde_json::json!(null))),
        Just(("-imp_uid", serde_json::json!(null))),
    ];
    (proptest::collection::vec(change, 0..3), prop_oneof![4 => Just(0i64), 1 => Just(1), 1 => Just(-1)], 0usize..6)
        .prop_map(|(changes, code, damage)| {
            let mut payment = serde_json::json!({
                "imp_uid": "imp_100000000001", "merchant_uid": "billd-sub-1-0", "amount": 9900, "currency": "KRW",
                "customer_uid": "cust-1", "status": "paid", "fail_reason": null
            });
            for (key, value) in changes {
                match key.strip_prefix('-') {
                    Some(k) => {
                        payment.as_object_mut().unwrap().remove(k);
                    }
                    None => payment[key] = value,
                }
            }
            let text = serde_json::json!({ "code": code, "message": null, "response": payment }).to_string();
            match damage {
                0 => text.replacen("\"response\"", "\"respons\"", 1),
                1 => format!("{text}}}"),
                _ => text,
            }
        })
}

fn really_paid(status: u16, body: &str, r: &ChargeRequest) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { return false };
    let p = &v["response"];
    status == 200
        && v["code"] == 0
        && p["status"] == "paid"
        && p["merchant_uid"] == r.merchant_uid.as_str()
        && p["amount"].as_f64() == Some(r.amount as f64)
        && (p["currency"].is_null() || p["currency"] == r.currency.as_str())
        && p["imp_uid"].as_str().is_some_and(plain_id)
}

/// An imp_uid billd records as it is: 1-80 letters, digits, `_`, `-` or `.` (anything else is refused as unknown).
fn plain_id(s: &str) -> bool {
    (1..=80).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Every string an outcome carries is clean: one line, no control characters, bounded.
fn clean_strings(outcome: &ChargeOutcome) -> bool {
    let texts: Vec<&str> = match outcome {
        ChargeOutcome::Paid { imp_uid } => vec![imp_uid],
        ChargeOutcome::Declined { imp_uid, reason } => {
            imp_uid.iter().map(String::as_str).chain([reason.as_str()]).collect()
        }
        ChargeOutcome::Rejected { message, .. } => vec![message],
        ChargeOutcome::Transient(r) | ChargeOutcome::Unknown(r) => vec![r],
    };
    texts.iter().all(|t| t.chars().count() <= 600 && !t.chars().any(char::is_control))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        let file = Path::new("/fuzz/schedules.toml");
        if let Err(e) = billd::config::parse_str(&text, file) {
            prop_assert!(e.to_string().contains("/fuzz/schedules.toml"));
        }
    }

    #[test]
    fn config_parser_never_panics_on_mutated_configs(text in mutated_config()) {
        let file = Path::new("/fuzz/schedules.toml");
        match billd::config::parse_str(&text, file) {
            Err(e) => prop_assert!(e.to_string().contains("/fuzz/schedules.toml"), "{}", e),
            Ok(cfg) => {
                // Whatever got through is within the validated bounds.
                for p in &cfg.plans {
                    prop_assert!(p.amount > 0 && p.amount <= cfg.limits.max_amount);
                    prop_assert!(!p.name.is_empty() && p.name.chars().count() <= 40);
                }
                prop_assert!(cfg.gateway.concurrency >= 1 && cfg.gateway.concurrency <= 1024);
            }
        }
    }

    #[test]
    fn answer_classification_never_panics_and_never_invents_a_payment(
        status in prop_oneof![Just(200u16), Just(400), Just(401), Just(404), Just(429), Just(500), Just(502), 100u16..600],
        body in prop_oneof![2 => answer(), 1 => any::<String>(), 3 => near_paid()],
    ) {
        let r = req();
        let outcome = classify_charge_body(status, &body, &r);
        if matches!(outcome, ChargeOutcome::Paid { .. }) {
            prop_assert!(really_paid(status, &body, &r), "taken as paid: HTTP {} {}", status, body);
        }
        prop_assert!(clean_strings(&outcome), "gateway text not cleaned: {:?}", outcome);
        let fail_reason_ok = |b: &str| {
            serde_json::from_str::<serde_json::Value>(b)
                .map(|v| v["response"].get("fail_reason").is_none_or(|f| f.is_null() || f.is_string()))
                .unwrap_or(false)
        };
        if really_paid(status, &body, &r) && fail_reason_ok(&body) {
            prop_assert!(matches!(outcome, ChargeOutcome::Paid { .. }), "a real payment not taken as paid: {:?}", outcome);
        }
        let _ = parse_payment_body(&body);
    }
}

/// Token and billing-key answers: the envelope with fields of every kind, absurd numbers and hostile text.
fn token_or_key_answer() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1_700_000_000)),
        Just(serde_json::json!(i64::MAX)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(4242424242424242_i64)),
        Just(serde_json::json!(-1.5)),
        any::<i64>().prop_map(serde_json::Value::from),
    ];
    let text = prop_oneof![
        Just(serde_json::json!("a1b2c3d4")),
        Just(serde_json::json!("tok\u{1}en\nX: 1")),
        Just(serde_json::json!("")),
        Just(serde_json::json!("4242-4242-4242-4242")),
        Just(serde_json::json!("424242******4242")),
        Just(serde_json::json!("%22pwd_2digit%22%3A%2237%22 \u{1b}[2J")),
        Just(serde_json::json!("eyJjYXJkX251bWJlciI6IjQyNDI0MjQyNDI0MjQyNDIifQ==")),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    let value = prop_oneof![number.clone(), text.clone(), Just(serde_json::Value::Null)];
    let key = proptest::sample::select(
        &[
            "access_token",
            "now",
            "expired_at",
            "card_number",
            "card_name",
            "pg_provider",
            "pg_id",
            "inserted",
            "updated",
        ][..],
    );
    (
        prop_oneof![Just(serde_json::json!(0)), number],
        proptest::collection::btree_map(key, value, 0..9),
        text,
        any::<bool>(),
    )
        .prop_map(|(code, response, message, cut)| {
            let text = serde_json::json!({ "code": code, "message": message, "response": response }).to_string();
            if cut { text.chars().take(text.chars().count() / 2).collect() } else { text }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_and_key_answers_never_panic_and_give_only_what_billd_can_use(
        status in prop_oneof![Just(200u16), Just(401), Just(404), Just(500), 100u16..600],
        body in prop_oneof![3 => token_or_key_answer(), 1 => any::<String>()],
    ) {
        match parse_token_body(status, &body) {
            Ok(life) => {
                prop_assert!(life <= std::time::Duration::from_secs(6 * 3600), "{:?}", life);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let token = v["response"]["access_token"].as_str().unwrap_or_default();
                prop_assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()), "{:?}", token);
            }
            Err(e) => prop_assert!(!e.chars().any(char::is_control), "{:?}", e),
        }
        match parse_key_body(status, &body) {
            Ok((code, message, key)) => {
                prop_assert!(code.abs() <= 99_999, "{}", code);
                let mut texts: Vec<String> = message.into_iter().collect();
                if let Some(k) = key {
                    let card = k.card.clone().unwrap_or_default();
                    prop_assert!(card.chars().filter(char::is_ascii_digit).count() <= 12, "{:?}", card);
                    texts.extend([k.card, k.card_name, k.pg_provider, k.pg_id].into_iter().flatten());
                }
                for t in texts {
                    prop_assert!(!t.chars().any(char::is_control), "{:?}", t);
                    prop_assert!(!t.contains("4242424242424242") && !t.contains("4242-4242-4242-4242"), "{:?}", t);
                }
            }
            Err(e) => prop_assert!(!e.chars().any(char::is_control), "{:?}", e),
        }
    }
}
