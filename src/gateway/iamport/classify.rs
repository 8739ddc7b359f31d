//! Reading i'mport's answers: the envelope, a charge's answer classified into the five outcome classes, a lookup's payment parsed; every string cleaned by the `Redactor`.

use super::{Sent, describe};
use crate::gateway::redact::Redactor;
use crate::gateway::{
    Cancellation, ChargeOutcome, ChargeRequest, Payment, PaymentRefunds, RefundOutcome, RefundRequest,
};
use chrono::DateTime;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The largest `code` (either sign) an answer may carry: i'mport's are 0, 1, -1 and a few more. An answer with another
/// is unreadable (never quoted as it is: it could be anything, a card number included).
const MAX_CODE: i64 = 99_999;

/// An envelope's `code`, bounded by [`MAX_CODE`].
fn bounded_code<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let code = i64::deserialize(d)?;
    if (-MAX_CODE..=MAX_CODE).contains(&code) {
        Ok(code)
    } else {
        Err(serde::de::Error::custom("the code is out of range"))
    }
}

/// The envelope of every i'mport answer: `code` (0: done), `message` (why not), `response`.
#[derive(Deserialize)]
pub(super) struct Envelope {
    #[serde(deserialize_with = "bounded_code")]
    pub(super) code: i64,
    pub(super) message: Option<String>,
    pub(super) response: Option<serde_json::Value>,
}

/// An envelope whose `response` stays raw JSON text, read straight into what billd needs (no `Value` tree: a
/// payment has some forty fields).
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(deserialize_with = "bounded_code")]
    code: i64,
    message: Option<String>,
    #[serde(borrow)]
    response: Option<&'a serde_json::value::RawValue>,
}

/// An envelope with its payment, read in one pass (the same fields [`RawEnvelope`] reads, so it accepts no body
/// that the general path would refuse).
#[derive(Deserialize)]
struct PaymentEnvelope {
    #[serde(deserialize_with = "bounded_code")]
    code: i64,
    #[serde(rename = "message")]
    _message: Option<String>,
    response: PaymentBody,
}

/// A payment's `amount` as an exact integer: a JSON integer, or a number with a fraction only when the fraction
/// is zero and the number is one an f64 holds exactly (below 2^53). Anything else is unreadable: compared as an f64,
/// 9900.00001 was 9900, and above 2^53 two amounts were one.
fn exact_amount<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < EXACT => Ok(f as i64),
        _ => Err(serde::de::Error::custom("the amount is not a whole number billd can compare exactly")),
    }
}

#[derive(Deserialize)]
struct PaymentBody {
    imp_uid: String,
    merchant_uid: String,
    #[serde(deserialize_with = "exact_amount")]
    amount: i64,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    customer_uid: Option<String>,
    status: String,
    #[serde(default)]
    fail_reason: Option<String>,
}

/// Parses an envelope carrying a payment: `Ok(None)` when code != 0. Its strings are cleaned (the merchant_uid is
/// compared with the one looked up by the caller, and quoted only cleaned); an imp_uid that is not a plain
/// identifier is refused.
pub(super) fn parse_payment(text: &str, red: &Redactor) -> Result<Option<Payment>, String> {
    let env: RawEnvelope<'_> =
        serde_json::from_str(text).map_err(|_| format!("unreadable response body: {}", snippet(red, text)))?;
    if env.code != 0 {
        return Ok(None);
    }
    let p: PaymentBody =
        env.response.filter(|r| r.get() != "null").ok_or_else(|| "code 0 without a payment".to_string()).and_then(
            |r| {
                serde_json::from_str(r.get()).map_err(|e| {
                    format!("malformed payment ({}): {}", red.clean_to(&e.to_string(), 120), snippet(red, text))
                })
            },
        )?;
    if !red.plain_id(&p.imp_uid) {
        return Err(odd_imp_uid(&p.imp_uid, red));
    }
    Ok(Some(Payment {
        imp_uid: p.imp_uid,
        merchant_uid: p.merchant_uid,
        amount: p.amount,
        // Kept as they came, only to compare with what billd sent (never printed or stored: see
        // Payment::differs_from).
        currency: p.currency,
        customer_uid: p.customer_uid,
        status: red.clean_to(&p.status, 40),
        fail_reason: p.fail_reason.map(|r| red.clean(&r)),
    }))
}

