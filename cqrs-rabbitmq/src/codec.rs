//! The wire form of an event: the JSON payload as the body, the envelope in AMQP properties and
//! headers, so that consumers in other languages can read it without this crate.

use chrono::{DateTime, Utc};
use cqrs_core::{Cursor, Error, Metadata, RecordedEvent, Result, StreamId};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use uuid::Uuid;

/// Header names carried by every relayed message.
pub mod headers {
    /// The event's stable type name (also in the AMQP `type` property).
    pub const EVENT_TYPE: &str = "cqrs-event-type";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "cqrs-schema-version";
    /// The stream's category (aggregate type).
    pub const STREAM_CATEGORY: &str = "cqrs-stream-category";
    /// The stream's id within its category.
    pub const STREAM_ID: &str = "cqrs-stream-id";
    /// The event's version in its stream.
    pub const STREAM_VERSION: &str = "cqrs-stream-version";
    /// The event's global position in the source store.
    pub const POSITION: &str = "cqrs-position";
    /// The source store's commit-order key (0 where positions follow commit order).
    pub const TX: &str = "cqrs-tx";
    /// When the source store recorded the event (RFC 3339).
    pub const RECORDED_AT: &str = "cqrs-recorded-at";
    /// The correlation id, if any (also in the AMQP `correlation_id` property).
    pub const CORRELATION_ID: &str = "cqrs-correlation-id";
    /// The causation id, if any.
    pub const CAUSATION_ID: &str = "cqrs-causation-id";
    /// The free-form metadata entries as a JSON object, if any.
    pub const METADATA: &str = "cqrs-metadata";
    /// On a dead-lettered message: the handler's last error.
    pub const ERROR: &str = "cqrs-error";
    /// On a dead-lettered message: how many times it was tried.
    pub const ATTEMPTS: &str = "cqrs-attempts";
}

fn text(value: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The properties (message id = event id, headers = envelope) and body of `event`.
pub(crate) fn encode(event: &RecordedEvent) -> Result<(BasicProperties, Vec<u8>)> {
    let body = serde_json::to_vec(&event.payload).map_err(|source| Error::Serialize {
        event_type: event.event_type.clone(),
        source,
    })?;
    let mut h = FieldTable::default();
    h.insert(headers::EVENT_TYPE.into(), text(event.event_type.as_str()));
    h.insert(
        headers::SCHEMA_VERSION.into(),
        AMQPValue::LongLongInt(event.schema_version.into()),
    );
    h.insert(
        headers::STREAM_CATEGORY.into(),
        text(event.stream.category.as_str()),
    );
    h.insert(headers::STREAM_ID.into(), text(event.stream.id.as_str()));
    h.insert(
        headers::STREAM_VERSION.into(),
        AMQPValue::LongLongInt(to_i64(event.stream_version)),
    );
    h.insert(
        headers::POSITION.into(),
        AMQPValue::LongLongInt(to_i64(event.cursor.position)),
    );
    h.insert(
        headers::TX.into(),
        AMQPValue::LongLongInt(to_i64(event.cursor.tx)),
    );
    h.insert(
        headers::RECORDED_AT.into(),
        text(event.recorded_at.to_rfc3339()),
    );
    let mut props = BasicProperties::default()
        .with_message_id(event.event_id.to_string().into())
        .with_type(event.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(event.recorded_at.timestamp().max(0) as u64);
    if let Some(id) = event.metadata.correlation_id {
        h.insert(headers::CORRELATION_ID.into(), text(id.to_string()));
        props = props.with_correlation_id(id.to_string().into());
    }
    if let Some(id) = event.metadata.causation_id {
        h.insert(headers::CAUSATION_ID.into(), text(id.to_string()));
    }
    if !event.metadata.extra.is_empty() {
        let extra =
            serde_json::to_vec(&event.metadata.extra).map_err(|source| Error::Serialize {
                event_type: event.event_type.clone(),
                source,
            })?;
        h.insert(headers::METADATA.into(), text(extra));
    }
    Ok((props.with_headers(h), body))
}

// NOTE: AMQP field tables have no unsigned 64-bit type that RabbitMQ accepts, and positions
// never come near i64::MAX.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A header as text, whichever string type the sender used.
pub(crate) fn header_text(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header as an unsigned integer, whichever integer type the sender used.
pub(crate) fn header_u64(table: &FieldTable, key: &str) -> Option<u64> {
    let v: i64 = match table.inner().get(key)? {
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => return Some(*v),
        AMQPValue::LongString(s) => return s.to_string().parse().ok(),
        _ => return None,
    };
    u64::try_from(v).ok()
}

/// Rebuilds the event from a message's properties and body.
///
/// A message without the envelope headers (not sent by a relay) is [`Error::Invalid`]; a body
/// that is not JSON is [`Error::Decode`] naming the stream, version and type.
pub fn decode_message(props: &BasicProperties, body: &[u8]) -> Result<RecordedEvent> {
    let msg_id = props
        .message_id()
        .as_ref()
        .map(ShortString::as_str)
        .unwrap_or("<none>");
    let missing =
        |what: &str| Error::Invalid(format!("message {msg_id}: missing or bad header {what}"));
    let h = props.headers().as_ref().ok_or_else(|| missing("table"))?;
    let event_id: Uuid = msg_id.parse().map_err(|_| missing("message_id"))?;
    let stream = StreamId::new(
        header_text(h, headers::STREAM_CATEGORY)
            .ok_or_else(|| missing(headers::STREAM_CATEGORY))?,
        header_text(h, headers::STREAM_ID).ok_or_else(|| missing(headers::STREAM_ID))?,
    );
    let uuid_header = |key: &str| -> Result<Option<Uuid>> {
        header_text(h, key)
            .map(|s| s.parse().map_err(|_| missing(key)))
            .transpose()
    };
    let extra = match header_text(h, headers::METADATA) {
        Some(s) => serde_json::from_str(&s).map_err(|_| missing(headers::METADATA))?,
        None => Default::default(),
    };
    let recorded_at = header_text(h, headers::RECORDED_AT)
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| missing(headers::RECORDED_AT))?;
    let mut event = RecordedEvent {
        event_id,
        stream_version: header_u64(h, headers::STREAM_VERSION)
            .ok_or_else(|| missing(headers::STREAM_VERSION))?,
        cursor: Cursor::new(
            header_u64(h, headers::TX).unwrap_or(0),
            header_u64(h, headers::POSITION).ok_or_else(|| missing(headers::POSITION))?,
        ),
        recorded_at,
        event_type: header_text(h, headers::EVENT_TYPE)
            .ok_or_else(|| missing(headers::EVENT_TYPE))?,
        schema_version: header_u64(h, headers::SCHEMA_VERSION)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| missing(headers::SCHEMA_VERSION))?,
        payload: serde_json::Value::Null,
        metadata: Metadata {
            correlation_id: uuid_header(headers::CORRELATION_ID)?,
            causation_id: uuid_header(headers::CAUSATION_ID)?,
            extra,
        },
        stream,
    };
    event.payload = serde_json::from_slice(body).map_err(|e| event.decode_error(e))?;
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
        let (props, body) = encode(&event).unwrap();
        assert_eq!(
            props.message_id().as_ref().unwrap().as_str(),
            event.event_id.to_string()
        );
        assert_eq!(decode_message(&props, &body).unwrap(), event);
    }

    #[test]
    fn a_foreign_message_is_invalid() {
        let err = decode_message(&BasicProperties::default(), b"{}").unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }
}
