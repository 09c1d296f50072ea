//! The wire form of an event: the JSON payload as the body, the envelope in NATS headers, so
//! that consumers in other languages can read it without this crate.

use std::borrow::Cow;

use async_nats::HeaderMap;
use cqrs_broker::WireMessage;
use cqrs_core::wire::{self, HeaderNames, HeaderSource};
use cqrs_core::{RecordedEvent, Result};

/// How this crate spells the envelope headers: the core's `Cqrs-*` names in HTTP-style
/// capitals, with the event id as `Nats-Msg-Id` (JetStream also drops a repeat of it within the
/// stream's duplicate window). Dead letters also carry `Cqrs-Error`, `Cqrs-Attempts` and
/// `Cqrs-Origin` (the subject it was published to).
pub const HEADERS: HeaderNames = HeaderNames::TITLE_CASE.with_event_id("Nats-Msg-Id");

/// The NATS headers of a message: the event id as `Nats-Msg-Id`, the envelope.
pub(crate) fn headers(message: &WireMessage<'_>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HEADERS.event_id, message.id());
    for (name, value) in &message.headers {
        h.insert(*name, value.clone().into_text());
    }
    h
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
    wire::event_from_headers(&HEADERS, header(h, HEADERS.event_id), &Headers(h), payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::Error;
    use cqrs_core::testkit::sample_recorded_event;

    fn encode(event: &RecordedEvent) -> Result<(HeaderMap, Vec<u8>)> {
        let message = WireMessage::encode(&HEADERS, event)?;
        Ok((headers(&message), message.body))
    }

    #[test]
    fn round_trips_the_envelope() {
        let event = sample_recorded_event();
        let (h, body) = encode(&event).unwrap();
        assert_eq!(
            header(&h, HEADERS.event_id),
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
