//! SQLite error codes, mapped in one place, and the retry of writes that met another process's
//! write lock.

use std::time::Duration;

use cqrs_core::Error;
use tokio::time::Instant;

use crate::database::SqliteConfig;

/// What a write attempt can end in: a driver error (retried when it is a lock) or a final one.
#[derive(Debug)]
pub(crate) enum Failure {
    Db(sqlx::Error),
    /// An error of the C library met by a direct read (see `raw_read.rs`).
    Raw(rusqlite::Error),
    Core(Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Raw(e)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

// Primary result codes (the low byte of an extended code).
// https://www.sqlite.org/rescode.html
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// The extended result code of a database error.
pub(crate) fn code(e: &sqlx::Error) -> Option<i32> {
    e.as_database_error()?.code()?.parse().ok()
}

/// True when another connection held a lock: the write can be tried again.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    matches!(code(e).map(|c| c & 0xff), Some(SQLITE_BUSY | SQLITE_LOCKED))
}

/// True when another connection held a lock, for an error of a direct read.
fn is_raw_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// True when a UNIQUE constraint on `table.column` failed.
pub(crate) fn is_unique_violation(e: &sqlx::Error, table_column: &str) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation() && d.message().contains(table_column))
}

/// Retries a write that met a lock held by another process, for at most
/// `config.write_patience`.
///
/// Within one process writes queue for the single write connection and never meet a lock; a
/// second process on the same file makes SQLite answer `SQLITE_BUSY` once its busy timeout has
/// passed (or at once, for a WAL snapshot that went stale). The attempt rolled back, so it is
/// safe to run again.
pub(crate) struct Retry {
    deadline: Instant,
    patience: Duration,
    wait: Duration,
}

impl Retry {
    pub(crate) fn new(config: &SqliteConfig) -> Self {
        Retry {
            deadline: Instant::now() + config.write_patience,
            patience: config.write_patience,
            wait: Duration::from_millis(1),
        }
    }

    /// The final result of an attempt, or `None` (after a pause) when it should be run again.
    pub(crate) async fn check<T>(
        &mut self,
        result: Result<T, Failure>,
    ) -> Option<Result<T, Error>> {
        match result {
            Ok(v) => Some(Ok(v)),
            Err(Failure::Core(e)) => Some(Err(e)),
            Err(e @ (Failure::Db(_) | Failure::Raw(_)))
                if match &e {
                    Failure::Db(e) => is_busy(e),
                    Failure::Raw(e) => is_raw_busy(e),
                    Failure::Core(_) => false,
                } =>
            {
                let now = Instant::now();
                if now >= self.deadline {
                    return Some(Err(Error::Timeout(format!(
                        "another connection held the database's write lock for more than {:?}",
                        self.patience
                    ))));
                }
                tracing::debug!(error = ?e, wait = ?self.wait, "database locked, retrying");
                tokio::time::sleep(self.wait.min(self.deadline - now)).await;
                self.wait = (self.wait * 2).min(Duration::from_millis(100));
                None
            }
            Err(Failure::Db(e)) => Some(Err(Error::backend(e))),
            Err(Failure::Raw(e)) => Some(Err(Error::backend(e))),
        }
    }
}

/// Runs the async block `$attempt` (one whole statement or transaction) again while another
/// connection holds a lock; evaluates to `cqrs_core::Result<T>`.
///
/// NOTE: a macro rather than a function taking an async closure, because the futures of async
/// closures cannot yet be proven `Send` inside `#[async_trait]` methods.
macro_rules! retry_busy {
    ($config:expr, $attempt:expr) => {{
        let mut retry = $crate::error::Retry::new($config);
        loop {
            let result: ::std::result::Result<_, $crate::error::Failure> = $attempt.await;
            if let Some(out) = retry.check(result).await {
                break out;
            }
        }
    }};
}
pub(crate) use retry_busy;

/// Converts a stored integer that must not be negative.
pub(crate) fn to_u64(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// Converts a number to a stored integer, refusing what SQLite cannot hold.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::Invalid(format!("{what} {v} is too large for SQLite")))
}
