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
        Some(f) => billd_sandbox::SandboxConfig::from_toml_file(f)?,
        None => billd_sandbox::SandboxConfig::default(),
    };
    if let Some(k) = imp_key {
        cfg.imp_key = k;
    }
    let shown_secret = match imp_secret {
        Some(s) if s != cfg.imp_secret => {
            cfg.imp_secret = s;
            "(given; not shown)".to_string()
        }
        _ => cfg.imp_secret.clone(),
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
