//! Reading a `getToken` answer and a billing-key answer: never panics; a token is used only if a header can carry
//! it, for a bounded lifetime; a key's strings are clean and its card number masked; a code is never out of range.

#![no_main]

use billd::gateway::iamport::{parse_key_body, parse_token_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) % 600, String::from_utf8_lossy(rest)),
        _ => return,
    };
    match parse_token_body(status, &body) {
        Ok(life) => {
            assert!(life <= std::time::Duration::from_secs(6 * 3600), "{life:?}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("a token answer is JSON");
            let token = v["response"]["access_token"].as_str().expect("a token");
            assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()), "{token:?}");
        }
        Err(e) => assert!(!e.chars().any(char::is_control), "{e:?}"),
    }
    match parse_key_body(status, &body) {
        Ok((code, message, key)) => {
            assert!(code.abs() <= 99_999, "{code}");
            let mut texts: Vec<String> = message.into_iter().collect();
            if let Some(k) = key {
                let card = k.card.clone().unwrap_or_default();
                assert!(card.chars().filter(char::is_ascii_digit).count() <= 12, "{card:?}");
                texts.extend([k.card, k.card_name, k.pg_provider, k.pg_id].into_iter().flatten());
            }
            for t in texts {
                assert!(!t.chars().any(char::is_control), "{t:?}");
            }
        }
        Err(e) => assert!(!e.chars().any(char::is_control), "{e:?}"),
    }
});
