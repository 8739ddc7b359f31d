//! `schedules.toml` (long: every section validated in one pass, so that every problem is listed at once): loading with
//! figment (file, then `BILLD_…` env vars), validation into domain types.

mod database;
pub mod duration;
mod entries;
pub mod local;
mod pg;
mod raw;
mod secret;
pub mod shape;
mod webhooks;

pub use database::Database;
use local::{loopback, loopback_url};
pub use pg::{PgTarget, Tls, is_url};
use raw::*;
pub use secret::{Secret, SecretSpec};
pub use webhooks::{
    DEFAULT_MAX_AGE as WEBHOOK_DEFAULT_MAX_AGE, DEFAULT_RETAIN as WEBHOOK_DEFAULT_RETAIN, WebhookSecret,
    WebhookSecretSpec, WebhookSettings,
};

use crate::billing::calendar::ChargeClock;
use crate::billing::dunning::{DunningPolicy, OnExhausted};
use crate::billing::model::{Source, Status, Subscription};
use crate::billing::rails::MassRejection;
use crate::billing::terms::Own;
use crate::text::quote;
use chrono::{Datelike, NaiveDate, NaiveTime};
use chrono_tz::Tz;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file it came from.
    pub file: PathBuf,
    pub billing: Billing,
    pub gateway: GatewaySettings,
    pub dunning: DunningPolicy,
    pub limits: Limits,
    /// Where to serve Prometheus metrics and `/healthz`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[webhooks]`: where events are posted and how they are signed (`None`: no `webhooks.url`, webhooks off).
    pub webhooks: Option<WebhookSettings>,
    /// Where `billd run` takes i'mport's notifications (`POST /iamport/notice`), if anywhere (`[notices] listen`).
    pub notices_listen: Option<std::net::SocketAddr>,
    pub plans: Vec<Plan>,
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Non-fatal remarks (e.g. an inline secret), to be logged by the caller.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Billing {
    pub clock: ChargeClock,
    pub database: Database,
    /// The PostgreSQL password (`database_password_file`, `BILLD_BILLING__DATABASE_PASSWORD`, the credential
    /// `database_password`), if given: inside `database` for its book, and for `billd store copy`'s URLs.
    pub database_password: Option<Secret>,
    pub merchant_uid_prefix: String,
    /// `catch_up_window`: a period more overdue than this when a pass gets to it is skipped, not charged (`None`:
    /// every missed period is charged).
    pub catch_up_window: Option<Duration>,
    /// `lease`: how long a daemon's lease on the book runs without a heartbeat (renewed every quarter of it); a
    /// daemon that fails to renew it in time stops, and another takes its work over once it lapsed.
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub base_url: String,
    pub imp_key: String,
    pub secret: SecretSpec,
    pub timeout: Duration,
    pub concurrency: usize,
    /// At most this many requests per second to the gateway (every request: token, charge, lookup), if set.
    pub rate_limit: Option<f64>,
    /// The proxy every request goes through (`gateway.proxy`), if set; else none (never one from the environment).
    pub proxy: Option<String>,
}

/// Safety rails against typos: beyond them billd refuses to charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_amount: i64,
    pub max_charges_per_pass: usize,
    /// `limits.mass_rejection_count` and `limits.mass_rejection_percent`.
    pub mass_rejection: MassRejection,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_amount: 10_000_000, max_charges_per_pass: 1_000_000, mass_rejection: MassRejection::default() }
    }
}

/// A `[[plans]]` entry (the billing rules' own type: a subscription's terms are derived from it there).
pub use crate::billing::terms::Plan;

#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSpec {
    pub id: String,
    pub customer_uid: String,
    pub plan: String,
    pub start: NaiveDate,
    pub canceled: bool,
    /// `catch_up = true`: a start more than one period back is meant (every period since is charged when it is
    /// added); without it such a start is refused.
    pub catch_up: bool,
    /// Its own terms (`trial_ends`, `periods`, `end`, `cancel_at`, `amount`, `discount`), checked: see
    /// [`crate::billing::terms`].
    pub own: Own,
}

