//! The wire form of an event: the JSON payload as the body, the envelope in NATS headers, so
//! that consumers in other languages can read it without this crate.

use std::borrow::Cow;

use async_nats::HeaderMap;
use cqrs_core::wire::{self, HeaderNames, HeaderSource};
use cqrs_core::{RecordedEvent, Result};

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

/// The envelope's header names as this crate spells them.
const NAMES: HeaderNames = HeaderNames {
    event_id: headers::MESSAGE_ID,
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

/// The headers (event id as `Nats-Msg-Id`, the envelope) and body of `event`.
pub(crate) fn encode(event: &RecordedEvent) -> Result<(HeaderMap, Vec<u8>)> {
    let body = wire::encode_body(event)?;
    let mut h = HeaderMap::new();
    h.insert(headers::MESSAGE_ID, event.event_id.to_string());
    for (name, value) in wire::envelope_headers(&NAMES, event)? {
        h.insert(name, value.into_text());
    }
    Ok((h, body))
}

pub(crate) fn header<'a>(h: &'a HeaderMap, key: &str) -> Option<&'a str> {
    h.get(key).map(|v| v.as_str())
}

/// A header map whose values are all text.
struct Headers<'a>(&'a HeaderMap);

impl HeaderSource for Headers<'_> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        header(self.0, name).map(Cow::Borrowed)
    }
}

/// Rebuilds the event from a message's headers and payload.
///
/// A message without the envelope headers (not sent by a relay) is
/// [`Error::Invalid`](cqrs_core::Error::Invalid); a body that is not JSON is
/// [`Error::Decode`](cqrs_core::Error::Decode) naming the stream, version and type.
pub fn decode_message(h: Option<&HeaderMap>, payload: &[u8]) -> Result<RecordedEvent> {
    let empty = HeaderMap::new();
    let h = h.unwrap_or(&empty);
    wire::event_from_headers(&NAMES, header(h, headers::MESSAGE_ID), &Headers(h), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::Error;
    use cqrs_core::testkit::sample_recorded_event;

    #[test]
    fn round_trips_the_envelope() {
        let event = sample_recorded_event();
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

    #[test]
    fn the_wire_form_keeps_its_names() {
        let event = sample_recorded_event();
        let (h, body) = encode(&event).unwrap();
        assert_eq!(body, br#"{"amount":5}"#);
        let id = event.event_id.to_string();
        let correlation = event.metadata.correlation_id.unwrap().to_string();
        let causation = event.metadata.causation_id.unwrap().to_string();
        for (name, value) in [
            ("Nats-Msg-Id", id.as_str()),
            ("Cqrs-Event-Type", "Deposited"),
            ("Cqrs-Schema-Version", "2"),
            ("Cqrs-Stream-Category", "account"),
            ("Cqrs-Stream-Id", "a-1"),
            ("Cqrs-Stream-Version", "7"),
            ("Cqrs-Position", "42"),
            ("Cqrs-Tx", "3"),
            ("Cqrs-Recorded-At", "2026-01-02T03:04:05.123456+00:00"),
            ("Cqrs-Correlation-Id", correlation.as_str()),
            ("Cqrs-Causation-Id", causation.as_str()),
            ("Cqrs-Metadata", r#"{"user":"alice"}"#),
        ] {
            assert_eq!(header(&h, name), Some(value), "{name}");
        }
    }
}
