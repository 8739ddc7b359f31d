//! i'mport's billing-key and key-in endpoints (`/subscribe/customers/{customer_uid}`, `/subscribe/payments/onetime`): the V1 client's `BillingKeys`, every answer cleaned and typed here.

use super::classify::{Envelope, classify_charge, snippet};
use super::{Iamport, Sent, describe};
use crate::gateway::card::{Card, mask};
use crate::gateway::redact::Redactor;
use crate::gateway::{BillingKey, BillingKeys, Channel, ChargeOutcome, ChargeRequest, KeyError};
use chrono::DateTime;
use reqwest::Method;
use serde_json::{Map, Value};

/// A billing-key answer: its envelope's status, code and message (cleaned), and the key it holds (cleaned, typed).
struct KeyAnswer {
    status: u16,
    code: i64,
    message: Option<String>,
    key: Option<BillingKey>,
    /// The customer_uid the answer's key is for (as the gateway wrote it: compared, never shown).
    uid: Option<String>,
}

impl KeyAnswer {
    /// The refusal this answer is (its message, or nothing).
    fn refused(self) -> KeyError {
        KeyError::Refused { status: self.status, code: self.code, message: self.message.unwrap_or_default() }
    }
}

impl Iamport {
    /// An authenticated call on `/subscribe/customers/{customer_uid}` (re-authenticating once on 401), whose answer
    /// is an envelope holding a billing key. Err: no answer, or an unreadable one.
    async fn key_call(
        &self,
        method: Method,
        customer_uid: &str,
        query: &[(&str, &str)],
        body: Option<&Map<String, Value>>,
    ) -> Result<KeyAnswer, String> {
        if let Some(fields) = body {
            self.note_sent(fields);
        }
        let mut url = self.url(&["subscribe", "customers", customer_uid])?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let sent = self
            .authed(|| {
                let rb = self.http.request(method.clone(), url.clone());
                match body {
                    Some(b) => rb.json(b),
                    None => rb,
                }
            })
            .await?;
        match sent {
            Sent::Error(e) => Err(describe(&e)),
            Sent::Refused(why) => Err(why),
            Sent::Response(status, text) => {
                let answer = read_key_answer(status, &text, &self.sent())?;
                // A key for another customer_uid (or for none said) is not the key asked for: the answer is
                // unreadable. The gateway's own id is not quoted (it is its text).
                if answer.code == 0 && answer.uid.as_deref() != Some(customer_uid) {
                    return Err(format!(
                        "the gateway answered a billing key that is not {customer_uid} (its customer_uid differs or \
                         is missing)"
                    ));
                }
                Ok(answer)
            }
        }
    }
}

/// Reads a billing-key answer (HTTP status and body): its envelope and the key it holds, cleaned and typed. Err: an
/// unreadable one.
fn read_key_answer(status: u16, text: &str, red: &Redactor) -> Result<KeyAnswer, String> {
    let env: Envelope = serde_json::from_str(text)
        .map_err(|_| format!("HTTP {status} with an unreadable body: {}", snippet(red, text)))?;
    let uid = env.response.as_ref().and_then(|r| r.get("customer_uid")).and_then(Value::as_str).map(str::to_owned);
    Ok(KeyAnswer {
        status,
        code: env.code,
        message: env.message.map(|m| red.clean(&m)),
        key: env.response.map(|r| billing_key(&r, red)),
        uid,
    })
}

/// Reads a billing-key answer's body as the client does, for fuzzing: its code, its message and the key it holds
/// (cleaned, the card masked); Err: unreadable.
pub fn parse_key_body(status: u16, body: &str) -> Result<(i64, Option<String>, Option<BillingKey>), String> {
    read_key_answer(status, body, &Redactor::default()).map(|a| (a.code, a.message, a.key))
}

