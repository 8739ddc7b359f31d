//! `billd webhooks`: `new-secret` (a fresh Standard Webhooks signing secret); the listing of events is to come.

use crate::config::WebhookSecret;
use anyhow::{Context, Result};
use std::process::ExitCode;

/// How many random bytes a new secret holds (256 bits; the spec asks for 24 to 64).
pub const NEW_SECRET_BYTES: usize = 32;

/// A fresh secret: [`NEW_SECRET_BYTES`] bytes from the operating system's random generator.
pub fn generate() -> Result<WebhookSecret> {
    let mut key = vec![0u8; NEW_SECRET_BYTES];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("{e}")).context("cannot read the OS random generator")?;
    WebhookSecret::from_key(key).map_err(anyhow::Error::msg)
}

/// `billd webhooks new-secret`: prints a fresh `whsec_…` secret on stdout, and nothing else. It reads no config and
/// writes nothing: where it goes (BILLD_WEBHOOKS__SECRET, webhooks.secret_file, a systemd credential, and the
/// app's verifier) is the operator's to choose.
pub fn new_secret() -> Result<ExitCode> {
    use std::io::Write as _;
    let line = format!("{}\n", generate()?.expose_whsec());
    // Not `say!`: a secret that could not be written must not look printed (exit 1 instead).
    std::io::stdout().write_all(line.as_bytes()).and_then(|_| std::io::stdout().flush()).context("cannot write it")?;
    Ok(ExitCode::SUCCESS)
}

/// A bare `billd webhooks`: the listing of events and their deliveries is not built yet (exit 2).
pub fn list_not_built() -> Result<ExitCode> {
    eprintln!(
        "billd webhooks: the listing of events is not built yet; `billd webhooks new-secret` prints a fresh \
         signing secret"
    );
    Ok(ExitCode::from(2))
}