/// Why an answer's imp_uid is refused (it is never stored or printed as it is).
fn odd_imp_uid(imp_uid: &str, red: &Redactor) -> String {
    format!("the answer's imp_uid {:?} is not a plain identifier; not recorded", red.clean_to(imp_uid, 40))
}

/// Classifies what an `again` (or `onetime`) request gave, for `req`; `timeout` is the one it was sent with.
pub(super) fn classify_charge(sent: Sent, req: &ChargeRequest, timeout: Duration, red: &Redactor) -> ChargeOutcome {
    let (status, text) = match sent {
        Sent::Error(e) if e.is_connect() => return ChargeOutcome::Transient(describe(&e)),
        Sent::Error(e) if e.is_timeout() => {
            return ChargeOutcome::Unknown(format!("no answer within {}", crate::config::duration::format(timeout)));
        }
        Sent::Error(e) => return ChargeOutcome::Unknown(describe(&e)),
        Sent::Refused(why) => return ChargeOutcome::Transient(why),
        Sent::Response(s, t) => (s, t),
    };
    match status {
        401 => {
            return ChargeOutcome::Transient("HTTP 401 twice: the gateway refused the access token".into());
        }
        429 => return ChargeOutcome::Transient("HTTP 429: rate limited by the gateway".into()),
        500..=599 => return ChargeOutcome::Transient(format!("HTTP {status}: {}", snippet(red, &text))),
        _ => {}
    }
    let p = match serde_json::from_str::<PaymentEnvelope>(&text) {
        // The usual answer, read in one pass. Whatever this accepts, the general path below reads the same way.
        Ok(env) if env.code == 0 && status == 200 => env.response,
        _ => match read_charge_answer(status, &text, red) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        },
    };
    // A payment for another merchant_uid, amount, currency or billing key is not this charge (settled later by
    // lookup): the same rule as a lookup's payment (`Payment::mismatches`; the key charged, none for a key-in charge
    // without one). What came back is described, never quoted: the message quotes what billd asked for.
    let payment = Payment {
        imp_uid: String::new(),
        merchant_uid: p.merchant_uid.clone(),
        amount: p.amount,
        currency: p.currency.clone(),
        customer_uid: p.customer_uid.clone(),
        status: String::new(),
        fail_reason: None,
    };
    let key = Some(req.customer_uid.as_str()).filter(|k| !k.is_empty());
    let mut other = payment.mismatches(req.amount, &req.currency, key);
    if p.merchant_uid != req.merchant_uid {
        other.insert(0, "merchant_uid");
    }
    if !other.is_empty() {
        return ChargeOutcome::Unknown(format!(
            "the answer is for another {} than billd asked for (merchant_uid {}, amount {} {})",
            other.join(" and "),
            req.merchant_uid,
            req.amount,
            req.currency
        ));
    }
    if matches!(p.status.as_str(), "paid" | "failed") && !red.plain_id(&p.imp_uid) {
        return ChargeOutcome::Unknown(odd_imp_uid(&p.imp_uid, red));
    }
    match p.status.as_str() {
        "paid" => ChargeOutcome::Paid { imp_uid: p.imp_uid },
        "failed" => ChargeOutcome::Declined {
            imp_uid: Some(p.imp_uid),
            reason: p
                .fail_reason
                .map(|r| red.clean(&r))
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "declined (no reason given)".into()),
        },
        other => ChargeOutcome::Unknown(format!("payment status {:?}", red.clean_to(other, 40))),
    }
}

