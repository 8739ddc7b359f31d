//! `[webhooks]`: where and how billd posts its events (url, timeout, max_age, concurrency, retain), and the Standard Webhooks secret that signs them: where it comes from, its form, a type that never prints it.

use super::duration;
use super::local::loopback;
use super::raw::RawWebhooks;
use super::secret::Secret;
use base64::Engine as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that gives the webhook secret, taken verbatim (like `BILLD_GATEWAY__IMP_SECRET`).
pub const SECRET_VAR: &str = "BILLD_WEBHOOKS__SECRET";
/// The systemd credential that gives it: `$CREDENTIALS_DIRECTORY/webhook_secret` (`LoadCredential=webhook_secret:…`).
pub const CREDENTIAL: &str = "webhook_secret";

/// The defaults of the keys left out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 86_400);
pub const DEFAULT_CONCURRENCY: usize = 8;
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(90 * 86_400);
/// The `webhooks.concurrency`s billd accepts.
pub const CONCURRENCY: std::ops::RangeInclusive<i64> = 1..=64;

/// Where the three places a webhook secret can come from are named, in every message that asks for one.
const WHERE: &str = "set the env var BILLD_WEBHOOKS__SECRET, or webhooks.secret_file, or provide \
                     $CREDENTIALS_DIRECTORY/webhook_secret (systemd LoadCredential)";

/// The validated `[webhooks]` section: present only when `webhooks.url` is set (without it, webhooks are off).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where every event is posted: http or https, with no user name or password in it.
    pub url: url::Url,
    /// Where the signing secret comes from; read and checked by [`WebhookSecretSpec::resolve`].
    pub secret: WebhookSecretSpec,
    /// `timeout`: how long one delivery attempt may take (default 10s).
    pub timeout: Duration,
    /// `max_age`: an event not delivered this long after it was written is marked failed (default 3d).
    pub max_age: Duration,
    /// `concurrency`: how many subscriptions' events are delivered at once (default 8, 1 to 64).
    pub concurrency: usize,
    /// `retain`: how long a delivered event is kept before it is pruned (default 90d).
    pub retain: Duration,
}

