//! `schedules.toml` validation through the real binary: every error names the file and the key.

mod common;

use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"
[billing]
timezone = "Asia/Seoul"
charge_time = "10:00"
database = "billd.sqlite3"

[gateway]
base_url = "http://127.0.0.1:9"
imp_key = "k"
timeout = "30s"
concurrency = 4

[dunning]
retry_after = ["1d", "2d"]
on_exhausted = "suspend"

[[plans]]
id = "p"
name = "Plan"
amount = 9900
interval = "1 month"

[[subscriptions]]
id = "s1"
customer_uid = "c1"
plan = "p"
start = "2025-01-31"
"#;

fn check(dir: &Path, text: &str) -> (bool, String, String) {
    let path = dir.join("schedules.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(["--config", path.to_str().unwrap(), "check"])
        .env("BILLD_GATEWAY__IMP_SECRET", "s")
        .env_remove("BILLD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_good_config_and_the_repo_example_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = check(dir.path(), GOOD);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("OK (1 plan, 1 subscription;"), "{stdout}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules.toml");
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(["--config", example.to_str().unwrap(), "check"])
        .env_remove("BILLD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn each_broken_config_names_the_file_and_the_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "impossible date",
            "start = \"2025-01-31\"|start = \"2025-02-30\"",
            &["subscriptions[0]", "start", "2025-02-30"],
        ),
        ("zero amount", "amount = 9900|amount = 0", &["plans[0]", "amount"]),
        ("negative amount", "amount = 9900|amount = -5", &["plans[0]", "amount"]),
        ("absurd amount", "amount = 9900|amount = 99000000000", &["plans[0]", "amount", "max_amount"]),
        ("unknown plan", "plan = \"p\"|plan = \"nope\"", &["subscriptions[0]", "plan", "nope"]),
        ("bad zone", "Asia/Seoul|Asia/Nowhere", &["billing.timezone", "Asia/Nowhere"]),
        ("bad duration", "\"30s\"|\"30 parsecs\"", &["gateway.timeout"]),
        ("bad retry", "\"2d\"]|\"2x\"]", &["dunning.retry_after[1]"]),
        ("bad action", "\"suspend\"|\"explode\"", &["dunning.on_exhausted", "explode"]),
        ("unknown key", "charge_time = \"10:00\"|charge_tme = \"10:00\"", &["charge_tme"]),
        ("wrong type", "concurrency = 4|concurrency = \"four\"", &["gateway.concurrency"]),
        (
            "long name",
            "name = \"Plan\"|name = \"A plan whose name is far longer than forty characters\"",
            &["plans[0]", "name", "40"],
        ),
        ("bad interval", "\"1 month\"|\"1 fortnight\"", &["plans[0]", "interval", "fortnight"]),
        ("bad time", "\"10:00\"|\"25:00\"", &["billing.charge_time"]),
        ("bad url", "http://127.0.0.1:9|not a url", &["gateway.base_url"]),
        ("syntax", "[billing]|[billing", &["line"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, edit, needles) in cases {
        let (from, to) = edit.split_once('|').unwrap();
        assert!(GOOD.contains(from), "{what}: the fixture lacks {from:?}");
        let (ok, _, stderr) = check(dir.path(), &GOOD.replacen(from, to, 1));
        assert!(!ok, "{what}: accepted");
        assert!(stderr.contains("schedules.toml"), "{what}: the file is not named: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{what}: {n:?} missing from: {stderr}");
        }
    }
}

#[test]
fn duplicates_are_errors_and_all_problems_are_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{GOOD}\n[[plans]]\nid = \"p\"\nname = \"Again\"\namount = 1\ninterval = \"1 day\"\n\
         \n[[subscriptions]]\nid = \"s1\"\ncustomer_uid = \"c2\"\nplan = \"p\"\nstart = \"2025-13-01\"\n"
    );
    let (ok, _, stderr) = check(dir.path(), &text);
    assert!(!ok);
    assert!(stderr.contains("duplicate plan id \"p\""), "{stderr}");
    assert!(stderr.contains("duplicate subscription id \"s1\""), "{stderr}");
    assert!(stderr.contains("2025-13-01"), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
}

#[test]
fn a_missing_file_or_secret_is_an_error() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(["--config", "/nonexistent/schedules.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/schedules.toml: config file not found"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(["--config", path.to_str().unwrap(), "check"])
        .env_remove("BILLD_GATEWAY__IMP_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BILLD_GATEWAY__IMP_SECRET"));
}

#[test]
fn env_vars_override_the_file_and_billd_config_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .arg("check")
        .env("BILLD_CONFIG", &path)
        .env("BILLD_GATEWAY__IMP_SECRET", "s")
        .env("BILLD_GATEWAY__CONCURRENCY", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("gateway.concurrency: 0 must be between 1 and 1024"), "{stderr}");
}

#[test]
fn the_secret_file_and_systemd_credential_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.toml");
    std::fs::write(&path, GOOD).unwrap();
    std::fs::create_dir(dir.path().join("creds")).unwrap();
    std::fs::write(dir.path().join("creds/imp_secret"), "from-credential\n").unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(["--config", path.to_str().unwrap(), "check"])
        .env_remove("BILLD_GATEWAY__IMP_SECRET")
        .env("CREDENTIALS_DIRECTORY", dir.path().join("creds"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // imp_secret_file wins over the credential; a missing file is named.
    std::fs::write(&path, GOOD.replace("imp_key = \"k\"", "imp_key = \"k\"\nimp_secret_file = \"missing.secret\""))
        .unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(["--config", path.to_str().unwrap(), "check"])
        .env_remove("BILLD_GATEWAY__IMP_SECRET")
        .env("CREDENTIALS_DIRECTORY", dir.path().join("creds"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.secret"));
}

#[test]
fn a_syntax_error_names_the_position_but_does_not_quote_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("imp_key = \"k\"", "imp_key = \"k\"\nimp_secret = \"SuperSecret0042");
    let (ok, _, stderr) = check(dir.path(), &text);
    assert!(!ok);
    assert!(stderr.contains("TOML parse error at line 10"), "{stderr}");
    assert!(!stderr.contains("SuperSecret0042"), "the secret's line was quoted: {stderr}");
}

#[test]
fn an_all_digit_secret_from_the_environment_is_taken_verbatim() {
    use common::{MONTHLY, Setup, World, cards, sub};
    let sandbox = billd_sandbox::SandboxConfig { imp_secret: "0012345".into(), ..Default::default() };
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = World::new(Setup { sandbox, body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let out = w
        .billd()
        .env("BILLD_GATEWAY__IMP_SECRET", "0012345")
        .args(["tick", "--as-of", "2025-01-01T10:00:00+09:00"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.paid_for("c1").len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 15, point 7: `billd check` lists every problem in one run, an unknown key and values of the wrong kind
/// included (an unknown key used to hide all the rest); key paths are written one way, with the entry's id; no Rust
/// type names; an unknown key suggests the nearest known one.
#[test]
fn check_lists_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = check(
        dir.path(),
        "[billing]\ntimezone = \"Asia/Seoul\"\nchrage_time = \"10:00\"\n\n[gateway]\nbase_url = \"http://127.0.0.1:9\"\n\
         imp_key = \"k\"\nconcurrency = \"four\"\n\n[[plans]]\nid = \"basic\"\nname = \"Basic\"\namount = -5\n\
         interval = \"1 month\"\n\n[[plans]]\nid = \"coffee-weekly\"\nname = \"Coffee\"\namount = \"lots\"\n\
         interval = \"1 fortnight\"\n",
    );
    assert!(!ok, "{stderr}");
    for want in [
        "5 problems",
        "billing.chrage_time: unknown key (did you mean `charge_time`?)",
        "gateway.concurrency: must be a whole number, not the text \"four\"",
        "plans[1] (id \"coffee-weekly\").amount: must be a whole number",
        "plans[0] (id \"basic\").amount: -5 must be a positive whole number",
        "plans[1] (id \"coffee-weekly\").interval",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    for rust in ["i64", "plans.0", "plans.1", "found `"] {
        assert!(!stderr.contains(rust), "{rust:?} in:\n{stderr}");
    }
}
