//! Appending: one `BEGIN IMMEDIATE` transaction on the one write connection per append, which
//! checks the command id and the expected version, inserts the events and records the command.

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::{
    AppendResult, CommandId, Error, EventAppender, ExpectedVersion, Fingerprint, NewEvent, Result,
    StreamId,
};
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::error::{Failure, is_unique_violation, retry_busy, to_i64, to_u64};
use crate::event_store::SqliteEventStore;
use crate::rows::format_time;
use crate::sql::{COMMAND_RESULT, INSERT_COMMAND, INSERT_EVENT, STREAM_VERSION};

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

impl SqliteEventStore {
    async fn try_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        command: Option<CommandId>,
    ) -> Result<AppendResult, Failure> {
        let mut tx = self.db.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(command) = command
            && let Some(prev) = command_row(&mut tx, stream, command).await?
        {
            return Ok(prev);
        }
        let actual = current_version(&mut tx, stream).await?;
        if !expected.matches(actual) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            }
            .into());
        }
        let now = format_time(Utc::now());
        let (mut version, mut position) = (actual, 0);
        for e in events {
            version += 1;
            let inserted = sqlx::query_scalar::<_, i64>(INSERT_EVENT)
                .bind(e.event_id.to_string())
                .bind(&stream.category)
                .bind(&stream.id)
                .bind(to_i64(version, "stream version")?)
                .bind(&e.event_type)
                .bind(i64::from(e.schema_version))
                .bind(e.payload.to_string())
                .bind(serde_json::to_string(&e.metadata).map_err(Error::backend)?)
                .bind(&now)
                .fetch_one(&mut *tx)
                .await;
            position = match inserted {
                Ok(p) => to_u64(p).unwrap_or(0),
                Err(err) if is_unique_violation(&err, "events.event_id") => {
                    return Err(
                        Error::Invalid(format!("event id {} already stored", e.event_id)).into(),
                    );
                }
                // NOTE: the write lock makes this unreachable from this process; another program
                // writing the file without it still gets the typed conflict.
                Err(err) if is_unique_violation(&err, "events.version") => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual,
                    }
                    .into());
                }
                Err(err) => return Err(err.into()),
            };
        }
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
        tx.commit().await?;
        Ok(result)
    }
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
        let result = retry_busy!(&self.db.inner.config, async {
            self.try_append(stream, expected, &events, command).await
        })?;
        if result.position > 0 && !result.duplicate {
            self.db.notify();
        }
        Ok(result)
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
