//! billd: a recurring-billing scheduler for i'mport (PortOne V1) billing keys.

/// `println!` for the commands: a closed stdout (`billd charge-once … | head -0`) never panics a command halfway
/// through (after a payment, before its card is saved, say): the line is dropped and the command finishes its work.
/// The read-only listings end quietly on a closed pipe instead (the default SIGPIPE action, see `cli`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod app;
pub mod billing;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod engine;
pub mod failpoint;
pub mod gateway;
pub mod ids;
pub mod private;
pub mod realtime;
pub mod service;
pub mod shapes;
pub mod store;
pub mod text;
pub mod trust;
pub mod webhooks;
