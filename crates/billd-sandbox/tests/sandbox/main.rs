//! Black-box tests of the i'mport sandbox over real HTTP (one test binary, several modules).

mod auth;
mod config;
mod customers;
mod faults;
mod helpers;
mod notices;
mod official_client;
mod payments;
mod requests;
mod spec;
