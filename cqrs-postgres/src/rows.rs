//! Stored rows turned into core values, with broken rows named rather than panicking.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_core::{
    Cursor, Error, LoadedEvent, LoadedText, Metadata, RecordedEvent, Result, StreamId,
};
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Row, Type, ValueRef};
use uuid::Uuid;

/// The columns every event query selects, in [`EventRow`] order.
pub(crate) const EVENT_COLUMNS: &str = "position, tx_id AS tx, stream_category, stream_id, stream_version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at";

/// Key of [`Metadata::extra`](cqrs_core::Metadata::extra) under which `read_all` hands on the raw
/// metadata (as a JSON string) of an event whose metadata does not parse; the rest of the
/// metadata is empty then.
pub const CORRUPT_METADATA_KEY: &str = "cqrs_corrupt_metadata";

/// Key of [`Metadata::extra`](cqrs_core::Metadata::extra) under which `read_all` tells why the
/// payload of an event could not be read (nested deeper than the JSON parser allows); the
/// payload is `null` then, so that decoding it fails and the subscriber parks the event.
pub const CORRUPT_PAYLOAD_KEY: &str = "cqrs_corrupt_payload";

/// One row of the events table, as [`EVENT_COLUMNS`] selects it.
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
    // NOTE: by index, in EVENT_COLUMNS order: looking each column up by name cost a replay
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

    /// The event, or [`Error::Corrupt`] naming its stream and version when a column is broken.
    pub(crate) fn into_recorded(self) -> Result<RecordedEvent> {
        let payload = serde_json::from_str::<Value>(&self.payload.0)
            .map_err(|e| self.corrupt(format!("payload does not parse: {e}")))?;
        let metadata = parse_metadata(&self.metadata.0)
            .map_err(|e| self.corrupt(format!("metadata does not parse: {e}")))?;
        self.into_recorded_with(payload, metadata)
    }

    /// Like [`into_recorded`](Self::into_recorded), but a broken payload or metadata is handed on
    /// as described at [`CORRUPT_PAYLOAD_KEY`] and [`CORRUPT_METADATA_KEY`].
    ///
    /// The all-stream reads this way: an error there would stop every subscriber at the row
    /// for good, while an event handed on can be handled or parked by each subscriber.
    pub(crate) fn into_recorded_lenient(self) -> Result<RecordedEvent> {
        let mut metadata = match parse_metadata(&self.metadata.0) {
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
        let payload = match serde_json::from_str::<Value>(&self.payload.0) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream = %self.stream(), version = self.stream_version, error = %e,
                    "event payload does not parse; handing the event on without it");
                metadata
                    .extra
                    .insert(CORRUPT_PAYLOAD_KEY.into(), Value::String(e.to_string()));
                Value::Null
            }
        };
        self.into_recorded_with(payload, metadata)
    }

    fn into_recorded_with(self, payload: Value, metadata: Metadata) -> Result<RecordedEvent> {
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
            payload,
            metadata,
        })
    }
}

/// The columns a load selects, in the order [`loaded_event`] reads them.
pub(crate) const LOAD_COLUMNS: &str = "stream_version, event_type, schema_version, payload";

/// One row of [`LOAD_COLUMNS`] of `stream`, or [`Error::Corrupt`] naming it when a column is
/// broken.
pub(crate) fn loaded_event(stream: &StreamId, row: &PgRow) -> Result<LoadedEvent> {
    let version: i64 = row.try_get(0).map_err(|e| load_corrupt(stream, 0, e))?;
    let at = version.max(0) as u64;
    let event_type: String = row.try_get(1).map_err(|e| load_corrupt(stream, at, e))?;
    let broken = |reason: String| Error::Corrupt {
        stream: stream.clone(),
        version: at,
        reason: format!("event type {event_type}: {reason}"),
    };
    let schema_version: i32 = row.try_get(2).map_err(|e| broken(e.to_string()))?;
    // NOTE: the text is handed on as stored; the handler decodes the event straight from it.
    let JsonText(payload) = row.try_get(3).map_err(|e| broken(e.to_string()))?;
    let stream_version =
        u64::try_from(version).map_err(|_| broken("negative stream version".into()))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|_| broken("negative schema version".into()))?;
    Ok(LoadedEvent::new(
        stream_version,
        event_type,
        schema_version,
        payload,
    ))
}

/// One row of the chunked range read (see `LOAD_RANGE`).
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Consecutive versions with one schema version: the events, in order.
    Events(Vec<LoadedEvent>),
    /// Versions with a gap, mixed schema versions or a type holding the separator: the chunk
    /// is to be read row by row.
    Irregular,
}

