//! `billd check`: validate the config (and with `--online`, the credentials) and list every problem.

use crate::app::{gateway_with, runtime};
use crate::config;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// `now`: the instant "a pass now" is judged at (`--as-of`).
pub fn check(path: &Path, online: bool, now: chrono::DateTime<chrono::Utc>) -> Result<ExitCode> {
    match config::load(path) {
        Ok(cfg) => {
            let mut problems = Vec::new();
            match cfg.gateway.secret.resolve() {
                Err(e) => problems.push(e),
                Ok(secret) if online => {
                    use crate::gateway::{Auth, Gateway};
                    let g = &cfg.gateway;
                    let client = gateway_with(&cfg, secret);
                    match runtime()?.block_on(client.authenticate()) {
                        Auth::Accepted => {
                            println!(
                                "gateway {}: accepts gateway.imp_key {:?} and its imp_secret",
                                g.base_url, g.imp_key
                            )
                        }
                        Auth::Refused(e) => problems.push(format!(
                            "gateway.imp_key: the gateway {} refuses {:?} and its imp_secret ({e})",
                            g.base_url, g.imp_key
                        )),
                        Auth::Unavailable(e) => {
                            problems.push(format!("gateway.base_url: cannot get a token from {}: {e}", g.base_url))
                        }
                    }
                }
                Ok(_) => {}
            }
            // The webhook secret is read and its form checked here, as the gateway's is (never shown).
            if let Some(Err(e)) = cfg.webhooks.as_ref().map(|w| w.secret.resolve()) {
                problems.push(e);
            }
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            // New entries a pass now would not add (a start more than one period back without catch_up), against
            // the book if it exists (an existing subscription's old start is its history, not a problem). Warned
            // of, not refused: a pass at an earlier instant (`tick --as-of`, a replay) adds them.
            let db = match crate::app::found_store(&cfg)? {
                Some(store) => crate::store::Book::config_subscriptions(&store)?,
                None => Vec::new(),
            };
            let today = cfg.billing.clock.local_date(now);
            for r in cfg.sync_plan(&db, today).refused {
                eprintln!("warning: a pass now would refuse it: {r}");
            }
            if problems.is_empty() {
                println!(
                    "{}: OK ({}, {}; database {})",
                    cfg.file.display(),
                    crate::commands::present::count(cfg.plans.len(), "plan"),
                    crate::commands::present::count(cfg.subscriptions.len(), "subscription"),
                    cfg.billing.database.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in problems {
                    eprintln!("{}: {p}", cfg.file.display());
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
