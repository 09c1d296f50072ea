//! The wire form of an event: the JSON payload as the body, the envelope in AMQP properties and
//! headers, so that consumers in other languages can read it without this crate.

use std::borrow::Cow;

use cqrs_broker::WireMessage;
use cqrs_core::wire::{self, HeaderNames, HeaderSource, HeaderValue};
use cqrs_core::{Error, RecordedEvent, Result};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// How this crate spells the envelope headers: the core's lower-case `cqrs-*` names, with the
/// event id in the AMQP `message_id` property. Dead letters also carry `cqrs-error`,
/// `cqrs-attempts` and `cqrs-origin` (the queue it failed in).
pub const HEADERS: HeaderNames = HeaderNames::DEFAULT.with_event_id("message_id");

fn text(value: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The AMQP properties of a message: message id = event id, the envelope in headers.
pub(crate) fn properties(message: &WireMessage<'_>) -> BasicProperties {
    let event = message.event;
    let mut h = FieldTable::default();
    for (name, value) in &message.headers {
        let value = match value {
            HeaderValue::Text(s) => text(s.as_str()),
            HeaderValue::Number(n) => AMQPValue::LongLongInt(to_i64(*n)),
        };
        h.insert((*name).into(), value);
    }
    let mut props = BasicProperties::default()
        .with_message_id(message.id().into())
        .with_type(event.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(event.recorded_at.timestamp().max(0) as u64);
    if let Some(id) = event.metadata.correlation_id {
        props = props.with_correlation_id(id.to_string().into());
    }
    props.with_headers(h)
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
    wire::event_from_headers(&HEADERS, msg_id, &Table(h), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::testkit::sample_recorded_event;

    fn encode(event: &RecordedEvent) -> Result<(BasicProperties, Vec<u8>)> {
        let message = WireMessage::encode(&HEADERS, event)?;
        Ok((properties(&message), message.body))
    }

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
                "traceparent",
            ]
        );
        for (name, number) in [
            (HEADERS.schema_version, 2),
            (HEADERS.stream_version, 7),
            (HEADERS.position, 42),
            (HEADERS.tx, 3),
        ] {
            assert_eq!(h.get(name), Some(&AMQPValue::LongLongInt(number)), "{name}");
        }
        for (name, text) in [
            (HEADERS.event_type, "Deposited"),
            (HEADERS.stream_category, "account"),
            (HEADERS.stream_id, "a-1"),
            (HEADERS.recorded_at, "2026-01-02T03:04:05.123456+00:00"),
            (HEADERS.correlation_id, correlation.as_str()),
            (HEADERS.causation_id, causation.as_str()),
            (HEADERS.metadata, r#"{"user":"alice"}"#),
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
