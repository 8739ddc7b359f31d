//! Every response shape the sandbox produces, validated against the official i'mport V1 OpenAPI (Swagger 2.0) definitions.
//!
//! The Swagger definitions are turned into JSON Schema (draft 7) like this:
//! - `x-*` extension keys, `description` and `example` are dropped; `#/definitions/...` refs are kept and
//!   resolved against the converted `definitions`.
//! - Numeric keywords the spec writes as strings (`"maxLength": "40"`) become numbers, so they are enforced.
//! - A definition with `properties`/`required` but no `type` is an object (`"type": "object"`), so a
//!   `null` payload cannot pass vacuously.
//! - Nullability: Swagger 2.0 has none, and the spec declares no field nullable. A field may be `null`
//!   only where the spec's own text says it is `null` (its description mentions `null`: `fail_reason`,
//!   `cancel_reason`, `customer_uid_usage`, `card_type`), plus the envelope's `message`, which the spec
//!   describes as the error text when `code != 0` and which recorded live responses show as `null` on
//!   success. Every other field typed `string` must be a string or absent: the sandbox omits optional
//!   fields it has no value for instead of sending `null`.
//! - The payload definitions (`PaymentAnnotation`, `CustomerAnnotation`, `AuthAnnotation`,
//!   `PagedPaymentAnnotation`, `PaymentCancelAnnotation`) get `additionalProperties: false`, so the
//!   sandbox cannot emit a field the spec does not define.

use std::path::PathBuf;

use billd_sandbox::cards;
use jsonschema::Validator;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::helpers::{Env, env_with_customer, onetime_body, success};

const CLOSED: &[&str] =
    &["PaymentAnnotation", "CustomerAnnotation", "AuthAnnotation", "PagedPaymentAnnotation", "PaymentCancelAnnotation"];

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/iamport-v1.openapi.json")
}

fn load_spec() -> Value {
    let path = spec_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the official i'mport V1 spec is needed for this test but cannot be read at {}: {e} \
             (a copy of shared/reference/, see tests/reference/README.md)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the spec is valid JSON")
}

/// Swagger 2.0 schema -> JSON Schema, see the module documentation.
fn convert(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match k.as_str() {
                    k if k.starts_with("x-") => {}
                    "description" | "example" => {}
                    "maxLength" | "minLength" | "maximum" | "minimum" | "maxItems" | "minItems" => {
                        let n = match v {
                            Value::String(s) => json!(s.parse::<f64>().expect("numeric keyword")),
                            other => other.clone(),
                        };
                        out.insert(k.to_string(), n);
                    }
                    "properties" => {
                        let props = v
                            .as_object()
                            .expect("properties is an object")
                            .iter()
                            .map(|(name, s)| (name.clone(), convert(s)))
                            .collect();
                        out.insert(k.to_string(), Value::Object(props));
                    }
                    _ => {
                        out.insert(k.to_string(), convert(v));
                    }
                }
            }
            if !out.contains_key("type") && (out.contains_key("properties") || out.contains_key("required")) {
                out.insert("type".into(), json!("object"));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(convert).collect()),
        other => other.clone(),
    }
}

/// True when the spec's own text for a property says it can be `null`.
fn documented_nullable(prop: &Value) -> bool {
    ["description", "x-portone-description", "x-portone-summary"]
        .iter()
        .filter_map(|k| prop.get(*k).and_then(Value::as_str))
        .any(|text| text.contains("null"))
}

fn allow_null(prop: &mut Value) {
    if let Some(t) = prop.get("type").cloned()
        && let Value::String(t) = t
    {
        prop["type"] = json!([t, "null"]);
    }
}

