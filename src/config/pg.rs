//! The PostgreSQL book `billing.database` names: a `postgres://` URL, never with a password (that comes from its own
//! file, the environment or a credential), and its TLS (`sslmode`, `sslrootcert`).

use super::Secret;
use std::path::PathBuf;

/// Whether `billing.database` names a PostgreSQL book rather than a SQLite file.
pub fn is_url(database: &str) -> bool {
    let lower = database.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// How the connection is protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// None: only to this machine (a socket or a loopback address).
    Off,
    /// TLS with the server's certificate verified (its name too) against the system's roots, or `sslrootcert`'s.
    Verified { roots: Option<PathBuf> },
}

/// A PostgreSQL book: its URL (without password, `sslmode` or `sslrootcert`), the password if one was given, and
/// the TLS it takes.
#[derive(Clone)]
pub struct PgTarget {
    url: String,
    password: Option<Secret>,
    tls: Tls,
    /// The URL without password or query, for messages.
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({})", self.shown)
    }
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown && self.tls == other.tls
    }
}

impl PgTarget {
    /// Reads a `postgres://` URL. Refused: a password inside it (the message never repeats the URL), an `sslmode`
    /// that may fall back to plain text (`prefer`, `allow`), plain text to another machine.
    pub fn parse(url: &str, password: Option<&str>) -> Result<PgTarget, String> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| format!("is not a valid postgres:// URL ({e})"))?;
        if parsed.password().is_some() {
            return Err("holds a password: it is refused there (it would show in listings and logs); put it in \
                        billing.database_password_file, BILLD_BILLING__DATABASE_PASSWORD or the systemd credential \
                        database_password"
                .into());
        }
        let mut sslmode = None;
        let mut roots = None;
        let mut kept = parsed.clone();
        kept.set_query(None);
        {
            let mut query = kept.query_pairs_mut();
            for (k, v) in parsed.query_pairs() {
                match &*k {
                    "sslmode" => sslmode = Some(v.into_owned()),
                    "sslrootcert" => roots = Some(PathBuf::from(v.into_owned())),
                    "password" => {
                        return Err("holds a password (password=): it is refused there; put it in \
                                    billing.database_password_file, BILLD_BILLING__DATABASE_PASSWORD or the systemd \
                                    credential database_password"
                            .into());
                    }
                    _ => {
                        query.append_pair(&k, &v);
                    }
                }
            }
        }
        if kept.query() == Some("") {
            kept.set_query(None);
        }
        let local = local(&kept);
        let tls = match sslmode.as_deref() {
            None if local => Tls::Off,
            Some("disable") if local => Tls::Off,
            Some("disable") => {
                return Err("has sslmode=disable for a server on another machine: the book and its password would \
                            cross the network in plain text; use sslmode=verify-full (or require)"
                    .into());
            }
            None | Some("require" | "verify-ca" | "verify-full") => Tls::Verified { roots },
            Some(other) => {
                return Err(format!(
                    "has sslmode={other}: billd takes disable (this machine only), require, verify-ca or verify-full \
                     (each verifies the server's certificate)"
                ));
            }
        };
        let mut shown = kept.clone();
        shown.set_query(None);
        Ok(PgTarget { url: kept.to_string(), password: password.map(Secret::new), tls, shown: shown.to_string() })
    }

    /// The URL without password or options, for messages.
    pub fn display(&self) -> String {
        self.shown.clone()
    }

    /// The URL to connect to (without password, `sslmode` or `sslrootcert`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The password, if one was given (else the server must let billd in without one).
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }
}

/// Whether every host of the URL is this machine: a socket (a host or `host=` that is a path) or a loopback address.
fn local(url: &url::Url) -> bool {
    let mut hosts: Vec<String> = url
        .host_str()
        .filter(|h| !h.is_empty())
        .map(|h| percent_encoding::percent_decode_str(h).decode_utf8_lossy().into_owned())
        .into_iter()
        .flat_map(|h| h.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for (k, v) in url.query_pairs() {
        if k == "host" {
            hosts.extend(v.split(',').map(str::to_owned));
        }
    }
    !hosts.is_empty()
        && hosts.iter().all(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.starts_with('/') || h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        PgTarget::parse(url, None).unwrap_err()
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        let e = refused("postgres://billd:hunter2@db.example/billd");
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
        let e = refused("postgres://billd@db.example/billd?password=hunter2");
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_is_verified_off_this_machine_and_never_optional() {
        let t = PgTarget::parse("postgres://billd@db.example/billd", None).unwrap();
        assert_eq!(t.tls, Tls::Verified { roots: None });
        assert_eq!(t.display(), "postgres://billd@db.example/billd");
        let t = PgTarget::parse("postgres://billd@db.example/billd?sslmode=verify-full&sslrootcert=/etc/ca.pem", None)
            .unwrap();
        assert_eq!(t.tls, Tls::Verified { roots: Some("/etc/ca.pem".into()) });
        assert_eq!(t.display(), "postgres://billd@db.example/billd");
        assert!(refused("postgres://billd@db.example/billd?sslmode=disable").contains("plain text"));
        assert!(refused("postgres://billd@db.example/billd?sslmode=prefer").contains("sslmode=prefer"));
        let t = PgTarget::parse("postgres://billd@127.0.0.1:5433/billd", None).unwrap();
        assert_eq!(t.tls, Tls::Off);
        let t = PgTarget::parse("postgresql://billd@localhost/billd?sslmode=require", None).unwrap();
        assert_eq!(t.tls, Tls::Verified { roots: None });
        assert!(is_url("PostgreSQL://x/y") && !is_url("/var/lib/billd/billd.sqlite3"));
        let t = PgTarget::parse("postgres://billd@%2Frun%2Fpostgresql/billd", None).unwrap();
        assert_eq!(t.tls, Tls::Off);
        let t = PgTarget::parse("postgres://billd@db.example,127.0.0.1/billd", None).unwrap();
        assert_eq!(t.tls, Tls::Verified { roots: None });
    }

    #[test]
    fn the_password_given_apart_is_used_but_never_shown() {
        let t = PgTarget::parse("postgres://billd@db.example:5432/billd", Some("hunter2")).unwrap();
        assert!(t.password().is_some());
        assert!(!format!("{t:?} {}", t.display()).contains("hunter2"));
    }
}
