//! Help that helps (issue 15, point 8): every command, flag and argument is described; `--status` lists its
//! values; `run --help` says what SIGHUP, SIGTERM and `[metrics]` do; `upcoming --as-of` exists.

use clap::CommandFactory;

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path} {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        let name = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_name() != "help" {
            missing.push(format!("{name} (the command)"));
        }
        walk(sub, &name, missing);
    }
}

#[test]
fn every_command_flag_and_argument_is_described() {
    let cmd = billd::cli::Args::command();
    let mut missing = Vec::new();
    walk(&cmd, "billd", &mut missing);
    assert!(missing.is_empty(), "without a description:\n{}", missing.join("\n"));
}

#[test]
fn the_help_says_what_an_operator_needs() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("billd")).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let run = help(&["run", "--help"]);
    for needle in ["SIGTERM", "SIGHUP", "[metrics]", "/healthz"] {
        assert!(run.contains(needle), "run --help does not mention {needle}:\n{run}");
    }
    let subs = help(&["subscriptions", "--help"]);
    // --status takes every status billd shows.
    let all: Vec<&str> = billd::billing::model::Status::ALL.iter().map(|s| s.as_str()).collect();
    assert!(subs.contains(&all.join(", ")), "{subs}");
    assert!(subs.contains("trialing, active, past_due, canceling, suspended, canceled, completed"), "{subs}");
    assert!(help(&["upcoming", "--help"]).contains("--as-of"));
}
