//! Sandbox configuration: credentials, token lifetime, latency, rate limit, faults and seeded billing keys, loadable from TOML.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::cards;

/// Default `imp_key` accepted by `POST /users/getToken`.
pub const DEFAULT_IMP_KEY: &str = "imp_sandbox_key";
/// Default `imp_secret` accepted by `POST /users/getToken`.
pub const DEFAULT_IMP_SECRET: &str = "imp_sandbox_secret";
/// Default access-token lifetime (the real API's 30 minutes).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// Everything the sandbox can be told at start.
///
/// Durations in TOML (and in the `/__sandbox/faults` JSON) are either a number of seconds
/// (`30`, `0.25`) or a string with a unit: `"250ms"`, `"2s"`, `"30m"`, `"1h"`.
///
/// ```toml
/// imp_key = "imp_sandbox_key"
/// imp_secret = "imp_sandbox_secret"
/// token_ttl = "30m"
/// latency = { min = "20ms", max = "80ms" }   # or latency = "50ms"
/// lookup_latency = "2s"                      # payment lookups; omit for none
/// rate_limit = 50                            # requests per second; omit for none
/// seed = 42                                  # random fault delays (charge_later_random); omit for a random seed
/// notice_url = "http://127.0.0.1:8789/iamport/notice"  # i'mport's notifications; omit for none
/// notice_format = "json"                     # or "form" (application/x-www-form-urlencoded)
///
/// [[customers]]
/// customer_uid = "demo_customer"
/// card_number = "4242424242424242"
///
/// [[faults]]
/// customer_uid = "flaky_customer"
/// fault = "http500"
/// times = 2
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The REST API key accepted by `getToken`.
    pub imp_key: String,
    /// The REST API secret accepted by `getToken`.
    pub imp_secret: String,
    /// Lifetime of an access token. The "ask in its last minute, get 5 more minutes" rule
    /// scales with it: the window is `token_ttl / 30` and the extension `token_ttl / 6`.
    #[serde(with = "duration")]
    pub token_ttl: Duration,
    /// Latency added to `again`, `onetime` and billing-key issue.
    pub latency: Latency,
    /// Latency added to payment lookups (`/payments/find…`, `/payments/findAll…`, `/payments/{imp_uid}`): a slow
    /// gateway for billd's reconciliation.
    pub lookup_latency: Latency,
    /// Requests per second accepted across all API endpoints (not `/__sandbox`); above it HTTP 429.
    pub rate_limit: Option<u32>,
    /// Faults active from the start.
    pub faults: Vec<FaultRule>,
    /// Seed of the random delays of [`Fault::ChargeLaterRandom`]: with the same seed, the n-th delay drawn is the
    /// same from one run to the next (which request draws it depends on the order requests arrive in).
    /// `None`: a seed of its own at every start. `/__sandbox/reset` starts the sequence again.
    pub seed: Option<u64>,
    /// Billing keys registered at start.
    pub customers: Vec<SeedCustomer>,
    /// Where i'mport's notifications are posted (`http://HOST:PORT/PATH`), as i'mport posts them: on every approval
    /// (`paid`) and every cancel made in the console (`POST /__sandbox/console/cancel`, `cancelled`); never on an
    /// ordinary decline, nor on a cancel through the API. `None`: none are posted.
    pub notice_url: Option<String>,
    /// How their bodies are written.
    pub notice_format: crate::notices::NoticeFormat,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            imp_key: DEFAULT_IMP_KEY.to_string(),
            imp_secret: DEFAULT_IMP_SECRET.to_string(),
            token_ttl: DEFAULT_TOKEN_TTL,
            latency: Latency::None,
            lookup_latency: Latency::None,
            rate_limit: None,
            faults: Vec::new(),
            customers: Vec::new(),
            seed: None,
            notice_url: None,
            notice_format: crate::notices::NoticeFormat::Json,
        }
    }
}

