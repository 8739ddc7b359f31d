//! Webhooks to the merchant's app: the Standard Webhooks 1.0 signing of each delivery (`sign`).

pub mod sign;
