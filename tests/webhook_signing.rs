//! Webhook signing (issue 26) as the outside world sees it: `billd webhooks new-secret` prints one fresh secret and
//! nothing else, and the official Standard Webhooks verifier (PyPI `standardwebhooks`, in `.ci/run`'s virtualenv)
//! accepts billd's signatures and rejects a tampered delivery. The interpreter is `$BILLD_STANDARDWEBHOOKS_PYTHON`,
//! else `python3`; without the package the test says `SKIPPED: …`, and under CI (`CI=true`) it fails instead.

mod common;

use base64::Engine as _;
use billd::config::WebhookSecret;
use billd::webhooks::sign;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn billd(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(assert_cmd::cargo::cargo_bin("billd"))
        .args(args)
        .current_dir(dir.path())
        // No config anywhere: new-secret reads none.
        .env("BILLD_CONFIG", dir.path().join("nowhere.toml"))
        .env_remove("BILLD_WEBHOOKS__SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap()
}

fn new_secret() -> String {
    let out = billd(&["webhooks", "new-secret"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn new_secret_prints_a_fresh_32_byte_secret_and_nothing_else() {
    let (a, b) = (new_secret(), new_secret());
    for out in [&a, &b] {
        let line = out.strip_suffix('\n').unwrap_or_else(|| panic!("one line ending in a newline: {out:?}"));
        assert!(!line.contains(['\n', ' ']), "one line, the secret alone: {out:?}");
        let b64 = line.strip_prefix("whsec_").unwrap_or_else(|| panic!("no whsec_ prefix: {out:?}"));
        let key = base64::engine::general_purpose::STANDARD.decode(b64).expect("standard padded base64");
        assert_eq!(key.len(), 32, "{out:?}");
        assert_eq!(WebhookSecret::parse(line).unwrap().key(), &key[..], "billd reads what it prints");
    }
    assert_ne!(a, b, "two calls gave the same secret");
}

/// Runs the reference verifier on each case (secret, headers, body; read from stdin, never argv) and returns one
/// line per case: `ok` or `rejected: <why>`.
const VERIFIER: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
for case in json.load(sys.stdin):
    try:
        Webhook(case["secret"]).verify(case["body"].encode(), case["headers"])
        print("ok")
    except WebhookVerificationError as e:
        print("rejected:", e)
"#;

#[test]
fn the_reference_python_verifier_accepts_billd_signatures_and_rejects_tampered_ones() {
    let python = std::env::var("BILLD_STANDARDWEBHOOKS_PYTHON").unwrap_or_else(|_| "python3".to_string());
    match Command::new(&python).args(["-c", "import standardwebhooks"]).output() {
        Ok(out) if out.status.success() => {}
        Ok(_) => {
            return common::skip(&format!(
                "the Standard Webhooks reference library is not importable by {python} (pip install \
                 standardwebhooks, or set BILLD_STANDARDWEBHOOKS_PYTHON to a virtualenv's python)"
            ));
        }
        Err(e) => return common::skip(&format!("{python} is not available ({e})")),
    }
    // A secret as `new-secret` prints it (32 bytes, padded base64), and the spec's example one (24 bytes, unpadded).
    let fresh = new_secret().trim().to_string();
    let example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"id":"evt_01","type":"charge.paid","data":{"amount":9900,"plan_name":"월간 플랜"}}"#;
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for secret_text in [&fresh, &example] {
        let secret = WebhookSecret::parse(secret_text).unwrap();
        let h = sign::headers(&secret, "evt_01", now, body.as_bytes());
        let headers = |h: &sign::Headers| {
            serde_json::Value::Object(h.pairs().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect())
        };
        let mut case = |body: &str, h: &sign::Headers, want: &str| {
            cases.push(serde_json::json!({"secret": secret_text, "body": body, "headers": headers(h)}));
            expected.push(want.to_string());
        };
        case(body, &h, "ok");
        // A retry: signed anew at its own time, under the same id.
        case(body, &sign::headers(&secret, "evt_01", now - 60, body.as_bytes()), "ok");
        // With an old key's signature beside it (a rotation), in either order.
        let rotated = |first: bool| {
            let old = WebhookSecret::from_key(vec![9; 32]).unwrap();
            let other = sign::signature(&old, "evt_01", now, body.as_bytes());
            let both = if first { format!("{other} {}", h.signature) } else { format!("{} {other}", h.signature) };
            sign::Headers { signature: both, ..h.clone() }
        };
        case(body, &rotated(true), "ok");
        case(body, &rotated(false), "ok");
        // Tampered: the body, the id, the timestamp; signed by another key; too old.
        case(&body.replace("9900", "9901"), &h, "rejected");
        case(body, &sign::Headers { id: "evt_02".into(), ..h.clone() }, "rejected");
        case(body, &sign::Headers { timestamp: now - 1, ..h.clone() }, "rejected");
        let other = WebhookSecret::from_key(vec![9; 32]).unwrap();
        case(body, &sign::headers(&other, "evt_01", now, body.as_bytes()), "rejected");
        case(body, &sign::headers(&secret, "evt_01", now - 3600, body.as_bytes()), "rejected");
    }
    let mut child = Command::new(&python)
        .args(["-c", VERIFIER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(&cases).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the verifier failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), expected.len(), "{stdout}");
    for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
        assert!(got.starts_with(want.as_str()), "case {i}: expected {want}, the reference verifier said {got:?}");
    }
    // And billd's own verifier agrees with the reference one on every case.
    for (i, case) in cases.iter().enumerate() {
        let secret = WebhookSecret::parse(case["secret"].as_str().unwrap()).unwrap();
        let h = &case["headers"];
        let ours = sign::verify(
            &secret,
            h["webhook-id"].as_str().unwrap(),
            h["webhook-timestamp"].as_str().unwrap(),
            h["webhook-signature"].as_str().unwrap(),
            case["body"].as_str().unwrap().as_bytes(),
            now,
        );
        assert_eq!(ours.is_ok(), expected[i] == "ok", "case {i}: billd's verify said {ours:?}");
    }
}
