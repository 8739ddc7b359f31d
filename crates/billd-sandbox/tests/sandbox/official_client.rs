//! The official Python client (`iamport-rest-client` on PyPI), unmodified, against the sandbox.
//! Skipped, saying why (`SKIPPED: ...`), when the interpreter or the package is missing; under CI (`CI=true`,
//! where `.ci/run` installs it) that fails instead. The interpreter is `$IAMPORT_PYTHON` (e.g. a virtualenv with
//! `pip install iamport-rest-client`), else `python3`.

use std::process::Command;

use billd_sandbox::{Sandbox, SandboxConfig, cards};

use crate::helpers::skip;

#[test]
fn official_python_client_works_against_the_sandbox() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/official_python_client.py");
    let python = std::env::var("IAMPORT_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python).args(["-c", "import iamport"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(_) => {
            skip(&format!(
                "the official Python client is not importable by {python} \
                 (pip install iamport-rest-client, or set IAMPORT_PYTHON to a virtualenv's python)"
            ));
            return;
        }
        Err(e) => {
            skip(&format!("{python} is not available ({e})"));
            return;
        }
    }
    let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("{}/", sandbox.base_url()))
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the official client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("official client OK"), "{stdout}");
    let ledger = sandbox.ledger();
    let statuses: Vec<(&str, &str)> = ledger.iter().map(|e| (e.merchant_uid.as_str(), e.status.as_str())).collect();
    assert_eq!(
        statuses,
        [("py_order_1", "cancelled"), ("py_order_3", "failed")],
        "paid then refunded, and one decline; nothing else charged"
    );
    assert!(ledger.iter().all(|e| e.card_number_masked.as_deref() != Some(cards::APPROVE)));
}