/// The converted definitions.
fn definitions(spec: &Value) -> (Map<String, Value>, Vec<String>) {
    let original = spec["definitions"].as_object().expect("definitions");
    let mut defs = Map::new();
    let mut nullable = Vec::new();
    for (name, def) in original {
        let mut converted = convert(def);
        if let Some(props) = def.get("properties").and_then(Value::as_object) {
            for (prop, schema) in props {
                if documented_nullable(schema) {
                    allow_null(&mut converted["properties"][prop]);
                    nullable.push(format!("{name}.{prop}"));
                }
            }
        }
        if CLOSED.contains(&name.as_str()) {
            converted["additionalProperties"] = json!(false);
        }
        defs.insert(name.clone(), converted);
    }
    // The envelope's message: null on success (see the module documentation).
    allow_null(&mut defs["ResponseAnnotation"]["properties"]["message"]);
    nullable.push("ResponseAnnotation.message".into());
    (defs, nullable)
}

struct Spec {
    defs: Map<String, Value>,
}

impl Spec {
    fn load() -> Spec {
        Spec { defs: definitions(&load_spec()).0 }
    }

    fn validator(&self, definition: &str) -> Validator {
        assert!(self.defs.contains_key(definition), "the spec has no definition {definition}");
        let root = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": self.defs,
            "allOf": [{ "$ref": format!("#/definitions/{definition}") }],
        });
        jsonschema::draft7::new(&root).unwrap_or_else(|e| panic!("{definition} does not compile: {e}"))
    }

    fn errors(&self, definition: &str, instance: &Value) -> Vec<String> {
        let v = self.validator(definition);
        v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
    }

    fn assert_valid(&self, definition: &str, what: &str, instance: &Value) {
        let errors = self.errors(definition, instance);
        assert!(errors.is_empty(), "{what} does not match {definition}: {errors:#?}\n{instance:#}");
        let keys: Vec<&String> = instance.as_object().expect("envelope").keys().collect();
        assert_eq!(keys.len(), 3, "{what}: the envelope is exactly code, message, response: {instance}");
    }
}

/// `(definition, description, body)` for every kind of success response, from a scripted session.
async fn every_success_response() -> Vec<(&'static str, String, Value)> {
    let env = env_with_customer("spec_ok").await;
    let mut out = Vec::new();
    let mut keep = |def: &'static str, what: &str, status: StatusCode, body: Value| {
        success(status, &body);
        out.push((def, what.to_string(), body));
    };

    let (s, b) = env.raw_post("/users/getToken", &crate::helpers::default_credentials()).await;
    keep("AuthResponse", "getToken", s, b);

    let (s, b) = env.register("spec_key", cards::APPROVE).await;
    keep("CustomerResponse", "POST /subscribe/customers", s, b);
    let (s, b) = env
        .post(
            "/subscribe/customers/spec_key_full",
            &json!({
                "card_number": "5555-5555-5555-4444", "expiry": "2099-01", "birth": "1234567890",
                "customer_id": "u-1", "customer_name": "홍길동", "customer_tel": "010-1234-5678",
                "customer_email": "hong@example.com", "customer_addr": "서울", "customer_postcode": "04524",
            }),
        )
        .await;
    keep("CustomerResponse", "POST /subscribe/customers (all customer fields)", s, b);
    let (s, b) = env.register("spec_key", cards::DECLINE_LOST).await;
    keep("CustomerResponse", "POST /subscribe/customers (re-issue)", s, b);
    let (s, b) = env.get("/subscribe/customers/spec_key").await;
    keep("CustomerResponse", "GET /subscribe/customers", s, b);
    let (s, b) = env.delete("/subscribe/customers/spec_key_full").await;
    keep("CustomerResponse", "DELETE /subscribe/customers", s, b);

    let (s, b) = env.again("spec_ok", "spec_paid").await;
    let imp_uid = b["response"]["imp_uid"].as_str().unwrap().to_string();
    keep("PaymentResponse", "again (paid)", s, b);
    let (s, b) = env.again("spec_key", "spec_failed").await;
    keep("PaymentResponse", "again (failed)", s, b);
    let (s, b) = env
        .post(
            "/subscribe/payments/again",
            &json!({
                "customer_uid": "spec_ok", "merchant_uid": "spec_full", "amount": 50000, "name": "Annual",
                "currency": "KRW", "tax_free": 0, "card_quota": 3, "custom_data": {"plan": "annual"},
                "buyer_name": "홍길동", "buyer_email": "hong@example.com", "buyer_tel": "010-1234-5678",
                "buyer_addr": "서울", "buyer_postcode": "04524",
            }),
        )
        .await;
    keep("PaymentResponse", "again (every optional field)", s, b);
    let (s, b) = env.post("/subscribe/payments/onetime", &onetime_body("spec_one", cards::APPROVE)).await;
    keep("PaymentResponse", "onetime (keyless)", s, b);
    let mut body = onetime_body("spec_one_key", cards::DECLINE_STOLEN);
    body["customer_uid"] = json!("spec_one_key");
    let (s, b) = env.post("/subscribe/payments/onetime", &body).await;
    keep("PaymentResponse", "onetime (with customer_uid, declined)", s, b);

    let (s, b) = env.get(&format!("/payments/{imp_uid}")).await;
    keep("PaymentResponse", "GET /payments/{imp_uid}", s, b);
    let (s, b) = env.get("/payments/find/spec_paid").await;
    keep("PaymentResponse", "GET /payments/find", s, b);
    let (s, b) = env.get("/payments/find/spec_failed/failed").await;
    keep("PaymentResponse", "GET /payments/find/{status}", s, b);
    let (s, b) = env.post("/payments/cancel", &json!({"imp_uid": imp_uid, "amount": 1000, "reason": "partial"})).await;
    keep("PaymentResponse", "cancel (partial)", s, b);
    let (s, b) = env.post("/payments/cancel", &json!({"merchant_uid": "spec_paid"})).await;
    keep("PaymentResponse", "cancel (full, no reason)", s, b);

    let (s, b) = env.get("/payments/findAll/spec_paid").await;
    keep("PaymentListResponse", "GET /payments/findAll", s, b);
    let (s, b) = env.get("/payments/findAll/spec_failed/failed?limit=1").await;
    keep("PaymentListResponse", "GET /payments/findAll/{status}", s, b);
    out
}