/// A row of the chunked range read: the chunk (the count, its bounds, the least and greatest
/// schema version, the types and payloads), the stream's version, whether the chunk came from a
/// packed block, and (aggregated from rows) the versions in the order the texts were joined.
/// An aggregated chunk whose versions are not its bounds' versions in order is
/// [`Chunk::Irregular`].
pub(crate) fn loaded_chunk(stream: &StreamId, row: &PgRow) -> Result<LoadedChunk> {
    let column = |e: sqlx::Error| load_corrupt(stream, 0, e);
    let head: i64 = row.try_get(7).map_err(column)?;
    let packed: bool = row.try_get(8).map_err(column)?;
    let (first, mut chunk) = chunk_of(stream, row)?;
    if !packed && let Chunk::Events(events) = &chunk {
        let versions: Option<Vec<i64>> = row.try_get(9).map_err(column)?;
        if !consecutive_from(first, events.len(), versions.as_deref().unwrap_or_default()) {
            chunk = Chunk::Irregular;
        }
    }
    Ok(LoadedChunk {
        head: to_u64(head),
        first,
        chunk,
        packed,
    })
}

/// A row of the chunked range read, decoded.
#[derive(Debug)]
pub(crate) struct LoadedChunk {
    /// The stream's version in the statement's snapshot.
    pub(crate) head: u64,
    /// The first version the chunk covers.
    pub(crate) first: u64,
    pub(crate) chunk: Chunk,
    /// Whether it was read from `event_blocks` rather than from the rows of `events`.
    pub(crate) packed: bool,
}

fn chunk_of(stream: &StreamId, row: &PgRow) -> Result<(u64, Chunk)> {
    let column = |e: sqlx::Error| load_corrupt(stream, 0, e);
    let n: i64 = row.try_get(0).map_err(column)?;
    let (first, last): (i64, i64) = (
        row.try_get(1).map_err(column)?,
        row.try_get(2).map_err(column)?,
    );
    let (Ok(first), Ok(last)) = (u64::try_from(first), u64::try_from(last)) else {
        return Err(load_corrupt_reason(
            stream,
            first,
            "negative stream version",
        ));
    };
    if n == 0 {
        return Ok((first, Chunk::Events(Vec::new())));
    }
    let (schema, last_schema): (i32, i32) = (
        row.try_get(3).map_err(column)?,
        row.try_get(4).map_err(column)?,
    );
    if last - first + 1 != n as u64 || schema != last_schema {
        return Ok((first, Chunk::Irregular));
    }
    let types: &str = row.try_get(5).map_err(column)?;
    let payloads: &str = row.try_get(6).map_err(column)?;
    Ok((
        first,
        joined_events(stream, first, last, schema, types, payloads)?,
    ))
}

/// Whether `versions` are `n` versions from `first` on, in order: the order in which a chunk's
/// texts were joined, checked before its parts are given these versions.
pub(crate) fn consecutive_from(first: u64, n: usize, versions: &[i64]) -> bool {
    versions.len() == n
        && (first..)
            .zip(versions)
            .all(|(want, &got)| u64::try_from(got) == Ok(want))
}

/// The events of versions `first..=last`, all of schema version `schema`, from their types and
/// payloads each joined by [`SEPARATOR`]: [`Chunk::Irregular`] if either text holds another
/// number of parts.
pub(crate) fn joined_events(
    stream: &StreamId,
    first: u64,
    last: u64,
    schema: i32,
    types: &str,
    payloads: &str,
) -> Result<Chunk> {
    let schema_version = u32::try_from(schema)
        .map_err(|_| load_corrupt_reason(stream, first as i64, "negative schema version"))?;
    let n = usize::try_from(last.saturating_sub(first) + 1).unwrap_or(usize::MAX);
    // NOTE: types and payloads come joined by the record separator (0x1E), which valid JSON
    // never holds unescaped; a type holding one splits into too many parts, and the chunk is
    // read again row by row.
    let (types, payloads) = (Arc::<str>::from(types), Arc::<str>::from(payloads));
    let (type_ranges, payload_ranges) = (split_ranges(&types, n), split_ranges(&payloads, n));
    let (Some(type_ranges), Some(payload_ranges)) = (type_ranges, payload_ranges) else {
        return Ok(Chunk::Irregular);
    };
    // NOTE: the events of a chunk share its two texts (one copy each) rather than each owning
    // two small strings.
    let events: Vec<LoadedEvent> = (first..)
        .zip(type_ranges.into_iter().zip(payload_ranges))
        .map(|(version, (type_range, payload_range))| {
            LoadedEvent::new(
                version,
                LoadedText::shared(&types, type_range),
                schema_version,
                LoadedText::shared(&payloads, payload_range),
            )
        })
        .collect();
    Ok(Chunk::Events(events))
}

