//! The broker-neutral half of an event's wire form: the JSON payload as the message body and
//! the envelope (stream, version, position, type, time, metadata) as message headers, so that
//! consumers in other languages can read it without this crate.
//!
//! A broker crate keeps only what its driver needs: how it spells the headers
//! ([`HeaderNames`]), how it stores a [`HeaderValue`] in its header type, and how it reads one
//! back ([`HeaderSource`]).
//!
//! ```
//! use cqrs_core::wire::{self, HeaderNames};
//! use cqrs_core::{Cursor, Metadata, RecordedEvent, StreamId};
//!
//! let event = RecordedEvent {
//!     event_id: uuid::Uuid::new_v4(),
//!     stream: StreamId::new("account", "a-1"),
//!     stream_version: 1,
//!     cursor: Cursor::new(0, 1),
//!     recorded_at: chrono::Utc::now(),
//!     event_type: "Opened".into(),
//!     schema_version: 1,
//!     payload: r#"{"owner":"alice"}"#.into(),
//!     metadata: Metadata::default(),
//! };
//! let names = HeaderNames::DEFAULT;
//! let headers = wire::envelope_headers(&names, &event)?;
//! let body = wire::encode_body(&event)?;
//! assert!(headers.iter().any(|(name, _)| *name == "cqrs-stream-version"));
//!
//! // The event id travels as the broker's message id, outside these headers.
//! let id = event.event_id.to_string();
//! let back = wire::event_from_headers(&names, Some(&id), headers.as_slice(), &body)?;
//! assert_eq!(back, event);
//! # Ok::<(), cqrs_core::Error>(())
//! ```

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Cursor, Error, Metadata, RecordedEvent, Result, StreamId};

/// How one broker spells the envelope's headers. Each field is a header name, except
/// [`event_id`](Self::event_id), which names wherever the broker carries the event id (a
/// header or a message property) in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderNames {
    /// Where the event id travels.
    pub event_id: &'static str,
    /// The event's stable type name.
    pub event_type: &'static str,
    /// The payload's schema version.
    pub schema_version: &'static str,
    /// The stream's category (aggregate type).
    pub stream_category: &'static str,
    /// The stream's id within its category.
    pub stream_id: &'static str,
    /// The event's version in its stream.
    pub stream_version: &'static str,
    /// The event's global position in the source store.
    pub position: &'static str,
    /// The source store's commit-order key (0 where positions follow commit order).
    pub tx: &'static str,
    /// When the source store recorded the event (RFC 3339).
    pub recorded_at: &'static str,
    /// The correlation id, if any.
    pub correlation_id: &'static str,
    /// The causation id, if any.
    pub causation_id: &'static str,
    /// The free-form metadata entries as a JSON object, if any.
    pub metadata: &'static str,
    /// The W3C trace context of the command that wrote the event, if any
    /// ([`trace`](crate::trace)); `traceparent` on every broker, as the W3C names it.
    pub traceparent: &'static str,
    /// On a dead-lettered message: the handler's last error (or why the message could not be
    /// read).
    pub error: &'static str,
    /// On a dead-lettered message: how many times it was tried.
    pub attempts: &'static str,
    /// On a dead-lettered message: where it was consumed from (queue, subject, topic and
    /// offset: each broker says it its way).
    pub origin: &'static str,
}

impl HeaderNames {
    /// Lower-case `cqrs-*` names, for a broker without a spelling of its own.
    pub const DEFAULT: HeaderNames = HeaderNames {
        event_id: "cqrs-event-id",
        event_type: "cqrs-event-type",
        schema_version: "cqrs-schema-version",
        stream_category: "cqrs-stream-category",
        stream_id: "cqrs-stream-id",
        stream_version: "cqrs-stream-version",
        position: "cqrs-position",
        tx: "cqrs-tx",
        recorded_at: "cqrs-recorded-at",
        correlation_id: "cqrs-correlation-id",
        causation_id: "cqrs-causation-id",
        metadata: "cqrs-metadata",
        traceparent: "traceparent",
        error: "cqrs-error",
        attempts: "cqrs-attempts",
        origin: "cqrs-origin",
    };

