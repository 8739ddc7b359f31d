//! getToken, token reuse and expiry, and the accepted Authorization forms.

use std::time::Duration;

use billd_sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Env, default_credentials, failure, read, success};

#[tokio::test]
async fn get_token_returns_the_same_30_minute_token_while_it_is_valid() {
    let env = Env::start().await;
    let (s1, b1) = env.raw_post("/users/getToken", &default_credentials()).await;
    let first = success(s1, &b1);
    let (s2, b2) = env.raw_post("/users/getToken", &default_credentials()).await;
    let second = success(s2, &b2);
    assert_eq!(first["access_token"], second["access_token"]);
    assert_eq!(first["expired_at"], second["expired_at"]);
    let ttl = first["expired_at"].as_i64().unwrap() - first["now"].as_i64().unwrap();
    assert!((1799..=1800).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn get_token_accepts_a_form_body() {
    let env = Env::start().await;
    let resp = env
        .http
        .post(env.url("/users/getToken"))
        .form(&[("imp_key", "imp_sandbox_key"), ("imp_secret", "imp_sandbox_secret")])
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(success(status, &body)["access_token"], env.token.as_str());
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_401() {
    let env = Env::start().await;
    let (status, body) =
        env.raw_post("/users/getToken", &json!({"imp_key": "imp_sandbox_key", "imp_secret": "nope"})).await;
    failure(status, &body, StatusCode::UNAUTHORIZED, -1);
    let (status, body) = env.raw_post("/users/getToken", &json!({})).await;
    failure(status, &body, StatusCode::UNAUTHORIZED, -1);
}

#[tokio::test]
async fn configured_credentials_replace_the_defaults() {
    let cfg = SandboxConfig { imp_key: "k".into(), imp_secret: "s".into(), ..SandboxConfig::default() };
    let sandbox = billd_sandbox::Sandbox::start(cfg).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/users/getToken", sandbox.base_url());
    let (status, _) = read(http.post(&url).json(&default_credentials()).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) =
        read(http.post(&url).json(&json!({"imp_key": "k", "imp_secret": "s"})).send().await.unwrap()).await;
    success(status, &body);
}

#[tokio::test]
async fn bearer_bare_and_legacy_header_forms_are_accepted() {
    let env = Env::start().await;
    let url = env.url("/payments/imp_000000000000");
    for (name, value) in [
        ("Authorization", format!("Bearer {}", env.token)),
        ("Authorization", env.token.clone()),
        ("X-ImpTokenHeader", env.token.clone()),
    ] {
        let resp = env.http.get(&url).header(name, value.as_str()).send().await.unwrap();
        // Authenticated: the lookup runs and finds nothing.
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{name}: {value}");
    }
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_on_every_authenticated_endpoint() {
    let env = Env::start().await;
    let requests = [
        env.http.post(env.url("/subscribe/payments/again")).json(&json!({})),
        env.http.post(env.url("/subscribe/payments/onetime")).json(&json!({})),
        env.http.post(env.url("/subscribe/customers/c1")).json(&json!({})),
        env.http.get(env.url("/subscribe/customers/c1")),
        env.http.delete(env.url("/subscribe/customers/c1")),
        env.http.get(env.url("/payments/imp_1")),
        env.http.get(env.url("/payments/find/m1")),
        env.http.get(env.url("/payments/find/m1/paid")),
        env.http.get(env.url("/payments/findAll/m1")),
        env.http.get(env.url("/payments/findAll/m1/paid")),
        env.http.post(env.url("/payments/cancel")).json(&json!({"imp_uid": "x"})),
    ];
    for req in requests {
        let no_token = req.try_clone().unwrap();
        let (status, body) = read(no_token.send().await.unwrap()).await;
        failure(status, &body, StatusCode::UNAUTHORIZED, -1);
        let (status, body) = read(req.bearer_auth("not-the-token").send().await.unwrap()).await;
        failure(status, &body, StatusCode::UNAUTHORIZED, -1);
    }
}

#[tokio::test]
async fn a_token_stops_working_when_its_short_lifetime_ends() {
    let cfg = SandboxConfig { token_ttl: Duration::from_millis(1500), ..SandboxConfig::default() };
    let env = Env::with(cfg).await;
    let (status, _) = env.get("/payments/imp_000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "valid token");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, body) = env.get("/payments/imp_000000000000").await;
    failure(status, &body, StatusCode::UNAUTHORIZED, -1);
    let new_token = env.fresh_token().await;
    assert_ne!(new_token, env.token, "a new token after expiry");
    let resp = env.http.get(env.url("/payments/imp_000000000000")).bearer_auth(&new_token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
