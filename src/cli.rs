//! The command line: argument definitions, and the dispatch of each command to `commands` (or `service` for `run`) (long: every command's flags and their help text are kept together, as `--help` shows them).

use crate::billing::model::Status;
use crate::config;
use crate::service::logging::LogFormat;
use crate::store::ChangeTiming;
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

// Parsed once per run: the size of its largest variant (`subscriptions add` and its terms) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the scheduler daemon.
    ///
    /// It charges each period when it falls due (waking at least every minute), reconciling first what a stopped
    /// process left unresolved. SIGTERM or SIGINT: in-flight charges finish and are recorded, then it exits 0.
    /// SIGHUP: schedules.toml is reloaded and applied (an invalid file is refused and the running config stays;
    /// gateway, database, metrics and notices settings need a restart). With `[metrics] listen = "ADDR"` it serves
    /// Prometheus text at /metrics and a health check at /healthz (503 when the loop has stalled, the config is
    /// refused, the gateway refuses the credentials, the last pass was a mass rejection, or a safety stop holds). With
    /// `[notices] listen = "ADDR"` it takes i'mport's notifications at POST /iamport/notice (never believed: each
    /// payment is looked up, and only what the lookup shows is settled). Only one `run` or `tick` may use a SQLite
    /// book at a time; several share a PostgreSQL book (`billd status` lists them).
    Run {
        /// Start the billing clock at this instant (RFC 3339) instead of now; it then advances with the real clock
        /// (--speed times as fast). More than a minute in the future it is refused unless --simulate, as for `tick`.
        /// The quiet periods of requests in doubt stay on the real clock.
        #[arg(long, value_name = "RFC3339")]
        as_of: Option<String>,
        /// Simulated time (tests and demos against a sandbox on this machine only): allows a future --as-of and
        /// --speed; every period due on the simulated clock is charged, for real, at gateway.base_url. The start-up
        /// line, STATUS and /healthz show the simulated instant.
        #[arg(long)]
        simulate: bool,
        /// With --simulate: the billing clock runs this many times as fast as the real one (86400: a day a second);
        /// the sleeps until the next charge are shortened to match.
        #[arg(long, default_value_t = 1, requires = "simulate", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        speed: u32,
    },
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
    ///
    /// With --as-of, the warning about new entries a pass would refuse (a start more than one period back) is judged
    /// as on that day.
    Check {
        /// Also ask the gateway for an access token: does it accept gateway.imp_key and its imp_secret?
        #[arg(long)]
        online: bool,
        #[command(flatten)]
        view: ViewAsOf,
    },
    /// Apply schedules.toml to the database.
    ///
    /// With --as-of, it is applied as on that day: a config subscription starting more than one period before it is
    /// refused (unless catch_up), and the changes are recorded at that instant.
    Sync {
        /// Show what would change without changing it.
        #[arg(long)]
        dry_run: bool,
        /// Allow canceling more than 10% of the billed subscriptions at once.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// List subscriptions, or add one (`billd subscriptions add`).
    ///
    /// With --as-of, the config's subscriptions not synced yet are listed as a sync on that day would add them.
    #[command(args_conflicts_with_subcommands = true)]
    Subscriptions {
        #[command(subcommand)]
        action: Option<SubscriptionsCommand>,
        /// Only subscriptions in this state.
        #[arg(long, value_name = "STATUS", value_parser = status_arg())]
        status: Option<Status>,
        /// Print them as JSON (times RFC 3339 with the billing time zone's offset).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        view: ViewAsOf,
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
        /// The amount in whole won (KRW), sent to the gateway as it is.
        #[arg(long)]
        amount: i64,
        /// The order name the customer sees (1-40 characters).
        #[arg(long)]
        name: String,
        /// Also save the card as this billing key once the charge is paid (never when it is not).
        #[arg(long)]
        customer_uid: Option<String>,
        /// With --customer-uid: replace the card of that billing key if it exists (every subscription of it then
        /// charges the new card). Without it, an existing key is refused before anything is sent.
        #[arg(long, requires = "customer_uid")]
        replace_key: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// Charge a billing key already stored at the gateway once (an add-on, an overage), no card needed.
    ///
    /// Exactly once per merchant_uid, like charge-once: the intent is recorded first, a rerun answers with the
    /// recorded outcome (exit 0 when paid, nothing sent), and a lost answer stays unknown until a lookup after the
    /// quiet period. Refused while a safety stop holds billing (unless --despite-safety-stop) and above
    /// limits.max_amount (unless --above-max-amount).
    ChargeKey {
        /// The billing key to charge (it must be at the gateway: it is asked first).
        customer_uid: String,
        /// The order's id at the gateway (1-40 characters, not starting with billd's merchant_uid_prefix and '-' in
        /// any case, not used by any period or other one-time charge in any case).
        #[arg(long)]
        merchant_uid: String,
        /// The amount in whole won (KRW), sent to the gateway as it is.
        #[arg(long)]
        amount: i64,
        /// The order name the customer sees (1-40 characters).
        #[arg(long)]
        name: String,
        /// Tie the charge to this subscription (it must charge CUSTOMER_UID): `subscriptions show` lists it.
        #[arg(long, value_name = "ID")]
        subscription: Option<String>,
        /// Allow an amount above limits.max_amount (refused without it).
        #[arg(long)]
        above_max_amount: bool,
        /// Charge even while a safety rail stops billing (`billd safety`); refused without it.
        #[arg(long)]
        despite_safety_stop: bool,
        #[command(flatten)]
        at: AsOf,
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
        #[arg(long, value_name = "ID", conflicts_with = "one_time")]
        subscription: Option<String>,
        /// Only one-time charges (`charge-once`, and `charge-key`: KIND one-time-key).
        #[arg(long)]
        one_time: bool,
        /// Print them as JSON (times RFC 3339 with the billing time zone's offset; with --follow, one per line).
        #[arg(long)]
        json: bool,
        /// Keep running and print new attempts as they are recorded (with --failed: new failures).
        #[arg(long)]
        follow: bool,
    },
    /// Refund a paid charge, in part or whole (at most once: a lost answer is settled by a lookup, never resent). A
    /// refund is its merchant_uid, amount and reason: rerunning one already made (by billd, or listed at the gateway
    /// as made outside billd) sends nothing (exit 0); to refund the same amount again on purpose, give another
    /// --reason.
    Refund {
        /// The charge's merchant_uid, exactly as `billd charges` lists it.
        merchant_uid: String,
        /// Whole won to refund (default: all that remains).
        #[arg(long)]
        amount: Option<i64>,
        /// Why (sent to the gateway and kept; 1-200 characters, something visible, no card number, not the
        /// imp_secret, and text the gateway gives back unchanged: no run of 6 or more digits, no invisible or control
        /// character, no %XX or \uXXXX sequence). With the merchant_uid and amount it names the refund, exactly:
        /// another reason is another refund.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        at: AsOf,
    },
    /// List refunds (billd's and those found at the gateway).
    Refunds {
        /// Only refunds made on or after this date (YYYY-MM-DD, billing timezone) or instant (RFC 3339); with
        /// --sync, only charges paid since then are looked up.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Print them as JSON (times RFC 3339 with the billing time zone's offset).
        #[arg(long)]
        json: bool,
        /// First look every paid charge up at the gateway: settles refunds in doubt and records refunds made
        /// outside billd (i'mport's console).
        #[arg(long)]
        sync: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// What will be charged when, per day, with totals.
    ///
    /// A subscription's credit (from plan changes) pays its next periods first: each is listed at what is charged
    /// after it, and one the credit pays whole as `paid by credit`, out of the totals.
    ///
    /// With --as-of, it looks ahead from that instant: what fell due before it and is not charged is overdue.
    Upcoming {
        /// How many days ahead (default 30).
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[command(flatten)]
        view: ViewAsOf,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop charging a subscription (it becomes suspended) until it is resumed.
    Pause {
        /// The subscription id.
        subscription: String,
        /// Resume by itself on this local date (YYYY-MM-DD, billing.timezone), at its first instant, even if no pass
        /// runs then: periods due while paused (before it) are skipped, as with `resume`; those due after it are
        /// charged. Refused for a subscription dunning suspended (`billd reactivate` restarts it).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// With --until: charge the periods that fell due while paused when it resumes.
        #[arg(long, requires = "until")]
        catch_up: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// Resume a suspended subscription. Periods whose due time fell inside the pause are skipped unless --catch-up;
    /// a period that fell due before the pause and was never charged is charged. One dunning suspended is refused
    /// (`billd reactivate` restarts it).
    Resume {
        /// The subscription id.
        subscription: String,
        /// Charge the periods that fell due while it was suspended too.
        #[arg(long)]
        catch_up: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// The book itself: `copy` moves a whole book, with its history, between SQLite and PostgreSQL.
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
    /// The daemons sharing the book: host, pid, version, last heartbeat, lease, charges each holds, and which does
    /// the one-at-a-time jobs (config sync, sweeps); those that left in the last day too.
    Status {
        /// One JSON array of daemons.
        #[arg(long)]
        json: bool,
    },
    /// Whether a safety rail (limits.max_charges_per_pass) stopped billing; `release` lifts the stop.
    Safety {
        #[command(subcommand)]
        action: Option<SafetyCommand>,
    },
    /// Cancel a subscription for good (its history is kept).
    Cancel {
        /// The subscription id.
        subscription: String,
        /// Bill it until the end of the period in force, then cancel it (it is `canceling` meanwhile): no period
        /// due then or later is charged.
        #[arg(long)]
        at_period_end: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// Charge a past-due subscription's open period now (same exactly-once rules as scheduled charges); no other
    /// subscription is charged.
    Retry {
        /// The subscription id.
        subscription: String,
        #[command(flatten)]
        at: AsOf,
    },
    /// Reactivate a subscription that dunning canceled or suspended (the customer has registered a card that pays):
    /// billing continues with the next period due after now, from its original anchor; with --charge-now, the period
    /// whose retries ran out is charged now first (no other subscription is charged). One an operator or a sync
    /// stopped is not reactivated, nor one that would bill nothing without --charge-now (exit 1).
    Reactivate {
        /// The subscription id.
        subscription: String,
        /// Charge the period whose retries ran out now, under its own merchant_uid.
        #[arg(long)]
        charge_now: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// The events sent to the merchant's app, with their delivery state and what happens next to each.
    ///
    /// Every event is posted to webhooks.url, signed per Standard Webhooks 1.0 with the webhook secret (from
    /// BILLD_WEBHOOKS__SECRET, webhooks.secret_file or $CREDENTIALS_DIRECTORY/webhook_secret), by `billd run` (and
    /// at the end of each `billd tick`). `replay` sends events again; `new-secret` prints a fresh signing secret.
    #[command(args_conflicts_with_subcommands = true)]
    Webhooks {
        #[command(subcommand)]
        action: Option<WebhooksCommand>,
        /// Only events given up (not delivered within webhooks.max_age).
        #[arg(long)]
        failed: bool,
        /// Only events created on or after this date (YYYY-MM-DD, billing timezone) or instant (RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Print them as JSON (times RFC 3339 with the billing time zone's offset).
        #[arg(long)]
        json: bool,
    },
    /// Add subscriptions from a CSV file (header `id,customer_uid,plan,start`; kept in the database only).
    ///
    /// With --as-of, it imports as on that day: a start more than one interval before it is refused (unless
    /// --catch-up), and the rows are recorded at that instant.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Accept start dates more than one interval ago (every period since the start is charged at once).
        #[arg(long)]
        catch_up: bool,
        #[command(flatten)]
        at: AsOf,
    },
}

#[allow(clippy::large_enum_variant)]
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
    /// Change a subscription's plan: at period end (the next period bills the new plan; nothing is charged today),
    /// or now (the current paid period is settled pro rata by seconds: an upgrade's difference is charged once, a
    /// downgrade's is credited to the next periods).
    ///
    /// --now settles the period in force at its own plan and interval, whatever is scheduled after it, and replaces
    /// a change scheduled at period end, and says how its amount was computed. A new interval restarts at the
    /// change; its next charge is one interval after the first charge time at or after the change. A change dated
    /// before the last one is refused, and so is one whose next period never opens (a canceling subscription's last
    /// period, a term's end). The new plan's fixed term (`periods`, counted from the first charge) applies with the
    /// change unless the subscription has its own; a trial end already promised is kept.
    ///
    /// Exit 0: changed (or already on that plan); 1: its charge was not paid, or its outcome is unknown (the message
    /// says when to rerun; a rerun settles it by lookup and never charges twice).
    #[command(group = clap::ArgGroup::new("when").required(true).args(["at_period_end", "now"]))]
    Change {
        /// The subscription id.
        id: String,
        /// A [[plans]] id of the config (for a subscription from the config file, the plan its entry names).
        #[arg(long)]
        plan: String,
        /// The next period bills the new plan.
        #[arg(long)]
        at_period_end: bool,
        /// Settle the current paid period now, pro rata (replaces a change scheduled at period end).
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        at: AsOf,
    },
    /// Add a subscription kept in the database (a config sync never cancels it).
    ///
    /// It gets its plan's trial and fixed term, as a `[[subscriptions]]` entry does (trialing until its first charge
    /// when the trial ends); the flags below set its own, as the entry's keys do.
    ///
    /// With --as-of, it is added as on that day: the default --start is that date, a first charge more than one
    /// period before it is refused (unless --catch-up), and --charge-now charges at that instant. A card's expiry is
    /// still checked against the real date.
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
        /// Its signup date (YYYY-MM-DD, billing timezone); default today. Its first charge falls due then, or when
        /// its trial ends (the plan's `trial`, or --trial-ends); later periods keep that anchor.
        #[arg(long)]
        start: Option<String>,
        #[command(flatten)]
        terms: SubscriptionTerms,
        /// Register the card (stdin JSON or prompt) as the billing key first.
        #[arg(long)]
        register_card: bool,
        /// With --register-card: replace the card of an existing billing key (every subscription of it then charges
        /// the new card). Without it, an existing key is refused before anything is done.
        #[arg(long, requires = "register_card")]
        replace_key: bool,
        /// Charge the first period now (this subscription only: no other one due is charged; refused with a trial:
        /// its first charge falls due when the trial ends).
        #[arg(long)]
        charge_now: bool,
        /// A --start more than one period back is meant: charge every period since then (refused without it).
        #[arg(long)]
        catch_up: bool,
        #[command(flatten)]
        at: AsOf,
    },
}

/// What `subscriptions add` may say of a subscription besides its plan: the keys a `[[subscriptions]]` entry has,
/// checked by the same rules and messages (`billing::terms::check`), each error naming its flag (exit 1, nothing
/// added).
#[derive(clap::Args, Debug, Default)]
pub struct SubscriptionTerms {
    /// Its own trial end (YYYY-MM-DD, on or after --start): its first charge falls due that day, instead of after
    /// the plan's trial (--trial-ends equal to --start: no trial).
    #[arg(long, value_name = "DATE")]
    pub trial_ends: Option<String>,
    /// Its own fixed term: this many periods (instead of the plan's `periods`), then it is completed.
    #[arg(long, value_name = "N")]
    pub periods: Option<i64>,
    /// Its own fixed term: the periods due up to this day (YYYY-MM-DD), then it is completed.
    #[arg(long, value_name = "DATE")]
    pub end: Option<String>,
    /// Cancel at period end: no period due on or after this day (YYYY-MM-DD) is charged; it is canceling until then.
    #[arg(long, value_name = "DATE")]
    pub cancel_at: Option<String>,
    /// Its own price in whole KRW (instead of the plan's; at most limits.max_amount).
    #[arg(long, value_name = "N")]
    pub amount: Option<i64>,
    /// A discount of this percent (1-99, the price rounded down) on its first --discount-periods periods.
    #[arg(long, value_name = "P")]
    pub discount_percent: Option<i64>,
    /// A discount of this many KRW on its first --discount-periods periods (never leaving less than 1).
    #[arg(long, value_name = "A")]
    pub discount_amount: Option<i64>,
    /// How many of its first periods the discount applies to.
    #[arg(long, value_name = "N")]
    pub discount_periods: Option<i64>,
}

impl SubscriptionTerms {
    fn flags(self) -> crate::commands::subscriptions::TermFlags {
        let SubscriptionTerms {
            trial_ends,
            periods,
            end,
            cancel_at,
            amount,
            discount_percent,
            discount_amount,
            discount_periods,
        } = self;
        crate::commands::subscriptions::TermFlags {
            trial_ends,
            periods,
            end,
            cancel_at,
            amount,
            discount_percent,
            discount_amount,
            discount_periods,
        }
    }
}

/// `--as-of` and `--simulate` for the commands that act at "now" and write it down (`pause`, `resume`, `cancel`,
/// `retry`, `sync`, `subscriptions add`, `import`, `charge-once`, `charge-key`, `refund`, `refunds --sync`), so that
/// they can follow a timeline simulated with `tick --as-of`.
/// The real instants of the exactly-once protocol (when a request left, its quiet period) stay real.
#[derive(clap::Args, Debug)]
pub struct AsOf {
    /// The instant the command acts at (RFC 3339); default now. More than a minute in the future it is refused
    /// unless --simulate (against a sandbox on this machine only), as for `tick`.
    #[arg(long, value_name = "RFC3339")]
    pub as_of: Option<String>,
    /// Allow an --as-of in the future (tests and demos against a sandbox).
    #[arg(long)]
    pub simulate: bool,
}

impl AsOf {
    /// The instant, and whether a future one is allowed (checked by `commands::simulate::check_as_of` once the
    /// config is read).
    fn at(&self) -> Result<(DateTime<Utc>, bool)> {
        let now = self.as_of.as_deref().map(parse_instant).transpose()?.unwrap_or_else(Utc::now);
        Ok((now, self.simulate))
    }

    /// The instant if one was given (a command then runs on a clock from it: `clock::BillingClock::command`), and
    /// whether a future one is allowed.
    fn given(&self) -> Result<(Option<DateTime<Utc>>, bool)> {
        Ok((self.as_of.as_deref().map(parse_instant).transpose()?, self.simulate))
    }
}

/// `--as-of` for the read-only commands whose output depends on "today" (`subscriptions`, `upcoming`, `check`): they
/// change nothing, so any instant is allowed, past or future, without `--simulate`.
#[derive(clap::Args, Debug)]
pub struct ViewAsOf {
    /// Show it as at this instant (RFC 3339; default now), to inspect a simulated timeline.
    #[arg(long, value_name = "RFC3339")]
    pub as_of: Option<String>,
}

impl ViewAsOf {
    fn at(&self) -> Result<DateTime<Utc>> {
        Ok(self.as_of.as_deref().map(parse_instant).transpose()?.unwrap_or_else(Utc::now))
    }
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Print a fresh webhook secret (whsec_ + base64 of 32 random bytes from the OS) on stdout, and nothing else.
    ///
    /// Give it to billd (BILLD_WEBHOOKS__SECRET, webhooks.secret_file or the systemd credential webhook_secret) and
    /// to the app that verifies the deliveries. It reads no config and keeps nothing.
    NewSecret,
    /// Send events again (delivered or given up; each with its own id as webhook-id and the same body), by the running
    /// daemon or the next `billd tick`: one event by id, or every one created since a date.
    Replay {
        /// The event's id (`evt_…`, as `billd webhooks` lists it).
        #[arg(required_unless_present = "since", conflicts_with = "since")]
        event_id: Option<String>,
        /// Every event created on or after this date (YYYY-MM-DD, billing timezone) or instant (RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// The instant of the replay (its events are due from then, and given up webhooks.max_age after it), to
        /// follow a simulated timeline.
        #[command(flatten)]
        at: AsOf,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a whole book (every subscription, period, attempt, event, refund, plan change and webhook event, with
    /// their ids) into an empty one: a SQLite file to a PostgreSQL database, or back. Refused if the target holds
    /// anything or a `billd run`/`tick` uses either book; the rows are counted on both sides at the end. A
    /// postgres:// URL takes the config's database password (never one in the URL).
    Copy {
        /// The book to copy: a SQLite file or a postgres:// URL.
        #[arg(long, value_name = "PATH_OR_URL")]
        from: String,
        /// The empty book to fill: a SQLite file (created if it does not exist) or a postgres:// URL (its database
        /// must exist; billd creates its tables).
        #[arg(long, value_name = "PATH_OR_URL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SafetyCommand {
    /// Confirm that billing may go on: the next pass may send up to limits.max_charges_per_pass charges again.
    Release,
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
        /// Replace the card of an existing billing key (every subscription of it then charges the new card).
        #[arg(long)]
        replace_key: bool,
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
        /// Delete it even though subscriptions that are not canceled charge it.
        #[arg(long)]
        force: bool,
    },
}

/// `--status`: any status billd shows, from the one list of them ([`Status::ALL`]).
fn status_arg() -> impl clap::builder::TypedValueParser<Value = Status> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Status::ALL.map(Status::as_str))
        .map(|s| Status::parse(&s).expect("one of Status::ALL"))
}

/// A listing whose reader goes away (`billd upcoming | head`) ends quietly, as Unix tools do, instead of panicking
/// on the closed pipe: the default SIGPIPE action, for the read-only listings only (never for a command that
/// charges or records, which must finish its writes to the book whatever happens to its output).
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread is started; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs a parsed command and returns the process exit code.
pub fn main(args: Args) -> Result<ExitCode> {
    let path = config::resolve_path(args.config.as_deref());
    let listing = matches!(
        &args.command,
        Command::Subscriptions { action: None | Some(SubscriptionsCommand::Show { .. }), .. }
            | Command::Charges { .. }
            | Command::Refunds { sync: false, .. }
            | Command::Upcoming { .. }
            | Command::Webhooks { action: None, .. }
    );
    if listing {
        end_quietly_on_a_closed_pipe();
    }
    match args.command {
        Command::Check { online, view } => crate::commands::check::check(&path, online, view.at()?),
        Command::Tick { as_of, simulate } => {
            let now = match as_of {
                Some(s) => parse_instant(&s)?,
                None => Utc::now(),
            };
            crate::commands::tick::tick(&path, now, simulate)
        }
        Command::Run { as_of, simulate, speed } => {
            let from = as_of.as_deref().map(parse_instant).transpose()?;
            crate::service::daemon::run(&path, crate::clock::Start { from, simulate, speed })
        }
        Command::Sync { dry_run, force, at } => crate::commands::tick::sync(&path, dry_run, force, at.at()?),
        Command::Subscriptions { action: None, status, json, view } => {
            crate::commands::subscriptions::list(&path, status, json, view.at()?)
        }
        Command::Subscriptions {
            action: Some(SubscriptionsCommand::Change { id, plan, at_period_end: _, now, at }),
            ..
        } => {
            let timing = if now { ChangeTiming::Now } else { ChangeTiming::PeriodEnd };
            crate::commands::change::change(&path, &id, &plan, timing, at.at()?)
        }
        Command::Subscriptions { action: Some(SubscriptionsCommand::Show { id, json }), .. } => {
            crate::commands::subscriptions::show(&path, &id, json)
        }
        Command::Subscriptions {
            action:
                Some(SubscriptionsCommand::Add {
                    id,
                    customer_uid,
                    plan,
                    start,
                    terms,
                    register_card,
                    replace_key,
                    charge_now,
                    catch_up,
                    at,
                }),
            ..
        } => crate::commands::subscriptions::add(
            &path,
            &id,
            &customer_uid,
            &plan,
            (start.as_deref(), &terms.flags()),
            crate::commands::subscriptions::AddOptions {
                register_card,
                replace_key,
                charge_now,
                catch_up,
                at: at.at()?,
            },
        ),
        Command::Customers { action } => match action {
            CustomersCommand::Register { customer_uid, pg, channel_key, channel_key_file, replace_key } => {
                let channel_key = secret_arg(channel_key, channel_key_file.as_deref(), "--channel-key-file")?;
                let (pg, channel_key) = (pg.as_deref(), channel_key.as_deref());
                crate::commands::customers::register(&path, &customer_uid, pg, channel_key, replace_key)
            }
            CustomersCommand::Show { customer_uid } => crate::commands::customers::show(&path, &customer_uid),
            CustomersCommand::Delete { customer_uid, reason, force } => {
                crate::commands::customers::delete(&path, &customer_uid, reason.as_deref(), force)
            }
        },
        Command::ChargeOnce { merchant_uid, amount, name, customer_uid, replace_key, at } => {
            let key =
                customer_uid.as_deref().map(|c| crate::commands::charge_once::SaveKey { customer_uid: c, replace_key });
            crate::commands::charge_once::charge_once(&path, &merchant_uid, amount, &name, key, at.given()?)
        }
        Command::ChargeKey {
            customer_uid,
            merchant_uid,
            amount,
            name,
            subscription,
            above_max_amount,
            despite_safety_stop,
            at,
        } => {
            let opts = crate::commands::charge_key::KeyOptions {
                subscription: subscription.as_deref(),
                above_max_amount,
                despite_safety_stop,
            };
            crate::commands::charge_key::charge_key(
                &path,
                &customer_uid,
                &merchant_uid,
                amount,
                &name,
                opts,
                at.given()?,
            )
        }
        Command::Sandbox { listen, imp_key, imp_secret, imp_secret_file, sandbox_config } => {
            let imp_secret = secret_arg(imp_secret, imp_secret_file.as_deref(), "--imp-secret-file")?;
            crate::commands::sandbox::sandbox(listen, imp_key, imp_secret, sandbox_config.as_deref())
        }
        Command::Charges { failed, since, subscription, one_time, json, follow } => {
            let only = match (subscription.as_deref(), one_time) {
                (Some(id), _) => crate::commands::charges::Only::Subscription(id),
                (None, true) => crate::commands::charges::Only::OneTime,
                (None, false) => crate::commands::charges::Only::All,
            };
            crate::commands::charges::charges(&path, failed, since.as_deref(), only, json, follow)
        }
        Command::Refund { merchant_uid, amount, reason, at } => {
            crate::commands::refunds::refund(&path, &merchant_uid, amount, &reason, at.given()?)
        }
        Command::Refunds { since, json, sync, at } => {
            crate::commands::refunds::refunds(&path, since.as_deref(), json, sync, at.given()?)
        }
        Command::Upcoming { days, view, json } => crate::commands::upcoming::upcoming(&path, days, view.at()?, json),
        Command::Pause { subscription, until, catch_up, at } => {
            let until = until.as_deref().map(|d| (d, catch_up));
            crate::commands::ops::pause(&path, &subscription, until, at.at()?)
        }
        Command::Resume { subscription, catch_up, at } => {
            crate::commands::ops::resume(&path, &subscription, catch_up, at.at()?)
        }
        Command::Cancel { subscription, at_period_end, at } => {
            crate::commands::ops::cancel(&path, &subscription, at_period_end, at.at()?)
        }
        Command::Store { action: StoreCommand::Copy { from, to } } => crate::commands::store::copy(&path, &from, &to),
        Command::Safety { action } => crate::commands::ops::safety(&path, action.is_some()),
        Command::Status { json } => crate::commands::status::status(&path, json),
        Command::Retry { subscription, at } => crate::commands::ops::retry(&path, &subscription, at.at()?),
        Command::Reactivate { subscription, charge_now, at } => {
            crate::commands::ops::reactivate(&path, &subscription, charge_now, at.at()?)
        }
        Command::Import { file, catch_up, at } => crate::commands::import::run(&path, &file, catch_up, at.at()?),
        Command::Webhooks { action: Some(WebhooksCommand::NewSecret), .. } => crate::commands::webhooks::new_secret(),
        Command::Webhooks { action: Some(WebhooksCommand::Replay { event_id, since, at }), .. } => {
            crate::commands::webhooks::replay(&path, event_id.as_deref(), since.as_deref(), at.at()?)
        }
        Command::Webhooks { action: None, failed, since, json } => {
            crate::commands::webhooks::list(&path, failed, since.as_deref(), json)
        }
    }
}

/// A secret given as a value (argv or its environment variable) or as a file (`flag`): the file wins; its trailing
/// newline is dropped.
fn secret_arg(value: Option<String>, file: Option<&Path>, flag: &str) -> Result<Option<String>> {
    let Some(file) = file else { return Ok(value) };
    let text = crate::trust::read(file, "secret file").map_err(|e| anyhow!("{flag}: {e}"))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        bail!("{flag} {}: the file is empty", file.display());
    }
    Ok(Some(secret.to_owned()))
}

/// Parses `--as-of`: RFC 3339 with an offset, in the years 1970 to 9999.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>> {
    let q = crate::text::quote(s);
    let t = DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| anyhow!("--as-of {q} is not an RFC 3339 instant (like 2025-03-01T10:00:00+09:00)"))?;
    if !config::YEARS.contains(&chrono::Datelike::year(&t)) {
        bail!("--as-of {q} is outside the years 1970 to 9999");
    }
    Ok(t)
}