    /// The same names in HTTP-style capitals (`Cqrs-Event-Type`), for brokers whose headers
    /// are written that way (NATS).
    pub const TITLE_CASE: HeaderNames = HeaderNames {
        event_id: "Cqrs-Event-Id",
        event_type: "Cqrs-Event-Type",
        schema_version: "Cqrs-Schema-Version",
        stream_category: "Cqrs-Stream-Category",
        stream_id: "Cqrs-Stream-Id",
        stream_version: "Cqrs-Stream-Version",
        position: "Cqrs-Position",
        tx: "Cqrs-Tx",
        recorded_at: "Cqrs-Recorded-At",
        correlation_id: "Cqrs-Correlation-Id",
        causation_id: "Cqrs-Causation-Id",
        metadata: "Cqrs-Metadata",
        traceparent: "traceparent",
        error: "Cqrs-Error",
        attempts: "Cqrs-Attempts",
        origin: "Cqrs-Origin",
    };

    /// The same names with the event id where the broker carries it (its own message id
    /// property or header, such as AMQP's `message_id` or NATS's `Nats-Msg-Id`).
    pub const fn with_event_id(self, event_id: &'static str) -> HeaderNames {
        HeaderNames { event_id, ..self }
    }
}

/// One header's value, before a driver puts it in its own header type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Text (names, ids, times, JSON).
    Text(String),
    /// A count or position; brokers with typed headers may store it as an integer.
    Number(u64),
}

impl HeaderValue {
    /// The value as text, numbers in decimal: for brokers whose headers are all strings.
    pub fn into_text(self) -> String {
        match self {
            HeaderValue::Text(s) => s,
            HeaderValue::Number(n) => n.to_string(),
        }
    }
}

/// Read access to a received message's headers, by name.
pub trait HeaderSource {
    /// The header `name` as text, or `None` if absent or not text.
    fn text(&self, name: &str) -> Option<Cow<'_, str>>;

    /// The header `name` as an unsigned integer, or `None` if absent or not one. By default
    /// the text parsed as decimal.
    fn number(&self, name: &str) -> Option<u64> {
        self.text(name)?.parse().ok()
    }
}

/// The headers [`envelope_headers`] produced, read back as they are (for tests and brokers that
/// hand headers over as a list).
impl HeaderSource for [(&'static str, HeaderValue)] {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.iter().find(|(n, _)| *n == name)? {
            (_, HeaderValue::Text(s)) => Some(Cow::Borrowed(s)),
            (_, HeaderValue::Number(n)) => Some(Cow::Owned(n.to_string())),
        }
    }

    fn number(&self, name: &str) -> Option<u64> {
        match self.iter().find(|(n, _)| *n == name)? {
            (_, HeaderValue::Number(n)) => Some(*n),
            (_, HeaderValue::Text(s)) => s.parse().ok(),
        }
    }
}

fn serialize_error(event: &RecordedEvent, source: serde_json::Error) -> Error {
    Error::Serialize {
        event_type: event.event_type.clone(),
        source,
    }
}

/// The message body of `event`: its JSON payload, the text the store holds.
pub fn encode_body(event: &RecordedEvent) -> Result<Vec<u8>> {
    Ok(event.payload.clone().into_bytes())
}

