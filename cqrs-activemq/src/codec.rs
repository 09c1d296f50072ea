//! The wire form of an event on ActiveMQ: the JSON payload as the body of a text message, the
//! envelope in STOMP headers (which ActiveMQ keeps as JMS string properties), so that consumers
//! in other languages, and JMS clients, can read it without this crate.

use std::borrow::Cow;

use cqrs_broker::WireMessage;
use cqrs_core::wire::{self, HeaderNames, HeaderSource};
use cqrs_core::{RecordedEvent, Result};

use crate::stomp::Frame;

/// How this crate spells the envelope headers: the core's lower-case `cqrs-*` names, the event
/// id in `cqrs-event-id` (ActiveMQ assigns its own `message-id`). Dead letters also carry
/// `cqrs-error`, `cqrs-attempts` and `cqrs-origin` (the queue it failed in).
pub const HEADERS: HeaderNames = HeaderNames::DEFAULT;

/// The message group header: ActiveMQ hands all messages of one group to one consumer at a
/// time, in order.
pub(crate) const GROUP: &str = "JMSXGroupID";

/// Headers the broker sets on a delivery; dropped when a message is sent on (to its DLQ).
const BROKER_HEADERS: &[&str] = &[
    "message-id",
    "ack",
    "subscription",
    "destination",
    "redelivered",
    "expires",
    "timestamp",
    "priority",
    "content-length",
    "scheduledJobId",
    "redeliveryDelay",
    "receipt",
    "persistent",
];

/// The SEND frame of `message` to `destination` (`/queue/...` or `/topic/...`): persistent
/// (a non-persistent message is dropped after its last redelivery instead of going to the DLQ),
/// grouped by stream, the envelope in headers.
pub(crate) fn send_frame(destination: &str, message: &WireMessage<'_>) -> Frame {
    let event = message.event;
    let mut frame = Frame::new("SEND")
        .header("destination", destination)
        .header("persistent", "true")
        .header("content-type", "application/json")
        .header(GROUP, message.ordering_key())
        .header(HEADERS.event_id, message.id())
        .header("type", event.event_type.as_str());
    if let Some(id) = event.metadata.correlation_id {
        frame = frame.header("correlation-id", id.to_string());
    }
    for (name, value) in &message.headers {
        frame = frame.header(*name, value.clone().into_text());
    }
    // NOTE: no content-length: ActiveMQ makes a frame without one a JMS TextMessage (with one,
    // a BytesMessage), and a JSON text never holds the NUL byte that would end the body early.
    frame.body(message.body.clone())
}

/// The SEND frame that puts a received `message` into `dead_letter_queue` with the error, the
/// tries and where it failed.
pub(crate) fn dead_letter_frame(
    message: &Frame,
    dead_letter_queue: &str,
    origin: &str,
    error: &str,
    attempts: u32,
) -> Frame {
    let mut frame = Frame::new("SEND")
        .header("destination", format!("/queue/{dead_letter_queue}"))
        .header("persistent", "true");
    for (name, value) in &message.headers {
        let ours = [HEADERS.error, HEADERS.attempts, HEADERS.origin];
        if !BROKER_HEADERS.contains(&name.as_str()) && !ours.contains(&name.as_str()) {
            frame = frame.header(name.clone(), value.clone());
        }
    }
    frame
        .header(HEADERS.error, error)
        .header(HEADERS.attempts, attempts.to_string())
        .header(HEADERS.origin, origin)
        .body(message.body.clone())
}

/// A received frame's headers, read by name.
struct Headers<'a>(&'a [(String, String)]);

impl HeaderSource for Headers<'_> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }
}

/// Rebuilds the event from a received message's headers and body.
///
/// A message without the envelope headers (not sent by a relay) or with a malformed one is
/// [`cqrs_core::Error::Invalid`] naming the message and the header; a body that is not JSON is
/// [`cqrs_core::Error::Decode`].
///
/// ```
/// use cqrs_activemq::decode_message;
///
/// let headers = vec![("message-id".to_owned(), "ID:1".to_owned())];
/// let err = decode_message(&headers, b"{}").unwrap_err();
/// assert!(err.to_string().contains("cqrs-event-id"), "{err}");
/// ```
pub fn decode_message(headers: &[(String, String)], body: &[u8]) -> Result<RecordedEvent> {
    let h = Headers(headers);
    let id = h.text(HEADERS.event_id);
    wire::event_from_headers(&HEADERS, id.as_deref(), &h, body)
}

/// The error text and try count a dead-lettered message carries, if it is one.
///
/// ```
/// use cqrs_activemq::dead_letter_error;
///
/// let headers = vec![
///     ("cqrs-error".to_owned(), "cannot digest".to_owned()),
///     ("cqrs-attempts".to_owned(), "3".to_owned()),
/// ];
/// assert_eq!(dead_letter_error(&headers), Some(("cannot digest".to_owned(), 3)));
/// ```
pub fn dead_letter_error(headers: &[(String, String)]) -> Option<(String, u32)> {
    let h = Headers(headers);
    let error = h.text(HEADERS.error)?.into_owned();
    let attempts = h
        .number(HEADERS.attempts)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(0);
    Some((error, attempts))
}