/// Every problem found in one config file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{} in the config", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The config path: `--config`, else `BILLD_CONFIG`, else `./schedules.toml` (the caller passes the first two).
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("schedules.toml"))
}

/// Loads and validates the config at `path`, listing every problem found.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |p: String| ConfigError { file: path.to_path_buf(), problems: vec![p] };
    let abs = std::path::absolute(path).map_err(|e| fail(format!("cannot resolve the path: {e}")))?;
    if !abs.is_file() {
        return Err(fail("config file not found (pass --config PATH or set BILLD_CONFIG; see README.md)".into()));
    }
    // BILLD_GATEWAY__IMP_SECRET is taken verbatim: figment reads other variables as TOML values, which would turn
    // a secret like 0012345 into the number 12345.
    const SECRET_VAR: &str = "BILLD_GATEWAY__IMP_SECRET";
    // Read once, from the file checked (owner and mode: see crate::trust), never again by path.
    let text = crate::trust::read(&abs, "config file").map_err(fail)?;
    let mut figment = Figment::new().merge(Toml::string(&text)).merge(
        Env::prefixed("BILLD_")
            .filter(|k| {
                let verbatim = ["gateway__imp_secret", "webhooks__secret", "billing__database_password"];
                k.as_str().contains("__") && !verbatim.iter().any(|v| k.as_str().eq_ignore_ascii_case(v))
            })
            .split("__"),
    );
    // BILLD_WEBHOOKS__SECRET is taken verbatim too, and only from the environment (see config::webhooks).
    let webhook_secret = webhooks::secret_from_env().map_err(fail)?;
    let db_password = database::password_from_env().map_err(fail)?;
    let from_env = std::env::var_os(SECRET_VAR);
    // Only the file or SECRET_VAR can set gateway.imp_secret (the prefixed variables leave it out).
    let secret_inline = from_env.is_none() && figment.contains("gateway.imp_secret");
    if let Some(secret) = from_env {
        let secret = secret.into_string().map_err(|_| fail(format!("{SECRET_VAR} is not valid UTF-8")))?;
        figment = figment.merge(("gateway.imp_secret", secret));
    }
    extract_and_validate(&figment, &text, abs, secret_inline, webhook_secret, db_password)
}

/// Parses and validates config text as if it were the file `file` (no environment overrides; relative paths
/// resolve against `file`'s folder). For fuzzing and tools; `billd` itself uses [`load`].
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    extract_and_validate(&Figment::from(Toml::string(text)), text, file.to_path_buf(), true, None, None)
}

/// Reads the merged config as a tree first, so that every unknown key and every value of the wrong kind is listed
/// (with its full path and, for a typo, the key it resembles) and left out, instead of the first one hiding the
/// rest; then the rules of [`validate`] add theirs. Every problem of the file comes back in one error.
fn extract_and_validate(
    figment: &Figment,
    text: &str,
    file: PathBuf,
    secret_inline: bool,
    webhook_secret: Option<String>,
    db_password: Option<String>,
) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<String>| ConfigError { file: file.clone(), problems };
    let mut tree: figment::value::Value =
        figment.extract().map_err(|e| fail(e.into_iter().map(|e| describe_figment_error(&e, text)).collect()))?;
    let mut shape = Vec::new();
    let mut left_out = Vec::new();
    crate::config::shape::check(&mut tree, &mut shape, &mut left_out);
    let raw: Raw = match tree.deserialize() {
        Ok(raw) => raw,
        Err(e) => {
            shape.extend(e.into_iter().map(|e| describe_figment_error(&e, text)));
            return Err(fail(shape));
        }
    };
    match validate(raw, file.clone(), secret_inline, webhook_secret, db_password) {
        Ok(cfg) if shape.is_empty() => Ok(cfg),
        Ok(_) => Err(fail(shape)),
        Err(e) => {
            // What the rules say of a stand-in for a value of the wrong kind was said already.
            let said = |p: &String| {
                left_out.iter().any(|k| p.starts_with(&format!("{k}:")) || p.starts_with(&format!("{k} ")))
            };
            shape.extend(e.problems.into_iter().filter(|p| !said(p)));
            Err(fail(shape))
        }
    }
}

