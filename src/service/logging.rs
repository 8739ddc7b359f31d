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
    // The PostgreSQL client's own lines are never written, whatever BILLD_LOG says: they carry the server's notices
    // as it sent them (raw control characters) and, at debug level, every statement's parameters. billd says what
    // matters itself, cleaned.
    let filter = filter.add_directive("tokio_postgres=off".parse().expect("a directive"));
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
        .with_writer(OneLine { ansi })
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

/// stderr for log lines: whatever a field holds (a path, an error, a value from outside), a line stays one line and
/// reaches the terminal as text. Every control or invisible format character but the line's own final newline is
/// written escaped (`\u{a}`); ESC is kept only for the colors of a terminal (`ansi`), as the fields billd logs from
/// outside are cleaned of it already.
struct OneLine {
    ansi: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> OneLineWriter {
        OneLineWriter { ansi: self.ansi }
    }
}

struct OneLineWriter {
    ansi: bool,
}

impl OneLineWriter {
    fn escaped(&self, c: char) -> bool {
        crate::text::invisible(c) && !(self.ansi && c == '\u{1b}')
    }
}

impl std::io::Write for OneLineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let mut stderr = std::io::stderr().lock();
        if !body.chars().any(|c| self.escaped(c)) {
            stderr.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = String::with_capacity(buf.len() + 16);
        for c in body.chars() {
            if self.escaped(c) {
                line.extend(c.escape_unicode());
            } else {
                line.push(c);
            }
        }
        line.push_str(end);
        stderr.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::OneLineWriter;

    #[test]
    fn a_line_stays_one_line_whatever_its_fields_hold() {
        let w = OneLineWriter { ansi: false };
        for c in ['\n', '\r', '\u{1b}', '\u{7}', '\u{85}', '\u{2028}', '\u{202e}'] {
            assert!(w.escaped(c), "{c:?}");
        }
        assert!(!w.escaped('a') && !w.escaped('한') && !w.escaped(' '));
        assert!(!OneLineWriter { ansi: true }.escaped('\u{1b}'), "a terminal keeps its colors");
    }
}