/// The envelope headers of `event`, spelled by `names`, in a fixed order. The event id is not
/// among them: each broker carries it as its own message id.
pub fn envelope_headers(
    names: &HeaderNames,
    event: &RecordedEvent,
) -> Result<Vec<(&'static str, HeaderValue)>> {
    let text = |s: &str| HeaderValue::Text(s.to_owned());
    let mut h = vec![
        (names.event_type, text(&event.event_type)),
        (
            names.schema_version,
            HeaderValue::Number(event.schema_version.into()),
        ),
        (names.stream_category, text(&event.stream.category)),
        (names.stream_id, text(&event.stream.id)),
        (
            names.stream_version,
            HeaderValue::Number(event.stream_version),
        ),
        (names.position, HeaderValue::Number(event.cursor.position)),
        (names.tx, HeaderValue::Number(event.cursor.tx)),
        (
            names.recorded_at,
            HeaderValue::Text(event.recorded_at.to_rfc3339()),
        ),
    ];
    if let Some(id) = event.metadata.correlation_id {
        h.push((names.correlation_id, HeaderValue::Text(id.to_string())));
    }
    if let Some(id) = event.metadata.causation_id {
        h.push((names.causation_id, HeaderValue::Text(id.to_string())));
    }
    if let Some(tp) = &event.metadata.traceparent {
        h.push((names.traceparent, HeaderValue::Text(tp.clone())));
    }
    if !event.metadata.extra.is_empty() {
        let extra =
            serde_json::to_string(&event.metadata.extra).map_err(|e| serialize_error(event, e))?;
        h.push((names.metadata, HeaderValue::Text(extra)));
    }
    Ok(h)
}

