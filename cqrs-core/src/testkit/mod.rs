//! The test kit: given/when/then for aggregates, the store conformance suite that every
//! back-end runs from its own tests, checks of command handling on a real store, and a TCP
//! link whose failures a fault test decides.

mod given;
mod link;
mod sample;

pub mod commands;
pub mod conformance;

pub use given::{AggregateTest, Outcome};
pub use link::FaultyLink;
pub use sample::sample_recorded_event;