impl SandboxConfig {
    /// Reads a TOML file; errors name the file and, for bad keys or values, the key and line.
    pub fn from_toml_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read sandbox config {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("invalid sandbox config {}", path.display()))
    }

    /// Parses TOML text (see the type's documentation for the format) and checks it.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let cfg: SandboxConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: a positive token lifetime, ordered latency bounds,
    /// a non-zero rate limit and valid seed cards.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.token_ttl.is_zero() {
            anyhow::bail!("token_ttl must be longer than zero");
        }
        for (key, latency) in [("latency", self.latency), ("lookup_latency", self.lookup_latency)] {
            if let Latency::Random { min, max } = latency
                && min > max
            {
                anyhow::bail!("{key}: min ({min:?}) is larger than max ({max:?})");
            }
        }
        if let Some(url) = &self.notice_url {
            crate::notices::check_url(url).map_err(|e| anyhow::anyhow!(e))?;
        }
        if self.rate_limit == Some(0) {
            anyhow::bail!("rate_limit must be at least 1 (omit it for no limit)");
        }
        for (i, c) in self.customers.iter().enumerate() {
            if c.customer_uid.is_empty() || c.customer_uid.chars().count() > 80 {
                anyhow::bail!("customers[{i}].customer_uid must be 1 to 80 characters");
            }
            if cards::inspect(&c.card_number).is_err() {
                anyhow::bail!(
                    "customers[{i}] ({}): card_number {} is not a valid card number (13-19 digits passing the Luhn check)",
                    c.customer_uid,
                    cards::mask(&c.card_number)
                );
            }
        }
        Ok(())
    }
}

/// Latency added before answering `again`, `onetime` and billing-key issue (after the
/// request has been recorded, like a slow PG).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Latency {
    /// No added latency.
    #[default]
    None,
    /// Always this long. TOML: `latency = "50ms"`.
    Fixed(Duration),
    /// Uniformly random in `min..=max`. TOML: `latency = { min = "10ms", max = "90ms" }`.
    Random {
        /// Shortest latency.
        min: Duration,
        /// Longest latency.
        max: Duration,
    },
}

