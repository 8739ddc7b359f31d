//! The gateway secret: where it comes from (value, file, systemd credential) and a type that never prints it.

use std::fmt;
use std::path::PathBuf;

/// Where the gateway secret comes from; resolved only by commands that talk to the gateway.
#[derive(Clone)]
pub enum SecretSpec {
    Value(Secret),
    File(PathBuf),
    Missing,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSpec::Value(_) => f.write_str("Value([redacted])"),
            SecretSpec::File(p) => write!(f, "File({})", p.display()),
            SecretSpec::Missing => f.write_str("Missing"),
        }
    }
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SecretSpec {
    /// Reads the secret; the error names where billd looked.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSpec::Value(s) => Ok(s.clone()),
            SecretSpec::File(p) => {
                let text = crate::trust::read(p, "secret file").map_err(|e| format!("gateway.imp_secret: {e}"))?;
                let s = text.trim();
                if s.is_empty() {
                    return Err(format!("gateway.imp_secret: the secret file {} is empty", p.display()));
                }
                Ok(Secret(s.to_owned()))
            }
            SecretSpec::Missing => Err("gateway.imp_secret is not set: set the env var BILLD_GATEWAY__IMP_SECRET, \
                 or gateway.imp_secret_file, or provide $CREDENTIALS_DIRECTORY/imp_secret (systemd LoadCredential)"
                .into()),
        }
    }
}
