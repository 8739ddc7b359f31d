//! The PostgreSQL book `billing.database` names: a `postgres://` URL read once into its parts (hosts, port, user,
//! database, the few options billd takes), never with a password (that comes from its own file, the environment or
//! a credential), and its TLS (`sslmode`, `sslrootcert`). The connection is made from these parts, so what is
//! checked (a host on this machine, say) is what is connected to.

use super::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// Whether `billing.database` names a PostgreSQL book rather than a SQLite file: it begins with `postgres:` or
/// `postgresql:` (a malformed URL is refused by [`PgTarget::parse`], never taken as a file name).
pub fn is_url(database: &str) -> bool {
    let lower = database.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres:") || lower.starts_with("postgresql:")
}

/// Whether `billing.database` is a URL of another scheme (`mysql://…`): refused, not taken as a file name.
pub fn is_other_url(database: &str) -> bool {
    let d = database.trim_start();
    d.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// How the connection is protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// None: only to this machine (a socket or a loopback address).
    Off,
    /// TLS, required, with the server's certificate verified (its name too) against the system's roots, or
    /// `sslrootcert`'s.
    Verified { roots: Option<PathBuf> },
}

/// A PostgreSQL book: where it is, the password if one was given, and the TLS it takes.
#[derive(Clone)]
pub struct PgTarget {
    /// Host names, IP addresses, or socket folders (beginning with `/`), tried in order.
    pub hosts: Vec<String>,
    pub port: Option<u16>,
    pub user: String,
    pub dbname: String,
    /// `options=` (server settings for the session, e.g. `-c search_path=billd`).
    pub options: Option<String>,
    pub connect_timeout: Option<Duration>,
    password: Option<Secret>,
    tls: Tls,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({})", self.display())
    }
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        (&self.hosts, self.port, &self.user, &self.dbname, &self.options, &self.tls)
            == (&other.hosts, other.port, &other.user, &other.dbname, &other.options, &other.tls)
    }
}

/// Where a password found in the URL must go instead.
const PASSWORD_ELSEWHERE: &str = "put it in billing.database_password_file, BILLD_BILLING__DATABASE_PASSWORD or the \
                                  systemd credential database_password";

impl PgTarget {
    /// Reads a `postgres://` URL. Refused, never repeating the URL (it may hold what is refused): a password inside
    /// it, an option billd does not take (named), an `sslmode` that may fall back to plain text (`prefer`, `allow`),
    /// plain text to another machine.
    pub fn parse(url: &str, password: Option<&str>) -> Result<PgTarget, String> {
        let text = url.trim();
        let lower = text.to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err("must begin with postgres:// or postgresql://".into());
        }
        let parsed = url::Url::parse(text).map_err(|e| format!("is not a valid postgres:// URL ({e})"))?;
        if parsed.password().is_some() {
            return Err(format!(
                "holds a password: it is refused there (it would show in messages); {PASSWORD_ELSEWHERE}"
            ));
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
        let bad = |what: &str| format!("has {what} that is not valid UTF-8 once decoded");
        let mut hosts: Vec<String> = match parsed.host_str().filter(|h| !h.is_empty()) {
            Some(h) => decode(h).map_err(|_| bad("a host"))?.split(',').map(str::to_owned).collect(),
            None => Vec::new(),
        };
        let mut port = parsed.port();
        let mut user = decode(parsed.username()).map_err(|_| bad("a user"))?;
        let path = decode(parsed.path().trim_start_matches('/')).map_err(|_| bad("a database name"))?;
        if path.contains('/') || path.contains('@') {
            return Err("has a database name with '/' or '@' in it (a misplaced part of the URL?)".into());
        }
        let mut dbname = path;
        let (mut sslmode, mut roots, mut options, mut connect_timeout) = (None, None, None, None);
        for (k, v) in parsed.query_pairs() {
            let v = v.into_owned();
            match &*k {
                "sslmode" => sslmode = Some(v),
                "sslrootcert" => roots = Some(PathBuf::from(v)),
                "host" => hosts.extend(v.split(',').map(str::to_owned)),
                "port" => port = Some(v.parse().map_err(|_| "has a port= that is not a port number".to_string())?),
                "user" => user = v,
                "dbname" => dbname = v,
                "options" => options = Some(v),
                "connect_timeout" => {
                    let s: u64 = v.parse().map_err(|_| "has a connect_timeout= that is not a number of seconds")?;
                    connect_timeout = Some(Duration::from_secs(s.clamp(1, 600)));
                }
                "password" => {
                    return Err(format!("holds a password (password=): it is refused there; {PASSWORD_ELSEWHERE}"));
                }
                other => {
                    return Err(format!(
                        "has an option billd does not take: {} (it takes sslmode, sslrootcert, host, port, user, \
                         dbname, options, connect_timeout)",
                        crate::text::quote(&crate::text::excerpt(other, 40))
                    ));
                }
            }
        }
        hosts.retain(|h| !h.is_empty());
        if hosts.is_empty() {
            return Err("names no host (postgres://USER@HOST/DATABASE, or host=/path/to/socket-folder)".into());
        }
        if user.is_empty() {
            return Err("names no user (postgres://USER@HOST/DATABASE)".into());
        }
        if dbname.is_empty() {
            return Err("names no database (postgres://USER@HOST/DATABASE)".into());
        }
        let local = hosts.iter().all(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.starts_with('/') || h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
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
                    "has sslmode={}: billd takes disable (this machine only), require, verify-ca or verify-full \
                     (each verifies the server's certificate)",
                    crate::text::quote(&crate::text::excerpt(other, 20))
                ));
            }
        };
        Ok(PgTarget { hosts, port, user, dbname, options, connect_timeout, password: password.map(Secret::new), tls })
    }

    /// Where the book is, for messages: `postgres://USER@HOSTS[:PORT]/DATABASE` (never a password).
    pub fn display(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let hosts: Vec<String> = self.hosts.iter().map(|h| shown(h, 80)).collect();
        format!("postgres://{}@{}{port}/{}", shown(&self.user, 40), hosts.join(","), shown(&self.dbname, 60))
    }

    /// The password, if one was given (else the server must let billd in without one).
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }
}