/// An `again` answer that is not a plain payment: a refusal (code != 0) or something unreadable.
fn read_charge_answer(status: u16, text: &str, red: &Redactor) -> Result<PaymentBody, ChargeOutcome> {
    let env: RawEnvelope<'_> = serde_json::from_str(text).map_err(|_| {
        ChargeOutcome::Unknown(format!("HTTP {status} with an unreadable body: {}", snippet(red, text)))
    })?;
    if env.code != 0 {
        // The refusal's own words, cleaned (it may echo the request).
        let message = env.message.map(|m| red.clean(&m)).filter(|m| !m.trim().is_empty());
        return Err(ChargeOutcome::Rejected {
            code: env.code,
            message: message.unwrap_or_else(|| format!("HTTP {status}, code {}", env.code)),
        });
    }
    if status != 200 {
        return Err(ChargeOutcome::Unknown(format!("HTTP {status} with code 0: {}", snippet(red, text))));
    }
    match env.response.map(|r| serde_json::from_str(r.get())) {
        Some(Ok(p)) => Ok(p),
        _ => Err(ChargeOutcome::Unknown(format!("code 0 without a readable payment: {}", snippet(red, text)))),
    }
}

/// Classifies an `again` answer (HTTP status and body) for `req`, as
/// [`Gateway::charge`](crate::gateway::Gateway::charge) does (for fuzzing).
pub fn classify_charge_body(status: u16, body: &str, req: &ChargeRequest) -> ChargeOutcome {
    classify_charge(Sent::Response(status, body.to_owned()), req, Duration::from_secs(30), &Redactor::default())
}

/// Parses a lookup answer's body as [`Gateway::find`](crate::gateway::Gateway::find) does: `Ok(None)` when code != 0
/// (for fuzzing).
pub fn parse_payment_body(body: &str) -> Result<Option<Payment>, String> {
    parse_payment(body, &Redactor::default())
}

/// The largest amount billd reads from an answer (whole won): anything else is unreadable, never quoted.
const MAX_AMOUNT: f64 = 1e15;

/// A payment's refunds as i'mport gives them (`PaymentAnnotation`, the fields billd needs).
#[derive(Deserialize)]
struct RefundsBody {
    imp_uid: String,
    merchant_uid: String,
    amount: f64,
    cancel_amount: f64,
    status: String,
    #[serde(default)]
    cancel_history: Option<Vec<CancelBody>>,
}

/// One `cancel_history` entry (`PaymentCancelAnnotation`).
#[derive(Deserialize)]
struct CancelBody {
    amount: f64,
    #[serde(default)]
    cancelled_at: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    cancellation_id: Option<String>,
}

/// A whole amount of won from an answer (0 to [`MAX_AMOUNT`]); `None` otherwise (never quoted: it could be anything,
/// a card number included).
fn whole(x: f64) -> Option<i64> {
    (x.is_finite() && x.fract() == 0.0 && (0.0..=MAX_AMOUNT).contains(&x)).then_some(x as i64)
}

