//! The event store as three small traits, one per concern, at the serialized level (a back-end
//! knows no user types):
//!
//! - [`EventAppender`]: append with an expected version, idempotent by command id;
//! - [`StreamReader`]: read one stream from a version, in one streaming read that also tells
//!   the stream's version;
//! - [`AllStreamReader`]: the all-stream in commit order, with its wake-ups.
//!
//! [`EventStore`] is all three, implemented for every type that implements them; the
//! conveniences built on them ([`stream_version`](StreamReaderExt::stream_version),
//! [`read_stream`](StreamReaderExt::read_stream)) live in [`StreamReaderExt`]. A new back-end
//! implements seven methods.

use std::ops::RangeInclusive;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{
    Cursor, DomainEvent, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId,
};

/// What an append (or a repeated idempotent command) left in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// Global position of the last event appended (0 when nothing was appended).
    pub position: u64,
    /// True when the command id had been seen: nothing new was written and this is the first
    /// append's result.
    pub duplicate: bool,
}

/// A fingerprint of the request a command id was first used for: a name-based UUID (SHA-1) of
/// the request's JSON, stable across processes and versions.
///
/// ```
/// use cqrs_core::Fingerprint;
///
/// let a = Fingerprint::of(&("deposit", 10))?;
/// assert_eq!(a, Fingerprint::of(&("deposit", 10))?);
/// assert_ne!(a, Fingerprint::of(&("deposit", 11))?);
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(Uuid);

impl Fingerprint {
    /// NOTE: a fixed namespace, so that the same request gives the same fingerprint in every
    /// process and every version of this crate.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6c0f_5e0a_4b1d_4f7e_9a51_3f0c_2d8e_b7a4);

    /// The fingerprint of `request`'s JSON. Maps are serialized with their keys sorted, so
    /// the order of a map's entries does not change it.
    pub fn of<T: Serialize + ?Sized>(request: &T) -> Result<Self> {
        let serialize = |source| Error::Serialize {
            event_type: std::any::type_name::<T>().to_owned(),
            source,
        };
        // NOTE: through a `Value`, whose maps are sorted, so that a `HashMap` in the request
        // gives one fingerprint whatever its iteration order.
        let value = serde_json::to_value(request).map_err(serialize)?;
        let bytes = serde_json::to_vec(&value).map_err(serialize)?;
        Ok(Fingerprint(Uuid::new_v5(&Self::NAMESPACE, &bytes)))
    }

    /// A fingerprint from its stored form.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Fingerprint(uuid)
    }

    /// The stored form: back-ends keep it in a UUID column.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

/// The id that makes an append idempotent on its stream, and the fingerprint of the request it
/// stands for.
///
/// The store keeps both with the append's result. The same id again with the same fingerprint
/// (or where either side has none) is a repeat: nothing is written and the first result comes
/// back. The same id with another fingerprint is [`Error::CommandIdReused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId {
    /// The id, unique per stream.
    pub id: Uuid,
    /// The fingerprint of the request; `None` accepts any repeat.
    pub fingerprint: Option<Fingerprint>,
}

impl CommandId {
    /// An id with no fingerprint: any repeat of it is taken as the same request.
    pub const fn new(id: Uuid) -> Self {
        CommandId {
            id,
            fingerprint: None,
        }
    }

    /// An id for the request `fingerprint` stands for.
    pub const fn with_fingerprint(id: Uuid, fingerprint: Fingerprint) -> Self {
        CommandId {
            id,
            fingerprint: Some(fingerprint),
        }
    }

    /// Whether a stored fingerprint allows this command id as a repeat of its request.
    pub fn matches(&self, stored: Option<Fingerprint>) -> bool {
        match (self.fingerprint, stored) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        }
    }

    /// The [`Error::CommandIdReused`] of this id on `stream`.
    pub fn reused(&self, stream: &StreamId) -> Error {
        Error::CommandIdReused {
            stream: stream.clone(),
            command_id: self.id,
        }
    }
}

impl From<Uuid> for CommandId {
    fn from(id: Uuid) -> Self {
        CommandId::new(id)
    }
}

