//! Request bodies (JSON or form) read into fields and checked against the spec's types, required fields and lengths.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use crate::ledger::{Buyer, CardInput, ChargeRequest, Refusal};

/// `user_agent` of payments whose request had none (what the real API records for API calls).
const NO_USER_AGENT: &str = "sorry_not_supported_user_agent";

/// Largest request body read (the real API's requests are a few hundred bytes).
const BODY_LIMIT: usize = 1 << 20;

/// HTTP 400, code 1: a malformed request.
pub(crate) fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal { http: 400, code: 1, message: message.into() }
}

/// A request body (JSON or form) as a map of fields.
pub(crate) struct Params(pub(crate) Map<String, Value>);

impl Params {
    pub(crate) async fn read(headers: &HeaderMap, body: Body) -> Result<Params, Refusal> {
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|e| bad_request(format!("cannot read the request body: {e}")))?;
        Params::parse(headers, &bytes)
    }

    /// Parses a body already read (JSON, or a form when the content type says so).
    pub(crate) fn parse(headers: &HeaderMap, bytes: &[u8]) -> Result<Params, Refusal> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
        if form {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(bytes).map_err(|e| bad_request(format!("malformed form body: {e}")))?;
            return Ok(Params(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Params(map)),
            Ok(_) => Err(bad_request("the request body must be a JSON object")),
            Err(e) => Err(bad_request(format!("malformed JSON body: {e}"))),
        }
    }

    /// A string field; numbers are accepted as their text, `null` and `""` count as absent.
    pub(crate) fn opt_str(&self, key: &str, max_chars: Option<usize>) -> Result<Option<String>, Refusal> {
        let s = match self.0.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(bad_request(format!("`{key}` must be a string"))),
        };
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(max) = max_chars {
            let n = s.chars().count();
            if n > max {
                return Err(bad_request(format!("`{key}` is {n} characters long; the maximum is {max}")));
            }
        }
        Ok(Some(s))
    }

    pub(crate) fn req_str(&self, key: &str, max_chars: Option<usize>) -> Result<String, Refusal> {
        self.opt_str(key, max_chars)?.ok_or_else(|| bad_request(format!("`{key}` is required")))
    }

    /// A number field; strings holding a number are accepted (form bodies).
    pub(crate) fn opt_num(&self, key: &str) -> Result<Option<f64>, Refusal> {
        let v = match self.0.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match v {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(bad_request(format!("`{key}` must be a number"))),
        }
    }

    /// A non-negative whole amount.
    pub(crate) fn opt_amount(&self, key: &str) -> Result<Option<i64>, Refusal> {
        match self.opt_num(key)? {
            None => Ok(None),
            Some(x) if x < 0.0 => Err(bad_request(format!("`{key}` must not be negative"))),
            Some(x) if x.fract() != 0.0 || x > 1e15 => Err(bad_request(format!(
                "`{key}` must be a whole amount (the sandbox handles whole currency units only)"
            ))),
            Some(x) => Ok(Some(x as i64)),
        }
    }

    pub(crate) fn opt_int(&self, key: &str, min: i64) -> Result<Option<i64>, Refusal> {
        match self.opt_num(key)? {
            None => Ok(None),
            Some(x) if x.fract() != 0.0 || x < min as f64 || x > 1e15 => {
                Err(bad_request(format!("`{key}` must be an integer of at least {min}")))
            }
            Some(x) => Ok(Some(x as i64)),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, Refusal> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" || s == "0" || s.is_empty() => Ok(Some(false)),
            Some(_) => Err(bad_request(format!("`{key}` must be true or false"))),
        }
    }

    pub(crate) fn opt_enum(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, Refusal> {
        match self.opt_str(key, None)? {
            Some(v) if !allowed.contains(&v.as_str()) => {
                Err(bad_request(format!("`{key}` must be one of {}", allowed.join(", "))))
            }
            v => Ok(v),
        }
    }

    /// `custom_data` is documented as a string; objects are accepted and kept as JSON text.
    pub(crate) fn custom_data(&self) -> Option<String> {
        match self.0.get("custom_data") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }
}

pub(crate) fn buyer(p: &Params) -> Result<Buyer, Refusal> {
    Ok(Buyer {
        buyer_name: p.opt_str("buyer_name", Some(16))?,
        buyer_email: p.opt_str("buyer_email", Some(64))?,
        buyer_tel: p.opt_str("buyer_tel", Some(16))?,
        buyer_addr: p.opt_str("buyer_addr", Some(128))?,
        buyer_postcode: p.opt_str("buyer_postcode", Some(8))?,
    })
}

/// The fields `again` and `onetime` share, checked against the spec's types and lengths.
pub(crate) fn charge_request(p: &Params, headers: &HeaderMap, name_required: bool) -> Result<ChargeRequest, Refusal> {
    let merchant_uid = p.req_str("merchant_uid", Some(40))?;
    let amount = p.opt_amount("amount")?.ok_or_else(|| bad_request("`amount` is required"))?;
    if amount == 0 {
        return Err(bad_request("`amount` must be greater than 0"));
    }
    let name = if name_required { Some(p.req_str("name", Some(40))?) } else { p.opt_str("name", Some(40))? };
    if let Some(tax_free) = p.opt_amount("tax_free")?
        && tax_free > amount
    {
        return Err(bad_request("`tax_free` must not exceed `amount`"));
    }
    p.opt_amount("vat_amount")?;
    p.opt_amount("vat")?;
    for key in ["interest_free_by_merchant", "use_card_point"] {
        p.opt_bool(key)?;
    }
    for key in ["notice_url", "browser_ip", "bypass", "promotion_id"] {
        p.opt_str(key, None)?;
    }
    p.opt_enum("product_type", &["real", "digital"])?;
    p.opt_enum("cash_receipt_type", &["person", "company", "anonymous"])?;
    p.opt_int("product_count", 1)?;
    p.opt_str("channel_key", Some(55))?;
    if let Some(extra) = p.0.get("extra")
        && !matches!(extra, Value::Object(_) | Value::Null | Value::String(_))
    {
        return Err(bad_request("`extra` must be an object"));
    }
    Ok(ChargeRequest {
        merchant_uid,
        amount,
        currency: p.opt_str("currency", None)?.unwrap_or_else(|| "KRW".to_string()),
        name,
        buyer: buyer(p)?,
        custom_data: p.custom_data(),
        card_quota: p.opt_int("card_quota", 0)?.unwrap_or(0),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .filter(|ua| !ua.is_empty())
            .map_or_else(|| NO_USER_AGENT.to_string(), |ua| ua.chars().take(256).collect()),
        receipt_base: headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .map(|host| format!("http://{host}/__sandbox/receipts")),
    })
}

pub(crate) fn card_input(p: &Params) -> Result<CardInput, Refusal> {
    p.opt_str("cvc", None)?;
    Ok(CardInput {
        card_number: p.req_str("card_number", None)?,
        expiry: p.req_str("expiry", None)?,
        birth: p.opt_str("birth", None)?,
        pwd_2digit: p.opt_str("pwd_2digit", None)?,
    })
}
