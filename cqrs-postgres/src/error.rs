//! Database errors mapped to the core error, in one place.

use cqrs_core::Error;

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Which unique key an insert ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duplicate {
    /// `(stream_category, stream_id, stream_version)`: another writer appended first.
    StreamVersion,
    /// `event_id`: the event is stored already.
    EventId,
    /// A command id recorded by a concurrent append.
    Command,
}

/// The unique key `err` violated, if it is a unique violation of the events or commands table.
pub(crate) fn duplicate(err: &sqlx::Error) -> Option<Duplicate> {
    let db = err.as_database_error()?;
    if db.code().as_deref() != Some(UNIQUE_VIOLATION) {
        return None;
    }
    match db.constraint()? {
        "events_stream_version_key" => Some(Duplicate::StreamVersion),
        "events_event_id_key" => Some(Duplicate::EventId),
        "commands_pkey" => Some(Duplicate::Command),
        _ => None,
    }
}

/// Wraps a driver error.
pub(crate) fn backend(err: sqlx::Error) -> Error {
    Error::backend(err)
}
