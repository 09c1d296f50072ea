//! Appending, on the one write connection. An append without a command id is one statement
//! (its own transaction) that checks the expected version and inserts every event; one with a
//! command id, or too many events for a statement, is a `BEGIN IMMEDIATE` transaction that also
//! checks and records the command.
//!
//! NOTE: SQLite's driver runs each statement on a worker thread of its own, and a trip there and
//! back costs several times what SQLite spends inserting a row: the statements of an append are
//! few and carry all its events, rather than one per event.

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::{
    AppendResult, CommandId, Error, EventAppender, ExpectedVersion, Fingerprint, NewEvent, Result,
    StreamId,
};
use sqlx::{AssertSqlSafe, SqliteConnection};
use uuid::Uuid;

use crate::error::{Failure, is_unique_violation, retry_busy, to_i64, to_u64};
use crate::event_store::SqliteEventStore;
use crate::rows::format_time;
use crate::sql::{
    COMMAND_RESULT, EVENTS_PER_STATEMENT, INSERT_COMMAND, STREAM_VERSION, insert_events,
};

async fn current_version(conn: &mut SqliteConnection, stream: &StreamId) -> Result<u64, Failure> {
    let v: i64 = sqlx::query_scalar(STREAM_VERSION)
        .bind(&stream.category)
        .bind(&stream.id)
        .fetch_one(conn)
        .await?;
    Ok(to_u64(v).unwrap_or(0))
}

/// The first result of `command` on `stream`, if any; [`Error::CommandIdReused`] if it was
/// recorded with another fingerprint.
async fn command_row(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    command: CommandId,
) -> Result<Option<AppendResult>, Failure> {
    let row: Option<(i64, i64, Option<String>)> = sqlx::query_as(COMMAND_RESULT)
        .bind(&stream.category)
        .bind(&stream.id)
        .bind(command.id.to_string())
        .fetch_optional(conn)
        .await?;
    let Some((version, position, fingerprint)) = row else {
        return Ok(None);
    };
    // NOTE: a fingerprint that does not parse was not written by the store; it is taken as
    // none, so the command's first result still answers its repeats.
    let stored = fingerprint
        .and_then(|f| Uuid::parse_str(&f).ok())
        .map(Fingerprint::from_uuid);
    if !command.matches(stored) {
        return Err(command.reused(stream).into());
    }
    Ok(Some(AppendResult {
        version: to_u64(version).unwrap_or(0),
        position: to_u64(position).unwrap_or(0),
        duplicate: true,
    }))
}

/// The expectation as [`insert_events`] takes it: NULL for any version.
fn expected_head(expected: ExpectedVersion) -> Result<Option<i64>, Failure> {
    Ok(match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(v) => Some(to_i64(v, "expected version")?),
    })
}

