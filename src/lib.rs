//! billd: a recurring-billing scheduler for i'mport (PortOne V1) billing keys.

pub mod calendar;
pub mod card;
pub mod cli;
pub mod config;
pub mod config_shape;
pub mod customers;
pub mod daemon;
pub mod dunning;
pub mod duration;
pub mod engine;
pub mod failpoint;
pub mod gateway;
pub mod import;
pub mod listings;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod ops;
pub mod present;
pub mod private;
pub mod redact;
pub mod show;
pub mod simulate;
pub mod store;
pub mod sync;