/// A part of the URL in a message: invisible characters escaped, at most `max` characters.
fn shown(part: &str, max: usize) -> String {
    let safe = crate::text::cell(part);
    let mut out: String = safe.chars().take(max).collect();
    if safe.chars().nth(max).is_some() {
        out.push('…');
    }
    out
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
        let e = refused("postgres://billd@db.example/billd?sslmode=prefer");
        assert!(e.contains("sslmode=") && e.contains("prefer"), "{e}");
        let t = PgTarget::parse("postgres://billd@127.0.0.1:5433/billd", None).unwrap();
        assert_eq!(t.tls, Tls::Off);
        assert_eq!(t.display(), "postgres://billd@127.0.0.1:5433/billd");
        let t = PgTarget::parse("postgresql://billd@localhost/billd?sslmode=require", None).unwrap();
        assert_eq!(t.tls, Tls::Verified { roots: None });
        assert!(is_url("PostgreSQL://x/y") && !is_url("/var/lib/billd/billd.sqlite3"));
        let t = PgTarget::parse("postgres://billd@%2Frun%2Fpostgresql/billd", None).unwrap();
        assert_eq!((t.tls, t.hosts), (Tls::Off, vec!["/run/postgresql".to_string()]));
        let t = PgTarget::parse("postgres://billd@db.example,127.0.0.1/billd", None).unwrap();
        assert_eq!(t.tls, Tls::Verified { roots: None });
    }

    /// What is checked is what is connected to: the URL is read once, by one parser (an outside review reached
    /// another machine in plain text through `hostaddr=` and through a path holding an `@`).
    #[test]
    fn what_is_checked_is_what_is_connected_to() {
        let e = refused("postgres://billd@127.0.0.1:55602/book?hostaddr=192.0.2.2&sslmode=disable");
        assert!(e.contains("hostaddr"), "{e}");
        let e = refused("postgres://127.0.0.1/x@192.0.2.2:55603/book?user=billd&sslmode=disable");
        assert!(e.contains("database name"), "{e}");
        let t = PgTarget::parse("postgres://billd@127.0.0.1/book?host=192.0.2.2&sslmode=require", None).unwrap();
        assert_eq!(t.hosts, ["127.0.0.1", "192.0.2.2"]);
        assert!(refused("postgres://billd@127.0.0.1/book?host=192.0.2.2&sslmode=disable").contains("plain text"));
        let t = PgTarget::parse("postgres://billd@localhost/book?options=-c%20statement_timeout%3D5s", None).unwrap();
        assert_eq!(t.options.as_deref(), Some("-c statement_timeout=5s"));
        assert!(refused("postgres://billd@localhost/book?sslrootcrt=/x").contains("sslrootcrt"));
    }

    #[test]
    fn a_malformed_postgres_url_is_refused_not_taken_for_a_file() {
        assert!(is_url("postgresql:book") && is_url("postgres:/billd:HUNTER2xyz@127.0.0.1/book"));
        assert!(refused("postgresql:book").contains("postgres://"));
        let e = refused("postgres:/billd:HUNTER2xyz@127.0.0.1/book");
        assert!(!e.contains("HUNTER2"), "{e}");
        assert!(is_other_url("mysql://u@h/db") && !is_other_url("/var/lib/billd/billd.sqlite3"));
        assert!(!is_other_url("billd.sqlite3"));
    }

    #[test]
    fn the_password_given_apart_is_used_but_never_shown() {
        let t = PgTarget::parse("postgres://billd@db.example:5432/billd", Some("hunter2")).unwrap();
        assert!(t.password().is_some());
        assert!(!format!("{t:?} {}", t.display()).contains("hunter2"));
    }
}
