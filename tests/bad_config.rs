//! The corpus of broken `schedules.toml` files in `tests/bad_configs/`: each file breaks a valid skeleton
//! (`_good.toml`) in one place and lists what its error must say in `# expect: …` lines. `billd check` must exit 1
//! with an error that names the file and the key, and `billd tick` must refuse to run (charging nothing).

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

fn billd(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("BILLD_GATEWAY__IMP_SECRET", "s")
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
        if stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n{stderr}", problems.join(", ")));
        }
        // In-process too: the same refusal from the library's parser.
        let parsed = billd::config::parse_str(&text, &copy);
        assert!(parsed.is_err(), "{name}: parse_str accepted it");
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