/// Whether `events` (read as rows) can be packed as one block: consecutive versions, one
/// schema version, no type holding [`SEPARATOR`] (what `PACK_BLOCKS` checks again), and well
/// below the server's limit of 1 GB for one value (else every load would try and fail again).
pub(crate) fn packable(events: &[LoadedEvent]) -> bool {
    const MAX_BYTES: usize = 256 << 20;
    let Some(head) = events.first() else {
        return false;
    };
    let bytes: usize = events.iter().map(|e| e.payload.len() + 1).sum();
    bytes < MAX_BYTES
        && (head.stream_version..).zip(events).all(|(version, e)| {
            e.stream_version == version
                && e.schema_version == head.schema_version
                && !e.event_type.contains(SEPARATOR)
        })
}

fn load_corrupt_reason(stream: &StreamId, version: i64, reason: &str) -> Error {
    Error::Corrupt {
        stream: stream.clone(),
        version: version.max(0) as u64,
        reason: reason.into(),
    }
}

/// The bounds of the chunks of a range read of versions `from..=to`: chunks end where blocks of
/// `size` versions end (at multiples of `size`), so that every chunk but the first and the last
/// is a whole block.
pub(crate) fn chunk_bounds(from: u64, to: u64, size: u64) -> Vec<(u64, u64)> {
    let mut bounds = Vec::new();
    let mut first = from;
    while first <= to {
        let last = to.min(block_end(first, size));
        bounds.push((first, last));
        first = last + 1;
    }
    bounds
}

/// Whether versions `first..=last` are exactly one block of `size` versions.
pub(crate) fn whole_block(first: u64, last: u64, size: u64) -> bool {
    last.checked_sub(first) == Some(size - 1) && block_end(first, size) == last
}

/// The last version of the block of `size` versions that holds `version` (versions start at 1).
pub(crate) fn block_end(version: u64, size: u64) -> u64 {
    (version.max(1) - 1) / size * size + size
}

/// Puts the chunks of a range read back in version order, whatever order they come in (SQL
/// does not promise the order of a join's rows; PostgreSQL keeps the order of the array of
/// chunk starts, so in practice each chunk is handed over as it arrives).
#[derive(Debug)]
pub(crate) struct InVersionOrder<T> {
    /// The first version not handed over yet.
    next: u64,
    /// The range's last version.
    to: u64,
    /// Versions per block (see [`chunk_bounds`]).
    size: u64,
    /// Chunks that came before their turn, by first version.
    ahead: std::collections::BTreeMap<u64, T>,
}

impl<T> InVersionOrder<T> {
    /// For a range `from..=to` in the chunks of [`chunk_bounds`].
    pub(crate) fn new(from: u64, to: u64, size: u64) -> Self {
        InVersionOrder {
            next: from,
            to,
            size,
            ahead: Default::default(),
        }
    }

    /// Takes in the chunk that starts at version `first`.
    pub(crate) fn put(&mut self, first: u64, chunk: T) {
        self.ahead.insert(first, chunk);
    }

    /// The chunk that comes next in version order, with its first and last version, if it has
    /// come.
    pub(crate) fn take(&mut self) -> Option<(u64, u64, T)> {
        let first = self.next;
        let chunk = self.ahead.remove(&first)?;
        let last = self.to.min(block_end(first, self.size));
        self.next = last + 1;
        Some((first, last, chunk))
    }

    /// The versions not handed over yet, if any.
    pub(crate) fn rest(&self) -> Option<(u64, u64)> {
        (self.next <= self.to).then_some((self.next, self.to))
    }
}

/// The byte ranges of the `n` parts of `text` joined by [`SEPARATOR`], or `None` if it holds
/// another number of parts.
fn split_ranges(text: &str, n: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let mut ranges = Vec::with_capacity(n);
    let mut start = 0;
    for part in text.split(SEPARATOR) {
        if ranges.len() == n {
            return None;
        }
        ranges.push(start..start + part.len());
        start += part.len() + SEPARATOR.len_utf8();
    }
    (ranges.len() == n).then_some(ranges)
}

/// Joins the types and the payloads of a chunk.
const SEPARATOR: char = '\u{1e}';