/// `text` is the file's TOML: a syntax error (a number too large for 64 bits, say) names a line, and the key
/// written on that line is named too.
fn describe_figment_error(e: &figment::Error, text: &str) -> String {
    let mut key = crate::config::shape::path_of(&e.path);
    if key.is_empty() {
        let kind = e.kind.to_string();
        let line = kind.strip_prefix("TOML parse error at line ").and_then(|r| r.split(',').next());
        key = line.and_then(|n| n.trim().parse().ok()).and_then(|n| key_on_line(text, n)).unwrap_or_default();
    }
    let from = e
        .metadata
        .as_ref()
        .filter(|m| m.name.to_lowercase().contains("environment"))
        .filter(|_| !matches!(e.kind, figment::error::Kind::MissingField(_)))
        .map(|_| format!(" (from the environment variable BILLD_{})", e.path.join("__").to_uppercase()))
        .unwrap_or_default();
    // A TOML syntax error quotes the offending source line (which may hold an inline imp_secret): keep the
    // position and the explanation only.
    let kind: String = e
        .kind
        .to_string()
        .lines()
        .filter(|l| !l.trim_start().trim_start_matches(|c: char| c.is_ascii_digit()).trim_start().starts_with('|'))
        .collect::<Vec<_>>()
        .join(": ");
    let kind = crate::config::shape::plain_types(&kind);
    if key.is_empty() { format!("{kind}{from}") } else { format!("{key}: {kind}{from}") }
}

