//! The official Python client (`iamport-rest-client` on PyPI), unmodified, against the sandbox.
//! Skipped, saying why, when python3 or the package is missing.

use std::process::Command;

use billd_sandbox::{Sandbox, SandboxConfig, cards};

#[test]
fn official_python_client_works_against_the_sandbox() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/official_python_client.py");
    let probe = Command::new("python3").args(["-c", "import iamport"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(_) => {
            eprintln!("SKIPPED: the official Python client is not installed (pip install iamport-rest-client)");
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: python3 is not available ({e})");
            return;
        }
    }
    let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("{}/", sandbox.base_url()))
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the official client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("official client OK"), "{stdout}");
    let ledger = sandbox.ledger();
    assert!(ledger.iter().any(|e| e.status == "paid"), "{ledger:?}");
    assert!(ledger.iter().all(|e| e.card_number_masked.as_deref() != Some(cards::APPROVE)));
}
