//! Webhooks to the merchant's app: the Standard Webhooks 1.0 signing of each delivery (`sign`), an event's payload
//! (`body`), when a failed delivery is tried again (`schedule`), and delivery itself (`deliver`).

pub mod body;
pub mod deliver;
pub mod schedule;
pub mod sign;