/// The full path of the key written on line `n` (from 1) of TOML `text` (`gateway.concurrency`, `plans[1].amount`),
/// if that line is a plain `key = …` line.
fn key_on_line(text: &str, n: usize) -> Option<String> {
    let plain = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let mut table = String::new();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for line in text.lines().take(n.checked_sub(1)?) {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let i = counts.entry(name.trim().to_string()).and_modify(|c| *c += 1).or_insert(0);
            table = format!("{}[{i}]", name.trim());
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_string();
        }
    }
    let key = text.lines().nth(n - 1)?.split_once('=')?.0.trim();
    if !plain(key) || !(table.is_empty() || table.split(['.', '[', ']']).all(|p| p.is_empty() || plain(p))) {
        return None;
    }
    Some(if table.is_empty() { key.to_string() } else { format!("{table}.{key}") })
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn validate(
    raw: Raw,
    file: PathBuf,
    secret_inline: bool,
    webhook_secret: Option<String>,
    db_password: Option<String>,
) -> Result<Config, ConfigError> {
    let mut errs: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();

    let timezone: Tz = raw.billing.timezone.parse().unwrap_or_else(|_| {
        errs.push(format!(
            "billing.timezone: {} is not an IANA time zone (like \"Asia/Seoul\")",
            quote(&raw.billing.timezone)
        ));
        Tz::UTC
    });
    let charge_time = parse_time(&raw.billing.charge_time).unwrap_or_else(|e| {
        errs.push(format!("billing.charge_time: {e}"));
        NaiveTime::MIN
    });
    let (database, database_password) = database::database(&raw.billing, db_password, &dir, &mut errs, &mut warnings);
    let prefix = raw.billing.merchant_uid_prefix;
    if prefix.is_empty() || prefix.len() > 12 || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        errs.push(format!(
            "billing.merchant_uid_prefix: {} must be 1-12 characters of letters, digits or _ (no '-': a \
             merchant_uid is PREFIX-ID-PERIOD, and a '-' in the prefix would let two subscriptions share one)",
            quote(&prefix)
        ));
    }

    let catch_up_window = raw.billing.catch_up_window.as_deref().and_then(|w| match duration::parse(w) {
        Ok(d) if d.as_secs() >= 60 => Some(d),
        Ok(_) => {
            errs.push("billing.catch_up_window: must be at least 1m (a period is due for a minute at least)".into());
            None
        }
        Err(e) => {
            errs.push(format!("billing.catch_up_window: {e}"));
            None
        }
    });

    let lease = match raw.billing.lease.as_deref().map(duration::parse) {
        None => DEFAULT_LEASE,
        Some(Ok(d)) if (MIN_LEASE..=MAX_LEASE).contains(&d) => d,
        Some(Ok(_)) => {
            errs.push("billing.lease: must be from 2s to 10m".into());
            DEFAULT_LEASE
        }
        Some(Err(e)) => {
            errs.push(format!("billing.lease: {e}"));
            DEFAULT_LEASE
        }
    };

    let g = raw.gateway;
    match url::Url::parse(&g.base_url) {
        // A user name or password in the URL would be printed wherever the URL is (check, errors, logs).
        Ok(u) if !u.username().is_empty() || u.password().is_some() => errs.push(
            "gateway.base_url: holds a user name or password (user:password@): billd authenticates with imp_key and \
             its imp_secret only, and a URL is shown in messages; remove it"
                .into(),
        ),
        // Through a proxy, "this machine" is the proxy's: an http:// gateway would carry the imp_secret and card data
        // in clear to the proxy, so only to a proxy on this machine too.
        Ok(u)
            if u.scheme() == "http"
                && g.proxy.as_deref().is_some_and(|p| !url::Url::parse(p).is_ok_and(|p| loopback(&p))) =>
        {
            errs.push(format!(
                "gateway.base_url: {} is http:// while gateway.proxy is on another machine: the imp_secret and card \
                 data would reach the proxy in clear; use https:// through a proxy (http:// is only for a sandbox on \
                 this machine)",
                quote(&g.base_url)
            ))
        }
        // Key-in card data and the imp_secret in clear: only to a sandbox on this machine.
        Ok(u) if u.scheme() == "http" && u.host().is_some() && !loopback(&u) => errs.push(format!(
            "gateway.base_url: {} is http:// to another machine: card data and the imp_secret would cross the \
             network in clear; use https:// (http:// is only for a sandbox on this machine: 127.0.0.0/8, ::1, \
             localhost)",
            quote(&g.base_url)
        )),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => errs.push(format!(
            "gateway.base_url: {} is not an http(s) URL (like \"https://api.iamport.kr\")",
            quote(&g.base_url)
        )),
    }
    if let Some(p) = &g.proxy {
        match url::Url::parse(p) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            // (Not quoted: it may hold a proxy password.)
            _ => errs.push("gateway.proxy: not an http(s) proxy URL (like \"http://proxy.internal:3128\")".into()),
        }
    }
    if g.imp_key.trim().is_empty() {
        errs.push("gateway.imp_key: must not be empty".into());
    }
    let timeout = crate::config::duration::parse(&g.timeout).unwrap_or_else(|e| {
        errs.push(format!("gateway.timeout: {e}"));
        Duration::from_secs(30)
    });
    if timeout.is_zero() {
        errs.push("gateway.timeout: must be longer than 0s".into());
    }
    if !(1..=1024).contains(&g.concurrency) {
        errs.push(format!("gateway.concurrency: {} must be between 1 and 1024", g.concurrency));
    }
    if let Some(r) = g.rate_limit.filter(|r| !RATE_LIMIT.contains(r)) {
        errs.push(format!(
            "gateway.rate_limit: {r:?} must be between {:?} and {:?} requests per second",
            RATE_LIMIT.start(),
            RATE_LIMIT.end()
        ));
    }
    // Precedence: env var, then imp_secret_file, then the systemd credential, then an inline value.
    let (from_env, inline) = match g.imp_secret {
        Some(v) if !secret_inline => (Some(secret_text(v)), None),
        other => (None, other.map(secret_text)),
    };
    let secret = if let Some(v) = from_env {
        SecretSpec::Value(Secret::new(v))
    } else if let Some(f) = &g.imp_secret_file {
        warnings.extend(crate::trust::readable_secret("gateway.imp_secret_file", &dir.join(f)));
        SecretSpec::File(dir.join(f))
    } else if let Some(creds) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        SecretSpec::File(PathBuf::from(creds).join("imp_secret"))
    } else if let Some(v) = inline {
        if !loopback_url(&g.base_url) {
            warnings.push(format!(
                "{}: gateway.imp_secret is written in the config file; prefer BILLD_GATEWAY__IMP_SECRET, \
                 gateway.imp_secret_file or a systemd credential",
                file.display()
            ));
        }
        SecretSpec::Value(Secret::new(v))
    } else {
        SecretSpec::Missing
    };

    let mut dunning = DunningPolicy::default();
    dunning.retry_after.clear();
    for (i, r) in raw.dunning.retry_after.iter().enumerate() {
        match crate::config::duration::parse(r) {
            Ok(d) if !d.is_zero() => dunning.retry_after.push(d),
            Ok(_) => errs.push(format!("dunning.retry_after[{i}]: must be longer than 0s")),
            Err(e) => errs.push(format!("dunning.retry_after[{i}]: {e}")),
        }
    }
    match OnExhausted::parse(&raw.dunning.on_exhausted) {
        Ok(o) => dunning.on_exhausted = o,
        Err(e) => errs.push(format!("dunning.on_exhausted: {e}")),
    }

    let mut limits = Limits::default();
    if let Some(m) = raw.limits.max_amount {
        if m <= 0 {
            errs.push(format!("limits.max_amount: {m} must be positive"));
        } else if m > MAX_AMOUNT {
            errs.push(format!(
                "limits.max_amount: {m} is above {MAX_AMOUNT} (10^12), the most billd accepts (it adds amounts up)"
            ));
        }
        limits.max_amount = m;
    }
    if let Some(m) = raw.limits.max_charges_per_pass {
        if m <= 0 {
            errs.push(format!("limits.max_charges_per_pass: {m} must be positive"));
        }
        limits.max_charges_per_pass = m.max(0) as usize;
    }
    if let Some(n) = raw.limits.mass_rejection_count {
        match u32::try_from(n) {
            Ok(n) if n >= 1 => limits.mass_rejection.count = n,
            _ => errs.push(format!("limits.mass_rejection_count: {n} must be a whole number from 1 to {}", u32::MAX)),
        }
    }
    if let Some(p) = raw.limits.mass_rejection_percent {
        match u32::try_from(p) {
            Ok(p) if (1..=100).contains(&p) => limits.mass_rejection.percent = p,
            _ => errs.push(format!("limits.mass_rejection_percent: {p} must be a whole number from 1 to 100")),
        }
    }

    let metrics_listen = raw.metrics.listen.as_deref().and_then(|l| match l.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(format!("metrics.listen: {} is not an address like \"127.0.0.1:9187\"", quote(l)));
            None
        }
    });

    let webhooks = webhooks::settings(raw.webhooks, webhook_secret, &dir, &file, &mut errs, &mut warnings);
    let notices_listen = raw.notices.listen.as_deref().and_then(|l| match l.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(format!("notices.listen: {} is not an address like \"0.0.0.0:8789\"", quote(l)));
            None
        }
    });
    if let (Some(n), Some(m)) = (notices_listen, metrics_listen)
        && one_port(n, m)
    {
        errs.push(format!(
            "notices.listen {n} and metrics.listen {m}: the same port, which `billd run` cannot listen on twice: give \
             them different ports"
        ));
    }

    let plans = entries::plans(raw.plans, &limits, &mut errs);
    let subs = entries::subscriptions(raw.subscriptions, &plans, &limits, &mut errs);

    if !errs.is_empty() {
        return Err(ConfigError { file, problems: errs });
    }
    Ok(Config {
        file,
        billing: Billing {
            clock: ChargeClock { timezone, charge_time },
            database,
            database_password,
            merchant_uid_prefix: prefix,
            catch_up_window,
            lease,
        },
        gateway: GatewaySettings {
            base_url: g.base_url.trim_end_matches('/').to_owned(),
            imp_key: g.imp_key,
            secret,
            timeout,
            concurrency: g.concurrency.clamp(1, 1024) as usize,
            rate_limit: g.rate_limit,
            proxy: g.proxy,
        },
        dunning,
        limits,
        metrics_listen,
        webhooks,
        notices_listen,
        plans,
        subscriptions: subs,
        warnings,
    })
}

