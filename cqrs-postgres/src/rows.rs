//! Stored rows turned into core values, with broken rows named rather than panicking.

use chrono::{DateTime, Utc};
use cqrs_core::{Cursor, Error, Metadata, RecordedEvent, Result, StreamEvent, StreamId};
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Row, Type, ValueRef};
use uuid::Uuid;

/// Key of [`Metadata::extra`](cqrs_core::Metadata::extra) under which `read_all` hands on the raw
/// metadata (as a JSON string) of an event whose metadata does not parse; the rest of the
/// metadata is empty then.
pub const CORRUPT_METADATA_KEY: &str = "cqrs_corrupt_metadata";

/// One row of the events table, as [`READ_ALL`](crate::sql::READ_ALL) selects it.
#[derive(Debug)]
pub(crate) struct EventRow {
    position: i64,
    tx: Xid8,
    stream_category: String,
    stream_id: String,
    stream_version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    // NOTE: JSON columns come as text and are parsed here, so that a value the parser refuses
    // (nested too deep) is one broken row, named, rather than a failed read of a whole batch.
    payload: JsonText,
    metadata: JsonText,
    recorded_at: DateTime<Utc>,
}

impl<'r> sqlx::FromRow<'r, PgRow> for EventRow {
    // NOTE: by index, in the order of the statement's columns: looking each column up by name cost a replay
    // about a twentieth of its client time.
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(EventRow {
            position: row.try_get(0)?,
            tx: row.try_get(1)?,
            stream_category: row.try_get(2)?,
            stream_id: row.try_get(3)?,
            stream_version: row.try_get(4)?,
            event_id: row.try_get(5)?,
            event_type: row.try_get(6)?,
            schema_version: row.try_get(7)?,
            payload: row.try_get(8)?,
            metadata: row.try_get(9)?,
            recorded_at: row.try_get(10)?,
        })
    }
}

/// Metadata from its stored text; the empty object, what most events carry, without the parser.
fn parse_metadata(text: &str) -> serde_json::Result<Metadata> {
    if text == "{}" {
        Ok(Metadata::default())
    } else {
        serde_json::from_str(text)
    }
}

impl EventRow {
    fn stream(&self) -> StreamId {
        StreamId::new(self.stream_category.clone(), self.stream_id.clone())
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            stream: self.stream(),
            version: self.stream_version.max(0) as u64,
            reason: reason.into(),
        }
    }

    /// The event, its payload as the stored text (decoded when the event is); broken metadata is
    /// handed on as described at [`CORRUPT_METADATA_KEY`], other broken columns are
    /// [`Error::Corrupt`] naming its stream and version.
    ///
    /// The all-stream reads this way: an error there would stop every subscriber at the row
    /// for good, while an event handed on can be handled or parked by each subscriber.
    pub(crate) fn into_recorded_lenient(self) -> Result<RecordedEvent> {
        let metadata = match parse_metadata(&self.metadata.0) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(stream = %self.stream(), version = self.stream_version, error = %e,
                    "event metadata does not parse; handing the event on with the raw metadata");
                let mut m = Metadata::default();
                m.extra.insert(
                    CORRUPT_METADATA_KEY.into(),
                    Value::String(self.metadata.0.clone()),
                );
                m
            }
        };
        self.into_recorded_with(metadata)
    }

    fn into_recorded_with(self, metadata: Metadata) -> Result<RecordedEvent> {
        let stream_version = u64::try_from(self.stream_version)
            .map_err(|_| self.corrupt("negative stream version"))?;
        let schema_version = u32::try_from(self.schema_version)
            .map_err(|_| self.corrupt("negative schema version"))?;
        let (Ok(tx), Ok(position)) = (u64::try_from(self.tx.0), u64::try_from(self.position))
        else {
            return Err(self.corrupt("negative position or transaction id"));
        };
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream: StreamId::new(self.stream_category, self.stream_id),
            stream_version,
            cursor: Cursor::new(tx, position),
            recorded_at: self.recorded_at,
            event_type: self.event_type,
            schema_version,
            payload: self.payload.0,
            metadata,
        })
    }
}

