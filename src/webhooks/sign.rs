//! Standard Webhooks 1.0 signatures: the headers of one delivery (`webhook-id`, `webhook-timestamp`, `webhook-signature` = `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`) and their verification.
//!
//! ```
//! use billd::config::WebhookSecret;
//! use billd::webhooks::sign;
//!
//! let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let body = br#"{"type":"charge.paid"}"#;
//! let h = sign::headers(&secret, "evt_1", 1_700_000_000, body);
//! assert!(h.signature.starts_with("v1,"));
//! let at = h.timestamp.to_string();
//! assert_eq!(sign::verify(&secret, &h.id, &at, &h.signature, body, 1_700_000_060), Ok(()));
//! ```

use crate::config::WebhookSecret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header names (lower case, as the spec writes them).
pub const ID: &str = "webhook-id";
pub const TIMESTAMP: &str = "webhook-timestamp";
pub const SIGNATURE: &str = "webhook-signature";

/// How far a delivery's timestamp may be from the receiver's clock, either way, in seconds (the spec's reference
/// libraries: five minutes).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The three headers of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// `webhook-id`: the event's id, the same on every attempt (the receiver's idempotency key).
    pub id: String,
    /// `webhook-timestamp`: the attempt's time, Unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,` + standard padded base64 of the HMAC-SHA256.
    pub signature: String,
}

impl Headers {
    /// The headers as (name, value) pairs, for an HTTP client.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [(ID, self.id.clone()), (TIMESTAMP, self.timestamp.to_string()), (SIGNATURE, self.signature.clone())]
    }
}

/// The MAC of `{id}.{timestamp}.{body}`, not yet finalized.
fn mac(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.key()).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `v1,<base64>`: the signature of `body` sent as event `id` at `timestamp` (Unix seconds). `id` is billd's own
/// event id: the spec wants no `.` in it (it delimits the signed content), which billd's ids never have.
pub fn signature(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    debug_assert!(!id.contains('.'), "a webhook id never holds a '.'");
    format!("v1,{}", STANDARD.encode(mac(secret, id, timestamp, body).finalize().into_bytes()))
}