/// Inserts `events` (at most [`EVENTS_PER_STATEMENT`]) in one statement, if the stream's version
/// matches `expected`; the version and position of the last one, `None` when the version did not
/// match (nothing was written).
async fn insert_events_once(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    now: &str,
    events: &[NewEvent],
) -> Result<Option<(u64, u64)>, Failure> {
    // NOTE: the statement is built from a count alone, never from a value.
    let sql = AssertSqlSafe(insert_events(events.len()));
    let mut q = sqlx::query_as::<_, (i64, i64)>(sql)
        .bind(&stream.category)
        .bind(&stream.id)
        .bind(now)
        .bind(&stream.category)
        .bind(&stream.id);
    for e in events {
        q = q
            .bind(e.event_id.to_string())
            .bind(&e.event_type)
            .bind(i64::from(e.schema_version))
            .bind(e.payload.to_string())
            .bind(serde_json::to_string(&e.metadata).map_err(Error::backend)?);
    }
    let head = expected_head(expected)?;
    let q = q.bind(head).bind(head);
    let rows = match q.fetch_all(conn).await {
        Ok(rows) => rows,
        Err(err) if is_unique_violation(&err, "events.event_id") => {
            return Err(Error::Invalid(format!(
                "an event id of this append to {stream} is already stored"
            ))
            .into());
        }
        // NOTE: the version is read in the inserting statement under the write lock, so this
        // is unreachable from this process; another program writing the file without the
        // statement's check still gets the typed conflict (the caller reads the version).
        Err(err) if is_unique_violation(&err, "events.version") => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let last = rows.iter().max_by_key(|(p, _)| *p);
    Ok(last.map(|&(p, v)| (to_u64(v).unwrap_or(0), to_u64(p).unwrap_or(0))))
}

impl SqliteEventStore {
    /// An append that fits one statement and has no command id: one statement, its own
    /// transaction. `None` when the stream's version did not match; the caller then appends
    /// through [`try_append_tx`](Self::try_append_tx), which reads the version it reports.
    async fn try_append_one(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, Failure> {
        let now = format_time(Utc::now());
        let mut conn = self.db.inner.writer.acquire().await?;
        let inserted = insert_events_once(&mut conn, stream, expected, &now, events).await?;
        Ok(inserted.map(|(version, position)| AppendResult {
            version,
            position,
            duplicate: false,
        }))
    }

    /// An append in a `BEGIN IMMEDIATE` transaction: see [`append_in`].
    async fn try_append_tx(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        command: Option<CommandId>,
    ) -> Result<AppendResult, Failure> {
        let mut tx = self.db.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let result = append_in(&mut tx, stream, expected, events, command).await?;
        tx.commit().await?;
        Ok(result)
    }

    pub(crate) async fn try_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        command: Option<CommandId>,
    ) -> Result<AppendResult, Failure> {
        if is_one_statement(events, command)
            && let Some(done) = self.try_append_one(stream, expected, events).await?
        {
            return Ok(done);
        }
        self.try_append_tx(stream, expected, events, command).await
    }
}

/// Whether an append is one statement: no command id, and at most [`EVENTS_PER_STATEMENT`]
/// events (at least one). Such an append is atomic without a transaction of its own.
pub(crate) fn is_one_statement(events: &[NewEvent], command: Option<CommandId>) -> bool {
    command.is_none() && !events.is_empty() && events.len() <= EVENTS_PER_STATEMENT
}

/// An append inside the open write transaction of `tx`: the command id checked and recorded,
/// and the events inserted [`EVENTS_PER_STATEMENT`] at a time. On an error, statements of it
/// may have been run: the caller rolls back (the transaction, or a savepoint).
pub(crate) async fn append_in(
    tx: &mut SqliteConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    command: Option<CommandId>,
) -> Result<AppendResult, Failure> {
    if let Some(command) = command
        && let Some(prev) = command_row(tx, stream, command).await?
    {
        return Ok(prev);
    }
    let now = format_time(Utc::now());
    let (mut version, mut position) = (None, 0);
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let guard = version.map_or(expected, ExpectedVersion::Exact);
        match insert_events_once(tx, stream, guard, &now, chunk).await? {
            Some((v, p)) => (version, position) = (Some(v), p),
            None => {
                let actual = current_version(tx, stream).await?;
                return Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                }
                .into());
            }
        }
    }
    let version = match version {
        Some(v) => v,
        None => {
            let actual = current_version(tx, stream).await?;
            if !expected.matches(actual) {
                return Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                }
                .into());
            }
            actual
        }
    };
    let result = AppendResult {
        version,
        position,
        duplicate: false,
    };
    if let Some(command) = command {
        sqlx::query(INSERT_COMMAND)
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(command.id.to_string())
            .bind(to_i64(version, "stream version")?)
            .bind(to_i64(position, "position")?)
            .bind(command.fingerprint.map(|f| f.as_uuid().to_string()))
            .execute(&mut *tx)
            .await?;
    }
    Ok(result)
}

#[async_trait]
impl EventAppender for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        self.append_grouped(stream, expected, events, command).await
    }

    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>> {
        let reader = &self.db.inner.reader;
        retry_busy!(&self.db.inner.config, async {
            command_row(&mut *reader.acquire().await?, stream, command).await
        })
    }
}
