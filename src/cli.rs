//! Commands: argument definitions and what each command does.

use crate::config::{self, Config};
use crate::engine::Engine;
use crate::gateway::Iamport;
use crate::logging::LogFormat;
use crate::store::Store;
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tracing::warn;

#[derive(Parser, Debug)]
#[command(name = "billd", version, about = "Recurring billing for i'mport (PortOne V1) billing keys")]
pub struct Args {
    /// The config file (default ./schedules.toml).
    #[arg(long, global = true, env = "BILLD_CONFIG", value_name = "PATH", help_heading = "Global options")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Console, help_heading = "Global options")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the scheduler daemon.
    ///
    /// It charges each period when it falls due (waking at least every minute), reconciling first what a stopped
    /// process left unresolved. SIGTERM or SIGINT: in-flight charges finish and are recorded, then it exits 0.
    /// SIGHUP: schedules.toml is reloaded and applied (an invalid file is refused and the running config stays;
    /// gateway, database and metrics settings need a restart). With `[metrics] listen = "ADDR"` it serves
    /// Prometheus text at /metrics and a health check at /healthz (503 when the loop has stalled or the gateway
    /// refuses the credentials). Only one `run` or `tick` may use a database at a time.
    Run,
    /// One full pass (sync the config, reconcile, charge everything due) and exit.
    Tick {
        /// The instant the pass runs at (RFC 3339, e.g. 2025-03-01T10:00:00+09:00); default now. More than a minute
        /// in the future it is refused unless --simulate: the charges due until then are real.
        #[arg(long, value_name = "RFC3339")]
        as_of: Option<String>,
        /// Allow an --as-of in the future (tests and demos against a sandbox): every period due until then is
        /// charged, for real, at gateway.base_url.
        #[arg(long)]
        simulate: bool,
    },
    /// Validate the config; exit 1 listing every problem.
    Check {
        /// Also ask the gateway for an access token: does it accept gateway.imp_key and its imp_secret?
        #[arg(long)]
        online: bool,
    },
    /// Apply schedules.toml to the database.
    Sync {
        /// Show what would change without changing it.
        #[arg(long)]
        dry_run: bool,
        /// Allow canceling more than 10% of the billed subscriptions at once.
        #[arg(long)]
        force: bool,
    },
    /// List subscriptions, or add one (`billd subscriptions add`).
    #[command(args_conflicts_with_subcommands = true)]
    Subscriptions {
        #[command(subcommand)]
        action: Option<SubscriptionsCommand>,
        /// Only subscriptions in this state.
        #[arg(long, value_name = "STATUS", value_parser = ["active", "past_due", "suspended", "canceled"])]
        status: Option<String>,
        /// Print them as JSON (times RFC 3339 with the billing time zone's offset).
        #[arg(long)]
        json: bool,
    },
    /// Billing keys at the gateway: register a card, show or delete a key.
    Customers {
        #[command(subcommand)]
        action: CustomersCommand,
    },
    /// A key-in payment with a card read from stdin or a prompt (with --customer-uid the card is also saved).
    ChargeOnce {
        /// The order's id at the gateway (1-40 characters, not starting with billd's merchant_uid_prefix and '-').
        #[arg(long)]
        merchant_uid: String,
        /// The amount, in the currency's unit (KRW).
        #[arg(long)]
        amount: i64,
        /// The order name the customer sees (1-40 characters).
        #[arg(long)]
        name: String,
        /// Also save the card as this billing key.
        #[arg(long)]
        customer_uid: Option<String>,
    },
    /// Serve a local i'mport V1 sandbox (for demos, tests and benchmarks) until SIGINT/SIGTERM.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// The imp_key it accepts (default imp_sandbox_key).
        #[arg(long)]
        imp_key: Option<String>,
        /// The imp_secret it accepts (default imp_sandbox_secret). Given on the command line it is visible to every
        /// user of this machine (ps, /proc): prefer the environment variable or --imp-secret-file.
        #[arg(long, env = "BILLD_SANDBOX_IMP_SECRET", hide_env_values = true)]
        imp_secret: Option<String>,
        /// A file holding the imp_secret it accepts (a trailing newline is ignored); wins over --imp-secret.
        #[arg(long, value_name = "FILE")]
        imp_secret_file: Option<PathBuf>,
        /// A sandbox TOML file: latency, rate limit, faults, token lifetime, seeded billing keys.
        #[arg(long, value_name = "FILE")]
        sandbox_config: Option<PathBuf>,
    },
    /// List charge attempts.
    Charges {
        /// Only failed attempts (declined or rejected).
        #[arg(long)]
        failed: bool,
        /// Only attempts updated on or after this date (YYYY-MM-DD, billing timezone) or instant (RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Only this subscription's attempts.
        #[arg(long, value_name = "ID")]
        subscription: Option<String>,
        /// Print them as JSON (times RFC 3339 with the billing time zone's offset; with --follow, one per line).
        #[arg(long)]
        json: bool,
        /// Keep running and print new attempts as they are recorded (with --failed: new failures).
        #[arg(long)]
        follow: bool,
    },
    /// What will be charged when, per day, with totals.
    Upcoming {
        /// How many days ahead (default 30).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Look ahead from this instant instead of now (RFC 3339), to inspect a simulated timeline.
        #[arg(long, value_name = "RFC3339")]
        as_of: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop charging a subscription (it becomes suspended) until it is resumed.
    Pause {
        /// The subscription id.
        subscription: String,
    },
    /// Resume a suspended subscription. Periods whose due time fell inside the pause are skipped unless --catch-up;
    /// a period that fell due before the pause and was never charged is charged.
    Resume {
        /// The subscription id.
        subscription: String,
        /// Charge the periods that fell due while it was suspended too.
        #[arg(long)]
        catch_up: bool,
    },
    /// Cancel a subscription for good (its history is kept).
    Cancel {
        /// The subscription id.
        subscription: String,
    },
    /// Charge a past-due subscription's open period now (same exactly-once rules as scheduled charges).
    Retry {
        /// The subscription id.
        subscription: String,
    },
    /// Add subscriptions from a CSV file (header `id,customer_uid,plan,start`; kept in the database only).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Accept start dates more than one interval ago (every period since the start is charged at once).
        #[arg(long)]
        catch_up: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SubscriptionsCommand {
    /// One subscription's whole story: plan, status and why, every period with each attempt, what happens next.
    Show {
        /// The subscription id.
        id: String,
        /// Print it as JSON (times RFC 3339 with the billing time zone's offset).
        #[arg(long)]
        json: bool,
    },
    /// Add a subscription kept in the database (a config sync never cancels it).
    Add {
        /// Its id (letters, digits, '-', '_' or '.'; at most 64; not differing from another only by case).
        #[arg(long)]
        id: String,
        /// The billing key to charge.
        #[arg(long)]
        customer_uid: String,
        /// A [[plans]] id of the config.
        #[arg(long)]
        plan: String,
        /// First due date (YYYY-MM-DD, billing timezone); default today.
        #[arg(long)]
        start: Option<String>,
        /// Register the card (stdin JSON or prompt) as the billing key first.
        #[arg(long)]
        register_card: bool,
        /// Charge the first period now.
        #[arg(long)]
        charge_now: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CustomersCommand {
    /// Issue a billing key for a card (card number, expiry, birth, pwd_2digit from stdin JSON or a prompt).
    Register {
        /// The billing key to issue (or replace).
        customer_uid: String,
        /// The PG to issue it with (for example kcp); default: the account's default PG.
        #[arg(long)]
        pg: Option<String>,
        /// The PG channel key. Given on the command line it is visible to every user of this machine (ps, /proc):
        /// prefer the environment variable or --channel-key-file.
        #[arg(long, env = "BILLD_CHANNEL_KEY", hide_env_values = true)]
        channel_key: Option<String>,
        /// A file holding the channel key (a trailing newline is ignored); wins over --channel-key.
        #[arg(long, value_name = "FILE")]
        channel_key_file: Option<PathBuf>,
    },
    /// Show a billing key (the card masked).
    Show {
        /// The billing key.
        customer_uid: String,
    },
    /// Delete a billing key.
    Delete {
        /// The billing key.
        customer_uid: String,
        /// Why (kept by the gateway).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs a parsed command and returns the process exit code.
pub fn main(args: Args) -> Result<ExitCode> {
    let path = config::resolve_path(args.config.as_deref());
    match args.command {
        Command::Check { online } => check(&path, online),
        Command::Tick { as_of, simulate } => {
            let now = match as_of {
                Some(s) => parse_instant(&s)?,
                None => Utc::now(),
            };
            tick(&path, now, simulate)
        }
        Command::Run => crate::daemon::run(&path),
        Command::Sync { dry_run, force } => sync(&path, dry_run, force),
        Command::Subscriptions { action: None, status, json } => {
            crate::listings::subscriptions(&path, status.as_deref(), json)
        }
        Command::Subscriptions { action: Some(SubscriptionsCommand::Show { id, json }), .. } => {
            crate::show::show(&path, &id, json)
        }
        Command::Subscriptions {
            action: Some(SubscriptionsCommand::Add { id, customer_uid, plan, start, register_card, charge_now }),
            ..
        } => crate::customers::add_subscription(
            &path,
            &id,
            &customer_uid,
            &plan,
            start.as_deref(),
            register_card,
            charge_now,
        ),
        Command::Customers { action } => match action {
            CustomersCommand::Register { customer_uid, pg, channel_key, channel_key_file } => {
                let channel_key = secret_arg(channel_key, channel_key_file.as_deref(), "--channel-key-file")?;
                crate::customers::register(&path, &customer_uid, pg.as_deref(), channel_key.as_deref())
            }
            CustomersCommand::Show { customer_uid } => crate::customers::show(&path, &customer_uid),
            CustomersCommand::Delete { customer_uid, reason } => {
                crate::customers::delete(&path, &customer_uid, reason.as_deref())
            }
        },
        Command::ChargeOnce { merchant_uid, amount, name, customer_uid } => {
            crate::customers::charge_once(&path, &merchant_uid, amount, &name, customer_uid.as_deref())
        }
        Command::Sandbox { listen, imp_key, imp_secret, imp_secret_file, sandbox_config } => {
            let imp_secret = secret_arg(imp_secret, imp_secret_file.as_deref(), "--imp-secret-file")?;
            sandbox(listen, imp_key, imp_secret, sandbox_config.as_deref())
        }
        Command::Charges { failed, since, subscription, json, follow } => {
            crate::listings::charges(&path, failed, since.as_deref(), subscription.as_deref(), json, follow)
        }
        Command::Upcoming { days, as_of, json } => {
            let now = as_of.as_deref().map(parse_instant).transpose()?;
            crate::ops::upcoming(&path, days, now, json)
        }
        Command::Pause { subscription } => crate::ops::pause(&path, &subscription),
        Command::Resume { subscription, catch_up } => crate::ops::resume(&path, &subscription, catch_up),
        Command::Cancel { subscription } => crate::ops::cancel(&path, &subscription),
        Command::Retry { subscription } => crate::ops::retry(&path, &subscription),
        Command::Import { file, catch_up } => crate::import::run(&path, &file, catch_up),
    }
}

/// A secret given as a value (argv or its environment variable) or as a file (`flag`): the file wins; its trailing
/// newline is dropped.
fn secret_arg(value: Option<String>, file: Option<&Path>, flag: &str) -> Result<Option<String>> {
    let Some(file) = file else { return Ok(value) };
    let text = std::fs::read_to_string(file).with_context(|| format!("{flag} {}: cannot read it", file.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        bail!("{flag} {}: the file is empty", file.display());
    }
    Ok(Some(secret.to_owned()))
}

/// Parses `--as-of`: RFC 3339 with an offset, in the years 1970 to 9999.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>> {
    let q = crate::redact::quote(s);
    let t = DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| anyhow!("--as-of {q} is not an RFC 3339 instant (like 2025-03-01T10:00:00+09:00)"))?;
    if !config::YEARS.contains(&chrono::Datelike::year(&t)) {
        bail!("--as-of {q} is outside the years 1970 to 9999");
    }
    Ok(t)
}

/// Loads the config, logging its warnings.
pub fn load_config(path: &Path) -> Result<Config> {
    let cfg = config::load(path)?;
    for w in &cfg.warnings {
        warn!(event = "config.warning", "{w}");
    }
    Ok(cfg)
}

fn check(path: &Path, online: bool) -> Result<ExitCode> {
    match config::load(path) {
        Ok(cfg) => {
            let mut problems = Vec::new();
            match cfg.gateway.secret.resolve() {
                Err(e) => problems.push(e),
                Ok(secret) if online => {
                    use crate::gateway::{Auth, Gateway};
                    let g = &cfg.gateway;
                    let client = Iamport::new(&g.base_url, &g.imp_key, secret, g.timeout, 1);
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
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            if problems.is_empty() {
                println!(
                    "{}: OK ({}, {}; database {})",
                    cfg.file.display(),
                    crate::present::count(cfg.plans.len(), "plan"),
                    crate::present::count(cfg.subscriptions.len(), "subscription"),
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

/// Builds the engine for a config: lock, database, gateway client.
pub fn engine(cfg: Config) -> Result<(Engine<Iamport>, std::fs::File)> {
    let lock = lock_database(&cfg.billing.database)?;
    let store = Store::open(&cfg.billing.database)?;
    let secret = cfg.gateway.secret.resolve().map_err(|e| anyhow!("{}: {e}", cfg.file.display()))?;
    let g = &cfg.gateway;
    let gateway = Iamport::new(&g.base_url, &g.imp_key, secret, g.timeout, g.concurrency).with_rate_limit(g.rate_limit);
    Ok((Engine::new(store, gateway, cfg), lock))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn tick(path: &Path, now: DateTime<Utc>, simulate: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    crate::simulate::check_as_of(&cfg, now, Utc::now(), simulate)?;
    let (engine, _lock) = engine(cfg)?;
    let started = std::time::Instant::now();
    let report = runtime()?.block_on(engine.pass(now))?;
    report.log_done(now, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn sync(path: &Path, dry_run: bool, force: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let mut store = Store::open(&cfg.billing.database)?;
    let today = cfg.billing.clock.local_date(Utc::now());
    let show = |plan: &crate::sync::SyncPlan| {
        for w in &plan.warnings {
            println!("warning: {w}");
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        for c in &plan.changes {
            match c {
                crate::sync::Change::Insert(s) => {
                    println!(
                        "add     {} ({} {} {}, plan {}, start {})",
                        s.id, s.amount, s.currency, s.interval, s.plan_id, s.start_date
                    )
                }
                crate::sync::Change::Update { after, what, .. } => {
                    println!("update  {}: {}", after.id, what.join("; "))
                }
                crate::sync::Change::Cancel { id, reason } => println!("cancel  {id}: {reason}"),
            }
        }
        if plan.is_empty() {
            println!("in sync: nothing to change");
        }
    };
    if dry_run {
        let plan = crate::sync::plan(&cfg, &store.config_subscriptions()?, today);
        show(&plan);
        if !plan.is_empty() {
            println!("dry run: nothing changed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Planned and applied in one write transaction, from the rows as they are in it (a pass running meanwhile is
    // never overwritten with a stale read).
    let mut refused = false;
    let plan = store.sync_with(&cfg.billing.clock, Utc::now().timestamp(), |subs, active| {
        let plan = crate::sync::plan(&cfg, subs, today);
        show(&plan);
        if !plan.is_empty() && !force && !crate::sync::cancel_allowed(plan.cancels(), active) {
            refused = true;
            bail!(
                "refusing: this would cancel {} of {active} billed subscriptions (more than 10%); check {} or pass \
                 --force",
                plan.cancels(),
                cfg.file.display()
            );
        }
        Ok(plan)
    });
    match plan {
        Ok(plan) if !plan.is_empty() => println!("applied {} change(s)", plan.changes.len()),
        Ok(_) => {}
        Err(e) if refused => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

fn sandbox(
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
