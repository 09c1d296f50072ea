//! The storage traits every back-end implements, at the serialized level: a back-end knows no
//! user types.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::Result;
use crate::event::{Cursor, ExpectedVersion, NewEvent, RecordedEvent, StreamId};

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

/// The part of a stored event that loading an aggregate needs; see
/// [`EventStore::read_stream_for_load`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadedEvent {
    /// Version in its stream, from 1.
    pub stream_version: u64,
    /// The event's type name.
    pub event_type: LoadedText,
    /// Schema version of the payload (after any upcasting).
    pub schema_version: u32,
    /// The payload as JSON text, as stored (or upcast): the handler decodes the event straight
    /// from it (see [`DomainEvent::decode_json`](crate::DomainEvent::decode_json)).
    pub payload: LoadedText,
}

impl LoadedEvent {
    /// A loaded event from its parts; `payload` is JSON text.
    pub fn new(
        stream_version: u64,
        event_type: impl Into<LoadedText>,
        schema_version: u32,
        payload: impl Into<LoadedText>,
    ) -> Self {
        LoadedEvent {
            stream_version,
            event_type: event_type.into(),
            schema_version,
            payload: payload.into(),
        }
    }
}

/// A text of a [`LoadedEvent`]: a `String` of its own, or a slice of a larger text that the
/// events of one read share, so that a store reading many events in one piece need not copy
/// each event's text out of it. It reads as a `str`.
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::LoadedText;
///
/// let chunk: Arc<str> = Arc::from(r#"{"amount":1}|{"amount":2}"#);
/// let second = LoadedText::shared(&chunk, 13..25);
/// assert_eq!(second, r#"{"amount":2}"#);
/// assert_eq!(second.len(), 12);
/// assert_eq!(LoadedText::from("Deposited"), LoadedText::from(String::from("Deposited")));
/// ```
#[derive(Clone)]
pub struct LoadedText(TextRepr);

#[derive(Clone)]
enum TextRepr {
    Owned(String),
    Shared {
        text: Arc<str>,
        start: usize,
        end: usize,
    },
}

impl LoadedText {
    /// The slice `range` of `text`, sharing it. A range that is out of bounds or does not fall
    /// on character boundaries panics, as slicing a `str` does.
    pub fn shared(text: &Arc<str>, range: std::ops::Range<usize>) -> Self {
        assert!(
            text.get(range.clone()).is_some(),
            "{range:?} is not a slice of a text of {} bytes",
            text.len()
        );
        LoadedText(TextRepr::Shared {
            text: text.clone(),
            start: range.start,
            end: range.end,
        })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            TextRepr::Owned(s) => s,
            // NOTE: the bounds were checked when the slice was made; the text never changes.
            TextRepr::Shared { text, start, end } => &text[*start..*end],
        }
    }
}

impl std::ops::Deref for LoadedText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for LoadedText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for LoadedText {
    fn from(s: String) -> Self {
        LoadedText(TextRepr::Owned(s))
    }
}

impl From<&str> for LoadedText {
    fn from(s: &str) -> Self {
        LoadedText(TextRepr::Owned(s.to_owned()))
    }
}

impl From<LoadedText> for String {
    fn from(t: LoadedText) -> Self {
        match t.0 {
            TextRepr::Owned(s) => s,
            TextRepr::Shared { .. } => t.as_str().to_owned(),
        }
    }
}

impl PartialEq for LoadedText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LoadedText {}

impl PartialEq<str> for LoadedText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for LoadedText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for LoadedText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Debug for LoadedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for LoadedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LoadedEvent {
    /// A [`Error::Decode`](crate::Error::Decode) naming this event of `stream`.
    pub fn decode_error(
        &self,
        stream: &StreamId,
        source: impl Into<crate::BoxError>,
    ) -> crate::Error {
        crate::Error::Decode {
            stream: stream.clone(),
            version: self.stream_version,
            event_type: self.event_type.to_string(),
            schema_version: self.schema_version,
            source: source.into(),
        }
    }
}

impl From<RecordedEvent> for LoadedEvent {
    fn from(e: RecordedEvent) -> Self {
        LoadedEvent::new(
            e.stream_version,
            e.event_type,
            e.schema_version,
            e.payload.to_string(),
        )
    }
}