impl BillingKeys for Iamport {
    /// `POST /subscribe/customers/{customer_uid}`.
    async fn issue_key(&self, customer_uid: &str, card: &Card, channel: Channel<'_>) -> Result<BillingKey, KeyError> {
        let mut body = card_fields(card);
        if let Some(pg) = channel.pg {
            body.insert("pg".into(), pg.into());
        }
        if let Some(k) = channel.channel_key {
            body.insert("channel_key".into(), k.into());
        }
        let a = self.key_call(Method::POST, customer_uid, &[], Some(&body)).await.map_err(KeyError::Unavailable)?;
        if a.status != 200 || a.code != 0 {
            return Err(a.refused());
        }
        a.key.ok_or(KeyError::NoKey)
    }

    /// `GET /subscribe/customers/{customer_uid}`.
    async fn show_key(&self, customer_uid: &str) -> Result<BillingKey, KeyError> {
        let a = self.key_call(Method::GET, customer_uid, &[], None).await.map_err(KeyError::Unavailable)?;
        match a {
            KeyAnswer { status: 200, code: 0, key: Some(key), .. } => Ok(key),
            KeyAnswer { status: 404, .. } => Err(KeyError::NotFound),
            a => Err(a.refused()),
        }
    }

    /// `DELETE /subscribe/customers/{customer_uid}?reason=…`.
    async fn delete_key(&self, customer_uid: &str, reason: Option<&str>) -> Result<(), KeyError> {
        let query: Vec<(&str, &str)> = reason.map(|r| vec![("reason", r)]).unwrap_or_default();
        let a = self.key_call(Method::DELETE, customer_uid, &query, None).await.map_err(KeyError::Unavailable)?;
        match (a.status, a.code) {
            (200, 0) => Ok(()),
            (404, _) => Err(KeyError::NotFound),
            _ => Err(a.refused()),
        }
    }

    /// `POST /subscribe/payments/onetime` (with `customer_uid` when the card is saved as a billing key).
    async fn pay_with_card(
        &self,
        req: &ChargeRequest,
        card: &Card,
        save_as: Option<&str>,
        go: impl Future<Output = bool>,
    ) -> Option<ChargeOutcome> {
        let mut body = card_fields(card);
        body.insert("merchant_uid".into(), req.merchant_uid.clone().into());
        body.insert("amount".into(), req.amount.into());
        body.insert("currency".into(), req.currency.clone().into());
        body.insert("name".into(), req.name.clone().into());
        if let Some(c) = save_as {
            body.insert("customer_uid".into(), c.into());
        }
        self.note_sent(&body);
        let body = Value::Object(body);
        // Ids a later lookup could not carry, and amounts above the ceiling: refused before anything is sent.
        let ids = crate::ids::path_segment(&req.merchant_uid)
            .and_then(|_| save_as.map_or(Ok(String::new()), crate::ids::path_segment))
            .and_then(|_| crate::gateway::sendable_amount(req.amount));
        let url = match ids.and_then(|_| self.url(&["subscribe", "payments", "onetime"])) {
            Ok(u) => u,
            Err(e) => return Some(ChargeOutcome::Transient(format!("not sent: {e}"))),
        };
        let sent = self.send_after_go(self.http.post(url).json(&body), go).await?;
        // The payment answered must be of the key the card is saved as, if any (of none otherwise).
        let asked = ChargeRequest { customer_uid: save_as.unwrap_or_default().to_owned(), ..req.clone() };
        Some(classify_charge(sent, &asked, self.timeout, &self.sent()))
    }
}

/// The card fields i'mport expects (`card_number` as dddd-dddd-dddd-dddd), for a request body only.
fn card_fields(card: &Card) -> Map<String, Value> {
    let grouped: Vec<String> =
        card.number.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let mut m = Map::new();
    m.insert("card_number".into(), grouped.join("-").into());
    m.insert("expiry".into(), card.expiry.clone().into());
    m.insert("birth".into(), card.birth.clone().into());
    if let Some(p) = &card.pwd_2digit {
        m.insert("pwd_2digit".into(), p.clone().into());
    }
    m
}