/// FNV-1a (64 bits) of `text`: a hash that stays the same across builds, for the id of a cancel history entry
/// without one.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Reads a payment's refunds from an envelope's `response`: whole amounts, a history whose sum is `cancel_amount`,
/// a plain imp_uid; strings cleaned. `Err`: why it cannot be read (described, numbers never quoted).
fn read_refunds(response: &str, red: &Redactor) -> Result<PaymentRefunds, String> {
    let p: RefundsBody = serde_json::from_str(response)
        .map_err(|e| format!("malformed payment ({})", red.clean_to(&e.to_string(), 120)))?;
    if !red.plain_id(&p.imp_uid) {
        return Err(odd_imp_uid(&p.imp_uid, red));
    }
    let (Some(amount), Some(cancel_amount)) = (whole(p.amount), whole(p.cancel_amount)) else {
        return Err("the payment's amount or cancel_amount is not a whole amount of won".into());
    };
    // Only a paid payment, or one refunded in full, has refunds billd reads.
    if !matches!(p.status.as_str(), "paid" | "cancelled") {
        return Err(format!("the payment's status is {}, not paid or cancelled", red.clean_to(&p.status, 40)));
    }
    let mut history: Vec<Cancellation> = Vec::new();
    for c in p.cancel_history.unwrap_or_default() {
        let Some(a) = whole(c.amount).filter(|a| *a > 0) else {
            return Err("a cancel_history amount is not a whole amount of won".into());
        };
        let cancelled_at = c.cancelled_at.filter(|t| *t > 0);
        let raw = c.reason.unwrap_or_default();
        let reason = red.clean_to(&raw, 200);
        let verbatim = reason == raw;
        let id = match c.cancellation_id.filter(|id| red.plain_id(id)) {
            Some(id) => id,
            None => {
                // Named by what it is, not by its place (places shift): the n-th entry of that content.
                let key = format!("~{a}-{}-{:016x}", cancelled_at.unwrap_or(0), fnv1a(&reason));
                let n = history.iter().filter(|h| h.id.starts_with(&format!("{key}-"))).count();
                format!("{key}-{n}")
            }
        };
        if history.iter().any(|h| h.id == id) {
            return Err("the payment's cancel_history lists one cancellation_id twice".into());
        }
        history.push(Cancellation {
            id,
            amount: a,
            cancelled_at: cancelled_at.and_then(|t| DateTime::from_timestamp(t, 0)),
            reason,
            verbatim,
        });
    }
    let listed = history.iter().try_fold(0i64, |sum, c| sum.checked_add(c.amount));
    if listed != Some(cancel_amount) || cancel_amount > amount {
        return Err("the payment's cancel_history does not add up to its cancel_amount (or exceeds its amount)".into());
    }
    Ok(PaymentRefunds {
        imp_uid: p.imp_uid,
        // As it came: only compared with the merchant_uid billd looked up or refunded, and used only when equal
        // (cleaned, one with six digits between dashes read as another payment's: an outside review).
        merchant_uid: p.merchant_uid,
        amount,
        cancel_amount,
        status: red.clean_to(&p.status, 40),
        history,
    })
}

/// Parses a lookup's answer (`GET /payments/{imp_uid}`, HTTP 200): the payment's refunds; `Ok(None)` when code != 0.
pub(super) fn parse_refunds(text: &str, red: &Redactor) -> Result<Option<PaymentRefunds>, String> {
    let env: RawEnvelope<'_> =
        serde_json::from_str(text).map_err(|_| format!("unreadable response body: {}", snippet(red, text)))?;
    if env.code != 0 {
        return Ok(None);
    }
    let response = env.response.filter(|r| r.get() != "null").ok_or_else(|| "code 0 without a payment".to_string())?;
    read_refunds(response.get(), red).map(Some)
}

