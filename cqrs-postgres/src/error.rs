//! Database errors mapped to the core error, in one place: every SQLSTATE this crate looks at
//! is named here.

use cqrs_core::Error;

/// SQLSTATEs this crate tells apart. <https://www.postgresql.org/docs/current/errcodes-appendix.html>
pub(crate) mod sqlstate {
    /// A unique key was violated.
    pub(crate) const UNIQUE_VIOLATION: &str = "23505";
    /// Class 08, connection exception: the connection failed, not the statement.
    pub(crate) const CONNECTION_EXCEPTION_CLASS: &str = "08";
    /// The server shuts the session down: admin shutdown, crash shutdown, cannot connect now.
    pub(crate) const SESSION_SHUT_DOWN: [&str; 3] = ["57P01", "57P02", "57P03"];
}

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
    if db.code().as_deref() != Some(sqlstate::UNIQUE_VIOLATION) {
        return None;
    }
    match db.constraint()? {
        "events_stream_version_key" => Some(Duplicate::StreamVersion),
        "events_event_id_key" => Some(Duplicate::EventId),
        "commands_pkey" => Some(Duplicate::Command),
        _ => None,
    }
}

/// Whether `err` says the connection failed rather than the statement: an I/O or protocol
/// failure, a pool that gave no connection in time, or a SQLSTATE of class 08 or of a session
/// the server shut down.
#[allow(dead_code)] // NOTE: for the transactional projector's check, which still matches codes itself.
pub(crate) fn is_connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with(sqlstate::CONNECTION_EXCEPTION_CLASS)
                || sqlstate::SESSION_SHUT_DOWN.contains(&&*c)
        }),
        _ => false,
    }
}

/// Wraps a driver error.
pub(crate) fn backend(err: sqlx::Error) -> Error {
    Error::backend(err)
}
