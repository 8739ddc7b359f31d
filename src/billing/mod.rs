//! The billing rules, pure and without I/O: the calendar, subscriptions and money, dunning, sync planning.

pub mod calendar;
pub mod credit;
pub mod dunning;
pub mod model;
pub mod proration;
pub mod quiet;
pub mod rails;
pub mod refunds;
pub mod status;
pub mod sync;
pub mod terms;
