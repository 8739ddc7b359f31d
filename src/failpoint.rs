//! Test hooks in the real binary: `BILLD_FAILPOINT` aborts the process at a named step (like `kill -9`), and
//! `BILLD_PAUSEPOINT` holds it at a named step until a gate file appears (to line up a race in a test).

/// Aborts the process here when `BILLD_FAILPOINT` names this point. Points: `after_intent_commit`, `after_send`
/// (request sent, answer not yet read), `after_response` (answer read, outcome not committed).
pub fn failpoint(name: &str) {
    if armed(name) {
        eprintln!("billd: failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Whether `BILLD_FAILPOINT` names this point.
pub fn armed(name: &str) -> bool {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED.get_or_init(|| std::env::var("BILLD_FAILPOINT").ok()).as_deref() == Some(name)
}

/// With `BILLD_PAUSEPOINT=NAME:GATE`, the process reaching point NAME creates the file `GATE.reached` and waits
/// until the file GATE exists, then goes on. Points: `sync_after_read` (a sync has read the subscriptions it is
/// about to change), `resume_after_read`.
pub fn pause(name: &str) {
    let Ok(spec) = std::env::var("BILLD_PAUSEPOINT") else { return };
    let Some((point, gate)) = spec.split_once(':') else { return };
    if point != name {
        return;
    }
    let gate = std::path::PathBuf::from(gate);
    let mut reached = gate.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, b"");
    eprintln!("billd: pausepoint {name}: waiting for {}", gate.display());
    while !gate.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
