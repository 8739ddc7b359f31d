//! What every command needs opened: the config (with its warnings logged), the async runtime, the database lock,
//! and the engine with its store and gateway client.

use crate::config::{self, Config, Secret};
use crate::engine::Engine;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use tracing::warn;

/// Loads the config, logging its warnings.
pub fn load_config(path: &Path) -> Result<Config> {
    let cfg = config::load(path)?;
    for w in &cfg.warnings {
        warn!(event = "config.warning", "{w}");
    }
    Ok(cfg)
}

/// Takes the database's exclusive lock: one `run` or `tick` at a time per database.
pub fn lock_database(db: &Path) -> Result<std::fs::File> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    crate::private::create(&lock_path)
        .with_context(|| format!("cannot create the lock file {}", lock_path.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "database {} is in use by another `billd run` or `billd tick` (lock {}); \
             only one scheduler may run per database",
            db.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).context(format!("cannot lock {}", lock_path.display())),
    }
}

/// The gateway billd charges and keeps cards at: any type implementing the contract of `crate::gateway`
/// ([`Gateway`](crate::gateway::Gateway) for the engine, [`BillingKeys`](crate::gateway::BillingKeys) for the card
/// commands). Another gateway is wired here and in [`gateway_with`].
pub type PaymentGateway = crate::gateway::iamport::Iamport;

/// The gateway client of a config, its secret resolved (an unreadable secret is an error naming the config file).
pub fn gateway(cfg: &Config) -> Result<PaymentGateway> {
    let secret = cfg.gateway.secret.resolve().map_err(|e| anyhow!("{}: {e}", cfg.file.display()))?;
    Ok(gateway_with(cfg, secret))
}

/// The gateway client of a config whose secret is already resolved.
pub fn gateway_with(cfg: &Config, secret: Secret) -> PaymentGateway {
    let g = &cfg.gateway;
    PaymentGateway::new(&g.base_url, &g.imp_key, secret, g.timeout, g.concurrency).with_rate_limit(g.rate_limit)
}

/// Opens (creating and migrating if needed) the book the config names: the SQLite database `billing.database`.
/// The one place that picks the store; everything else sees only the [`Store`] contract.
pub fn open_store(cfg: &Config) -> Result<impl Store + use<>> {
    SqliteStore::open(&cfg.billing.database)
}

/// Builds the engine for a config: lock, database, gateway client.
pub fn engine(cfg: Config) -> Result<(Engine<impl Store + use<>, PaymentGateway>, std::fs::File)> {
    let lock = lock_database(&cfg.billing.database)?;
    let store = open_store(&cfg)?;
    let gateway = gateway(&cfg)?;
    Ok((Engine::new(store, gateway, cfg), lock))
}

/// The async runtime a command runs its gateway calls and passes on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}