#[tokio::test]
async fn every_response_matches_the_official_spec() {
    let spec = Spec::load();
    let responses = every_success_response().await;
    assert!(responses.len() >= 18);
    for (def, what, body) in &responses {
        spec.assert_valid(def, what, body);
    }

    // Error envelopes: ResponseAnnotation with a string message and a null response.
    let env = Env::with(billd_sandbox::SandboxConfig { rate_limit: Some(1000), ..Default::default() }).await;
    env.sandbox.register_customer("faulty", cards::APPROVE).unwrap();
    env.sandbox.add_fault(billd_sandbox::FaultRule {
        customer_uid: Some("faulty".into()),
        fault: billd_sandbox::Fault::Http500,
        times: Some(1),
    });
    let limited = Env::with(billd_sandbox::SandboxConfig { rate_limit: Some(1), ..Default::default() }).await;
    let errors = [
        env.again("faulty", "m").await,
        rate_limited(&limited).await,
        env.again("nobody", "m").await,
        env.get("/payments/imp_000000000000").await,
        env.get("/subscribe/customers/nobody").await,
        env.post("/payments/cancel", &json!({"imp_uid": "imp_000000000000"})).await,
        env.post("/subscribe/payments/again", &json!({})).await,
        env.raw_post("/users/getToken", &json!({"imp_key": "x", "imp_secret": "y"})).await,
    ];
    let statuses: Vec<u16> = errors.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses, [500, 429, 200, 404, 404, 200, 400, 401]);
    for (_status, body) in errors {
        spec.assert_valid("ResponseAnnotation", "error envelope", &body);
        assert!(body["message"].is_string() && body["response"].is_null(), "{body}");
        assert_ne!(body["code"], 0);
    }
}

/// A 429 answer (limit 1/s: of a few back-to-back requests, at most one per window passes).
async fn rate_limited(env: &Env) -> (StatusCode, Value) {
    for _ in 0..5 {
        let (status, body) = env.get("/payments/find/m").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (status, body);
        }
    }
    panic!("no request was rate-limited");
}

