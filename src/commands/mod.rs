//! The commands other than `run`: one module per command group.

pub mod change;
pub mod charge_key;
pub mod charge_once;
pub mod charges;
pub mod check;
pub mod customers;
pub mod import;
pub mod one_time;
pub mod ops;
pub mod present;
pub mod refunds;
pub mod sandbox;
pub mod simulate;
pub mod subscriptions;
pub mod tick;
pub mod upcoming;
