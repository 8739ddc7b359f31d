//! Running as a service: the daemon loop (`billd run`), systemd notification, the metrics listener, logging.

pub mod clock;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod notify;
