//! `billd sandbox`: serve the local i'mport V1 sandbox until SIGINT/SIGTERM.

use crate::app::runtime;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

pub fn sandbox(
    listen: std::net::SocketAddr,
    imp_key: Option<String>,
    imp_secret: Option<String>,
    file: Option<&Path>,
) -> Result<ExitCode> {
    let mut cfg = match file {
        Some(f) => {
            let text = crate::trust::read(f, "sandbox config file").map_err(anyhow::Error::msg)?;
            billd_sandbox::SandboxConfig::from_toml_str(&text)
                .with_context(|| format!("invalid sandbox config {}", f.display()))?
        }
        None => billd_sandbox::SandboxConfig::default(),
    };
    if let Some(k) = imp_key {
        cfg.imp_key = k;
    }
    if let Some(s) = imp_secret {
        cfg.imp_secret = s;
    }
    // Only the documented default is shown; any other secret (given, or from --sandbox-config) never is.
    let shown_secret = if cfg.imp_secret == billd_sandbox::DEFAULT_IMP_SECRET {
        cfg.imp_secret.clone()
    } else {
        "(set; not shown)".to_string()
    };
    runtime()?.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("billd sandbox: i'mport V1 API at http://{addr}");
        println!("  imp_key    = {}", cfg.imp_key);
        println!("  imp_secret = {shown_secret}");
        println!("  ledger     = http://{addr}/__sandbox/payments");
        let shutdown = async {
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        billd_sandbox::serve(cfg, listener, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