/// Whether two listeners cannot both bind: the same port (not 0, any free one) on the same address, or on every
/// address of one (`0.0.0.0` holds the port for IPv4, `[::]` for both).
fn one_port(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    let every =
        |x: &std::net::SocketAddr, y: &std::net::SocketAddr| x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || every(&a, &b) || every(&b, &a))
}

pub use crate::billing::proration::BILLED_CURRENCY;
/// The `gateway.rate_limit`s billd accepts, in requests per second: at least one request every 1000 seconds (a
/// slower one could not bill a day; ever slower ones overflow the time between two requests), at most a million.
pub const RATE_LIMIT: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;

/// The highest `limits.max_amount` (so the highest amount): 10^12. Sums of a few million such amounts still fit in
/// 64 bits, and no real charge comes near it.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The years billd accepts in a date or an instant (a start date, an import row, `--since`, `--as-of`): a date
/// outside them is a typo, and the calendar's arithmetic must stay far from the end of chrono's range.
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// Parses a local date written `YYYY-MM-DD` exactly (four digits, two, two: `2025-3-10` is refused, as the messages
/// ask for that form), rejecting impossible ones like 2025-02-30 and years outside [`YEARS`].
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let bad = || format!("{} is not a valid date (YYYY-MM-DD, a day that exists)", quote(text));
    let t = text.trim();
    let form = t.len() == 10
        && t.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad())?;
    if !YEARS.contains(&d.year()) {
        return Err(format!("{} is outside the years 1970 to 9999", quote(text)));
    }
    if !form {
        return Err(bad());
    }
    Ok(d)
}

