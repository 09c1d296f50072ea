//! The one error type of the core, shared by every back-end.

use crate::event::{ExpectedVersion, StreamId};

/// A boxed error from a back-end or a user handler; the core never names a driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the core [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong below the domain: storage, encoding, concurrency.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An append found the stream at another version than expected; nothing was written.
    #[error("concurrency conflict on {stream}: expected {expected}, found version {actual}")]
    Conflict {
        /// The stream written to.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The version the stream actually has (0 when it does not exist).
        actual: u64,
    },
    /// An event could not be turned into JSON.
    #[error("cannot serialize event {event_type}")]
    Serialize {
        /// The event type being written.
        event_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored event could not be decoded into the requested type: its payload no longer fits,
    /// or its type is unknown to the reader.
    #[error(
        "cannot decode event {event_type} (schema v{schema_version}) at {stream} version {version}"
    )]
    Decode {
        /// The stream the event belongs to.
        stream: StreamId,
        /// Its version in the stream.
        version: u64,
        /// Its stored type name.
        event_type: String,
        /// Its stored schema version.
        schema_version: u32,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// A stored row is broken below the payload (bad metadata, impossible column values).
    #[error("corrupt stored event at {stream} version {version}: {reason}")]
    Corrupt {
        /// The stream the row claims.
        stream: StreamId,
        /// The version the row claims.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A command id already stored on the stream came again with another request (its
    /// [`Fingerprint`](crate::Fingerprint) differs); nothing was written.
    #[error("command id {command_id} on {stream} was first used for another request")]
    CommandIdReused {
        /// The stream the command was for.
        stream: StreamId,
        /// The command id used again.
        command_id: uuid::Uuid,
    },
    /// Something asked for (a dead letter, a stream) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An argument was out of range or malformed.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A wait ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The runtime is shutting down and will not take more work.
    #[error("shutting down")]
    ShuttingDown,
    /// An error from the storage back-end (database, file, network).
    #[error("back-end error")]
    Backend(#[source] BoxError),
    /// A user handler (projector, process manager) failed.
    #[error("handler {handler} failed")]
    Handler {
        /// The handler's name.
        handler: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Wraps any back-end error.
    pub fn backend(err: impl Into<BoxError>) -> Self {
        Error::Backend(err.into())
    }

    /// True for a concurrency conflict, the one error a retry can cure.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// An error and its sources, joined by `": "`: the whole story on one line, for logs, dead
/// letters and status displays.
///
/// ```
/// let err = cqrs_core::Error::backend(std::io::Error::other("disk full"));
/// assert_eq!(cqrs_core::error_chain(&err), "back-end error: disk full");
/// ```
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
