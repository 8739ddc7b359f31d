//! The commands other than `run`: one module per command group.

pub mod check;
pub mod customers;
pub mod import;
pub mod listings;
pub mod ops;
pub mod present;
pub mod sandbox;
pub mod show;
pub mod simulate;
pub mod tick;
