//! The event store: appends under the one write lock, reads from the reader pool.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_core::{
    AppendResult, Cursor, Error, EventStore, ExpectedVersion, LoadedEvent, Metadata, NewEvent,
    RecordedEvent, Result, StreamId, WakeUps,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use crate::database::SqliteDatabase;
use crate::error::{Failure, is_unique_violation, retry_busy, to_i64, to_u64};

/// The event store of a [`SqliteDatabase`].
///
/// Appends run one at a time on the database's write connection, in a `BEGIN IMMEDIATE`
/// transaction, so positions are handed out in commit order: the all-stream has no gaps and a
/// reader resuming after a position never misses an event ([`Cursor::tx`] is always 0).
/// Appends wake the subscribers of this handle at once, and those of other handles on the file
/// (other processes) within their [`SqliteConfig::watch_interval`](crate::SqliteConfig::watch_interval).
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    pub(crate) db: SqliteDatabase,
}

impl SqliteEventStore {
    /// The database this store is a view of.
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }
}

/// A `SELECT` of every column of `events`, followed by `$rest`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at \
             FROM events ",
            $rest
        )
    };
}

/// Formats a time the way the store keeps it: RFC 3339 in UTC with nanoseconds, a fixed width
/// that sorts as text.
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Turns a row of `events` back into a [`RecordedEvent`].
///
/// The payload is handed on as stored (it is valid JSON: the table checks it), so a payload that
/// no longer fits its type fails later, in [`RecordedEvent::decode`], naming the stream, version
/// and type. Columns only the store writes (id, time, metadata) that do not parse make the row
/// [`Error::Corrupt`], naming the stream and version.
fn event_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let get_i64 = |c: &str| row.try_get::<i64, _>(c).map_err(Error::backend);
    let get_str = |c: &str| row.try_get::<String, _>(c).map_err(Error::backend);
    let stream = StreamId::new(get_str("category")?, get_str("stream_id")?);
    let raw_version = get_i64("version")?;
    let corrupt = |reason: String| Error::Corrupt {
        stream: stream.clone(),
        version: raw_version.max(0) as u64,
        reason,
    };
    let version =
        to_u64(raw_version).ok_or_else(|| corrupt(format!("negative version {raw_version}")))?;
    let position = get_i64("position")?;
    let position =
        to_u64(position).ok_or_else(|| corrupt(format!("negative position {position}")))?;
    let schema_version = get_i64("schema_version")?;
    let schema_version = u32::try_from(schema_version)
        .map_err(|_| corrupt(format!("schema version {schema_version} out of range")))?;
    let event_id = get_str("event_id")?;
    let event_id =
        Uuid::parse_str(&event_id).map_err(|e| corrupt(format!("event id {event_id:?}: {e}")))?;
    let recorded_at = get_str("recorded_at")?;
    let recorded_at = parse_time(&recorded_at)
        .ok_or_else(|| corrupt(format!("recorded_at {recorded_at:?} is not RFC 3339")))?;
    let payload = serde_json::from_str(&get_str("payload")?)
        .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?;
    let metadata: Metadata = serde_json::from_str(&get_str("metadata")?)
        .map_err(|e| corrupt(format!("metadata does not parse: {e}")))?;
    Ok(RecordedEvent {
        event_id,
        stream,
        stream_version: version,
        cursor: Cursor::new(0, position),
        recorded_at,
        event_type: get_str("event_type")?,
        schema_version,
        payload,
        metadata,
    })
}

/// The columns a load needs of a row of `events`; the payload is handed on as stored (the table
/// checks that it is JSON).
fn loaded_from_row(stream: &StreamId, row: &SqliteRow) -> Result<LoadedEvent> {
    let raw_version: i64 = row.try_get(0).map_err(Error::backend)?;
    let corrupt = |reason: String| Error::Corrupt {
        stream: stream.clone(),
        version: raw_version.max(0) as u64,
        reason,
    };
    let version =
        to_u64(raw_version).ok_or_else(|| corrupt(format!("negative version {raw_version}")))?;
    let schema_version: i64 = row.try_get(2).map_err(Error::backend)?;
    let schema_version = u32::try_from(schema_version)
        .map_err(|_| corrupt(format!("schema version {schema_version} out of range")))?;
    Ok(LoadedEvent::new(
        version,
        row.try_get::<String, _>(1).map_err(Error::backend)?,
        schema_version,
        row.try_get::<String, _>(3).map_err(Error::backend)?,
    ))
}

