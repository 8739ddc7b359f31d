//! The `billd` command line: parses arguments, sets up logging and hands over to `billd::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // First of all: no core dump (nor ptrace by another process of the same user) of a process that holds the
    // imp_secret, access tokens and, for key-in, card data. The unit sets LimitCORE=0 as well.
    // SAFETY: PR_SET_DUMPABLE takes a plain integer and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!("billd: warning: cannot make the process non-dumpable: {}", std::io::Error::last_os_error());
    }
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
