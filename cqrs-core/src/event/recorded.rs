//! An event as stored, with its place in its stream and the all-stream, and decoded with its
//! envelope.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Cursor, DomainEvent, Metadata, StreamId};
use crate::error::{Error, Result};

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
    /// The JSON payload, as the text the store holds. [`decode`](Self::decode) reads it straight
    /// into the domain event, with no [`Value`] tree in between; [`payload_value`](Self::payload_value)
    /// parses it when a tree is wanted.
    #[serde(with = "json_text")]
    pub payload: String,
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
            E::decode_json(&self.event_type, &self.payload).map_err(|e| self.decode_error(e))?;
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

    /// The payload parsed into a JSON tree, for code that reads events of no one domain type
    /// (a generic projector, a tool). [`Error::Decode`] naming the event when it does not parse.
    ///
    /// ```
    /// let event = cqrs_core::testkit::sample_recorded_event(); // a deposit of 5
    /// assert_eq!(event.payload_value()?["amount"], 5);
    /// # Ok::<(), cqrs_core::Error>(())
    /// ```
    pub fn payload_value(&self) -> Result<Value> {
        serde_json::from_str(&self.payload).map_err(|e| self.decode_error(e))
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

/// The payload's text written and read as the JSON value it is, so that a serialized
/// [`RecordedEvent`] (a dead letter, say) keeps the shape it had when the payload was a tree.
mod json_text {
    use serde::de::IgnoredAny;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub(super) fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        // NOTE: text the parser refuses (nested deeper than it allows) is kept as a JSON string
        // rather than lost, so a dead letter of such an event still carries it. `IgnoredAny`
        // walks the value under the parser's depth limit, which a `RawValue` alone does not.
        match serde_json::from_str::<IgnoredAny>(text)
            .and_then(|_| serde_json::from_str::<&RawValue>(text))
        {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(text),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Box::<RawValue>::deserialize(d)?.get().to_owned())
    }
}
