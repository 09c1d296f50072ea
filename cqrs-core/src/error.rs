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
    /// This process no longer holds the lease of a subscriber (another process took it over):
    /// the batch was rolled back and nothing of it was committed. The runner treats it as its
    /// own outcome: it parks nothing, counts nothing as handled, leaves the cursor where it was
    /// and goes back to acquiring the lease. A fenced subscriber returns it (boxed) from
    /// [`Subscriber::process`](crate::Subscriber::process); see [`is_fenced_out`].
    #[error("the lease on {subscriber} is not held by this process: {reason}")]
    FencedOut {
        /// The subscriber whose lease was lost.
        subscriber: String,
        /// How it was found out (a stale epoch, no lease at all).
        reason: String,
    },
    /// An awaited event was parked as a dead letter instead of handled: the subscriber passed
    /// it without its effect (see [`RunnerHandle::wait_for`](crate::RunnerHandle::wait_for)).
    #[error("{subscriber} parked the event at position {position} as a dead letter: {error}")]
    Parked {
        /// The subscriber that parked it.
        subscriber: String,
        /// The event's global position.
        position: u64,
        /// The handler's error, as parked.
        error: String,
    },
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

/// Whether `err`, or one of its sources, is [`Error::FencedOut`]: how the runner tells a lost
/// lease from a failing handler in the boxed errors subscribers return.
///
/// ```
/// use cqrs_core::{BoxError, Error, is_fenced_out};
/// let err: BoxError = Box::new(Error::FencedOut { subscriber: "a".into(), reason: "epoch 3 is stale".into() });
/// assert!(is_fenced_out(&*err));
/// assert!(!is_fenced_out(&Error::Timeout("x".into())));
/// ```
pub fn is_fenced_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if matches!(e.downcast_ref::<Error>(), Some(Error::FencedOut { .. })) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An error and its sources, joined by `": "`: the whole story on one line, for logs, dead
/// letters and status displays. A source whose text the story already holds (an error that
/// prints its source in its own message) is not repeated.
///
/// ```
/// let err = cqrs_core::Error::backend(std::io::Error::other("disk full"));
/// assert_eq!(cqrs_core::error_chain(&err), "back-end error: disk full");
///
/// // An error that prints its source itself: the source is not told twice.
/// #[derive(Debug, thiserror::Error)]
/// #[error("query failed: {0}")]
/// struct QueryFailed(#[source] std::io::Error);
/// let err = QueryFailed(std::io::Error::other("no such table: stock"));
/// assert_eq!(cqrs_core::error_chain(&err), "query failed: no such table: stock");
/// ```
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        // NOTE: many errors print their source in their own message (sqlx's, `#[error("...:
        // {0}")]` wrappers); the text is then already there and is not repeated.
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}
