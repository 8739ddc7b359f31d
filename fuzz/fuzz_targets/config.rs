//! `schedules.toml` parsing and validation: never panics; every error names the file.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = std::path::Path::new("/fuzz/schedules.toml");
    match billd::config::parse_str(text, file) {
        Err(e) => assert!(e.to_string().contains("/fuzz/schedules.toml"), "{e}"),
        Ok(cfg) => {
            for p in &cfg.plans {
                assert!(p.amount > 0 && p.amount <= cfg.limits.max_amount, "{p:?}");
                assert!(!p.name.is_empty() && p.name.chars().count() <= 40, "{p:?}");
            }
        }
    }
});
