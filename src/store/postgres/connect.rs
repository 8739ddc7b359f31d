//! Connecting to a PostgreSQL book (`config::PgTarget`): TLS verified with the system's roots or `sslrootcert`'s,
//! the socket driven by the I/O thread.

use crate::config::{PgTarget, Tls};
use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A new connection to `target`, its socket driven by the I/O thread.
pub(super) fn connect(target: &PgTarget) -> Result<tokio_postgres::Client> {
    let shown = target.display();
    let mut config: tokio_postgres::Config =
        target.url().parse().map_err(|e| anyhow!("database {shown}: not a valid postgres:// URL ({e})"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("billd");
    if let Some(p) = target.password() {
        config.password(p.expose());
    }
    let client = match target.tls() {
        Tls::Off => super::on_io(async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(client)
        })?,
        Tls::Verified { roots } => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(roots.as_ref())?);
            super::on_io(async move {
                let (client, conn) = config.connect(tls).await?;
                tokio::spawn(conn);
                Ok::<_, tokio_postgres::Error>(client)
            })?
        }
    };
    client.map_err(|e| anyhow!("database {shown}: cannot connect: {}", describe(&e)))
}

/// A connection error's cause, said once (the server's message if it sent one).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s
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
