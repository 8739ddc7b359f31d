//! The `billd` command line: parses arguments, sets up logging and hands over to `billd::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = billd::cli::Args::parse();
    billd::logging::init(args.log_format);
    match billd::cli::main(args) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("billd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