impl Latency {
    /// Draws one delay.
    pub fn sample(&self) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Random { min, max } => {
                if max <= min {
                    min
                } else {
                    let span = (max - min).as_micros() as u64;
                    min + Duration::from_micros(rand::random_range(0..=span))
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Latency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a duration ("50ms", 2, "1s"), "none", or { min = "10ms", max = "90ms" }"#)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Latency, E> {
                Ok(fixed(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Latency, E> {
                u64::try_from(v)
                    .map(|v| fixed(Duration::from_secs(v)))
                    .map_err(|_| E::custom("latency must not be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Latency, E> {
                duration::from_secs_f64(v).map(fixed).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Latency, E> {
                if v.eq_ignore_ascii_case("none") {
                    return Ok(Latency::None);
                }
                duration::parse(v).map(fixed).map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Latency, A::Error> {
                let (mut min, mut max) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "min" => min = Some(map.next_value::<duration::Human>()?.0),
                        "max" => max = Some(map.next_value::<duration::Human>()?.0),
                        other => {
                            return Err(de::Error::unknown_field(other, &["min", "max"]));
                        }
                    }
                }
                let min = min.ok_or_else(|| de::Error::missing_field("min"))?;
                let max = max.ok_or_else(|| de::Error::missing_field("max"))?;
                Ok(Latency::Random { min, max })
            }
        }
        fn fixed(d: Duration) -> Latency {
            if d.is_zero() { Latency::None } else { Latency::Fixed(d) }
        }
        d.deserialize_any(V)
    }
}

/// A fault and which `again` / `onetime` requests it hits.
///
/// JSON (for `POST /__sandbox/faults`) and TOML use the same shape:
/// `{"customer_uid": "cust_1", "fault": "http500", "times": 2}`;
/// `fault` is one of `"http500"`, `"drop_after_charge"`, `"garbage"`,
/// `{"lose_response_after_charge": {"hold": "35s"}}`, `{"charge_later": {"after": "2s"}}`,
/// `{"charge_later_random": {"max": "2s"}}`, `{"latency": "2s"}`,
/// and the hostile answers
/// `"html502"`, `"truncated_json"`, `"missing_fields"`, `"mistyped_fields"`, `"huge_body"`,
/// `{"trickle": {"every": "20ms"}}`, `"reset_mid_body"`, `"wrong_merchant_uid"`, `"wrong_amount"`; and for
/// `POST /payments/cancel` only, `"drop_after_cancel"` and `{"cancel_later": {"after": "9s"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Only requests for this billing key; `None` (absent) = every `again`/`onetime` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_uid: Option<String>,
    /// What happens.
    pub fault: Fault,
    /// Applies to the next `times` matching requests, then is removed; `None` = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// An injected failure. When several rules match one request, every `Latency` adds up and the
/// first other fault (in the order the rules were added) is the one that happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 500 with an error envelope; nothing is charged.
    Http500,
    /// The charge is recorded as usual, then the response is held for `hold` before it is sent,
    /// so a client with a shorter timeout gives up not knowing the outcome.
    LoseResponseAfterCharge {
        /// How long to hold the response.
        #[serde(with = "duration")]
        hold: Duration,
    },
    /// The charge is recorded as usual, then the TCP connection is closed without any HTTP response.
    DropAfterCharge,
    /// The request is checked on arrival (a paid merchant_uid is refused), and the card is charged `after` later,
    /// in a task of its own that goes on if the client has gone: until then no lookup finds the payment, and a
    /// second request for the same merchant_uid meanwhile is charged too, as i'mport refuses a merchant_uid only
    /// once it is paid. The answer follows the charge.
    ChargeLater {
        /// How long the charge takes.
        #[serde(with = "duration")]
        after: Duration,
    },
    /// [`Fault::ChargeLater`] with a delay of its own for each request, drawn uniformly from 0 to `max` (seeded:
    /// [`SandboxConfig::seed`]). The charge is still made when the client has gone; a second request for the
    /// same merchant_uid while one is in progress is charged too.
    ChargeLaterRandom {
        /// The longest a charge takes.
        #[serde(with = "duration")]
        max: Duration,
    },
    /// Extra latency on top of the configured one (the charge still happens as usual).
    Latency(#[serde(with = "duration")] Duration),
    /// HTTP 200 with a body that is not JSON; nothing is charged.
    Garbage,
    /// HTTP 502 with an HTML error page, as a proxy in front of the API sends it; nothing is charged.
    Html502,
    /// The charge is recorded, then the answer's JSON is cut off halfway (with a matching `Content-Length`).
    TruncatedJson,
    /// The charge is recorded, then the answer has code 0 but its payment lacks `status` and `amount`.
    MissingFields,
    /// The charge is recorded, then the answer's payment has `amount` as a string and `status` as a number.
    MistypedFields,
    /// The charge is recorded, then the (valid JSON) answer is padded to 20 MiB and streamed without a
    /// `Content-Length`.
    HugeBody,
    /// The charge is recorded, then the answer is sent one byte at a time, a byte every `every`.
    Trickle {
        /// The pause between two bytes.
        #[serde(with = "duration")]
        every: Duration,
    },
    /// The charge is recorded, then the answer's headers and half its body are sent and the connection is
    /// closed mid-body.
    ResetMidBody,
    /// The charge is recorded, then a `paid` answer names another `merchant_uid` than the request's.
    WrongMerchantUid,
    /// The charge is recorded, then a `paid` answer carries another `amount` than the request's.
    WrongAmount,
    /// `POST /payments/cancel` only (a charge ignores it): the cancel is made as usual, then the TCP connection is
    /// closed without any HTTP response (a refund whose answer is lost). A rule's `customer_uid` matches the
    /// billing key of the payment the cancel names.
    DropAfterCancel,
    /// `POST /payments/cancel` only: the cancel reaches the payment `after` late (as through a proxy that holds it):
    /// it is checked and made only then (its checksum against the balance of that moment), in a task of its own
    /// that goes on if the client has gone; the answer follows it.
    CancelLater {
        /// How long the cancel is held before it is made.
        #[serde(with = "duration")]
        after: Duration,
    },
}

impl Fault {
    /// Whether the fault keeps the request from being charged (decided before charging).
    pub fn before_charge(&self) -> bool {
        matches!(self, Fault::Http500 | Fault::Garbage | Fault::Html502)
    }

    /// Whether the fault is about cancels (applied to `POST /payments/cancel` only; every other fault is applied to
    /// charges only).
    pub fn on_cancel(&self) -> bool {
        matches!(self, Fault::DropAfterCancel | Fault::CancelLater { .. })
    }
}

/// A billing key registered at start, as if `POST /subscribe/customers/{customer_uid}` had been called.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCustomer {
    /// The billing key's `customer_uid`.
    pub customer_uid: String,
    /// A test card number (only its mask and behaviour are kept).
    pub card_number: String,
}

impl fmt::Debug for SeedCustomer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedCustomer")
            .field("customer_uid", &self.customer_uid)
            .field("card_number", &cards::mask(&self.card_number))
            .finish()
    }
}

/// Human durations: a number of seconds or a string with a unit (`ms`, `s`, `m`, `h`).
pub mod duration {
    use super::*;