/// One event of a stream as a [`StreamReader`] hands it over: the payload and the metadata as
/// their stored JSON text, so that a load decodes the payload straight into its type (see
/// [`decode`](Self::decode)) and never parses the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// Its version in the stream, from 1.
    pub stream_version: u64,
    /// Its place in the all-stream.
    pub cursor: Cursor,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of `payload` (after any upcasting).
    pub schema_version: u32,
    /// The payload, as JSON text.
    pub payload: String,
    /// The metadata, as JSON text.
    pub metadata: String,
}

impl StreamEvent {
    /// Decodes the payload of this event of `stream` straight from its text.
    pub fn decode<E: DomainEvent>(&self, stream: &StreamId) -> Result<E> {
        E::decode_json(&self.event_type, &self.payload).map_err(|e| self.decode_error(stream, e))
    }

    /// The [`Error::Decode`] naming this event of `stream`.
    pub fn decode_error(&self, stream: &StreamId, source: impl Into<crate::BoxError>) -> Error {
        Error::Decode {
            stream: stream.clone(),
            version: self.stream_version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            source: source.into(),
        }
    }

    /// The whole event of `stream`, its metadata parsed (the payload stays text, decoded when
    /// the event is); [`Error::Corrupt`] naming it when the metadata does not parse.
    pub fn into_recorded(self, stream: &StreamId) -> Result<RecordedEvent> {
        let corrupt = |what: &str, e: serde_json::Error| Error::Corrupt {
            stream: stream.clone(),
            version: self.stream_version,
            reason: format!("{what} does not parse: {e}"),
        };
        // NOTE: the empty object, what most events carry, without the parser.
        let metadata = if self.metadata == "{}" {
            Metadata::default()
        } else {
            serde_json::from_str(&self.metadata).map_err(|e| corrupt("metadata", e))?
        };
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream: stream.clone(),
            stream_version: self.stream_version,
            cursor: self.cursor,
            recorded_at: self.recorded_at,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata,
        })
    }

    /// The event of a [`RecordedEvent`], its metadata written back to text.
    pub fn from_recorded(event: &RecordedEvent) -> Self {
        StreamEvent {
            event_id: event.event_id,
            stream_version: event.stream_version,
            cursor: event.cursor,
            recorded_at: event.recorded_at,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            payload: event.payload.clone(),
            metadata: serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".into()),
        }
    }
}

/// What a stream read hands its sink: first the stream's version as the read saw it (once),
/// then the events, in version order.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The stream's version (0 for no stream).
    Version(u64),
    /// The next event.
    Event(StreamEvent),
}

/// Where [`StreamReader::read_stream_into`] hands what it reads.
pub type StreamSink<'a> = dyn FnMut(StreamItem) -> Result<()> + Send + 'a;

/// A receiver of the store's "something was appended" signals.
///
/// The value is a counter that only grows; subscribers wait for it to change. Stores that
/// cannot notify hand out a receiver that never changes, and runners fall back to polling.
pub type WakeUps = watch::Receiver<u64>;

/// Appends events to streams. Appends are atomic: all events of a call are written, or none.
/// A stream's versions start at 1 with no gaps.
#[async_trait]
pub trait EventAppender: Send + Sync {
    /// Appends `events` to `stream` if it is at `expected`.
    ///
    /// A mismatch fails with [`Error::Conflict`] and writes nothing. With a `command` the
    /// append is idempotent per stream: if that id was already appended to this stream,
    /// nothing is written and the first result comes back with `duplicate: true`, whatever
    /// `expected` says, unless the fingerprints differ ([`Error::CommandIdReused`]).
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult>;

    /// The result of an earlier append carrying `command`'s id on `stream`, if there was one
    /// ([`Error::CommandIdReused`] if it carried another fingerprint).
    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>>;
}