/// A row of [`READ_STREAM`](crate::sql::READ_STREAM) of `stream` as a [`StreamEvent`] (`None`
/// for the row of an empty range), or [`Error::Corrupt`] naming it when a column is broken. The
/// payload and the metadata are handed on as the stored text: a load decodes the payload
/// straight from it.
pub(crate) fn stream_event(stream: &StreamId, row: &PgRow) -> Result<Option<StreamEvent>> {
    let version: Option<i64> = row.try_get(1).map_err(|e| column(stream, 0, e))?;
    let Some(version) = version else {
        return Ok(None);
    };
    let at = version.max(0) as u64;
    let broken = |reason: String| Error::Corrupt {
        stream: stream.clone(),
        version: at,
        reason,
    };
    let get = |e: sqlx::Error| broken(e.to_string());
    let schema_version: i32 = row.try_get(4).map_err(get)?;
    let JsonText(payload) = row.try_get(5).map_err(get)?;
    let JsonText(metadata) = row.try_get(6).map_err(get)?;
    let position: i64 = row.try_get(8).map_err(get)?;
    let Xid8(tx) = row.try_get(9).map_err(get)?;
    Ok(Some(StreamEvent {
        stream_version: u64::try_from(version)
            .map_err(|_| broken("negative stream version".into()))?,
        event_id: row.try_get(2).map_err(get)?,
        event_type: row.try_get(3).map_err(get)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| broken("negative schema version".into()))?,
        payload,
        metadata,
        recorded_at: row.try_get(7).map_err(get)?,
        cursor: Cursor::new(to_u64(tx), to_u64(position)),
    }))
}

fn column(stream: &StreamId, version: u64, e: sqlx::Error) -> Error {
    Error::Corrupt {
        stream: stream.clone(),
        version,
        reason: e.to_string(),
    }
}

/// A `u64` from the core as a PostgreSQL `BIGINT`.
pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n)
        .map_err(|_| Error::Invalid(format!("{what} {n} is beyond the range of a BIGINT")))
}

/// A `BIGINT` read back as a `u64` (the tables only hold non-negative numbers there).
pub(crate) fn to_u64(n: i64) -> u64 {
    n.max(0) as u64
}

const JSON: PgTypeInfo = PgTypeInfo::with_oid(Oid(114));
const JSONB: PgTypeInfo = PgTypeInfo::with_oid(Oid(3802));
const XID8: PgTypeInfo = PgTypeInfo::with_oid(Oid(5069));

/// The text of a `json` column as the server sends it (also reads `jsonb` and `text`).
///
/// Selecting `payload::text` instead costs the server a conversion per row, about a third of
/// the time of reading a stream; a `json` value is sent as it is stored.
#[derive(Debug)]
pub(crate) struct JsonText(pub(crate) String);

impl Type<Postgres> for JsonText {
    fn type_info() -> PgTypeInfo {
        JSON
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        *ty == JSON || *ty == JSONB || <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for JsonText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let jsonb = value.format() == PgValueFormat::Binary && *value.type_info() == JSONB;
        let mut bytes = value.as_bytes()?;
        if jsonb {
            // NOTE: binary jsonb is a format version byte (1) and the text.
            match bytes.split_first() {
                Some((1, text)) => bytes = text,
                _ => return Err("unsupported jsonb format version".into()),
            }
        }
        Ok(JsonText(std::str::from_utf8(bytes)?.to_owned()))
    }
}

/// A transaction id of an `xid8` column, read without a cast on the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Xid8(pub(crate) i64);

impl Type<Postgres> for Xid8 {
    fn type_info() -> PgTypeInfo {
        XID8
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        *ty == XID8 || <i64 as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Xid8 {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let id = match value.format() {
            PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                u64::from_be_bytes(bytes)
            }
            PgValueFormat::Text => value.as_str()?.parse()?,
        };
        Ok(Xid8(i64::try_from(id)?))
    }
}