async fn current_version(conn: &mut SqliteConnection, stream: &StreamId) -> Result<u64, Failure> {
    let v: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM events WHERE category = ? AND stream_id = ?",
    )
    .bind(&stream.category)
    .bind(&stream.id)
    .fetch_one(conn)
    .await?;
    Ok(to_u64(v).unwrap_or(0))
}

async fn command_row(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    command_id: Uuid,
) -> Result<Option<AppendResult>, Failure> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT version, position FROM commands WHERE category = ? AND stream_id = ? AND command_id = ?")
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(command_id.to_string())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(version, position)| AppendResult {
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
        command_id: Option<Uuid>,
    ) -> Result<AppendResult, Failure> {
        let mut tx = self.db.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(cid) = command_id
            && let Some(prev) = command_row(&mut tx, stream, cid).await?
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
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO events (event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position",
            )
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
        if let Some(cid) = command_id {
            sqlx::query("INSERT INTO commands (category, stream_id, command_id, version, position) VALUES (?, ?, ?, ?, ?)")
                .bind(&stream.category)
                .bind(&stream.id)
                .bind(cid.to_string())
                .bind(to_i64(version, "stream version")?)
                .bind(to_i64(position, "position")?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    async fn read(
        &self,
        sql: &'static str,
        bind: impl Fn(SqlQuery) -> SqlQuery,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
        let reader = &self.db.inner.reader;
        retry_busy!(&self.db.inner.config, async {
            Ok(bind(sqlx::query(sql)).fetch_all(reader).await?)
        })
    }
}

type SqlQuery = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command_id: Option<Uuid>,
    ) -> Result<AppendResult> {
        let result = retry_busy!(&self.db.inner.config, async {
            self.try_append(stream, expected, &events, command_id).await
        })?;
        if result.position > 0 && !result.duplicate {
            self.db.notify();
        }
        Ok(result)
    }

    async fn command_result(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> Result<Option<AppendResult>> {
        let reader = &self.db.inner.reader;
        retry_busy!(&self.db.inner.config, async {
            command_row(&mut *reader.acquire().await?, stream, command_id).await
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let from = i64::try_from(from_version).unwrap_or(i64::MAX);
        let sql = select_events!(
            "WHERE category = ? AND stream_id = ? AND version >= ? ORDER BY version LIMIT ?"
        );
        self.read(sql, |q| {
            q.bind(stream.category.clone())
                .bind(stream.id.clone())
                .bind(from)
                .bind(limit(limit_n))
        })
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn read_stream_for_load(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit_n: usize,
    ) -> Result<Vec<LoadedEvent>> {
        let from = i64::try_from(from_version).unwrap_or(i64::MAX);
        self.read(
            "SELECT version, event_type, schema_version, payload FROM events \
             WHERE category = ? AND stream_id = ? AND version >= ? ORDER BY version LIMIT ?",
            |q| {
                q.bind(stream.category.clone())
                    .bind(stream.id.clone())
                    .bind(from)
                    .bind(limit(limit_n))
            },
        )
        .await?
        .iter()
        .map(|row| loaded_from_row(stream, row))
        .collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let reader = &self.db.inner.reader;
        retry_busy!(&self.db.inner.config, async {
            current_version(&mut *reader.acquire().await?, stream).await
        })
    }

    async fn read_all(&self, after: Cursor, limit_n: usize) -> Result<Vec<RecordedEvent>> {
        let after = i64::try_from(after.position).unwrap_or(i64::MAX);
        let sql = select_events!("WHERE position > ? ORDER BY position LIMIT ?");
        let rows = self
            .read(sql, |q| q.bind(after).bind(limit(limit_n)))
            .await?;
        // NOTE: the events before a corrupt row are handed out, so that subscribers stop right
        // before it; the next read starts at the corrupt row and reports it.
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match event_from_row(row) {
                Ok(e) => out.push(e),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn head_position(&self) -> Result<u64> {
        let reader = &self.db.inner.reader;
        let head: i64 = retry_busy!(&self.db.inner.config, async {
            Ok(
                sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                    .fetch_one(reader)
                    .await?,
            )
        })?;
        Ok(to_u64(head).unwrap_or(0))
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        let Ok(p) = i64::try_from(position) else {
            return Ok(None);
        };
        let reader = &self.db.inner.reader;
        let found: Option<i64> = retry_busy!(&self.db.inner.config, async {
            Ok(
                sqlx::query_scalar("SELECT position FROM events WHERE position = ?")
                    .bind(p)
                    .fetch_optional(reader)
                    .await?,
            )
        })?;
        Ok(found.map(|_| Cursor::new(0, position)))
    }

    fn wake_ups(&self) -> WakeUps {
        self.db.inner.wake.subscribe()
    }
}
