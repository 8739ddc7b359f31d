//! Connecting to a PostgreSQL book (`config::PgTarget`): TLS verified with the system's roots or `sslrootcert`'s,
//! the socket driven by the I/O thread.

use crate::config::{PgTarget, Tls};
use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;

/// The longest the connection and its start-up exchange (TLS, authentication) may take.
const START_UP: Duration = Duration::from_secs(20);

/// A new connection to `target`, its socket driven by the I/O thread. Built from the target's parts (never from the
/// URL text again); TLS is required whenever the target takes it (a server answering "no TLS" is refused, never
/// talked to in plain text).
pub(super) fn connect(target: &PgTarget) -> Result<tokio_postgres::Client> {
    let shown = target.display();
    let mut config = tokio_postgres::Config::new();
    for host in &target.hosts {
        config.host(host);
    }
    if let Some(port) = target.port {
        config.port(port);
    }
    config.user(&target.user).dbname(&target.dbname).application_name("billd");
    if let Some(options) = &target.options {
        config.options(options);
    }
    config.connect_timeout(target.connect_timeout.unwrap_or(Duration::from_secs(10)));
    // A server that stops answering (stopped, cut off) is noticed: unacknowledged data and idle keepalives time out.
    config.tcp_user_timeout(Duration::from_secs(30)).keepalives_idle(Duration::from_secs(30));
    if let Some(p) = target.password() {
        config.password(p.expose());
    }
    let timed_out = || anyhow!("database {shown}: cannot connect: no answer within {} s", START_UP.as_secs());
    let client = match target.tls() {
        Tls::Off => {
            config.ssl_mode(SslMode::Disable);
            super::on_io(async move {
                let connected = tokio::time::timeout(START_UP, config.connect(tokio_postgres::NoTls)).await.ok()?;
                Some(connected.map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                }))
            })?
        }
        Tls::Verified { roots } => {
            config.ssl_mode(SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(roots.as_ref())?);
            super::on_io(async move {
                let connected = tokio::time::timeout(START_UP, config.connect(tls)).await.ok()?;
                Some(connected.map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                }))
            })?
        }
    };
    client.ok_or_else(timed_out)?.map_err(|e| {
        let why = describe(&e);
        let hint = if why.contains("password missing") {
            ": the server asks for a password; give it in billing.database_password_file, \
             BILLD_BILLING__DATABASE_PASSWORD or the systemd credential database_password"
        } else if why.contains("does not support TLS") {
            ": the server offers no TLS; to a server on this machine, leave sslmode out (or sslmode=disable)"
        } else {
            ""
        };
        anyhow!("database {shown}: cannot connect: {why}{hint}")
    })
}

/// A connection error's cause, said once (the server's message if it sent one).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", super::said(db.message()), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            super::said(&s)
        }
    }
}

/// The TLS settings: the system's verifier, or only the roots of `sslrootcert`.
fn client_config(roots: Option<&PathBuf>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?;
    Ok(match roots {
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder.with_platform_verifier().context("the system's TLS roots")?.with_no_client_auth()
        }
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut store = rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| anyhow!("sslrootcert {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| anyhow!("sslrootcert {}: {e}", path.display()))?;
                store.add(cert).map_err(|e| anyhow!("sslrootcert {}: {e}", path.display()))?;
            }
            if store.is_empty() {
                anyhow::bail!("sslrootcert {}: no certificate in it", path.display());
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server that answers "no TLS" to the TLS request (a downgrade, by it or by someone in between) is refused:
    /// nothing more is sent to it, no password above all (an outside review read the password in plain text).
    #[test]
    fn a_server_refusing_tls_is_refused_and_hears_nothing_more() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = [0u8; 8];
            s.read_exact(&mut request).unwrap();
            s.write_all(b"N").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            (request, rest)
        });
        let url = format!("postgres://billd@localhost:{port}/book?sslmode=verify-full");
        let target = PgTarget::parse(&url, Some("pw-SECRET-7")).unwrap();
        let e = connect(&target).map(|_| ()).unwrap_err().to_string();
        let (request, rest) = server.join().unwrap();
        assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "the TLS request comes first");
        assert!(rest.is_empty(), "the client went on in plain text after the server refused TLS: {rest:?}");
        assert!(!e.contains("pw-SECRET-7"), "{e}");
    }
}