fn load_corrupt(stream: &StreamId, version: u64, e: sqlx::Error) -> Error {
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

#[cfg(test)]
mod tests {
    use super::{
        InVersionOrder, chunk_bounds, consecutive_from, packable, split_ranges, whole_block,
    };
    use cqrs_core::LoadedEvent;

    #[test]
    fn a_chunk_is_taken_only_with_its_versions_in_order() {
        assert!(consecutive_from(501, 3, &[501, 502, 503]));
        assert!(consecutive_from(7, 0, &[]));
        assert!(
            !consecutive_from(501, 3, &[501, 503, 502]),
            "joined out of order"
        );
        assert!(!consecutive_from(501, 3, &[502, 503, 504]), "shifted");
        assert!(
            !consecutive_from(501, 3, &[501, 502]),
            "fewer versions than parts"
        );
        assert!(!consecutive_from(501, 3, &[]), "no versions");
        assert!(!consecutive_from(1, 2, &[1, -2]), "negative");
    }

    #[test]
    fn a_joined_text_splits_into_the_byte_ranges_of_its_parts() {
        let text = "{\"a\":\"é\"}\u{1e}{}\u{1e}";
        let ranges = split_ranges(text, 3).expect("three parts");
        let parts: Vec<&str> = ranges.into_iter().map(|r| &text[r]).collect();
        assert_eq!(parts, ["{\"a\":\"é\"}", "{}", ""]);
        assert_eq!(split_ranges(text, 2), None, "more parts than events");
        assert_eq!(split_ranges(text, 4), None, "fewer parts than events");
        let whole = split_ranges("Deposited", 1).expect("one part");
        assert_eq!((whole.len(), &whole[0]), (1, &(0..9)));
    }

    #[test]
    fn chunks_are_handed_over_in_version_order_whatever_order_they_come_in() {
        let mut chunks = InVersionOrder::new(501, 1_700, 500);
        chunks.put(1_001, "b");
        assert_eq!(chunks.take(), None, "the first chunk has not come");
        chunks.put(1_501, "c");
        chunks.put(501, "a");
        assert_eq!(chunks.take(), Some((501, 1_000, "a")));
        assert_eq!(chunks.take(), Some((1_001, 1_500, "b")));
        assert_eq!(
            chunks.take(),
            Some((1_501, 1_700, "c")),
            "the last one is short"
        );
        assert_eq!(chunks.take(), None);
        assert_eq!(chunks.rest(), None);
    }

    #[test]
    fn only_consecutive_versions_of_one_schema_and_plain_types_are_packable() {
        let events = |f: &dyn Fn(u64) -> (u64, &'static str, u32)| -> Vec<LoadedEvent> {
            (1..=5)
                .map(|i| {
                    let (version, ty, schema) = f(i);
                    LoadedEvent::new(version, ty, schema, "{}")
                })
                .collect()
        };
        assert!(packable(&events(&|i| (i, "Added", 1))));
        assert!(!packable(&events(&|i| (
            if i == 5 { 6 } else { i },
            "Added",
            1
        ))));
        assert!(!packable(&events(&|i| (
            i,
            "Added",
            if i == 3 { 2 } else { 1 }
        ))));
        assert!(!packable(&events(&|i| (
            i,
            if i == 2 { "A\u{1e}B" } else { "Added" },
            1
        ))));
        assert!(!packable(&[]));
    }

    #[test]
    fn chunks_end_where_blocks_end() {
        assert_eq!(
            chunk_bounds(251, 1_700, 500),
            [(251, 500), (501, 1_000), (1_001, 1_500), (1_501, 1_700)]
        );
        assert_eq!(chunk_bounds(1, 500, 500), [(1, 500)]);
        assert_eq!(chunk_bounds(500, 501, 500), [(500, 500), (501, 501)]);
        assert_eq!(chunk_bounds(7, 6, 500), []);
        assert!(whole_block(501, 1_000, 500));
        assert!(!whole_block(500, 999, 500) && !whole_block(501, 999, 500));
        assert!(!whole_block(501, 400, 500));
        let mut chunks = InVersionOrder::new(251, 1_200, 500);
        for (first, _) in chunk_bounds(251, 1_200, 500) {
            chunks.put(first, ());
        }
        assert_eq!(chunks.take(), Some((251, 500, ())));
        assert_eq!(chunks.take(), Some((501, 1_000, ())));
        assert_eq!(chunks.take(), Some((1_001, 1_200, ())));
        assert_eq!(chunks.rest(), None);
    }

    #[test]
    fn what_did_not_come_is_the_rest_of_the_range() {
        let mut chunks = InVersionOrder::new(1, 2_000, 500);
        chunks.put(1, ());
        chunks.put(1_001, ());
        assert_eq!(chunks.take(), Some((1, 500, ())));
        assert_eq!(chunks.take(), None);
        assert_eq!(chunks.rest(), Some((501, 2_000)));
    }
}