/// Reads one stream.
#[async_trait]
pub trait StreamReader: Send + Sync {
    /// Reads the events of `stream` with versions in `versions`, handing `sink` first the
    /// stream's version as the read saw it, then each event in version order. Returns that
    /// version. An empty range (`1..=0`) reads the version only.
    ///
    /// Not held back by open transactions: a writer reads its own stream in full. An error
    /// from `sink` ends the read and is returned; a stored event that cannot be read fails the
    /// read with an error naming its stream and version.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use cqrs_core::{EventAppender, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId,
    ///                 StreamItem, StreamReader};
    ///
    /// let store = InMemoryEventStore::new();
    /// let stream = StreamId::new("account", "a-1");
    /// let events = (0..3)
    ///     .map(|n| NewEvent::new("Deposited", serde_json::json!({ "amount": n })))
    ///     .collect();
    /// store.append(&stream, ExpectedVersion::NoStream, events, None).await?;
    ///
    /// let mut seen = Vec::new();
    /// let head = store
    ///     .read_stream_into(&stream, 2..=10, &mut |item| {
    ///         seen.push(match item {
    ///             StreamItem::Version(v) => format!("version {v}"),
    ///             StreamItem::Event(e) => e.payload,
    ///         });
    ///         Ok(())
    ///     })
    ///     .await?;
    /// assert_eq!(seen, ["version 3", r#"{"amount":1}"#, r#"{"amount":2}"#]);
    /// assert_eq!(head, 3);
    /// # Ok::<(), cqrs_core::Error>(())
    /// # }).unwrap();
    /// ```
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64>;
}

/// Reads the all-stream: every event by [`Cursor`], in commit order, with wake-ups when events
/// are appended.
#[async_trait]
pub trait AllStreamReader: Send + Sync {
    /// Events of the all-stream strictly after `after`, in cursor order, at most `limit`.
    ///
    /// Only events that no in-flight append can precede are returned, so a later call from the
    /// last returned cursor never skips one (guarantee 2 of the architecture).
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The highest global position appended so far (0 for an empty store).
    async fn head_position(&self) -> Result<u64>;

    /// The cursor of the event at `position`, if it exists and is readable by
    /// [`read_all`](Self::read_all) yet.
    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>>;

    /// A receiver that changes when events are appended (in this process or, where the
    /// back-end can tell, in others).
    fn wake_ups(&self) -> WakeUps;
}

/// The append-only event store: an [`EventAppender`], a [`StreamReader`] and an
/// [`AllStreamReader`]. Every type that is all three is one; hand it around as
/// `Arc<dyn EventStore>`.
pub trait EventStore: EventAppender + StreamReader + AllStreamReader {}

impl<T: EventAppender + StreamReader + AllStreamReader + ?Sized> EventStore for T {}

/// Conveniences on every [`StreamReader`].
#[async_trait]
pub trait StreamReaderExt: StreamReader {
    /// The stream's current version (0 when it does not exist).
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        #[allow(clippy::reversed_empty_ranges)]
        self.read_stream_into(stream, 1..=0, &mut |_| Ok(())).await
    }

    /// Events of one stream with version `>= from_version`, in order, at most `limit`, whole:
    /// a payload or metadata that does not parse is [`Error::Corrupt`].
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let to = from_version.saturating_add(limit as u64 - 1);
        let mut events = Vec::new();
        self.read_stream_into(stream, from_version..=to, &mut |item| {
            if let StreamItem::Event(e) = item {
                events.push(e.into_recorded(stream)?);
            }
            Ok(())
        })
        .await?;
        Ok(events)
    }
}

impl<T: StreamReader + ?Sized> StreamReaderExt for T {}

macro_rules! forward {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<T: EventAppender + ?Sized> EventAppender for $ptr {
            async fn append(&self, stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, command: Option<CommandId>) -> Result<AppendResult> {
                (**self).append(stream, expected, events, command).await
            }
            async fn command_result(&self, stream: &StreamId, command: CommandId) -> Result<Option<AppendResult>> {
                (**self).command_result(stream, command).await
            }
        }

        #[async_trait]
        impl<T: StreamReader + ?Sized> StreamReader for $ptr {
            async fn read_stream_into(&self, stream: &StreamId, versions: RangeInclusive<u64>, sink: &mut StreamSink<'_>) -> Result<u64> {
                (**self).read_stream_into(stream, versions, sink).await
            }
        }

        #[async_trait]
        impl<T: AllStreamReader + ?Sized> AllStreamReader for $ptr {
            async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
                (**self).read_all(after, limit).await
            }
            async fn head_position(&self) -> Result<u64> {
                (**self).head_position().await
            }
            async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
                (**self).cursor_of(position).await
            }
            fn wake_ups(&self) -> WakeUps {
                (**self).wake_ups()
            }
        }
    )*};
}

forward!(&T, Arc<T>, Box<T>);
