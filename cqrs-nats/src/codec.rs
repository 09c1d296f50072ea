//! The wire form of an event: the JSON payload as the body, the envelope in NATS headers, so
//! that consumers in other languages can read it without this crate.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use cqrs_core::{Cursor, Error, Metadata, RecordedEvent, Result, StreamId};
use uuid::Uuid;

/// Header names carried by every relayed message.
pub mod headers {
    /// The event id; JetStream also drops a repeat of it within the stream's duplicate window.
    pub const MESSAGE_ID: &str = "Nats-Msg-Id";
    /// The event's stable type name.
    pub const EVENT_TYPE: &str = "Cqrs-Event-Type";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "Cqrs-Schema-Version";
    /// The stream's category (aggregate type).
    pub const STREAM_CATEGORY: &str = "Cqrs-Stream-Category";
    /// The stream's id within its category.
    pub const STREAM_ID: &str = "Cqrs-Stream-Id";
    /// The event's version in its stream.
    pub const STREAM_VERSION: &str = "Cqrs-Stream-Version";
    /// The event's global position in the source store.
    pub const POSITION: &str = "Cqrs-Position";
    /// The source store's commit-order key (0 where positions follow commit order).
    pub const TX: &str = "Cqrs-Tx";
    /// When the source store recorded the event (RFC 3339).
    pub const RECORDED_AT: &str = "Cqrs-Recorded-At";
    /// The correlation id, if any.
    pub const CORRELATION_ID: &str = "Cqrs-Correlation-Id";
    /// The causation id, if any.
    pub const CAUSATION_ID: &str = "Cqrs-Causation-Id";
    /// The free-form metadata entries as a JSON object, if any.
    pub const METADATA: &str = "Cqrs-Metadata";
    /// On a dead-lettered message: the handler's last error.
    pub const ERROR: &str = "Cqrs-Error";
    /// On a dead-lettered message: how many times it was delivered.
    pub const ATTEMPTS: &str = "Cqrs-Attempts";
}

/// The headers (event id as `Nats-Msg-Id`, the envelope) and body of `event`.
pub(crate) fn encode(event: &RecordedEvent) -> Result<(HeaderMap, Vec<u8>)> {
    let body = serde_json::to_vec(&event.payload).map_err(|source| Error::Serialize {
        event_type: event.event_type.clone(),
        source,
    })?;
    let mut h = HeaderMap::new();
    h.insert(headers::MESSAGE_ID, event.event_id.to_string());
    h.insert(headers::EVENT_TYPE, event.event_type.as_str());
    h.insert(headers::SCHEMA_VERSION, event.schema_version.to_string());
    h.insert(headers::STREAM_CATEGORY, event.stream.category.as_str());
    h.insert(headers::STREAM_ID, event.stream.id.as_str());
    h.insert(headers::STREAM_VERSION, event.stream_version.to_string());
    h.insert(headers::POSITION, event.cursor.position.to_string());
    h.insert(headers::TX, event.cursor.tx.to_string());
    h.insert(headers::RECORDED_AT, event.recorded_at.to_rfc3339());
    if let Some(id) = event.metadata.correlation_id {
        h.insert(headers::CORRELATION_ID, id.to_string());
    }
    if let Some(id) = event.metadata.causation_id {
        h.insert(headers::CAUSATION_ID, id.to_string());
    }
    if !event.metadata.extra.is_empty() {
        let extra =
            serde_json::to_string(&event.metadata.extra).map_err(|source| Error::Serialize {
                event_type: event.event_type.clone(),
                source,
            })?;
        h.insert(headers::METADATA, extra);
    }
    Ok((h, body))
}

pub(crate) fn header<'a>(h: &'a HeaderMap, key: &str) -> Option<&'a str> {
    h.get(key).map(|v| v.as_str())
}

/// Rebuilds the event from a message's headers and payload.
///
/// A message without the envelope headers (not sent by a relay) is [`Error::Invalid`]; a body
/// that is not JSON is [`Error::Decode`] naming the stream, version and type.
pub fn decode_message(h: Option<&HeaderMap>, payload: &[u8]) -> Result<RecordedEvent> {
    let empty = HeaderMap::new();
    let h = h.unwrap_or(&empty);
    let msg_id = header(h, headers::MESSAGE_ID).unwrap_or("<none>");
    let missing =
        |what: &str| Error::Invalid(format!("message {msg_id}: missing or bad header {what}"));
    let text = |key: &str| {
        header(h, key)
            .map(str::to_owned)
            .ok_or_else(|| missing(key))
    };
    let number = |key: &str| {
        header(h, key)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| missing(key))
    };
    let uuid = |key: &str| -> Result<Option<Uuid>> {
        header(h, key)
            .map(|s| s.parse().map_err(|_| missing(key)))
            .transpose()
    };
    let extra = match header(h, headers::METADATA) {
        Some(s) => serde_json::from_str(s).map_err(|_| missing(headers::METADATA))?,
        None => Default::default(),
    };
    let recorded_at = header(h, headers::RECORDED_AT)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| missing(headers::RECORDED_AT))?;
    let mut event = RecordedEvent {
        event_id: msg_id.parse().map_err(|_| missing(headers::MESSAGE_ID))?,
        stream: StreamId::new(text(headers::STREAM_CATEGORY)?, text(headers::STREAM_ID)?),
        stream_version: number(headers::STREAM_VERSION)?,
        cursor: Cursor::new(number(headers::TX).unwrap_or(0), number(headers::POSITION)?),
        recorded_at,
        event_type: text(headers::EVENT_TYPE)?,
        schema_version: u32::try_from(number(headers::SCHEMA_VERSION)?)
            .map_err(|_| missing(headers::SCHEMA_VERSION))?,
        payload: serde_json::Value::Null,
        metadata: Metadata {
            correlation_id: uuid(headers::CORRELATION_ID)?,
            causation_id: uuid(headers::CAUSATION_ID)?,
            extra,
        },
    };
    event.payload = serde_json::from_slice(payload).map_err(|e| event.decode_error(e))?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_the_envelope() {
        let mut metadata = Metadata::correlated(Uuid::new_v4());
        metadata.causation_id = Some(Uuid::new_v4());
        metadata.extra.insert("user".into(), json!("alice"));
        let event = RecordedEvent {
            event_id: Uuid::new_v4(),
            stream: StreamId::new("account", "a-1"),
            stream_version: 7,
            cursor: Cursor::new(3, 42),
            recorded_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            event_type: "Deposited".into(),
            schema_version: 2,
            payload: json!({"amount": 5}),
            metadata,
        };
        let (h, body) = encode(&event).unwrap();
        assert_eq!(
            header(&h, headers::MESSAGE_ID),
            Some(event.event_id.to_string().as_str())
        );
        assert_eq!(decode_message(Some(&h), &body).unwrap(), event);
    }

    #[test]
    fn a_foreign_message_is_invalid() {
        let err = decode_message(None, b"{}").unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }
}