/// A range of a stream read for a load; see [`EventStore::read_stream_range_for_load`].
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct LoadedRange {
    /// The events of the range, in version order.
    pub events: Vec<LoadedEvent>,
    /// The stream's version as the read saw it (0 for no stream).
    pub stream_version: u64,
}

impl LoadedRange {
    /// A range from its events and the stream's version.
    pub fn new(events: Vec<LoadedEvent>, stream_version: u64) -> Self {
        LoadedRange {
            events,
            stream_version,
        }
    }
}

/// Where [`EventStore::read_stream_range_into`] hands what it reads, a piece at a time.
pub type LoadSink<'a> = dyn FnMut(LoadedRange) -> Result<()> + Send + 'a;

/// A receiver of the store's "something was appended" signals.
///
/// The value is a counter that only grows; subscribers wait for it to change. Stores that
/// cannot notify hand out a receiver that never changes, and runners fall back to polling.
pub type WakeUps = watch::Receiver<u64>;

/// The append-only event store.
///
/// Appends are atomic: all events of a call are written, or none. A stream's versions start at 1
/// with no gaps. The all-stream orders every event by [`Cursor`]; a reader that resumes after a
/// cursor never misses an event that commits later (guarantee 2 of the architecture).
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` if it is at `expected`.
    ///
    /// A mismatch fails with [`Error::Conflict`](crate::Error::Conflict) and writes nothing.
    /// With a `command_id` the append is idempotent per stream: if that id was already
    /// appended to this stream, nothing is written and the first result comes back with
    /// `duplicate: true`, whatever `expected` says.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command_id: Option<Uuid>,
    ) -> Result<AppendResult>;

    /// The result of an earlier append carrying `command_id` on `stream`, if there was one.
    async fn command_result(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> Result<Option<AppendResult>>;

    /// Events of one stream with version `>= from_version`, in order, at most `limit`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// What [`read_stream`](Self::read_stream) returns, cut down to what loading an aggregate
    /// needs. Stores override it to read less; the default reads the whole events.
    ///
    /// A stored event that cannot be read fails the call with an error naming its stream and
    /// version, as [`read_stream`](Self::read_stream) does.
    async fn read_stream_for_load(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<LoadedEvent>> {
        let events = self.read_stream(stream, from_version, limit).await?;
        Ok(events.into_iter().map(LoadedEvent::from).collect())
    }

    /// The events of `stream` with versions `from_version..=to_version`, cut down as
    /// [`read_stream_for_load`](Self::read_stream_for_load) cuts them, and the stream's version
    /// as the same read saw it.
    ///
    /// A handler loads a first range, then, if the stream's version is beyond it, the rest in
    /// ranges up to that version, several at a time, through
    /// [`read_stream_range_into`](Self::read_stream_range_into), whose default calls this.
    /// Stores override it to read a range in fewer, larger pieces and the version in the same
    /// round trip; the default reads `to_version - from_version + 1` events from
    /// `from_version`, drops any beyond `to_version`, then asks for
    /// [`stream_version`](Self::stream_version).
    async fn read_stream_range_for_load(
        &self,
        stream: &StreamId,
        from_version: u64,
        to_version: u64,
    ) -> Result<LoadedRange> {
        let mut events = Vec::new();
        if to_version >= from_version {
            let limit = usize::try_from(to_version - from_version + 1).unwrap_or(usize::MAX);
            events = self
                .read_stream_for_load(stream, from_version, limit)
                .await?;
            events.retain(|e| e.stream_version <= to_version);
        }
        let stream_version = self.stream_version(stream).await?;
        Ok(LoadedRange {
            events,
            stream_version,
        })
    }

    /// What [`read_stream_range_for_load`](Self::read_stream_range_for_load) reads, handed
    /// to `sink` as it arrives, in one or more pieces: the events of each piece follow those of
    /// the one before in version order, and each piece carries the stream's version as the read
    /// saw it. A piece may hold no events: a store that learns the stream's version first may
    /// hand that over at once. Returns the stream's version.
    ///
    /// A handler loads through it: it starts reading the rest of a long stream as soon as it
    /// knows where the stream ends, and decodes one piece while the store reads the next. An
    /// error from `sink` ends the read and is returned. Stores that read a range in pieces
    /// override it; the default reads the range whole and hands it over at once.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};
    ///
    /// let store = InMemoryEventStore::new();
    /// let stream = StreamId::new("account", "a-1");
    /// let events = (0..3)
    ///     .map(|n| NewEvent::new("Deposited", serde_json::json!({ "amount": n })))
    ///     .collect();
    /// store.append(&stream, ExpectedVersion::NoStream, events, None).await?;
    ///
    /// let mut versions = Vec::new();
    /// let head = store
    ///     .read_stream_range_into(&stream, 2, 10, &mut |piece| {
    ///         assert_eq!(piece.stream_version, 3);
    ///         versions.extend(piece.events.iter().map(|e| e.stream_version));
    ///         Ok(())
    ///     })
    ///     .await?;
    /// assert_eq!((versions, head), (vec![2, 3], 3));
    /// # Ok::<(), cqrs_core::Error>(())
    /// # }).unwrap();
    /// ```
    async fn read_stream_range_into(
        &self,
        stream: &StreamId,
        from_version: u64,
        to_version: u64,
        sink: &mut LoadSink<'_>,
    ) -> Result<u64> {
        let range = self
            .read_stream_range_for_load(stream, from_version, to_version)
            .await?;
        let head = range.stream_version;
        sink(range)?;
        Ok(head)
    }

    /// The stream's current version (0 when it does not exist).
    async fn stream_version(&self, stream: &StreamId) -> Result<u64>;

    /// Events of the all-stream strictly after `after`, in cursor order, at most `limit`.
    ///
    /// Only events that no in-flight append can precede are returned, so a later call from the
    /// last returned cursor never skips one.
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The highest global position appended so far (0 for an empty store).
    async fn head_position(&self) -> Result<u64>;

    /// The cursor of the event at `position`, if it exists and is readable by
    /// [`read_all`](EventStore::read_all) yet.
    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>>;

    /// A receiver that changes when events are appended (in this process or, where the
    /// back-end can tell, in others).
    fn wake_ups(&self) -> WakeUps;
}

