//! The wire form of an event: the JSON payload as the body, the envelope in AMQP properties and
//! headers, so that consumers in other languages can read it without this crate.

use std::borrow::Cow;

use cqrs_core::wire::{self, HeaderNames, HeaderSource, HeaderValue};
use cqrs_core::{Error, RecordedEvent, Result};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

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

/// The envelope's header names as this crate spells them.
const NAMES: HeaderNames = HeaderNames {
    event_id: "message_id",
    event_type: headers::EVENT_TYPE,
    schema_version: headers::SCHEMA_VERSION,
    stream_category: headers::STREAM_CATEGORY,
    stream_id: headers::STREAM_ID,
    stream_version: headers::STREAM_VERSION,
    position: headers::POSITION,
    tx: headers::TX,
    recorded_at: headers::RECORDED_AT,
    correlation_id: headers::CORRELATION_ID,
    causation_id: headers::CAUSATION_ID,
    metadata: headers::METADATA,
};

fn text(value: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The properties (message id = event id, headers = envelope) and body of `event`.
pub(crate) fn encode(event: &RecordedEvent) -> Result<(BasicProperties, Vec<u8>)> {
    let body = wire::encode_body(event)?;
    let mut h = FieldTable::default();
    for (name, value) in wire::envelope_headers(&NAMES, event)? {
        let value = match value {
            HeaderValue::Text(s) => text(s),
            HeaderValue::Number(n) => AMQPValue::LongLongInt(to_i64(n)),
        };
        h.insert(name.into(), value);
    }
    let mut props = BasicProperties::default()
        .with_message_id(event.event_id.to_string().into())
        .with_type(event.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(event.recorded_at.timestamp().max(0) as u64);
    if let Some(id) = event.metadata.correlation_id {
        props = props.with_correlation_id(id.to_string().into());
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

/// A field table read through the typed accessors above.
struct Table<'a>(&'a FieldTable);

impl HeaderSource for Table<'_> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        header_text(self.0, name).map(Cow::Owned)
    }

    fn number(&self, name: &str) -> Option<u64> {
        header_u64(self.0, name)
    }
}

/// Rebuilds the event from a message's properties and body.
///
/// A message without the envelope headers (not sent by a relay) is [`Error::Invalid`]; a body
/// that is not JSON is [`Error::Decode`] naming the stream, version and type.
pub fn decode_message(props: &BasicProperties, body: &[u8]) -> Result<RecordedEvent> {
    let msg_id = props.message_id().as_ref().map(ShortString::as_str);
    let Some(h) = props.headers().as_ref() else {
        let msg_id = msg_id.unwrap_or("<none>");
        return Err(Error::Invalid(format!(
            "message {msg_id}: missing or bad header table"
        )));
    };
    wire::event_from_headers(&NAMES, msg_id, &Table(h), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::testkit::sample_recorded_event;

    #[test]
    fn round_trips_the_envelope() {
        let event = sample_recorded_event();
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

    #[test]
    fn the_wire_form_keeps_its_names_and_types() {
        let event = sample_recorded_event();
        let (props, body) = encode(&event).unwrap();
        assert_eq!(body, br#"{"amount":5}"#);
        let correlation = event.metadata.correlation_id.unwrap().to_string();
        let causation = event.metadata.causation_id.unwrap().to_string();
        assert_eq!(props.kind().as_ref().unwrap().as_str(), "Deposited");
        assert_eq!(
            props.correlation_id().as_ref().unwrap().as_str(),
            correlation
        );
        let table = props.headers().as_ref().unwrap();
        let h = table.inner();
        let names: Vec<&str> = h.keys().map(ShortString::as_str).collect();
        assert_eq!(
            names,
            [
                "cqrs-causation-id",
                "cqrs-correlation-id",
                "cqrs-event-type",
                "cqrs-metadata",
                "cqrs-position",
                "cqrs-recorded-at",
                "cqrs-schema-version",
                "cqrs-stream-category",
                "cqrs-stream-id",
                "cqrs-stream-version",
                "cqrs-tx",
            ]
        );
        for (name, number) in [
            (headers::SCHEMA_VERSION, 2),
            (headers::STREAM_VERSION, 7),
            (headers::POSITION, 42),
            (headers::TX, 3),
        ] {
            assert_eq!(h.get(name), Some(&AMQPValue::LongLongInt(number)), "{name}");
        }
        for (name, text) in [
            (headers::EVENT_TYPE, "Deposited"),
            (headers::STREAM_CATEGORY, "account"),
            (headers::STREAM_ID, "a-1"),
            (headers::RECORDED_AT, "2026-01-02T03:04:05.123456+00:00"),
            (headers::CORRELATION_ID, correlation.as_str()),
            (headers::CAUSATION_ID, causation.as_str()),
            (headers::METADATA, r#"{"user":"alice"}"#),
        ] {
            assert!(
                matches!(h.get(name), Some(AMQPValue::LongString(_))),
                "{name}"
            );
            assert_eq!(header_text(table, name).as_deref(), Some(text), "{name}");
        }
    }

    #[test]
    fn headers_of_other_amqp_types_are_read() {
        let event = sample_recorded_event();
        let (props, body) = encode(&event).unwrap();
        let mut h = FieldTable::default();
        for (name, value) in props.headers().as_ref().unwrap().inner() {
            let value = match value {
                AMQPValue::LongString(s) => AMQPValue::ShortString(s.to_string().into()),
                AMQPValue::LongLongInt(n) => AMQPValue::LongInt(i32::try_from(*n).unwrap()),
                other => other.clone(),
            };
            h.insert(name.clone(), value);
        }
        let props = props.with_headers(h);
        assert_eq!(decode_message(&props, &body).unwrap(), event);
    }
}
