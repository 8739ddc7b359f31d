//! Log output: a readable console by default, JSON lines with `--log-format json`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Log timestamps: UTC, RFC 3339, to the millisecond (`2025-04-30T01:00:00.123Z`).
struct UtcMillis;

impl FormatTime for UtcMillis {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

/// The filter when `BILLD_LOG` is not set: billd's own events at INFO; the libraries' chatter (the scheduler
/// crate's start-up lines) only from WARN.
const DEFAULT_FILTER: &str = "info,tokio_cron_scheduler=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Console,
    /// One JSON object per line on stderr.
    Json,
}

/// Where a fatal error is reported: once, in the form the log's reader expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// A plain `billd: …` line on stderr (console logs on a terminal or a file).
    Stderr,
    /// A log event (JSON lines, or the journal, where a plain stderr line would be a second, unstructured copy).
    Log,
}

/// Installs the global subscriber. The level comes from `BILLD_LOG` (default `info`). Under systemd (stderr
/// connected to the journal) console logs go to journald with structured fields such as `EVENT=charge.failed`.
/// Returns where fatal errors are to be reported.
pub fn init(format: LogFormat) -> Fatal {
    let filter = EnvFilter::try_from_env("BILLD_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let journal = format == LogFormat::Console && std::env::var_os("JOURNAL_STREAM").is_some();
    if let Some(layer) = journal.then(tracing_journald::layer).and_then(Result::ok) {
        use tracing_subscriber::layer::SubscriberExt;
        let layer = layer.with_field_prefix(None).with_syslog_identifier("billd".into());
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(filter).with(layer));
        return Fatal::Log;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_timer(UtcMillis)
        .with_ansi(ansi);
    match format {
        LogFormat::Console => {
            let _ = builder.try_init();
            Fatal::Stderr
        }
        LogFormat::Json => {
            let _ = builder.json().flatten_event(true).with_current_span(false).try_init();
            Fatal::Log
        }
    }
}