/// Rebuilds an event from its id (as the broker carried it), its headers and its body.
///
/// A message without the envelope (not sent by a relay) or with a malformed header is
/// [`Error::Invalid`] naming the message and the first bad header; a body that is not JSON is
/// [`Error::Decode`] naming the stream, version and type.
pub fn event_from_headers(
    names: &HeaderNames,
    event_id: Option<&str>,
    headers: &(impl HeaderSource + ?Sized),
    body: &[u8],
) -> Result<RecordedEvent> {
    let msg_id = event_id.unwrap_or("<none>");
    let missing =
        |what: &str| Error::Invalid(format!("message {msg_id}: missing or bad header {what}"));
    let text = |key: &str| {
        headers
            .text(key)
            .map(Cow::into_owned)
            .ok_or_else(|| missing(key))
    };
    let number = |key: &str| headers.number(key).ok_or_else(|| missing(key));
    let uuid = |key: &str| -> Result<Option<Uuid>> {
        headers
            .text(key)
            .map(|s| s.parse().map_err(|_| missing(key)))
            .transpose()
    };
    let event_id: Uuid = msg_id.parse().map_err(|_| missing(names.event_id))?;
    let stream = StreamId::new(text(names.stream_category)?, text(names.stream_id)?);
    let extra = match headers.text(names.metadata) {
        Some(s) => serde_json::from_str(&s).map_err(|_| missing(names.metadata))?,
        None => Default::default(),
    };
    let recorded_at = headers
        .text(names.recorded_at)
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| missing(names.recorded_at))?;
    let mut event = RecordedEvent {
        event_id,
        stream_version: number(names.stream_version)?,
        cursor: Cursor::new(
            headers.number(names.tx).unwrap_or(0),
            number(names.position)?,
        ),
        recorded_at,
        event_type: text(names.event_type)?,
        schema_version: number(names.schema_version)
            .and_then(|v| u32::try_from(v).map_err(|_| missing(names.schema_version)))?,
        payload: String::new(),
        metadata: Metadata {
            correlation_id: uuid(names.correlation_id)?,
            causation_id: uuid(names.causation_id)?,
            traceparent: headers.text(names.traceparent).map(Cow::into_owned),
            extra,
        },
        stream,
    };
    // NOTE: checked to be one JSON value here, at the edge, so that a malformed body is this
    // message's typed error rather than a surprise for whoever decodes the event later.
    let payload = serde_json::from_slice::<&serde_json::value::RawValue>(body)
        .map_err(|e| event.decode_error(e))?;
    event.payload = payload.get().to_owned();
    Ok(event)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::testkit::sample_recorded_event;

    const NAMES: HeaderNames = HeaderNames::DEFAULT;

    fn decode(id: &str, h: &[(&'static str, HeaderValue)], body: &[u8]) -> Result<RecordedEvent> {
        event_from_headers(&NAMES, Some(id), h, body)
    }

    fn invalid_naming(err: Error, header: &str) {
        match err {
            Error::Invalid(msg) => assert!(msg.ends_with(&format!("header {header}")), "{msg}"),
            other => panic!("expected Invalid naming {header}, got {other}"),
        }
    }

    #[test]
    fn round_trips_the_envelope() {
        let e = sample_recorded_event();
        let h = envelope_headers(&NAMES, &e).unwrap();
        let body = encode_body(&e).unwrap();
        assert_eq!(body, br#"{"amount":5}"#);
        assert_eq!(decode(&e.event_id.to_string(), &h, &body).unwrap(), e);
    }

    #[test]
    fn numbers_are_typed_and_optional_headers_left_out() {
        let mut e = sample_recorded_event();
        e.metadata = Metadata::default();
        let h = envelope_headers(&NAMES, &e).unwrap();
        let names: Vec<_> = h.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "cqrs-event-type",
                "cqrs-schema-version",
                "cqrs-stream-category",
                "cqrs-stream-id",
                "cqrs-stream-version",
                "cqrs-position",
                "cqrs-tx",
                "cqrs-recorded-at",
            ]
        );
        assert_eq!(h[4].1, HeaderValue::Number(7));
        assert_eq!(HeaderValue::Number(42).into_text(), "42");
        let body = encode_body(&e).unwrap();
        assert_eq!(decode(&e.event_id.to_string(), &h, &body).unwrap(), e);
    }

    #[test]
    fn numbers_sent_as_text_are_read_and_a_missing_tx_is_zero() {
        let e = sample_recorded_event();
        let h: Vec<_> = envelope_headers(&NAMES, &e)
            .unwrap()
            .into_iter()
            .filter(|(n, _)| *n != NAMES.tx)
            .map(|(n, v)| (n, HeaderValue::Text(v.into_text())))
            .collect();
        let back = decode(&e.event_id.to_string(), &h, &encode_body(&e).unwrap()).unwrap();
        assert_eq!(back.cursor, Cursor::new(0, 42));
        assert_eq!(back.stream_version, 7);
    }

    #[test]
    fn a_foreign_message_is_invalid() {
        let err = event_from_headers(&NAMES, None, &[][..], b"{}").unwrap_err();
        invalid_naming(err, NAMES.event_id);
        let id = Uuid::new_v4().to_string();
        invalid_naming(decode(&id, &[], b"{}").unwrap_err(), NAMES.stream_category);
    }

    #[test]
    fn a_bad_header_is_named() {
        let e = sample_recorded_event();
        let id = e.event_id.to_string();
        let body = encode_body(&e).unwrap();
        let with = |name: &'static str, value: HeaderValue| {
            let mut h = envelope_headers(&NAMES, &e).unwrap();
            h.retain(|(n, _)| *n != name);
            h.push((name, value));
            h
        };
        let text = |s: &str| HeaderValue::Text(s.into());
        for (name, value) in [
            (NAMES.correlation_id, text("not-a-uuid")),
            (NAMES.causation_id, text("not-a-uuid")),
            (NAMES.metadata, text("[1, 2]")),
            (NAMES.recorded_at, text("yesterday")),
            (NAMES.stream_version, text("-1")),
            (
                NAMES.schema_version,
                HeaderValue::Number(u64::from(u32::MAX) + 1),
            ),
        ] {
            invalid_naming(decode(&id, &with(name, value), &body).unwrap_err(), name);
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_a_decode_error() {
        let e = sample_recorded_event();
        let h = envelope_headers(&NAMES, &e).unwrap();
        let err = decode(&e.event_id.to_string(), &h, b"not json").unwrap_err();
        assert!(
            matches!(&err, Error::Decode { stream, version: 7, event_type, .. }
                if *stream == e.stream && event_type == "Deposited"),
            "{err}"
        );
    }
}
