//! The config file as written: the serde shape `schedules.toml` is read into, with its defaults, before validation.

use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct Raw {
    pub(super) billing: RawBilling,
    pub(super) gateway: RawGateway,
    #[serde(default)]
    pub(super) dunning: RawDunning,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    /// `[webhooks]`, if written (defaults are applied in `config::webhooks`, which tells a key left out).
    pub(super) webhooks: Option<RawWebhooks>,
    #[serde(default)]
    pub(super) notices: RawNotices,
    #[serde(default)]
    pub(super) plans: Vec<RawPlan>,
    #[serde(default)]
    pub(super) subscriptions: Vec<RawSubscription>,
}

#[derive(Deserialize)]
pub(super) struct RawBilling {
    pub(super) timezone: String,
    #[serde(default = "default_charge_time")]
    pub(super) charge_time: String,
    #[serde(default = "default_database")]
    pub(super) database: String,
    /// Only ever from the file, where it is refused (the environment's is taken verbatim apart).
    pub(super) database_password: Option<StringOrNumber>,
    pub(super) database_password_file: Option<String>,
    #[serde(default = "default_prefix")]
    pub(super) merchant_uid_prefix: String,
    pub(super) catch_up_window: Option<String>,
    pub(super) lease: Option<String>,
}

pub(super) fn default_charge_time() -> String {
    "10:00".into()
}
pub(super) fn default_database() -> String {
    "billd.sqlite3".into()
}
pub(super) fn default_prefix() -> String {
    "billd".into()
}

#[derive(Deserialize)]
pub(super) struct RawGateway {
    pub(super) base_url: String,
    pub(super) imp_key: String,
    pub(super) imp_secret: Option<StringOrNumber>,
    pub(super) imp_secret_file: Option<String>,
    #[serde(default = "default_timeout")]
    pub(super) timeout: String,
    #[serde(default = "default_concurrency")]
    pub(super) concurrency: i64,
    pub(super) rate_limit: Option<f64>,
    pub(super) proxy: Option<String>,
}

/// Env vars are parsed as TOML values, so an all-digit secret arrives as a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrNumber {
    S(String),
    I(i64),
}

pub(super) fn default_timeout() -> String {
    "30s".into()
}
pub(super) fn default_concurrency() -> i64 {
    16
}

#[derive(Deserialize)]
pub(super) struct RawDunning {
    #[serde(default = "default_retry_after")]
    pub(super) retry_after: Vec<String>,
    #[serde(default = "default_on_exhausted")]
    pub(super) on_exhausted: String,
}

impl Default for RawDunning {
    fn default() -> Self {
        RawDunning { retry_after: default_retry_after(), on_exhausted: default_on_exhausted() }
    }
}

pub(super) fn default_retry_after() -> Vec<String> {
    vec!["1d".into(), "2d".into(), "4d".into()]
}
pub(super) fn default_on_exhausted() -> String {
    "cancel".into()
}

#[derive(Deserialize, Default)]
pub(super) struct RawLimits {
    pub(super) max_amount: Option<i64>,
    pub(super) max_charges_per_pass: Option<i64>,
    pub(super) mass_rejection_count: Option<i64>,
    pub(super) mass_rejection_percent: Option<i64>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawWebhooks {
    pub(super) url: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) max_age: Option<String>,
    pub(super) concurrency: Option<i64>,
    pub(super) retain: Option<String>,
}

/// `[notices]`: i'mport's notifications (issue 26).
#[derive(Deserialize, Default)]
pub(super) struct RawNotices {
    pub(super) listen: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawPlan {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) amount: i64,
    #[serde(default = "default_currency")]
    pub(super) currency: String,
    pub(super) interval: String,
    /// A free trial before the first charge, in whole days (`14d`; `0d`: none).
    pub(super) trial: Option<String>,
    /// A fixed term: this many periods, then the subscription is completed.
    pub(super) periods: Option<i64>,
}

pub(super) fn default_currency() -> String {
    "KRW".into()
}

#[derive(Deserialize)]
pub(super) struct RawSubscription {
    pub(super) id: String,
    pub(super) customer_uid: String,
    pub(super) plan: String,
    pub(super) start: String,
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) catch_up: bool,
    /// The subscription's own price (grandfathering), instead of its plan's.
    pub(super) amount: Option<i64>,
    pub(super) discount: Option<RawDiscount>,
    /// The day its trial ends (its first charge falls due then), instead of the plan's trial.
    pub(super) trial_ends: Option<String>,
    /// No period due on or after this day is charged; canceled then.
    pub(super) cancel_at: Option<String>,
    /// A fixed term: this many periods (instead of the plan's), or the periods due up to this day.
    pub(super) periods: Option<i64>,
    pub(super) end: Option<String>,
}

/// `discount = { percent = 20, periods = 3 }` or `{ amount = 1000, periods = 3 }`.
#[derive(Deserialize)]
pub(super) struct RawDiscount {
    pub(super) percent: Option<i64>,
    pub(super) amount: Option<i64>,
    pub(super) periods: Option<i64>,
}

pub(super) fn secret_text(v: StringOrNumber) -> String {
    match v {
        StringOrNumber::S(s) => s,
        StringOrNumber::I(i) => i.to_string(),
    }
}
