//! Running as a service: the daemon loop (`billd run`), systemd notification, the metrics listener, logging, and the
//! webhook delivery service beside the loop.

pub mod clock;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod webhooks;