/// Classifies what a cancel request gave, for `req`; `timeout` is the one it was sent with. Like a charge's: a
/// refusal is code != 0, trouble before the gateway processed it is transient, anything else that is not a
/// readable payment (the one asked for) is unknown.
pub(super) fn classify_refund(sent: Sent, req: &RefundRequest, timeout: Duration, red: &Redactor) -> RefundOutcome {
    let (status, text) = match sent {
        Sent::Error(e) if e.is_connect() => return RefundOutcome::Transient(describe(&e)),
        Sent::Error(e) if e.is_timeout() => {
            return RefundOutcome::Unknown(format!("no answer within {}", crate::config::duration::format(timeout)));
        }
        Sent::Error(e) => return RefundOutcome::Unknown(describe(&e)),
        Sent::Refused(why) => return RefundOutcome::Transient(why),
        Sent::Response(s, t) => (s, t),
    };
    match status {
        401 => return RefundOutcome::Transient("HTTP 401: the gateway refused the access token".into()),
        429 => return RefundOutcome::Transient("HTTP 429: rate limited by the gateway".into()),
        500..=599 => return RefundOutcome::Transient(format!("HTTP {status}: {}", snippet(red, &text))),
        _ => {}
    }
    let Ok(env) = serde_json::from_str::<RawEnvelope<'_>>(&text) else {
        return RefundOutcome::Unknown(format!("HTTP {status} with an unreadable body: {}", snippet(red, &text)));
    };
    if env.code != 0 {
        let message = env.message.map(|m| red.clean(&m)).filter(|m| !m.trim().is_empty());
        return RefundOutcome::Refused {
            code: env.code,
            message: message.unwrap_or_else(|| format!("HTTP {status}, code {}", env.code)),
        };
    }
    if status != 200 {
        return RefundOutcome::Unknown(format!("HTTP {status} with code 0: {}", snippet(red, &text)));
    }
    let read = env
        .response
        .filter(|r| r.get() != "null")
        .ok_or_else(|| "code 0 without a payment".to_string())
        .and_then(|r| read_refunds(r.get(), red));
    match read {
        Ok(p) if p.imp_uid == req.imp_uid && p.merchant_uid == req.merchant_uid => RefundOutcome::Refunded(p),
        Ok(_) => RefundOutcome::Unknown(format!(
            "the answer is for another payment than {} (another imp_uid or merchant_uid)",
            req.imp_uid
        )),
        Err(e) => RefundOutcome::Unknown(e),
    }
}

/// Classifies a cancel answer (HTTP status and body) for `req`, as
/// [`Gateway::refund`](crate::gateway::Gateway::refund) does (for fuzzing and tests).
pub fn classify_refund_body(status: u16, body: &str, req: &RefundRequest) -> RefundOutcome {
    classify_refund(Sent::Response(status, body.to_owned()), req, Duration::from_secs(30), &Redactor::default())
}