/// A key as an answer's `response` (i'mport's `CustomerAnnotation`) gives it: its strings cleaned, its card number
/// masked ([`shown_card`], then masked again if it still holds 13 or more digits), its times read from Unix seconds
/// (0, or a time chrono cannot hold: not given). A field missing or of another type is `None`.
fn billing_key(v: &Value, red: &Redactor) -> BillingKey {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(|s| red.clean(s));
    let time =
        |k: &str| v.get(k).and_then(Value::as_i64).filter(|t| *t != 0).and_then(|t| DateTime::from_timestamp(t, 0));
    let card = v.get("card_number").and_then(Value::as_str).map(|s| {
        let shown = shown_card(s, red);
        if shown.chars().filter(char::is_ascii_digit).count() >= 13 { mask(&shown) } else { shown }
    });
    BillingKey {
        card,
        card_name: text("card_name"),
        pg_provider: text("pg_provider"),
        pg_id: text("pg_id"),
        inserted: time("inserted"),
        updated: time("updated"),
    }
}

/// A key's card number as the gateway shows it: a whole card number (13-19 digits, spaces and dashes) masked; a
/// mask (`424242******4242`: digits, `*`, `-` and spaces, nothing billd sent) shown with at most its first 6 and last
/// 4 digits ([`mask_again`]); anything else cleaned.
fn shown_card(s: &str, red: &Redactor) -> String {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let card_chars = s.len() <= 40 && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '*' | '-' | ' '));
    if card_chars && (13..=19).contains(&digits) && !s.contains('*') {
        mask(s)
    } else if card_chars && s.contains('*') && !red.holds_sent(s) {
        mask_again(s)
    } else {
        red.clean_to(s, 40)
    }
}