    /// A `Duration` that deserializes from `30`, `0.5`, `"250ms"`, `"2s"`, `"30m"` or `"1h"`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Human(pub Duration);

    impl<'de> Deserialize<'de> for Human {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl de::Visitor<'_> for V {
                type Value = Human;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str(r#"a duration: seconds (30, 0.5) or a string like "250ms", "2s", "30m", "1h""#)
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Human, E> {
                    Ok(Human(Duration::from_secs(v)))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Human, E> {
                    u64::try_from(v)
                        .map(|v| Human(Duration::from_secs(v)))
                        .map_err(|_| E::custom("a duration must not be negative"))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Human, E> {
                    from_secs_f64(v).map(Human).map_err(E::custom)
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Human, E> {
                    parse(v).map(Human).map_err(E::custom)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"30m"`, `"1h"` or a bare number of seconds.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 =
            num.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. \"250ms\", \"2s\", \"30m\""))?;
        let factor = match unit.trim() {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!("invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"));
            }
        };
        from_secs_f64(value * factor)
    }

    pub(crate) fn from_secs_f64(v: f64) -> Result<Duration, String> {
        Duration::try_from_secs_f64(v)
            .map_err(|_| format!("invalid duration {v}: must be a non-negative number of seconds"))
    }

    /// Formats as `"250ms"` or `"2s"` (what [`parse`] reads back).
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
    }

    /// `serde(with)` entry point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Human::deserialize(d).map(|h| h.0)
    }

    /// `serde(with)` entry point.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_gives_documented_defaults() {
        let cfg = SandboxConfig::from_toml_str("").expect("empty config");
        assert_eq!(cfg, SandboxConfig::default());
        assert_eq!(cfg.imp_key, "imp_sandbox_key");
        assert_eq!(cfg.imp_secret, "imp_sandbox_secret");
        assert_eq!(cfg.token_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn full_toml_is_parsed() {
        let cfg = SandboxConfig::from_toml_str(
            r#"
            imp_key = "k"
            imp_secret = "s"
            token_ttl = "2s"
            latency = { min = "10ms", max = "20ms" }
            rate_limit = 50
            seed = 7

            [[customers]]
            customer_uid = "c1"
            card_number = "4242-4242-4242-4242"

            [[faults]]
            customer_uid = "c1"
            fault = "http500"
            times = 2

            [[faults]]
            fault = { lose_response_after_charge = { hold = "35s" } }

            [[faults]]
            fault = { latency = 1.5 }
            "#,
        )
        .expect("valid config");
        assert_eq!(cfg.token_ttl, Duration::from_secs(2));
        assert_eq!(cfg.latency, Latency::Random { min: Duration::from_millis(10), max: Duration::from_millis(20) });
        assert_eq!(cfg.rate_limit, Some(50));
        assert_eq!(cfg.seed, Some(7));
        assert_eq!(cfg.customers[0].customer_uid, "c1");
        assert_eq!(
            cfg.faults,
            vec![
                FaultRule { customer_uid: Some("c1".into()), fault: Fault::Http500, times: Some(2) },
                FaultRule {
                    customer_uid: None,
                    fault: Fault::LoseResponseAfterCharge { hold: Duration::from_secs(35) },
                    times: None
                },
                FaultRule { customer_uid: None, fault: Fault::Latency(Duration::from_millis(1500)), times: None },
            ]
        );
    }

    #[test]
    fn fixed_latency_forms() {
        for (text, want) in [
            (r#"latency = "50ms""#, Latency::Fixed(Duration::from_millis(50))),
            ("latency = 2", Latency::Fixed(Duration::from_secs(2))),
            (r#"latency = "none""#, Latency::None),
            ("latency = 0", Latency::None),
        ] {
            let cfg = SandboxConfig::from_toml_str(text).expect(text);
            assert_eq!(cfg.latency, want, "{text}");
        }
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = SandboxConfig::from_toml_str("imp_kee = \"x\"").unwrap_err();
        assert!(format!("{err:#}").contains("imp_kee"), "{err:#}");
    }

    #[test]
    fn bad_duration_is_explained() {
        let err = SandboxConfig::from_toml_str("token_ttl = \"30 parsecs\"").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("token_ttl") && msg.contains("unknown unit"), "{msg}");
    }

    #[test]
    fn invalid_seed_card_is_refused_without_printing_the_number() {
        let err =
            SandboxConfig::from_toml_str("[[customers]]\ncustomer_uid = \"c\"\ncard_number = \"4242424242424241\"")
                .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("customers[0]"), "{msg}");
        assert!(!msg.contains("4242424242424241"), "{msg}");
    }

    #[test]
    fn from_toml_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("billd-sandbox-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "rate_limit = \"many\"\n").expect("write");
        let msg = format!("{:#}", SandboxConfig::from_toml_file(&path).unwrap_err());
        assert!(msg.contains("bad.toml") && msg.contains("rate_limit"), "{msg}");
        let missing = format!("{:#}", SandboxConfig::from_toml_file(dir.join("nope.toml")).unwrap_err());
        assert!(missing.contains("nope.toml"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn fault_rule_json_round_trips() {
        for json in [
            r#"{"fault":"http500"}"#,
            r#"{"customer_uid":"c1","fault":"drop_after_charge","times":1}"#,
            r#"{"fault":"garbage"}"#,
            r#"{"fault":{"lose_response_after_charge":{"hold":"1500ms"}}}"#,
            r#"{"customer_uid":"c1","fault":{"charge_later":{"after":"1500ms"}}}"#,
            r#"{"fault":{"charge_later_random":{"max":"2s"}},"times":3}"#,
            r#"{"fault":{"latency":"2s"}}"#,
            r#"{"fault":"html502"}"#,
            r#"{"fault":"truncated_json","times":1}"#,
            r#"{"fault":"missing_fields"}"#,
            r#"{"fault":"mistyped_fields"}"#,
            r#"{"fault":"huge_body"}"#,
            r#"{"fault":{"trickle":{"every":"20ms"}}}"#,
            r#"{"fault":"reset_mid_body"}"#,
            r#"{"fault":"wrong_merchant_uid"}"#,
            r#"{"fault":"wrong_amount"}"#,
        ] {
            let rule: FaultRule = serde_json::from_str(json).expect(json);
            assert_eq!(serde_json::to_string(&rule).expect("serialize"), json);
        }
    }

    #[test]
    fn duration_parser() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration::parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(duration::parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration::parse("7"), Ok(Duration::from_secs(7)));
        assert!(duration::parse("-1s").is_err());
        assert!(duration::parse("s").is_err());
    }

    #[test]
    fn random_latency_stays_in_bounds() {
        let l = Latency::Random { min: Duration::from_millis(5), max: Duration::from_millis(7) };
        for _ in 0..100 {
            let d = l.sample();
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(7));
        }
    }
}
