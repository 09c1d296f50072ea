//! Events: the domain trait, the envelope, and the serialized forms the stores keep.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A domain event: something that happened, named in the past tense.
///
/// Write an enum, derive serde, and implement this trait with no body. The variant name (or its
/// `#[serde(rename)]`) is the stable *type name* kept in the store; the variant's fields are the
/// payload. Rename a variant only together with an upcaster.
///
/// ```
/// use cqrs_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     #[serde(rename = "Deposited")]
///     MoneyIn { amount: u64 },
///     Closed,
/// }
/// impl DomainEvent for AccountEvent {}
///
/// let (ty, payload) = AccountEvent::MoneyIn { amount: 5 }.encode()?;
/// assert_eq!(ty, "Deposited");
/// assert_eq!(payload, serde_json::json!({"amount": 5}));
/// assert_eq!(AccountEvent::decode(&ty, payload)?, AccountEvent::MoneyIn { amount: 5 });
/// assert_eq!(AccountEvent::Closed.encode()?.0, "Closed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema version this code writes for an event of `event_type`. Bump it when the
    /// payload's shape changes, and register an upcaster from the old version.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }

    /// Splits the event into its stable type name and its JSON payload.
    ///
    /// The default reads serde's externally tagged enum form (`{"Variant": {..}}` or `"Variant"`).
    fn encode(&self) -> Result<(String, Value), serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(map) if map.len() == 1 => {
                let (ty, payload) = map.into_iter().next().expect("one entry");
                Ok((ty, payload))
            }
            Value::String(ty) => Ok((ty, Value::Null)),
            _ => Err(serde::ser::Error::custom(
                "a DomainEvent must serialize as an externally tagged enum; override encode/decode otherwise",
            )),
        }
    }

    /// Rebuilds the event from its type name and payload (already upcast to the current version).
    fn decode(event_type: &str, payload: Value) -> Result<Self, serde_json::Error> {
        let value = if payload.is_null() {
            Value::String(event_type.to_owned())
        } else {
            let mut map = Map::with_capacity(1);
            map.insert(event_type.to_owned(), payload);
            Value::Object(map)
        };
        serde_json::from_value(value)
    }
}

/// Identifies one stream: the aggregate type (category) and the aggregate id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The aggregate type, such as `account`.
    pub category: String,
    /// The aggregate id within its category.
    pub id: String,
}

impl StreamId {
    /// A stream id from a category and an id.
    pub fn new(category: impl Into<String>, id: impl Into<String>) -> Self {
        StreamId {
            category: category.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.category, self.id)
    }
}

/// What an append expects of the stream, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version (0 is the same as [`ExpectedVersion::NoStream`]).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream now at `actual` (0 when absent) satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Where a subscriber stands in the all-stream; events are read in increasing cursor order.
///
/// `position` is the event's global position. `tx` is a commit-order key for back-ends whose
/// positions are handed out before commit (PostgreSQL keeps the writing transaction's id there,
/// so that a reader never passes an event that commits later with a lower position). Back-ends
/// whose positions already follow commit order leave `tx` at 0. [`Cursor::START`] is before
/// every event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Cursor {
    /// Commit-order key (0 where positions are already in commit order).
    pub tx: u64,
    /// Global position of the last event passed.
    pub position: u64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor { tx: 0, position: 0 };

    /// A cursor from a commit-order key and a position.
    pub const fn new(tx: u64, position: u64) -> Self {
        Cursor { tx, position }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tx == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}@{}", self.position, self.tx)
        }
    }
}

/// Metadata carried by every event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by everything one request or process set off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Free-form entries.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Metadata with a correlation id.
    pub fn correlated(correlation_id: Uuid) -> Self {
        Metadata {
            correlation_id: Some(correlation_id),
            ..Default::default()
        }
    }
}

/// An event ready to append: serialized, not yet positioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Value,
    /// Correlation, causation and free entries.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event of `event_type` (schema version 1) with a fresh id and no metadata.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// Serializes a domain event with a fresh id.
    pub fn from_domain<E: DomainEvent>(event: &E, metadata: Metadata) -> Result<Self> {
        let (event_type, payload) = event.encode().map_err(|source| Error::Serialize {
            event_type: std::any::type_name::<E>().to_owned(),
            source,
        })?;
        Ok(NewEvent {
            event_id: Uuid::new_v4(),
            schema_version: E::schema_version(&event_type),
            event_type,
            payload,
            metadata,
        })
    }
}

/// An event as stored: serialized, with its place in its stream and in the all-stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream, from 1.
    pub stream_version: u64,
    /// Its place in the all-stream (with the commit-order key where the back-end has one).
    pub cursor: Cursor,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Value,
    /// Correlation, causation and free entries.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// The event's global position.
    pub fn position(&self) -> u64 {
        self.cursor.position
    }

    /// Decodes the payload into a domain event, keeping the envelope.
    ///
    /// An unknown type or a payload that no longer fits gives [`Error::Decode`] naming the
    /// stream, version and type.
    pub fn decode<E: DomainEvent>(&self) -> Result<Envelope<E>> {
        let payload =
            E::decode(&self.event_type, self.payload.clone()).map_err(|e| self.decode_error(e))?;
        Ok(Envelope {
            event_id: self.event_id,
            stream: self.stream.clone(),
            stream_version: self.stream_version,
            position: self.cursor.position,
            recorded_at: self.recorded_at,
            metadata: self.metadata.clone(),
            payload,
        })
    }

    /// Decodes the event if it belongs to aggregate type `A`, else gives `None`.
    pub fn decode_for<A: crate::Aggregate>(&self) -> Result<Option<Envelope<A::Event>>> {
        if self.stream.category == A::TYPE {
            self.decode().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Builds the [`Error::Decode`] for this event.
    pub fn decode_error(&self, source: impl Into<crate::BoxError>) -> Error {
        Error::Decode {
            stream: self.stream.clone(),
            version: self.stream_version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            source: source.into(),
        }
    }
}

/// A decoded event with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<E> {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream, from 1.
    pub stream_version: u64,
    /// Its global position.
    pub position: u64,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation and free entries.
    pub metadata: Metadata,
    /// The domain event.
    pub payload: E,
}
