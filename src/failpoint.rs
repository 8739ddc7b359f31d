//! Test hooks in debug builds and the `failpoints` feature only (never a plain release build): `BILLD_FAILPOINT` aborts at a named step, `BILLD_PAUSEPOINT` holds there until a gate file appears.
//!
//! In a release build without the feature every hook is an empty function: nothing in the environment can make a
//! production billd abort (and dump, with card data in memory) or stall at a step of the charge protocol.

#[cfg(any(debug_assertions, feature = "failpoints"))]
pub use hooks::{armed, failpoint, pause};

/// The hooks compiled out: the same calls, doing nothing.
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
mod off {
    pub fn failpoint(_name: &str) {}
    pub fn armed(_name: &str) -> bool {
        false
    }
    pub fn pause(_name: &str) {}
}
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
pub use off::{armed, failpoint, pause};

#[cfg(any(debug_assertions, feature = "failpoints"))]
/// The hooks themselves.
mod hooks {
    /// Aborts the process here when `BILLD_FAILPOINT` names this point. Points: `after_intent_commit`, `after_send`
    /// (request sent, answer not yet read), `after_response` (answer read, outcome not committed),
    /// `one_time_after_intent` (a `charge-once` or `charge-key` whose intent is committed, nothing sent yet).
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
    /// about to change), `resume_after_read`, `one_time_after_intent` (a one-time charge's intent is committed, its
    /// go not given yet), `refund_after_intent`, `refund_lookup_before_settle` (a refund's lookup of the payment is
    /// back, not yet settled in the store).
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
}
