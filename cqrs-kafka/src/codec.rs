//! The wire form of an event: the JSON payload as the record value, the stream as the record
//! key, the envelope in record headers (all text), so that consumers in other languages can
//! read it without this crate.

use std::borrow::Cow;

use cqrs_broker::WireMessage;
use cqrs_core::wire::{self, HeaderNames, HeaderSource};
use cqrs_core::{RecordedEvent, Result};
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// How this crate spells the envelope headers: the core's lower-case `cqrs-*` names, the event
/// id among them as `cqrs-event-id` (a Kafka record has no message id of its own). Dead letters
/// also carry `cqrs-error`, `cqrs-attempts` and `cqrs-origin` (`<topic>/<partition>/<offset>`
/// of the record that failed).
pub const HEADERS: HeaderNames = HeaderNames::DEFAULT;

/// The record headers of a message: the event id, then the envelope, each value as UTF-8 text.
pub(crate) fn record_headers(message: &WireMessage<'_>) -> OwnedHeaders {
    let id = message.id();
    let mut h = OwnedHeaders::new_with_capacity(message.headers.len() + 1).insert(Header {
        key: HEADERS.event_id,
        value: Some(id.as_str()),
    });
    for (name, value) in &message.headers {
        let value = value.clone().into_text();
        h = h.insert(Header {
            key: name,
            value: Some(value.as_str()),
        });
    }
    h
}

/// The last header named `key`, if it is there and is text.
pub(crate) fn header<'a>(h: &'a (impl Headers + ?Sized), key: &str) -> Option<&'a str> {
    (0..h.count())
        .rev()
        .filter_map(|i| h.try_get(i))
        .find(|header| header.key == key)
        .and_then(|header| std::str::from_utf8(header.value?).ok())
}

/// A record's headers, read as text.
struct Text<'a, H: ?Sized>(&'a H);

impl<H: Headers + ?Sized> HeaderSource for Text<'_, H> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        header(self.0, name).map(Cow::Borrowed)
    }
}

/// Rebuilds the event from a record's headers and value.
///
/// A record without the envelope headers (not sent by a relay) or with a malformed one is
/// [`Error::Invalid`](cqrs_core::Error::Invalid) naming the header; a value that is not JSON (or
/// no value at all) is [`Error::Decode`](cqrs_core::Error::Decode) naming the stream, version
/// and type.
///
/// ```
/// use rdkafka::message::{Header, OwnedHeaders};
///
/// let h = OwnedHeaders::new().insert(Header { key: "cqrs-event-type", value: Some("Opened") });
/// let err = cqrs_kafka::decode_record(Some(&h), Some(b"{}")).unwrap_err();
/// assert!(matches!(err, cqrs_core::Error::Invalid(_)), "{err}");
/// ```
pub fn decode_record(
    headers: Option<&(impl Headers + ?Sized)>,
    value: Option<&[u8]>,
) -> Result<RecordedEvent> {
    let empty = OwnedHeaders::new();
    let value = value.unwrap_or_default();
    match headers {
        Some(h) => wire::event_from_headers(&HEADERS, header(h, HEADERS.event_id), &Text(h), value),
        None => wire::event_from_headers(
            &HEADERS,
            header(&empty, HEADERS.event_id),
            &Text(&empty),
            value,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::Error;
    use cqrs_core::testkit::sample_recorded_event;

    fn encode(event: &RecordedEvent) -> Result<(OwnedHeaders, Vec<u8>)> {
        let message = WireMessage::encode(&HEADERS, event)?;
        Ok((record_headers(&message), message.body))
    }

    #[test]
    fn round_trips_the_envelope() {
        let event = sample_recorded_event();
        let (h, body) = encode(&event).unwrap();
        assert_eq!(decode_record(Some(&h), Some(&body)).unwrap(), event);
    }

    #[test]
    fn a_record_without_headers_is_invalid() {
        let err = decode_record(None::<&OwnedHeaders>, Some(b"{}")).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }

    #[test]
    fn a_record_without_a_value_is_a_decode_error() {
        let event = sample_recorded_event();
        let (h, _) = encode(&event).unwrap();
        let err = decode_record(Some(&h), None).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn a_header_that_is_not_text_is_a_bad_header() {
        let event = sample_recorded_event();
        let (h, body) = encode(&event).unwrap();
        let h = h.insert(Header {
            key: HEADERS.stream_version,
            value: Some(&[0xff_u8, 0xfe][..]),
        });
        let err = decode_record(Some(&h), Some(&body)).unwrap_err();
        assert!(
            err.to_string().contains("cqrs-stream-version"),
            "names the header: {err}"
        );
    }

    #[test]
    fn the_wire_form_keeps_its_names() {
        let event = sample_recorded_event();
        let (h, body) = encode(&event).unwrap();
        assert_eq!(body, br#"{"amount":5}"#);
        let id = event.event_id.to_string();
        let correlation = event.metadata.correlation_id.unwrap().to_string();
        let causation = event.metadata.causation_id.unwrap().to_string();
        for (name, value) in [
            ("cqrs-event-id", id.as_str()),
            ("cqrs-event-type", "Deposited"),
            ("cqrs-schema-version", "2"),
            ("cqrs-stream-category", "account"),
            ("cqrs-stream-id", "a-1"),
            ("cqrs-stream-version", "7"),
            ("cqrs-position", "42"),
            ("cqrs-tx", "3"),
            ("cqrs-recorded-at", "2026-01-02T03:04:05.123456+00:00"),
            ("cqrs-correlation-id", correlation.as_str()),
            ("cqrs-causation-id", causation.as_str()),
            ("cqrs-metadata", r#"{"user":"alice"}"#),
        ] {
            assert_eq!(header(&h, name), Some(value), "{name}");
        }
    }
}