/// The start of an answer, for an error message: cleaned ([`Redactor::clean`]: a proxy may echo the request, and a
/// key-in request carries the card), one line, at most 120 characters.
pub(super) fn snippet(red: &Redactor, text: &str) -> String {
    red.clean_to(text, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ChargeRequest {
        ChargeRequest {
            customer_uid: "c".into(),
            merchant_uid: "m-1".into(),
            amount: 9900,
            currency: "KRW".into(),
            name: "n".into(),
        }
    }

    fn classify(status: u16, body: &str) -> ChargeOutcome {
        classify_charge(Sent::Response(status, body.into()), &req(), Duration::from_secs(30), &Redactor::default())
    }

    #[test]
    fn classifies_paid_declined_rejected() {
        let paid = r#"{"code":0,"message":null,"response":{"imp_uid":"imp_1","merchant_uid":"m-1","amount":9900,"currency":"KRW","customer_uid":"c","status":"paid"}}"#;
        assert_eq!(classify(200, paid), ChargeOutcome::Paid { imp_uid: "imp_1".into() });
        let failed = r#"{"code":0,"message":null,"response":{"imp_uid":"imp_2","merchant_uid":"m-1","amount":9900,"currency":"KRW","customer_uid":"c","status":"failed","fail_reason":"잔액부족"}}"#;
        assert_eq!(
            classify(200, failed),
            ChargeOutcome::Declined { imp_uid: Some("imp_2".into()), reason: "잔액부족".into() }
        );
        let rejected = r#"{"code":-1,"message":"등록되지 않은 구매자입니다.","response":null}"#;
        assert!(matches!(classify(200, rejected), ChargeOutcome::Rejected { code: -1, .. }));
    }

    #[test]
    fn an_answer_echoing_a_card_is_quoted_without_it() {
        // Some proxies answer an error page that echoes the request: a key-in request carries the card.
        let echo = r#"bad request: {"birth":"900101","card_number":"4242424242424242","expiry":"2031-12","pwd_2digit":"73"} card 4242424242424242"#;
        for outcome in [classify(500, echo), classify(200, echo), classify(302, echo)] {
            let text = format!("{outcome:?}");
            for secret in ["900101", "4242424242424242", "2031-12", "\"73\""] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains(r#"\"card_number\":\"***\""#), "{text}");
        }
        // A refusal whose message quotes the card (say, "invalid card number …") is logged without it.
        let refusal = r#"{"code":-1,"message":"invalid card 4242424242424242 (birth 900101)","response":null}"#;
        let ChargeOutcome::Rejected { code: -1, message } = classify(200, refusal) else { panic!("a refusal") };
        assert_eq!(message, "invalid card 424242******4242 (birth ******)");
    }

    #[test]
    fn numbers_in_an_answer_are_never_quoted() {
        let card = 4242424242424242_i64;
        let answers = [
            format!(
                r#"{{"code":0,"message":null,"response":{{"imp_uid":"imp_1","merchant_uid":"m-1","amount":{card},"currency":"KRW","customer_uid":"c","status":"paid"}}}}"#
            ),
            format!(r#"{{"code":{card},"message":"refused","response":null}}"#),
            format!(r#"{{"code":-{card},"message":"refused","response":null}}"#),
            format!(
                r#"{{"code":0,"message":null,"response":{{"imp_uid":"imp_1","merchant_uid":"{card}","amount":9900,"status":"paid"}}}}"#
            ),
        ];
        for body in answers {
            let outcome = classify(200, &body);
            assert!(matches!(outcome, ChargeOutcome::Unknown(_)), "{body}: {outcome:?}");
            assert!(!format!("{outcome:?}").contains(&card.to_string()), "{outcome:?}");
        }
        let ChargeOutcome::Unknown(why) = classify(
            200,
            &format!(
                r#"{{"code":0,"message":null,"response":{{"imp_uid":"imp_1","merchant_uid":"m-1","amount":{card},"currency":"KRW","customer_uid":"c","status":"paid"}}}}"#
            ),
        ) else {
            panic!()
        };
        assert_eq!(why, "the answer is for another amount than billd asked for (merchant_uid m-1, amount 9900 KRW)");
        // A lookup's payment whose code is out of range is unreadable, and not quoted either.
        let e = parse_payment_body(&format!(r#"{{"code":{card},"message":null,"response":null}}"#)).unwrap_err();
        assert!(!e.contains(&card.to_string()), "{e}");
    }

    /// A paid answer to `req()` with `fields` replaced (a `null` removes the field).
    fn paid_with(fields: serde_json::Value) -> String {
        let mut p = serde_json::json!({"imp_uid": "imp_1", "merchant_uid": "m-1", "amount": 9900, "currency": "KRW",
            "customer_uid": "c", "status": "paid"});
        for (k, v) in fields.as_object().unwrap() {
            match v {
                serde_json::Value::Null => p.as_object_mut().unwrap().remove(k),
                v => p.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        serde_json::json!({"code": 0, "message": null, "response": p}).to_string()
    }

    /// Issue 24 hardening, F2: an imp_uid holding a card number is not an id: the answer is unreadable (the outcome
    /// is unknown, settled by lookup) and the number is never quoted.
    #[test]
    fn an_imp_uid_holding_a_card_number_is_never_taken() {
        for imp in ["4242424242424242", "imp_4242424242424242", "imp_4242-4242-4242-4242"] {
            for status in ["paid", "failed"] {
                let body = paid_with(serde_json::json!({ "imp_uid": imp, "status": status }));
                let outcome = classify(200, &body);
                assert!(matches!(outcome, ChargeOutcome::Unknown(_)), "{imp} {status}: {outcome:?}");
                assert!(!format!("{outcome:?}").contains("4242424242"), "{outcome:?}");
                let found = parse_payment_body(&body);
                assert!(found.is_err(), "{imp}: a lookup took it: {found:?}");
                assert!(!format!("{found:?}").contains("4242424242"), "{found:?}");
            }
        }
        assert_eq!(classify(200, &paid_with(serde_json::json!({}))), ChargeOutcome::Paid { imp_uid: "imp_1".into() });
    }

    /// Issue 24 hardening, F7: the direct answer to a charge is checked as a lookup's payment is
    /// (`Payment::differs_from`): another billing key, or no currency, is not this charge.
    #[test]
    fn a_paid_answer_must_match_the_request_as_a_lookup_must() {
        for fields in [
            serde_json::json!({ "customer_uid": "someone-else" }),
            serde_json::json!({ "customer_uid": null }),
            serde_json::json!({ "currency": null }),
            serde_json::json!({ "currency": "USD" }),
        ] {
            let outcome = classify(200, &paid_with(fields.clone()));
            assert!(matches!(outcome, ChargeOutcome::Unknown(_)), "{fields}: {outcome:?}");
        }
    }

    /// Issue 24 hardening, point i: amounts are compared as integers: one that differs by a fraction, or beyond
    /// what an f64 holds exactly, is another amount.
    #[test]
    fn amounts_are_compared_exactly() {
        for amount in [serde_json::json!(9900.00001), serde_json::json!(9899.99999), serde_json::json!(9900.5)] {
            let outcome = classify(200, &paid_with(serde_json::json!({ "amount": amount })));
            assert!(matches!(outcome, ChargeOutcome::Unknown(_)), "{amount}: {outcome:?}");
        }
        // 2^53 + 1 and 2^53 are one f64.
        let body = paid_with(serde_json::json!({ "amount": 9_007_199_254_740_993_i64 }));
        let big = ChargeRequest { amount: 9_007_199_254_740_992, ..req() };
        let outcome =
            classify_charge(Sent::Response(200, body.clone()), &big, Duration::from_secs(30), &Redactor::default());
        assert!(matches!(outcome, ChargeOutcome::Unknown(_)), "{outcome:?}");
        let p = parse_payment_body(&body).ok().flatten();
        assert!(p.is_none_or(|p| p.differs_from(9_007_199_254_740_992, "KRW", Some("c")).is_some()), "taken as equal");
        // An integral amount written with a fraction is that amount.
        assert_eq!(
            classify(200, &paid_with(serde_json::json!({ "amount": 9900.0 }))),
            ChargeOutcome::Paid { imp_uid: "imp_1".into() }
        );
    }

    #[test]
    fn a_redirect_is_an_unknown_outcome_never_followed() {
        let paid = r#"{"code":0,"message":null,"response":{"imp_uid":"imp_1","merchant_uid":"m-1","amount":9900,"status":"paid"}}"#;
        for status in [301, 302, 303, 307, 308] {
            assert!(matches!(classify(status, "<html>Moved</html>"), ChargeOutcome::Unknown(_)), "{status}");
            assert!(matches!(classify(status, paid), ChargeOutcome::Unknown(_)), "{status} with a payment body");
        }
    }

    #[test]
    fn garbage_and_mismatches_are_unknown_never_paid() {
        for body in [
            "<html>502 Bad Gateway</html>",
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"m-1","amount":9900"#,
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"OTHER","amount":9900,"status":"paid"}}"#,
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"m-1","amount":1,"status":"paid"}}"#,
            r#"{"code":0,"message":null,"response":{"imp_uid":"x","merchant_uid":"m-1","amount":"9900","status":"paid"}}"#,
            r#"{"code":0,"message":null,"response":null}"#,
        ] {
            assert!(matches!(classify(200, body), ChargeOutcome::Unknown(_)), "{body}");
        }
        assert!(matches!(classify(500, "oops"), ChargeOutcome::Transient(_)));
        assert!(matches!(classify(429, ""), ChargeOutcome::Transient(_)));
    }
}