/// A saved aggregate state, to shorten loads of long streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream version the state includes.
    pub version: u64,
    /// The serialized aggregate state.
    pub state: Value,
    /// A version tag of the state's shape; a snapshot with another tag is ignored.
    pub schema: u32,
}

/// Keeps the latest snapshot per stream.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `stream`, if any.
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>>;
    /// Saves a snapshot, replacing an older one (a snapshot never moves backwards).
    async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()>;
}

/// Keeps each subscriber's cursor, by subscriber name.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The saved cursor of `name`, or [`Cursor::START`].
    async fn load(&self, name: &str) -> Result<Cursor>;
    /// Saves `name`'s cursor.
    async fn save(&self, name: &str, cursor: Cursor) -> Result<()>;
    /// Forgets `name`'s cursor, so it starts again from the beginning.
    async fn reset(&self, name: &str) -> Result<()>;
}

/// The state of a parked event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeadLetterStatus {
    /// Parked, waiting for an operator.
    Parked,
    /// An operator asked for another try; the runner of its subscriber will pick it up.
    RetryRequested,
}

/// An event a subscriber could not handle, parked with the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id of the dead letter.
    pub id: Uuid,
    /// The subscriber that failed.
    pub subscriber: String,
    /// The event it failed on.
    pub event: RecordedEvent,
    /// The last error, as text.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked (or parked again).
    pub parked_at: DateTime<Utc>,
    /// Parked or waiting for a retry.
    pub status: DeadLetterStatus,
}

