//! Shared test helpers: a started sandbox with an HTTP client and a token.

use std::time::Duration;

use billd_sandbox::{Sandbox, SandboxConfig, cards};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A running sandbox, a client and a valid access token.
pub struct Env {
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
    pub token: String,
}

impl Env {
    pub async fn start() -> Env {
        Env::with(SandboxConfig::default()).await
    }

    pub async fn with(cfg: SandboxConfig) -> Env {
        let sandbox = Sandbox::start(cfg).expect("sandbox starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        let mut env = Env { sandbox, http, token: String::new() };
        env.token = env.fresh_token().await;
        env
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sandbox.base_url(), path)
    }

    pub async fn fresh_token(&self) -> String {
        let (status, body) = self.raw_post("/users/getToken", &default_credentials()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["response"]["access_token"].as_str().expect("access_token").to_string()
    }

    /// POST without auth.
    pub async fn raw_post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self.http.post(self.url(path)).json(body).send().await.expect("send");
        read(resp).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self.http.post(self.url(path)).bearer_auth(&self.token).json(body).send().await.expect("send");
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).bearer_auth(&self.token).send().await.expect("send");
        read(resp).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.delete(self.url(path)).bearer_auth(&self.token).send().await.expect("send");
        read(resp).await
    }

    /// `POST /subscribe/customers/{customer_uid}` with a valid expiry and birth date.
    pub async fn register(&self, customer_uid: &str, card_number: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/subscribe/customers/{customer_uid}"),
            &json!({
                "card_number": card_number,
                "expiry": "2099-12",
                "birth": "900101",
                "pwd_2digit": "12",
            }),
        )
        .await
    }

    /// `POST /subscribe/payments/again` for 9900 KRW.
    pub async fn again(&self, customer_uid: &str, merchant_uid: &str) -> (StatusCode, Value) {
        self.post("/subscribe/payments/again", &again_body(customer_uid, merchant_uid)).await
    }
}

pub fn default_credentials() -> Value {
    json!({ "imp_key": billd_sandbox::DEFAULT_IMP_KEY, "imp_secret": billd_sandbox::DEFAULT_IMP_SECRET })
}

pub fn again_body(customer_uid: &str, merchant_uid: &str) -> Value {
    json!({
        "customer_uid": customer_uid,
        "merchant_uid": merchant_uid,
        "amount": 9900,
        "name": "Monthly plan",
    })
}

pub fn onetime_body(merchant_uid: &str, card_number: &str) -> Value {
    json!({
        "merchant_uid": merchant_uid,
        "amount": 1000,
        "card_number": card_number,
        "expiry": "2099-12",
        "birth": "900101",
        "pwd_2digit": "12",
        "name": "One-off",
    })
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"));
    (status, body)
}

/// Asserts a success envelope and returns its `response`.
pub fn success(status: StatusCode, body: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], 0, "{body}");
    assert!(body["message"].is_null(), "message must be null on success: {body}");
    body["response"].clone()
}

/// Asserts an error envelope with this HTTP status and code, and returns its message.
pub fn failure(status: StatusCode, body: &Value, want_status: StatusCode, want_code: i64) -> String {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body["response"].is_null(), "{body}");
    body["message"].as_str().expect("message").to_string()
}

/// A test that cannot run here (a tool it needs is missing) says so with `SKIPPED: <reason>` and returns; under
/// CI (`CI=true`), where `.ci/run` installs everything the tests need, it fails instead.
pub fn skip(reason: &str) {
    println!("SKIPPED: {reason}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "SKIPPED under CI=true, where nothing may be skipped: {reason} (.ci/run must install what this test needs)"
    );
}

/// A registered approving key named `customer_uid`.
pub async fn env_with_customer(customer_uid: &str) -> Env {
    let env = Env::start().await;
    env.sandbox.register_customer(customer_uid, cards::APPROVE).expect("register");
    env
}