/// The headers of one attempt to deliver `body` as event `id` at `timestamp` (Unix seconds): every attempt is
/// signed anew with its own time, under the same id.
pub fn headers(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> Headers {
    Headers { id: id.to_owned(), timestamp, signature: signature(secret, id, timestamp, body) }
}

/// Why a delivery does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing or empty")]
    Missing(&'static str),
    #[error("the webhook-timestamp header is not a whole number of seconds")]
    Timestamp,
    #[error("the webhook-timestamp is more than five minutes old")]
    TooOld,
    #[error("the webhook-timestamp is more than five minutes ahead")]
    TooNew,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// Verifies a delivery as a receiver does, from its header values as received: `timestamp` within
/// [`TOLERANCE_SECS`] of `now` (Unix seconds), and one of the space-separated `signatures` a `v1` one of `body` by
/// `secret` (other versions are passed over; each candidate is compared in constant time).
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    for (name, value) in [(ID, id), (TIMESTAMP, timestamp), (SIGNATURE, signatures)] {
        if value.trim().is_empty() {
            return Err(VerifyError::Missing(name));
        }
    }
    let at: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Timestamp)?;
    if at < now.saturating_sub(TOLERANCE_SECS) {
        return Err(VerifyError::TooOld);
    }
    if at > now.saturating_add(TOLERANCE_SECS) {
        return Err(VerifyError::TooNew);
    }
    let expected = mac(secret, id, at, body);
    // (`verify_slice` compares in constant time.)
    let matches = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|b64| STANDARD.decode(b64).is_ok_and(|sig| expected.clone().verify_slice(&sig).is_ok()));
    if matches { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries (standard-webhooks/standard-webhooks,
    /// libraries/python/tests/test_webhooks.py, `test_sign_function`; the same values in the other languages).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP_S: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn signs_the_spec_example() {
        assert_eq!(signature(&secret(), MSG_ID, TIMESTAMP_S, BODY.as_bytes()), EXPECTED);
        let h = headers(&secret(), MSG_ID, TIMESTAMP_S, BODY.as_bytes());
        assert_eq!(
            h.pairs(),
            [
                ("webhook-id", MSG_ID.to_string()),
                ("webhook-timestamp", "1614265330".to_string()),
                ("webhook-signature", EXPECTED.to_string()),
            ]
        );
    }

    #[test]
    fn verifies_the_spec_example_within_five_minutes_either_way() {
        let v = |signatures: &str, now: i64| verify(&secret(), MSG_ID, "1614265330", signatures, BODY.as_bytes(), now);
        assert_eq!(v(EXPECTED, TIMESTAMP_S), Ok(()));
        assert_eq!(v(EXPECTED, TIMESTAMP_S + TOLERANCE_SECS), Ok(()));
        assert_eq!(v(EXPECTED, TIMESTAMP_S - TOLERANCE_SECS), Ok(()));
        assert_eq!(v(EXPECTED, TIMESTAMP_S + TOLERANCE_SECS + 1), Err(VerifyError::TooOld));
        assert_eq!(v(EXPECTED, TIMESTAMP_S - TOLERANCE_SECS - 1), Err(VerifyError::TooNew));
    }

    #[test]
    fn one_matching_signature_among_several_is_enough() {
        let v = |signatures: &str| verify(&secret(), MSG_ID, "1614265330", signatures, BODY.as_bytes(), TIMESTAMP_S);
        // As the reference libraries' multi-signature test: other versions and wrong v1s around the good one.
        let wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        let other_version = "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        assert_eq!(v(&format!("{wrong} {other_version} {EXPECTED} {wrong}")), Ok(()));
        assert_eq!(v(&format!("{wrong} {other_version}")), Err(VerifyError::NoMatch));
        // The reference libraries' "invalid signature": the last base64 character changed.
        assert_eq!(v("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="), Err(VerifyError::NoMatch));
        // The right bytes under another version, truncated, or not base64.
        assert_eq!(v(&EXPECTED.replace("v1,", "v1a,")), Err(VerifyError::NoMatch));
        assert_eq!(v(&EXPECTED[..EXPECTED.len() - 8]), Err(VerifyError::NoMatch));
        assert_eq!(v("v1,not base64!"), Err(VerifyError::NoMatch));
    }

    #[test]
    fn anything_changed_fails() {
        let s = secret();
        let v = |id: &str, at: &str, body: &str| verify(&s, id, at, EXPECTED, body.as_bytes(), TIMESTAMP_S);
        assert_eq!(v(MSG_ID, "1614265330", BODY), Ok(()));
        assert_eq!(v("msg_p5jXN8AQM9LWM0D4loKWxJel", "1614265330", BODY), Err(VerifyError::NoMatch));
        assert_eq!(v(MSG_ID, "1614265331", BODY), Err(VerifyError::NoMatch));
        assert_eq!(v(MSG_ID, "1614265330", r#"{"test": 2432232315}"#), Err(VerifyError::NoMatch));
        assert_eq!(v(MSG_ID, "1614265330", r#"{"test":2432232314}"#), Err(VerifyError::NoMatch));
        let other = WebhookSecret::from_key(vec![1; 32]).unwrap();
        assert_eq!(
            verify(&other, MSG_ID, "1614265330", EXPECTED, BODY.as_bytes(), TIMESTAMP_S),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_named() {
        let s = secret();
        let v = |id: &str, at: &str, sig: &str| verify(&s, id, at, sig, BODY.as_bytes(), TIMESTAMP_S);
        assert_eq!(v("", "1614265330", EXPECTED), Err(VerifyError::Missing(ID)));
        assert_eq!(v(MSG_ID, "", EXPECTED), Err(VerifyError::Missing(TIMESTAMP)));
        assert_eq!(v(MSG_ID, "1614265330", " "), Err(VerifyError::Missing(SIGNATURE)));
        assert_eq!(v(MSG_ID, "hello", EXPECTED), Err(VerifyError::Timestamp));
        assert_eq!(v(MSG_ID, "1614265330.5", EXPECTED), Err(VerifyError::Timestamp));
        assert_eq!(
            verify(&s, MSG_ID, "-9223372036854775808", EXPECTED, b"", i64::MAX),
            Err(VerifyError::TooOld),
            "no overflow at the edges"
        );
    }
}
