//! The test kit: given/when/then for aggregates, and the store conformance suite that every
//! back-end runs from its own tests.

mod given;
mod sample;

pub mod conformance;

pub use given::{AggregateTest, Outcome};
pub use sample::sample_recorded_event;
