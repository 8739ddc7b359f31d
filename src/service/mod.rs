//! Running as a service: the daemon loop (`billd run`), systemd notification, the metrics listener, i'mport's
//! notifications, logging, and the webhook delivery service beside the loop.

pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod notices;
pub mod notify;
pub mod webhooks;