/// Where the webhook secret comes from, in this order: [`SECRET_VAR`], `webhooks.secret_file`, the systemd credential
/// [`CREDENTIAL`]. Resolved only where it is needed (signing, `billd check`), like the gateway's
/// [`SecretSpec`](super::SecretSpec): a file is read then, and trusted as `crate::trust` says.
#[derive(Clone)]
pub enum WebhookSecretSpec {
    /// From [`SECRET_VAR`].
    Env(Secret),
    /// `webhooks.secret_file` (relative to the config file's folder).
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/webhook_secret`.
    Credential(PathBuf),
}

impl fmt::Debug for WebhookSecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookSecretSpec::Env(_) => f.write_str("Env([redacted])"),
            WebhookSecretSpec::File(p) => write!(f, "File({})", p.display()),
            WebhookSecretSpec::Credential(p) => write!(f, "Credential({})", p.display()),
        }
    }
}

impl WebhookSecretSpec {
    /// Where the secret comes from, as messages name it (never the secret itself).
    pub fn source(&self) -> String {
        match self {
            WebhookSecretSpec::Env(_) => SECRET_VAR.to_string(),
            WebhookSecretSpec::File(p) => format!("webhooks.secret_file {}", p.display()),
            WebhookSecretSpec::Credential(p) => {
                format!("the systemd credential {} ($CREDENTIALS_DIRECTORY/{CREDENTIAL})", p.display())
            }
        }
    }

    /// Reads the secret and checks its form; the error names where it came from and never holds the secret.
    pub fn resolve(&self) -> Result<WebhookSecret, String> {
        let text = match self {
            WebhookSecretSpec::Env(s) => s.expose().to_owned(),
            WebhookSecretSpec::File(p) | WebhookSecretSpec::Credential(p) => {
                let key = match self {
                    WebhookSecretSpec::File(_) => "webhooks.secret_file".to_string(),
                    _ => format!("$CREDENTIALS_DIRECTORY/{CREDENTIAL}"),
                };
                let text = crate::trust::read(p, "secret file").map_err(|e| format!("{key}: {e}"))?;
                if text.trim().is_empty() {
                    return Err(format!("{key}: the secret file {} is empty", p.display()));
                }
                text
            }
        };
        WebhookSecret::parse(text.trim()).map_err(|e| format!("{}: {e}", self.source()))
    }
}

/// A Standard Webhooks signing secret: the 24 to 64 key bytes that `whsec_` + standard base64 stands for (the HMAC
/// key is the decoded bytes). It never prints itself; [`WebhookSecret::expose_whsec`] writes it out, for
/// `billd webhooks new-secret` only.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl WebhookSecret {
    /// What every secret's text starts with.
    pub const PREFIX: &'static str = "whsec_";
    /// How many key bytes a secret may have (the spec: at least 192 bits, at most 512).
    pub const BYTES: std::ops::RangeInclusive<usize> = 24..=64;

    /// Reads `whsec_` + standard base64 (padded or not) of 24 to 64 bytes. The error says what is wrong without
    /// quoting any of `text`.
    pub fn parse(text: &str) -> Result<WebhookSecret, String> {
        const HOW: &str = "a Standard Webhooks secret is whsec_ followed by the standard base64 of 24 to 64 random \
                           bytes; make one with `billd webhooks new-secret`";
        if text.is_empty() {
            return Err(format!("is empty ({HOW})"));
        }
        let Some(b64) = text.strip_prefix(Self::PREFIX) else {
            return Err(format!("does not start with whsec_ ({HOW})"));
        };
        const INDIFFERENT: base64::engine::GeneralPurposeConfig = base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
        const STANDARD: base64::engine::GeneralPurpose =
            base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, INDIFFERENT);
        // (The decoder's own error names the offending character: not shown.)
        let key = STANDARD.decode(b64).map_err(|_| {
            format!("is not whsec_ followed by standard base64 (A-Z, a-z, 0-9, + and /, = padding) ({HOW})")
        })?;
        Self::from_key(key)
    }

    /// A secret of these key bytes (24 to 64 of them).
    pub fn from_key(key: Vec<u8>) -> Result<WebhookSecret, String> {
        if !Self::BYTES.contains(&key.len()) {
            return Err(format!(
                "holds {} bytes, and a Standard Webhooks secret holds 24 to 64 (make one with `billd webhooks \
                 new-secret`)",
                key.len()
            ));
        }
        Ok(WebhookSecret(key))
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.0
    }

    /// The secret as it is written: `whsec_` + standard padded base64 of its key.
    pub fn expose_whsec(&self) -> String {
        format!("{}{}", Self::PREFIX, base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// Validates `[webhooks]` (`raw`: the section, if written; `from_env`: [`SECRET_VAR`]'s value, if set; `dir`: the
/// config file's folder). Every key is checked even with webhooks off, so that `check` finds a typo before it
/// matters; problems go to `errs` (naming the key, never the secret nor the URL, which may hold a token),
/// remarks to `warnings`.
pub(super) fn settings(
    raw: Option<RawWebhooks>,
    from_env: Option<String>,
    dir: &Path,
    file: &Path,
    errs: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<WebhookSettings> {
    let raw = raw.unwrap_or_default();
    // A duration key: its default when left out, else longer than 0s.
    let positive =
        |key: &str, text: Option<&str>, default: Duration, errs: &mut Vec<String>| match text.map(duration::parse) {
            None => default,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                errs.push(format!("webhooks.{key}: must be longer than 0s"));
                default
            }
            Some(Err(e)) => {
                errs.push(format!("webhooks.{key}: {e}"));
                default
            }
        };
    let timeout = positive("timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT, errs);
    let max_age = positive("max_age", raw.max_age.as_deref(), DEFAULT_MAX_AGE, errs);
    let retain = positive("retain", raw.retain.as_deref(), DEFAULT_RETAIN, errs);
    let concurrency = match raw.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(n) if CONCURRENCY.contains(&n) => n as usize,
        Some(n) => {
            errs.push(format!(
                "webhooks.concurrency: {n} must be between {} and {}",
                CONCURRENCY.start(),
                CONCURRENCY.end()
            ));
            DEFAULT_CONCURRENCY
        }
    };
    if raw.secret_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
        errs.push("webhooks.secret_file: must name a file".into());
    }
    let secret_file = raw.secret_file.filter(|f| !f.trim().is_empty());
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(CREDENTIAL))
        // Given if it is there at all (a dangling symlink too: reading it then says what is wrong).
        .filter(|p| p.symlink_metadata().is_ok());

    let Some(url_text) = raw.url else {
        // A secret with nowhere to go: webhooks the operator thinks are on.
        let given = [
            from_env.as_ref().map(|_| SECRET_VAR.to_string()),
            secret_file.as_ref().map(|_| "webhooks.secret_file".to_string()),
            credential.as_ref().map(|p| format!("$CREDENTIALS_DIRECTORY/{CREDENTIAL} ({})", p.display())),
        ];
        for g in given.into_iter().flatten() {
            errs.push(format!(
                "{g}: a webhook secret is given but webhooks.url is not set: set webhooks.url to send webhooks, or \
                 remove the secret"
            ));
        }
        if raw.timeout.is_some() || raw.max_age.is_some() || raw.concurrency.is_some() || raw.retain.is_some() {
            warnings.push(format!(
                "{}: [webhooks] has no url, so webhooks are off and its other keys are not used",
                file.display()
            ));
        }
        return None;
    };
    let url = match url::Url::parse(url_text.trim()) {
        // (The URL is never quoted: its path or query may hold the app's token.)
        Err(_) => {
            errs.push("webhooks.url: not a URL (like \"https://app.example/billd\")".into());
            None
        }
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            let scheme = crate::text::quote(u.scheme());
            errs.push(format!(
                "webhooks.url: its scheme {scheme} is not http or https (like \"https://app.example/billd\")"
            ));
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            errs.push(
                "webhooks.url: holds a user name or password (user:password@): the URL is shown in messages and \
                 logs; remove it (billd signs every delivery with the webhook secret, which the app verifies)"
                    .into(),
            );
            None
        }
        Ok(u) if u.host().is_none() => {
            errs.push("webhooks.url: names no host (like \"https://app.example/billd\")".into());
            None
        }
        Ok(u) => {
            if u.scheme() == "http" && !loopback(&u) {
                warnings.push(format!(
                    "{}: webhooks.url is http:// to another machine: events would cross the network in clear; \
                     prefer https://",
                    file.display()
                ));
            }
            Some(u)
        }
    };
    // Precedence: the env var, then webhooks.secret_file, then the systemd credential (as for the gateway's).
    let secret = if let Some(v) = from_env {
        Some(WebhookSecretSpec::Env(Secret::new(v)))
    } else if let Some(f) = secret_file {
        warnings.extend(crate::trust::readable_secret("webhooks.secret_file", &dir.join(&f)));
        Some(WebhookSecretSpec::File(dir.join(f)))
    } else if let Some(p) = credential {
        Some(WebhookSecretSpec::Credential(p))
    } else {
        errs.push(format!(
            "webhooks.url is set but no webhook secret is: {WHERE}; make one with `billd webhooks new-secret`"
        ));
        None
    };
    Some(WebhookSettings { url: url?, secret: secret?, timeout, max_age, concurrency, retain })
}

/// [`SECRET_VAR`]'s value, if set (an error if it is not UTF-8; the value is never shown).
pub(super) fn secret_from_env() -> Result<Option<String>, String> {
    std::env::var_os(SECRET_VAR)
        .map(|v| v.into_string().map_err(|_| format!("{SECRET_VAR} is not valid UTF-8")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_and_refuses_other_forms_without_quoting_them() {
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(s.key().len(), 24);
        assert_eq!(s.expose_whsec(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(format!("{s:?}"), "WebhookSecret([redacted])");
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        // Padded or not, 24 to 64 bytes.
        assert!(WebhookSecret::parse(&format!("whsec_{}", b64(32))).is_ok());
        assert!(WebhookSecret::parse(&format!("whsec_{}", b64(32).trim_end_matches('='))).is_ok());
        assert!(WebhookSecret::parse(&format!("whsec_{}", b64(64))).is_ok());
        for (bad, says) in [
            ("", "is empty".to_string()),
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with whsec_".to_string()),
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La-aSw", "standard base64".to_string()),
            ("whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw", "standard base64".to_string()),
            (&*format!("whsec_{}", b64(23)), "holds 23 bytes".to_string()),
            (&*format!("whsec_{}", b64(65)), "holds 65 bytes".to_string()),
        ] {
            let e = WebhookSecret::parse(bad).unwrap_err();
            assert!(e.contains(&says), "{bad:?}: {e}");
            assert!(e.contains("billd webhooks new-secret"), "{e}");
            let body = bad.trim_start_matches("whsec_");
            assert!(body.is_empty() || !e.contains(&body[..8.min(body.len())]), "quoted: {e}");
        }
    }

    #[test]
    fn a_spec_never_prints_an_env_secret() {
        let spec = WebhookSecretSpec::Env(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert!(!format!("{spec:?}").contains("MfKQ"));
        let bad = WebhookSecretSpec::Env(Secret::new("whsec_nope-nope"));
        let e = bad.resolve().unwrap_err();
        assert!(e.starts_with("BILLD_WEBHOOKS__SECRET: ") && !e.contains("nope"), "{e}");
    }
}