fn parse_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text.trim(), "%H:%M:%S"))
        .map_err(|_| format!("{} is not a time of day (HH:MM, 24-hour)", quote(text)))
}

impl Config {
    /// The subscriptions this file wants, as the billing rules see them (an entry with `status = "canceled"` has
    /// that status; an entry naming an unknown plan, which validation refuses, is left out).
    pub fn wanted_subscriptions(&self) -> Vec<Subscription> {
        let mut out = Vec::with_capacity(self.subscriptions.len());
        for spec in &self.subscriptions {
            let Some(plan) = self.plan(&spec.plan) else {
                continue;
            };
            // `start` is the signup; with a trial, the first charge falls due when it ends, and later periods keep
            // that anchor: the rule `subscriptions add` and `import` follow too.
            let ids = (spec.id.as_str(), spec.customer_uid.as_str());
            let mut s = crate::billing::terms::subscription(
                ids,
                plan,
                spec.start,
                &spec.own,
                Source::Config,
                &self.billing.clock,
            );
            if spec.canceled {
                s.status = Status::Canceled;
            }
            out.push(s);
        }
        out
    }

    /// What a sync of this config would change in a book holding `db` (its config-sourced subscriptions), on the
    /// local date `today` ([`crate::billing::sync::plan`]).
    pub fn sync_plan(&self, db: &[Subscription], today: NaiveDate) -> crate::billing::sync::SyncPlan {
        let keys = |id: &str| {
            let spec = self.subscriptions.iter().find(|s| s.id == id);
            crate::billing::sync::EntryKeys {
                catch_up: spec.is_some_and(|s| s.catch_up),
                trial_ends: spec.and_then(|s| s.own.trial_ends),
            }
        };
        let file = (self.file.as_path(), self.billing.clock.timezone);
        crate::billing::sync::plan(&self.wanted_subscriptions(), &keys, file, db, today)
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }
}

/// `billing.lease` when unset: a daemon that stops renewing its lease is taken over within about this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The shortest and longest `billing.lease`.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
pub const MAX_LEASE: Duration = Duration::from_secs(600);
