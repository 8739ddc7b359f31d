//! The corpus of broken `schedules.toml` files in `tests/bad_configs/`: each file breaks a valid skeleton
//! (`_good.toml`) in one place and lists what its error must say in `# expect: …` lines (and must not say in
//! `# not: …` lines). `billd check` must exit 1
//! with an error that names the file and the key, and `billd tick` must refuse to run (charging nothing), never
//! panicking. Values at the edges of what is accepted run without a panic (`extreme_accepted_values_never_panic`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn expectations(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("# expect: ")).map(str::trim_end).collect()
}

/// What the error must not say (`# not: …` lines): a serde type name, a message that hides the key's own.
fn exclusions(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("# not: ")).map(str::trim_end).collect()
}

fn billd(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("BILLD_GATEWAY__IMP_SECRET", "s")
        .env_remove("BILLD_WEBHOOKS__SECRET")
        .env_remove("BILLD_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("BILLD_GATEWAY__CONCURRENCY")
        .output()
        .unwrap()
}

#[test]
fn every_broken_config_is_refused_naming_the_file_and_the_key() {
    let files = corpus();
    assert!(files.len() >= 40, "the corpus has only {} files", files.len());
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // A copy in a temp folder, so a config that did load could not write a database into the repo.
        let copy = tmp.path().join(&name);
        std::fs::copy(file, &copy).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        let out = billd(&copy, &["check"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if name.starts_with('_') {
            assert!(out.status.success(), "{name} is the valid skeleton and must pass: {stderr}");
            continue;
        }
        let needles = expectations(&text);
        assert!(!needles.is_empty(), "{name} has no `# expect:` line");
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        if !stderr.contains(&copy.display().to_string()) {
            problems.push("the file is not named".to_string());
        }
        for n in needles {
            if !stderr.contains(n) {
                problems.push(format!("{n:?} missing"));
            }
        }
        for n in exclusions(&text) {
            if stderr.contains(n) {
                problems.push(format!("{n:?} said"));
            }
        }
        if stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n{stderr}", problems.join(", ")));
        }
        // In-process too: the same refusal from the library's parser.
        let parsed = billd::config::parse_str(&text, &copy);
        assert!(parsed.is_err(), "{name}: parse_str accepted it");
        // And `tick` refuses it too: exit 1 naming the file, never a panic (101).
        let out = billd(&copy, &["tick", "--as-of", "2025-03-01T10:00:00+09:00"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || stderr.contains("panicked") || !stderr.contains(&copy.display().to_string())
        {
            failures.push(format!("{name}: tick exited {:?}\n{stderr}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{} of {} files:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[test]
fn a_broken_config_stops_tick_before_any_database_or_charge() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs/absurd_amount.toml");
    let copy = tmp.path().join("schedules.toml");
    std::fs::copy(src, &copy).unwrap();
    let out = billd(&copy, &["tick", "--as-of", "2025-01-31T10:00:00+09:00"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schedules.toml") && stderr.contains("plans[0]"), "{stderr}");
    assert!(!tmp.path().join("billd.sqlite3").exists(), "a database was created from a config that failed");
}

/// A fatal error is reported once: a plain `billd: …` line on the console, one JSON event with `--log-format json`
/// (no plain copy in a stream of JSON lines).
#[test]
fn a_fatal_error_is_reported_once_in_the_log_format_asked_for() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs/does-not-exist.toml");
    let out = billd(&config, &["tick"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("1 problem in the config").count(), 1, "console: {stderr}");
    assert!(stderr.starts_with("billd: ") && stderr.contains("config file not found"), "console: {stderr}");

    let out = billd(&config, &["--log-format", "json", "tick"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "json: {stderr}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["event"], "billd.failed");
    assert!(event["message"].as_str().unwrap().contains("does-not-exist.toml"), "{event}");
}

/// Every numeric, duration and date key at the edge of what `check` accepts: `check` passes, and `tick` (the same
/// start-up as `run`: config, store, gateway client with its rate limiter) bills without a panic. Before,
/// `rate_limit = 1e-300` passed `check` and panicked every `tick` and `run` (exit 101); now the values that would
/// are refused (the `rate_limit_*` files above).
#[test]
fn extreme_accepted_values_never_panic() {
    let sandbox = billd_sandbox::Sandbox::start(billd_sandbox::SandboxConfig::default()).unwrap();
    sandbox.register_customer("cust-0001", billd_sandbox::cards::APPROVE).unwrap();
    let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs/_good.toml"))
        .unwrap()
        .replace("http://127.0.0.1:9", &sandbox.base_url())
        .replace("imp_key = \"k\"", "imp_key = \"imp_sandbox_key\"")
        .replace("start = \"2025-01-31\"", "start = \"2025-01-31\"\ncatch_up = true");
    // (what to replace, with what, the instant of the tick); the rate limit's tick has nothing due (a request every
    // 1000 seconds would make it wait), every other one charges.
    let due = "2025-01-31T10:00:00+09:00";
    let cases: &[(&str, &str, &str)] = &[
        ("concurrency = 4", "concurrency = 4\nrate_limit = 0.001", "2025-01-30T10:00:00+09:00"),
        ("concurrency = 4", "concurrency = 4\nrate_limit = 1000000", due),
        ("concurrency = 4", "concurrency = 1024", due),
        ("timeout = \"30s\"", "timeout = \"365d\"", due),
        ("timeout = \"30s\"", "timeout = \"1ms\"", due),
        ("retry_after = [\"1d\", \"2d\", \"4d\"]", "retry_after = [\"365d\", \"1ms\"]", due),
        ("retry_after = [\"1d\", \"2d\", \"4d\"]", "retry_after = []", due),
        ("max_amount = 10000000", "max_amount = 1000000000000", due),
        ("max_charges_per_pass = 100000", "max_charges_per_pass = 9223372036854775807", due),
        ("interval = \"1 month\"", "interval = \"1000 years\"", due),
        ("interval = \"1 month\"", "interval = \"1000 days\"", due),
        ("start = \"2025-01-31\"", "start = \"9999-12-31\"", "9999-12-31T10:00:00+09:00"),
        ("start = \"2025-01-31\"", "start = \"1970-01-01\"", "1970-01-01T10:00:00+09:00"),
        ("charge_time = \"10:00\"", "charge_time = \"23:59:59\"", "2025-02-01T00:00:00+09:00"),
    ];
    let mut failures = Vec::new();
    for (i, (from, to, as_of)) in cases.iter().enumerate() {
        assert!(good.contains(from), "{from}");
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("schedules.toml");
        // A merchant_uid of its own for each case (one sandbox serves them all).
        let text = good
            .replacen(from, to, 1)
            .replace("merchant_uid_prefix = \"billd\"", &format!("merchant_uid_prefix = \"c{i}\""));
        std::fs::write(&config, text).unwrap();
        let charges_before = sandbox.ledger().len();
        let check = Command::new(assert_cmd::cargo::cargo_bin("billd"))
            .arg("--config")
            .arg(&config)
            .arg("check")
            .env("BILLD_GATEWAY__IMP_SECRET", "imp_sandbox_secret")
            .env_remove("BILLD_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let tick = Command::new(assert_cmd::cargo::cargo_bin("billd"))
            .arg("--config")
            .arg(&config)
            .args(["tick", "--simulate", "--as-of", as_of])
            .env("BILLD_GATEWAY__IMP_SECRET", "imp_sandbox_secret")
            .env_remove("BILLD_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
        if !check.status.success() {
            failures.push(format!("case {i} ({to}): check refused it: {}", said(&check)));
        }
        if tick.status.code() != Some(0) || said(&tick).contains("panicked") {
            failures.push(format!("case {i} ({to}): tick exited {:?}: {}", tick.status.code(), said(&tick)));
        }
        let charged = sandbox.ledger().len() - charges_before;
        // With a 1 ms timeout the token or the charge may time out on a busy machine (then the charge is unknown,
        // settled by a later pass): that case must not panic, and must not charge twice; it need not charge.
        let may_time_out = *to == "timeout = \"1ms\"";
        if i > 0 && (charged > 1 || (charged == 0 && !may_time_out)) {
            failures.push(format!("case {i} ({to}): {charged} charges instead of the one due"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