#[tokio::test]
async fn the_validation_catches_shapes_that_break_the_spec() {
    let spec = Spec::load();
    let env = env_with_customer("neg").await;
    let (s, paid) = env.again("neg", "neg_paid").await;
    success(s, &paid);
    spec.assert_valid("PaymentResponse", "baseline", &paid);

    type Mutation = fn(&mut Value);
    let broken: Vec<(&str, Mutation)> = vec![
        ("missing required status", |v| {
            v["response"].as_object_mut().unwrap().remove("status");
        }),
        ("amount as a string", |v| v["response"]["amount"] = json!("9900")),
        ("null pg_tid (not documented nullable)", |v| v["response"]["pg_tid"] = Value::Null),
        ("merchant_uid over 40", |v| v["response"]["merchant_uid"] = json!("m".repeat(41))),
        ("a field the spec does not define", |v| v["response"]["card_cvc"] = json!("123")),
        ("timestamp as float", |v| v["response"]["paid_at"] = json!(1.5)),
        ("null response on success", |v| v["response"] = Value::Null),
        ("bad cancel_history item", |v| v["response"]["cancel_history"] = json!([{"amount": 1}])),
    ];
    for (what, mutate) in broken {
        let mut copy = paid.clone();
        mutate(&mut copy);
        assert!(!spec.errors("PaymentResponse", &copy).is_empty(), "{what} must be rejected");
    }

    let (s, token) = env.raw_post("/users/getToken", &crate::helpers::default_credentials()).await;
    success(s, &token);
    let mut copy = token.clone();
    copy["response"].as_object_mut().unwrap().remove("expired_at");
    assert!(!spec.errors("AuthResponse", &copy).is_empty());
    let (s, key) = env.get("/subscribe/customers/neg").await;
    success(s, &key);
    let mut copy = key.clone();
    copy["response"]["inserted"] = json!("yesterday");
    assert!(!spec.errors("CustomerResponse", &copy).is_empty());
}

#[tokio::test]
async fn nullable_fields_are_exactly_those_the_spec_text_calls_null() {
    let (_, nullable) = definitions(&load_spec());
    for field in [
        "PaymentAnnotation.fail_reason",
        "PaymentAnnotation.cancel_reason",
        "PaymentAnnotation.customer_uid_usage",
        "PaymentAnnotation.card_type",
        "CustomerAnnotation.card_type",
        "ResponseAnnotation.message",
    ] {
        assert!(nullable.contains(&field.to_string()), "{field} missing from {nullable:?}");
    }
    assert!(!nullable.contains(&"PaymentAnnotation.pg_tid".to_string()));
}

/// The real response recorded by an official client (tests/reference/fixtures): every field it
/// carries is present in a sandbox payment with the same JSON type.
#[tokio::test]
async fn a_sandbox_payment_carries_every_field_of_a_recorded_real_response() {
    let path = spec_path().with_file_name("fixtures/onetime-paid-nice.go-iamport.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the recorded response {}: {e}", path.display()));
    let real: Value = serde_json::from_str(&text).unwrap();
    let env = Env::start().await;
    let mut body = onetime_body("fixture_like", cards::APPROVE);
    body["buyer_name"] = json!("홍길동");
    body["buyer_email"] = json!("example@example.com");
    body["buyer_tel"] = json!("01012341234");
    let (s, ours) = env.post("/subscribe/payments/onetime", &body).await;
    let ours = success(s, &ours);
    assert_eq!(real["code"], 0);
    assert!(real["message"].is_null());
    let type_of = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    for (field, value) in real["response"].as_object().unwrap() {
        let mine = ours.get(field).unwrap_or_else(|| panic!("sandbox payment lacks `{field}`: {ours}"));
        assert_eq!(type_of(mine), type_of(value), "`{field}`: real {value}, sandbox {mine}");
    }
    assert_eq!(ours["channel"], real["response"]["channel"]);
    assert_eq!(ours["pay_method"], real["response"]["pay_method"]);
}
