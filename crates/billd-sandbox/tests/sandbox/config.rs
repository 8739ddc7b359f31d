//! The shipped example configuration loads and behaves as its comments say.

use billd_sandbox::{Fault, Latency, SandboxConfig, cards};
use reqwest::StatusCode;

use crate::helpers::{Env, success};

fn example_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox.example.toml")
}

#[tokio::test]
async fn the_example_config_loads_and_its_seeded_keys_behave_as_commented() {
    let cfg = SandboxConfig::from_toml_file(example_path()).expect("example config is valid");
    assert!(matches!(cfg.latency, Latency::Random { .. }));
    assert_eq!(cfg.faults.len(), 3);
    assert!(matches!(cfg.faults[1].fault, Fault::LoseResponseAfterCharge { .. }));
    assert_eq!(cfg.customers[2].card_number, cards::decline_first(2));
    let env = Env::with(cfg).await;
    let (s, b) = env.again("demo_customer", "ex_1").await;
    assert_eq!(success(s, &b)["status"], "paid");
    let (s, b) = env.again("demo_broke", "ex_2").await;
    assert_eq!(success(s, &b)["status"], "failed");
    for want in ["failed", "failed", "paid"] {
        let (s, b) = env.again("demo_recovering", "ex_3").await;
        assert_eq!(success(s, &b)["status"], want);
    }
    env.sandbox.register_customer("demo_flaky", cards::APPROVE).unwrap();
    let (s, _) = env.again("demo_flaky", "ex_4").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn a_bad_config_file_is_reported_with_its_name_and_key() {
    let dir = std::env::temp_dir().join(format!("billd-sandbox-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sandbox.toml");
    std::fs::write(&path, "[[faults]]\nfault = \"meteor\"\n").unwrap();
    let msg = format!("{:#}", SandboxConfig::from_toml_file(&path).unwrap_err());
    assert!(msg.contains("sandbox.toml") && msg.contains("fault") && msg.contains("meteor"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}
