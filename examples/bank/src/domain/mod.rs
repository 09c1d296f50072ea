//! The pure domain: aggregates, their commands, events and errors. No I/O here.

pub(crate) mod account;
pub(crate) mod money;
pub(crate) mod transfer;
