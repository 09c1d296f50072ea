//! Stored rows turned into core values, with broken rows named rather than panicking, and the
//! store's time format.

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_core::{Cursor, Error, Metadata, RecordedEvent, Result, StreamEvent, StreamId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::error::to_u64;

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

/// The checks of the columns every event row has, naming the row when one is broken.
struct Columns<'a> {
    stream: &'a StreamId,
    raw_version: i64,
}

impl Columns<'_> {
    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            stream: self.stream.clone(),
            version: self.raw_version.max(0) as u64,
            reason,
        }
    }

    fn version(&self) -> Result<u64> {
        let v = self.raw_version;
        to_u64(v).ok_or_else(|| self.corrupt(format!("negative version {v}")))
    }

    fn position(&self, position: i64) -> Result<u64> {
        to_u64(position).ok_or_else(|| self.corrupt(format!("negative position {position}")))
    }

    fn schema_version(&self, schema_version: i64) -> Result<u32> {
        u32::try_from(schema_version)
            .map_err(|_| self.corrupt(format!("schema version {schema_version} out of range")))
    }

    fn event_id(&self, event_id: &str) -> Result<Uuid> {
        Uuid::parse_str(event_id).map_err(|e| self.corrupt(format!("event id {event_id:?}: {e}")))
    }

    fn recorded_at(&self, recorded_at: &str) -> Result<DateTime<Utc>> {
        parse_time(recorded_at)
            .ok_or_else(|| self.corrupt(format!("recorded_at {recorded_at:?} is not RFC 3339")))
    }
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    i: usize,
) -> Result<T> {
    row.try_get(i).map_err(Error::backend)
}

/// The columns of a row of [`READ_ALL`](crate::sql::READ_ALL), as stored.
pub(crate) struct RawEvent<'a> {
    pub(crate) position: i64,
    pub(crate) event_id: &'a str,
    pub(crate) category: &'a str,
    pub(crate) stream_id: &'a str,
    pub(crate) version: i64,
    pub(crate) event_type: &'a str,
    pub(crate) schema_version: i64,
    pub(crate) payload: &'a str,
    pub(crate) metadata: &'a str,
    pub(crate) recorded_at: &'a str,
}

/// Turns a row of [`READ_ALL`](crate::sql::READ_ALL) back into a [`RecordedEvent`].
pub(crate) fn event_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    event_from_parts(RawEvent {
        position: get(row, 0)?,
        event_id: get(row, 1)?,
        category: get(row, 2)?,
        stream_id: get(row, 3)?,
        version: get(row, 4)?,
        event_type: get(row, 5)?,
        schema_version: get(row, 6)?,
        payload: get(row, 7)?,
        metadata: get(row, 8)?,
        recorded_at: get(row, 9)?,
    })
}

/// Turns the columns of an event row back into a [`RecordedEvent`].
///
/// The payload is handed on as stored (it is valid JSON: the table checks it), so a payload that
/// no longer fits its type fails later, in [`RecordedEvent::decode`], naming the stream, version
/// and type. Columns only the store writes (id, time, metadata) that do not parse make the row
/// [`Error::Corrupt`], naming the stream and version.
pub(crate) fn event_from_parts(row: RawEvent<'_>) -> Result<RecordedEvent> {
    let stream = StreamId::new(row.category, row.stream_id);
    let c = Columns {
        stream: &stream,
        raw_version: row.version,
    };
    let stream_version = c.version()?;
    let position = c.position(row.position)?;
    let schema_version = c.schema_version(row.schema_version)?;
    let event_id = c.event_id(row.event_id)?;
    let recorded_at = c.recorded_at(row.recorded_at)?;
    let metadata = match row.metadata {
        // NOTE: the empty object, what most events carry, without the parser.
        "{}" => Metadata::default(),
        text => serde_json::from_str(text)
            .map_err(|e| c.corrupt(format!("metadata does not parse: {e}")))?,
    };
    Ok(RecordedEvent {
        event_id,
        stream_version,
        cursor: Cursor::new(0, position),
        recorded_at,
        event_type: row.event_type.to_owned(),
        schema_version,
        payload: row.payload.to_owned(),
        metadata,
        stream,
    })
}

/// The event columns of a row of [`READ_STREAM`](crate::sql::READ_STREAM), as stored.
pub(crate) struct RawStreamEvent<'a> {
    pub(crate) version: i64,
    pub(crate) event_id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) schema_version: i64,
    pub(crate) payload: &'a str,
    pub(crate) metadata: &'a str,
    pub(crate) recorded_at: &'a str,
    pub(crate) position: i64,
}

/// Turns the event columns of a row of [`READ_STREAM`](crate::sql::READ_STREAM) (from column 1
/// on) into a [`StreamEvent`]; `None` for the row of a range without events.
pub(crate) fn stream_event_from_row(
    stream: &StreamId,
    row: &SqliteRow,
) -> Result<Option<StreamEvent>> {
    let Some(version) = get::<Option<i64>>(row, 1)? else {
        return Ok(None);
    };
    stream_event_from_parts(
        stream,
        RawStreamEvent {
            version,
            event_id: get(row, 2)?,
            event_type: get(row, 3)?,
            schema_version: get(row, 4)?,
            payload: get(row, 5)?,
            metadata: get(row, 6)?,
            recorded_at: get(row, 7)?,
            position: get(row, 8)?,
        },
    )
    .map(Some)
}

/// Turns the columns of an event of one stream into a [`StreamEvent`]. The payload and the
/// metadata are handed on as stored (the table checks that they are JSON).
pub(crate) fn stream_event_from_parts(
    stream: &StreamId,
    row: RawStreamEvent<'_>,
) -> Result<StreamEvent> {
    let c = Columns {
        stream,
        raw_version: row.version,
    };
    Ok(StreamEvent {
        stream_version: c.version()?,
        event_id: c.event_id(row.event_id)?,
        event_type: row.event_type.to_owned(),
        schema_version: c.schema_version(row.schema_version)?,
        payload: row.payload.to_owned(),
        metadata: row.metadata.to_owned(),
        recorded_at: c.recorded_at(row.recorded_at)?,
        cursor: Cursor::new(0, c.position(row.position)?),
    })
}
