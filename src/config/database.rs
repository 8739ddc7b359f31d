//! `billing.database`: a SQLite file (a path) or a PostgreSQL book (a `postgres://` URL), and the PostgreSQL
//! password, which never sits in the config file: `billing.database_password_file`, the environment, or a
//! systemd credential.

use super::Secret;
use super::pg::{PgTarget, is_other_url, is_url};
use super::raw::RawBilling;
use std::path::{Path, PathBuf};

/// The password's environment variable, taken verbatim (not as a TOML value).
const PASSWORD_VAR: &str = "BILLD_BILLING__DATABASE_PASSWORD";

/// The password's systemd credential (`LoadCredential=database_password:…`).
const CREDENTIAL: &str = "database_password";

/// Where the book is.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// A SQLite file (relative paths are from the config file's folder).
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgTarget),
}

impl Database {
    /// Where the book is, for messages (a URL never shows a password: it is never in it).
    pub fn display(&self) -> String {
        match self {
            Database::File(p) => p.display().to_string(),
            Database::Postgres(t) => t.display(),
        }
    }

    /// The SQLite file, if the book is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Database::File(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }
}

pub(super) fn password_from_env() -> Result<Option<String>, String> {
    std::env::var_os(PASSWORD_VAR)
        .map(|v| v.into_string().map_err(|_| format!("{PASSWORD_VAR} is not valid UTF-8")))
        .transpose()
}

/// The book and the PostgreSQL password (also kept apart: `billd store copy` takes URLs of its own).
pub(super) fn database(
    raw: &RawBilling,
    from_env: Option<String>,
    dir: &Path,
    errs: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> (Database, Option<Secret>) {
    if raw.database_password.is_some() {
        errs.push(format!(
            "billing.database_password: a password is not kept in the config file; put it in a file named by \
             billing.database_password_file, in {PASSWORD_VAR}, or in the systemd credential {CREDENTIAL}"
        ));
    }
    let explicit = from_env.is_some() || raw.database_password_file.is_some();
    let password = match password(raw, from_env, dir, warnings) {
        Ok(p) => p,
        Err(e) => {
            errs.push(e);
            None
        }
    };
    let name = raw.database.trim();
    if name.is_empty() {
        errs.push("billing.database: must name a file or a postgres:// URL".into());
        return (Database::File(dir.join(&raw.database)), password.map(Secret::new));
    }
    if is_other_url(name) && !is_url(name) {
        let scheme = name.split_once("://").map_or("", |(s, _)| s);
        errs.push(format!(
            "billing.database: a {}:// URL is neither a SQLite file nor a postgres:// URL",
            crate::text::excerpt(scheme, 20)
        ));
        return (Database::File(PathBuf::new()), password.map(Secret::new));
    }
    if !is_url(name) {
        if explicit {
            warnings.push(
                "a database password is set, but billing.database is a SQLite file, which has none: it is used only \
                 by `billd store copy`"
                    .into(),
            );
        }
        return (Database::File(dir.join(&raw.database)), password.map(Secret::new));
    }
    let database = match PgTarget::parse(name, password.as_deref()) {
        Ok(t) => Database::Postgres(t),
        Err(e) => {
            // Never the URL itself: it may hold the password the message refuses.
            errs.push(format!("billing.database: the postgres:// URL {e}"));
            Database::File(PathBuf::new())
        }
    };
    (database, password.map(Secret::new))
}

/// The password, by precedence: the environment, `database_password_file`, the systemd credential; none at all
/// (the server lets billd in another way: a socket's peer authentication, a client certificate, `.pgpass` is not
/// read) when none is given.
fn password(
    raw: &RawBilling,
    from_env: Option<String>,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, String> {
    if let Some(v) = from_env {
        return non_empty(v, PASSWORD_VAR).map(Some);
    }
    let (key, file) = if let Some(f) = &raw.database_password_file {
        let path = dir.join(f);
        warnings.extend(crate::trust::readable_secret("billing.database_password_file", &path));
        ("billing.database_password_file", path)
    } else if let Some(creds) = std::env::var_os("CREDENTIALS_DIRECTORY")
        && Path::new(&creds).join(CREDENTIAL).exists()
    {
        ("the systemd credential database_password", PathBuf::from(creds).join(CREDENTIAL))
    } else {
        return Ok(None);
    };
    let text = crate::trust::read(&file, "password file").map_err(|e| format!("{key}: {e}"))?;
    non_empty(text, &format!("{key} ({})", file.display())).map(Some)
}

fn non_empty(text: String, from: &str) -> Result<String, String> {
    let v = text.trim_end_matches(['\n', '\r']);
    if v.is_empty() { Err(format!("{from}: the password is empty")) } else { Ok(v.to_string()) }
}

#[cfg(test)]
mod tests {
    use crate::config::{Database, parse_str};
    use std::path::Path;

    const BASE: &str = r#"
        [gateway]
        base_url = "http://127.0.0.1:1"
        imp_key = "k"
        imp_secret = "s"
        [billing]
        timezone = "Asia/Seoul"
    "#;

    fn with(db: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse_str(&format!("{BASE}{db}"), Path::new("/etc/billd/schedules.toml"))
    }

    #[test]
    fn a_path_is_a_sqlite_file_and_a_url_a_postgres_book() {
        let c = with("database = \"billd.sqlite3\"").unwrap();
        assert_eq!(c.billing.database, Database::File("/etc/billd/billd.sqlite3".into()));
        let c = with("database = \"postgres://billd@db.example/billd\"").unwrap();
        assert!(matches!(c.billing.database, Database::Postgres(_)));
        assert_eq!(c.billing.database.display(), "postgres://billd@db.example/billd");
    }

    #[test]
    fn a_password_in_the_url_or_the_file_is_refused_without_being_repeated() {
        let e = with("database = \"postgres://billd:hunter2@db.example/billd\"").unwrap_err().to_string();
        assert!(e.contains("billing.database") && e.contains("password") && !e.contains("hunter2"), "{e}");
        let e = with("database = \"postgres://billd@db.example/billd\"\ndatabase_password = \"hunter2\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("billing.database_password") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_password_file_is_read_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let conf = dir.path().join("schedules.toml");
        let text = format!(
            "{BASE}database = \"postgres://billd@db.example/billd\"\ndatabase_password_file = \"{}\"",
            file.display()
        );
        let c = parse_str(&text, &conf).unwrap();
        let Database::Postgres(t) = &c.billing.database else { panic!("a postgres book") };
        assert!(t.password().is_some());
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        let e = parse_str(&text, &conf).unwrap_err().to_string();
        assert!(e.contains("database_password_file") && e.contains("empty"), "{e}");
    }
}
