//! billd: a recurring-billing scheduler for i'mport (PortOne V1) billing keys.

pub mod app;
pub mod billing;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod failpoint;
pub mod gateway;
pub mod ids;
pub mod private;
pub mod realtime;
pub mod service;
pub mod store;
pub mod text;
pub mod trust;