/// A mask from the gateway with every digit hidden but the first 6 and the last 4 of the number: a digit is kept
/// only in the unbroken run of digits the mask starts with (its first 6 at most) or ends with (its last 4 at most);
/// every other digit becomes `*` (`4242424242******` shows `424242**********`). Spaces and dashes are kept.
fn mask_again(s: &str) -> String {
    let places: Vec<char> = s.chars().filter(|c| c.is_ascii_digit() || *c == '*').collect();
    let lead = places.iter().take_while(|c| c.is_ascii_digit()).count().min(6);
    let trail = places.iter().rev().take_while(|c| c.is_ascii_digit()).count().min(4);
    let mut at = 0;
    s.chars()
        .map(|c| {
            if !(c.is_ascii_digit() || c == '*') {
                return c;
            }
            at += 1;
            if c.is_ascii_digit() && (at <= lead || at > places.len() - trail) { c } else { '*' }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::card::RawCard;

    fn card() -> Card {
        let raw = RawCard {
            card_number: "4242-4242 4242-4242".into(),
            expiry: "2030-12".into(),
            birth: "900101".into(),
            pwd_2digit: Some("12".into()),
        };
        Card::validate(raw, "2026-11-24".parse().unwrap()).unwrap()
    }

    #[test]
    fn the_card_is_sent_grouped_as_i_mport_expects() {
        let f = card_fields(&card());
        assert_eq!(f["card_number"], "4242-4242-4242-4242");
        assert_eq!(f["expiry"], "2030-12");
        assert_eq!(f["birth"], "900101");
        assert_eq!(f["pwd_2digit"], "12");
    }

    #[test]
    fn a_key_is_typed_with_its_card_masked_and_its_strings_cleaned() {
        let mut red = Redactor::default();
        red.sent_digits("4242424242424242");
        let v = serde_json::json!({
            "card_number": "4242424242424242",
            "card_name": "echo 4242-4242-4242-4242\nINFO forged",
            "pg_provider": "kcp",
            "pg_id": 7,
            "inserted": 1_700_000_000,
            "updated": 0,
        });
        let key = billing_key(&v, &red);
        assert_eq!(key.card.as_deref(), Some("424242******4242"));
        let name = key.card_name.unwrap();
        assert!(!name.contains("4242-4242") && !name.contains('\n'), "{name}");
        assert_eq!(key.pg_provider.as_deref(), Some("kcp"));
        assert_eq!(key.pg_id, None, "not a string");
        assert_eq!(key.inserted.map(|t| t.to_rfc3339()).as_deref(), Some("2023-11-14T22:13:20+00:00"));
        assert_eq!(key.updated, None, "0 is not given");
        // A time beyond any calendar is not given either (not 1970).
        let far = billing_key(&serde_json::json!({ "inserted": i64::MAX, "updated": i64::MIN }), &red);
        assert_eq!((far.inserted, far.updated), (None, None));
        // A mask as the gateway gives it is kept; one holding more digits is masked again.
        let kept = billing_key(&serde_json::json!({ "card_number": "424242******4242" }), &red);
        assert_eq!(kept.card.as_deref(), Some("424242******4242"));
        assert_eq!(billing_key(&serde_json::json!([1]), &red), BillingKey::default());
    }

    /// Issue 24 hardening, F3: a mask from the gateway showing more than the first 6 and the last 4 digits is
    /// masked again (every other digit becomes `*`).
    #[test]
    fn a_gateway_mask_shows_at_most_the_first_6_and_last_4_digits() {
        let red = Redactor::default();
        let shown = |n: &str| billing_key(&serde_json::json!({ "card_number": n }), &red).card.unwrap();
        for (given, want) in [
            ("4242424242******", "424242**********"),
            ("******4242424242", "************4242"),
            ("4242 4242 42** ****", "4242 42** **** ****"),
            ("4242-42**-****-4242", "4242-42**-****-4242"),
            ("424242******4242", "424242******4242"),
            ("4242424242*", "424242*****"),
            ("42**42**42**4242", "42**********4242"),
            ("****-****-****-4242", "****-****-****-4242"),
        ] {
            assert_eq!(shown(given), want, "{given}");
        }
    }

    /// A fake gateway on 127.0.0.1 that gives a token and answers every other request with `body` (HTTP 200).
    async fn answering(body: &'static str) -> Iamport {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if head.contains("/users/getToken") {
                    r#"{"code":0,"message":null,"response":{"access_token":"tok1","now":1700000000,"expired_at":1700001800}}"#
                } else {
                    body
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        let secret = crate::config::Secret::new("s");
        Iamport::new(&format!("http://{addr}"), "k", secret, std::time::Duration::from_secs(5), 1, None)
    }

    /// Issue 24 hardening, F7: a billing key answered for another customer_uid than the one asked for is not that
    /// key.
    #[tokio::test]
    async fn a_key_answered_for_another_customer_uid_is_not_taken() {
        let other = r#"{"code":0,"message":null,"response":{"customer_uid":"someone-else","card_number":"424242******4242","card_name":"Visa"}}"#;
        let g = answering(other).await;
        assert!(matches!(g.show_key("c1").await, Err(KeyError::Unavailable(_))), "{:?}", g.show_key("c1").await);
        let same = r#"{"code":0,"message":null,"response":{"customer_uid":"c1","card_number":"424242******4242","card_name":"Visa"}}"#;
        let g = answering(same).await;
        assert_eq!(g.show_key("c1").await.unwrap().card.as_deref(), Some("424242******4242"));
    }

    /// Issue 24 hardening, point i: no amount above config::MAX_AMOUNT (10^12), nor below 1, leaves the client,
    /// whoever asks (the engine, charge-key with --above-max-amount, charge-once).
    #[tokio::test]
    async fn no_amount_above_the_ceiling_is_sent() {
        let client = Iamport::new(
            "http://127.0.0.1:9",
            "k",
            crate::config::Secret::new("s"),
            std::time::Duration::from_secs(5),
            4,
            None,
        );
        for amount in [crate::config::MAX_AMOUNT + 1, i64::MAX, 0, -9900] {
            let req = ChargeRequest {
                customer_uid: "c1".into(),
                merchant_uid: "m-1".into(),
                amount,
                currency: "KRW".into(),
                name: "n".into(),
            };
            let outcome = crate::gateway::Gateway::charge(&client, &req, async { true }).await;
            assert!(
                matches!(&outcome, Some(ChargeOutcome::Transient(why)) if why.contains("not sent") && why.contains("10^12")),
                "{amount}: {outcome:?}"
            );
        }
    }
}
