//! Database errors mapped to the core error, in one place (every SQLSTATE this crate looks at
//! is named here), and what this crate refuses.

use cqrs_core::Error;

/// SQLSTATEs this crate tells apart. <https://www.postgresql.org/docs/current/errcodes-appendix.html>
pub(crate) mod sqlstate {
    /// A unique key was violated.
    pub(crate) const UNIQUE_VIOLATION: &str = "23505";
    /// Class 08, connection exception: the connection failed, not the statement.
    pub(crate) const CONNECTION_EXCEPTION_CLASS: &str = "08";
    /// The server shuts the session down: admin shutdown, crash shutdown, cannot connect now.
    pub(crate) const SESSION_SHUT_DOWN: [&str; 3] = ["57P01", "57P02", "57P03"];
    /// Raised by `events_watermark()` on a server in recovery (see the migration
    /// `watermark_standby_prepared`).
    pub(crate) const IN_RECOVERY: &str = "CQ001";
}

/// What the PostgreSQL store refuses, beside the core's errors. It comes boxed in
/// [`Error::Backend`](cqrs_core::Error::Backend); [`PgError::of`] finds it there.
///
/// ```
/// use cqrs_postgres::PgError;
///
/// let err = cqrs_core::Error::backend(PgError::InRecovery);
/// assert!(matches!(PgError::of(&err), Some(PgError::InRecovery)));
/// assert!(PgError::of(&cqrs_core::Error::ShuttingDown).is_none());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The server is in recovery (a hot standby). Its snapshots do not list the transactions
    /// in flight on the primary, so the all-stream watermark cannot be told there: reading the
    /// all-stream ([`read_all`](cqrs_core::AllStreamReader::read_all),
    /// [`cursor_of`](cqrs_core::AllStreamReader::cursor_of), subscribers, [`diagnose`](crate::diagnose))
    /// is refused rather than let a subscriber pass events of open transactions for good. Loading
    /// aggregates and reading one stream work there.
    #[error(
        "the all-stream cannot be read on a server in recovery (a hot standby): read it on the primary"
    )]
    InRecovery,
}

impl PgError {
    /// The `PgError` inside `err`, if it is one.
    pub fn of(err: &Error) -> Option<&PgError> {
        match err {
            Error::Backend(source) => source.downcast_ref(),
            _ => None,
        }
    }
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

/// Wraps a driver error; the refusal of a server in recovery becomes [`PgError::InRecovery`].
pub(crate) fn backend(err: sqlx::Error) -> Error {
    match err.as_database_error().and_then(|e| e.code()) {
        Some(code) if code == sqlstate::IN_RECOVERY => Error::backend(PgError::InRecovery),
        _ => Error::backend(err),
    }
}
