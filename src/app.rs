//! What every command needs opened: the config (with its warnings logged), the async runtime, and the engine with
//! its store (claimed as the book's one scheduler) and gateway client.

use crate::config::{self, Config, Database, Secret};
use crate::engine::Engine;
use crate::store::sql::SqlStore;
use crate::store::{Daemons, Store};
use crate::store::{postgres, sqlite};
use anyhow::{Context, Result, anyhow};
use std::path::Path;
use tracing::warn;

/// Loads the config, logging its warnings.
pub fn load_config(path: &Path) -> Result<Config> {
    let cfg = config::load(path)?;
    for w in &cfg.warnings {
        warn!(event = "config.warning", "{w}");
    }
    Ok(cfg)
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
    PaymentGateway::new(&g.base_url, &g.imp_key, secret, g.timeout, g.concurrency, g.proxy.as_deref())
        .with_rate_limit(g.rate_limit)
}

/// Opens (creating and migrating if needed) the book the config names (`billing.database`: a SQLite file or a
/// PostgreSQL database). The one place that picks the store; everything else sees only the [`Store`] contract. For
/// what fills a book (passes, `sync`, `import`, `subscriptions add`, one-time charges, card commands); the others
/// take [`existing_store`] or [`listed_store`], so that a mistyped `billing.database` never leaves a stray empty
/// book.
pub fn open_store(cfg: &Config) -> Result<impl Store + use<>> {
    match &cfg.billing.database {
        Database::File(path) => sqlite::open(path),
        Database::Postgres(target) => postgres::open(target).and_then(on_book_clock),
    }
}

/// A PostgreSQL book shared by several daemons (issue 27): this process's real instants are then on the database's
/// clock ([`crate::realtime::anchor`]), as every other daemon's and command's are, so skew between servers never
/// shortens a quiet period.
fn on_book_clock(store: SqlStore) -> Result<SqlStore> {
    crate::realtime::anchor_with(|| store.clock_ms())?;
    Ok(store)
}

/// The book the config names, which must exist: for commands that change what is in it (pause, cancel, refund, ...).
pub fn existing_store(cfg: &Config) -> Result<impl Store + use<>> {
    found_store(cfg)?.ok_or_else(|| anyhow!("{}", no_book(cfg)))
}

/// The book the config names for a listing: if there is none yet, an empty one in memory (the listing then shows
/// what the config alone holds), said once on stderr; nothing is created.
pub fn listed_store(cfg: &Config) -> Result<impl Store + use<>> {
    if let Some(store) = found_store(cfg)? {
        return Ok(store);
    }
    if let Some(path) = cfg.billing.database.file() {
        // Where it would be is checked as for a real one (a shared folder is refused before anything is there).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            anyhow::bail!(
                "database {}: the folder {} does not exist (set billing.database)",
                path.display(),
                dir.display()
            );
        }
        crate::private::check_folder(path).map_err(|e| anyhow!("database {e}"))?;
    }
    eprintln!("note: {}", no_book(cfg));
    sqlite::empty(&cfg.billing.database.display())
}

/// The book the config names if there is one (`None`: none yet; nothing is created).
pub fn found_store(cfg: &Config) -> Result<Option<SqlStore>> {
    match &cfg.billing.database {
        Database::File(path) if !path.exists() => Ok(None),
        Database::File(path) => sqlite::open(path).map(Some),
        Database::Postgres(target) => postgres::open_existing(target)?.map(on_book_clock).transpose(),
    }
}

/// The book `spec` names for `billd store copy` (a SQLite path, relative to the working folder, or a
/// `postgres://` URL, whose password is the config's): it must exist unless `create`.
pub fn store_at(cfg: &Config, spec: &str, create: bool) -> Result<SqlStore> {
    if config::is_url(spec) {
        let password = cfg.billing.database_password.as_ref().map(Secret::expose);
        let target = config::PgTarget::parse(spec, password).map_err(|e| anyhow!("the postgres:// URL {e}"))?;
        if create {
            return postgres::open(&target);
        }
        return postgres::open_existing(&target)?
            .ok_or_else(|| anyhow!("there is no billd book at {}", target.display()));
    }
    let path = Path::new(spec);
    if !create && !path.exists() {
        anyhow::bail!("there is no billd book at {}", path.display());
    }
    sqlite::open(path)
}

/// Why there is no book to show or change, naming the key and the file that point to it.
fn no_book(cfg: &Config) -> String {
    let (what, how) = match &cfg.billing.database {
        Database::File(_) => ("no database at", "creates it"),
        Database::Postgres(_) => ("no billd book (its tables) in", "creates its tables"),
    };
    format!(
        "there is {what} {} (billing.database in {}) yet: `billd sync` or a pass (`billd tick`, `billd run`) {how}; \
         if it exists elsewhere, fix billing.database",
        cfg.billing.database.display(),
        cfg.file.display()
    )
}

/// Builds the engine for a config: the book (claimed as one of its schedulers, see [`Store::claim_scheduler`], and
/// joined as a daemon, see [`crate::store::Daemons`]) and the gateway client.
pub fn engine(cfg: Config) -> Result<Engine<impl Store + use<>, PaymentGateway>> {
    let mut store = open_store(&cfg)?;
    store.claim_scheduler()?;
    let gateway = gateway(&cfg)?;
    // One of the book's daemons, with a lease, for as long as the engine lives (issue 27).
    let beat = open_store(&cfg)?;
    let mut engine = Engine::new(store, gateway, cfg);
    engine.join(beat)?;
    Ok(engine)
}

/// The async runtime a command runs its gateway calls and passes on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}