/// Keeps dead letters: at most one per subscriber and event.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Parks a dead letter. Idempotent by subscriber and event: when the subscriber already has
    /// a letter for the event (same global position), that letter is updated (error, attempts,
    /// time, status) and keeps its id and its place in the order, so a park repeated after a
    /// crash never makes a second letter.
    async fn park(&self, letter: DeadLetter) -> Result<()>;
    /// Dead letters, of one subscriber or of all, oldest first.
    async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>>;
    /// Sets a dead letter's status; [`Error::NotFound`](crate::Error::NotFound) if there is none.
    async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()>;
    /// Removes a dead letter (handled at last, or skipped); [`Error::NotFound`](crate::Error::NotFound) if there is none.
    async fn remove(&self, id: Uuid) -> Result<()>;
    /// How many dead letters each subscriber has (subscribers with none are left out). Stores
    /// override it to count without reading the letters; the default lists them all.
    async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for letter in self.list(None).await? {
            *counts.entry(letter.subscriber).or_insert(0) += 1;
        }
        Ok(counts)
    }
    /// The letter of `subscriber` for the event at global `position`, if any. Stores override
    /// it to read only that one; the default lists the subscriber's letters.
    async fn find(&self, subscriber: &str, position: u64) -> Result<Option<DeadLetter>> {
        let letters = self.list(Some(subscriber)).await?;
        Ok(letters
            .into_iter()
            .find(|l| l.event.cursor.position == position))
    }
    /// Removes every letter of `subscriber` (its read model is rebuilt from zero); returns how
    /// many. Stores override it to delete at once; the default removes them one by one.
    async fn clear(&self, subscriber: &str) -> Result<u64> {
        let mut n = 0;
        for letter in self.list(Some(subscriber)).await? {
            match self.remove(letter.id).await {
                Ok(()) => n += 1,
                Err(crate::Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
    /// The dead letters of `subscriber` an operator asked to retry, oldest first. Stores
    /// override it to read only those; the default lists the subscriber's letters and keeps
    /// them.
    async fn retry_requested(&self, subscriber: &str) -> Result<Vec<DeadLetter>> {
        let mut letters = self.list(Some(subscriber)).await?;
        letters.retain(|l| l.status == DeadLetterStatus::RetryRequested);
        Ok(letters)
    }
}

macro_rules! forward {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<T: EventStore + ?Sized> EventStore for $ptr {
            async fn append(&self, stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, command_id: Option<Uuid>) -> Result<AppendResult> {
                (**self).append(stream, expected, events, command_id).await
            }
            async fn command_result(&self, stream: &StreamId, command_id: Uuid) -> Result<Option<AppendResult>> {
                (**self).command_result(stream, command_id).await
            }
            async fn read_stream(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
                (**self).read_stream(stream, from_version, limit).await
            }
            async fn read_stream_for_load(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<LoadedEvent>> {
                (**self).read_stream_for_load(stream, from_version, limit).await
            }
            async fn read_stream_range_for_load(&self, stream: &StreamId, from_version: u64, to_version: u64) -> Result<LoadedRange> {
                (**self).read_stream_range_for_load(stream, from_version, to_version).await
            }
            async fn read_stream_range_into(&self, stream: &StreamId, from_version: u64, to_version: u64, sink: &mut LoadSink<'_>) -> Result<u64> {
                (**self).read_stream_range_into(stream, from_version, to_version, sink).await
            }
            async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
                (**self).stream_version(stream).await
            }
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

        #[async_trait]
        impl<T: SnapshotStore + ?Sized> SnapshotStore for $ptr {
            async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
                (**self).load(stream).await
            }
            async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()> {
                (**self).save(stream, snapshot).await
            }
        }

        #[async_trait]
        impl<T: CheckpointStore + ?Sized> CheckpointStore for $ptr {
            async fn load(&self, name: &str) -> Result<Cursor> {
                (**self).load(name).await
            }
            async fn save(&self, name: &str, cursor: Cursor) -> Result<()> {
                (**self).save(name, cursor).await
            }
            async fn reset(&self, name: &str) -> Result<()> {
                (**self).reset(name).await
            }
        }

        #[async_trait]
        impl<T: DeadLetterStore + ?Sized> DeadLetterStore for $ptr {
            async fn park(&self, letter: DeadLetter) -> Result<()> {
                (**self).park(letter).await
            }
            async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>> {
                (**self).list(subscriber).await
            }
            async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()> {
                (**self).set_status(id, status).await
            }
            async fn remove(&self, id: Uuid) -> Result<()> {
                (**self).remove(id).await
            }
            async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
                (**self).counts().await
            }
            async fn retry_requested(&self, subscriber: &str) -> Result<Vec<DeadLetter>> {
                (**self).retry_requested(subscriber).await
            }
            async fn find(&self, subscriber: &str, position: u64) -> Result<Option<DeadLetter>> {
                (**self).find(subscriber, position).await
            }
            async fn clear(&self, subscriber: &str) -> Result<u64> {
                (**self).clear(subscriber).await
            }
        }
    )*};
}

forward!(&T, Arc<T>, Box<T>);
