//! The `billd` command line: parses arguments, sets up logging and hands over to `billd::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = billd::cli::Args::parse();
    let fatal = billd::service::logging::init(args.log_format);
    match billd::cli::main(args) {
        Ok(code) => code,
        Err(e) => {
            // Once: a plain line for a reader of the console, an event for a reader of JSON lines or the journal.
            match fatal {
                billd::service::logging::Fatal::Stderr => eprintln!("billd: {e:#}"),
                billd::service::logging::Fatal::Log => tracing::error!(event = "billd.failed", "{e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}
