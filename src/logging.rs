//! Log output: a readable console by default, JSON lines with `--log-format json`.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Console,
    /// One JSON object per line on stderr.
    Json,
}

/// Installs the global subscriber. The level comes from `BILLD_LOG` (default `info`). Under systemd (stderr
/// connected to the journal) console logs go to journald with structured fields such as `EVENT=charge.failed`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BILLD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = format == LogFormat::Console && std::env::var_os("JOURNAL_STREAM").is_some();
    if let Some(layer) = journal.then(tracing_journald::layer).and_then(Result::ok) {
        use tracing_subscriber::layer::SubscriberExt;
        let layer = layer.with_field_prefix(None).with_syslog_identifier("billd".into());
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(filter).with(layer));
        return;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Console => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}
