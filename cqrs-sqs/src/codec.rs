//! The wire form of an event on SQS: the JSON payload as the message body, the envelope in
//! message attributes, so that consumers in other languages can read it without this crate.
//!
//! SQS allows ten attributes a message: the event id and the eight headers every event has
//! take nine, one each; the optional ones (correlation, causation, free-form metadata) share
//! the tenth, `cqrs-context`, a JSON object keyed by their header names.

use std::borrow::Cow;
use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use cqrs_broker::WireMessage;
use cqrs_core::wire::{self, HeaderNames, HeaderSource, HeaderValue};
use cqrs_core::{Error, RecordedEvent, Result};

/// How this crate spells the envelope attributes: the core's lower-case `cqrs-*` names, the
/// event id in `cqrs-event-id` (SQS assigns its own message id). Dead-letter notes carry
/// `cqrs-error`, `cqrs-attempts` and `cqrs-origin` ([`dead_letter_note`]).
pub const HEADERS: HeaderNames = HeaderNames::DEFAULT;

/// The attribute holding the optional envelope headers as one JSON object.
pub const CONTEXT: &str = "cqrs-context";

/// On a dead-letter note: the message id (in the dead-letter queue) of the message it speaks of.
pub const NOTE_FOR: &str = "cqrs-note-for";

/// The message attributes of `message`: the event id, the envelope headers, strings or
/// numbers as SQS types them.
pub(crate) fn attributes(
    message: &WireMessage<'_>,
) -> Result<HashMap<String, MessageAttributeValue>> {
    let names = [
        HEADERS.correlation_id,
        HEADERS.causation_id,
        HEADERS.metadata,
    ];
    let mut out = HashMap::new();
    out.insert(HEADERS.event_id.to_owned(), string(message.id())?);
    let mut context = serde_json::Map::new();
    for (name, value) in &message.headers {
        if names.contains(name) {
            context.insert((*name).to_owned(), value.clone().into_text().into());
            continue;
        }
        let value = match value {
            HeaderValue::Text(s) => string(s.clone())?,
            HeaderValue::Number(n) => MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(n.to_string())
                .build()
                .map_err(Error::backend)?,
        };
        out.insert((*name).to_owned(), value);
    }
    if !context.is_empty() {
        let text = serde_json::Value::Object(context).to_string();
        out.insert(CONTEXT.to_owned(), string(text)?);
    }
    Ok(out)
}

pub(crate) fn string(s: impl Into<String>) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(s)
        .build()
        .map_err(Error::backend)
}

/// A received message's attributes, read by name, the optional headers out of `cqrs-context`.
struct Attributes<'a> {
    attributes: Option<&'a HashMap<String, MessageAttributeValue>>,
    context: Option<serde_json::Map<String, serde_json::Value>>,
}

impl<'a> Attributes<'a> {
    fn of(message: &'a Message) -> Result<Self> {
        let attributes = message.message_attributes.as_ref();
        let context = match attributes
            .and_then(|a| a.get(CONTEXT))
            .and_then(|v| v.string_value())
        {
            None => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|_| {
                Error::Invalid(format!(
                    "message {}: missing or bad header {CONTEXT}",
                    message.message_id().unwrap_or("<none>")
                ))
            })?),
        };
        Ok(Attributes {
            attributes,
            context,
        })
    }
}

impl HeaderSource for Attributes<'_> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(v) = self.attributes?.get(name).and_then(|v| v.string_value()) {
            return Some(Cow::Borrowed(v));
        }
        match self.context.as_ref()?.get(name)? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
            _ => None,
        }
    }
}

/// Rebuilds the event from a received message's attributes and body.
///
/// A message without the envelope attributes (not sent by a relay) or with a malformed one is
/// [`cqrs_core::Error::Invalid`] naming the message and the attribute; a body that is not JSON
/// is [`cqrs_core::Error::Decode`].
///
/// ```
/// use aws_sdk_sqs::types::Message;
///
/// let message = Message::builder().message_id("m-1").body("{}").build();
/// let err = cqrs_sqs::decode_message(&message).unwrap_err();
/// assert!(err.to_string().contains("cqrs-event-id"), "{err}");
/// ```
pub fn decode_message(message: &Message) -> Result<RecordedEvent> {
    let attributes = Attributes::of(message)?;
    let id = attributes.text(HEADERS.event_id);
    let body = message.body().unwrap_or_default().as_bytes();
    wire::event_from_headers(&HEADERS, id.as_deref(), &attributes, body)
}

/// A received message's group (its stream, on a FIFO queue), if it has one.
pub(crate) fn group_of(message: &Message) -> Option<&str> {
    message
        .attributes
        .as_ref()?
        .get(&MessageSystemAttributeName::MessageGroupId)
        .map(String::as_str)
}

/// How many times SQS handed the message out, this time included.
pub(crate) fn receive_count(message: &Message) -> u32 {
    message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// What the consumer records beside a message in the dead-letter queue: why it failed, how
/// many times it was tried, where it was consumed from, and which message it speaks of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterNote {
    /// The message id, in the dead-letter queue, of the message this note is about (for a
    /// message moved by the redrive policy, its id in the source queue, which SQS keeps).
    pub message_id: String,
    /// The event id, if the message carried one.
    pub event_id: Option<String>,
    /// The handler's last error, or why the message could not be read.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// The queue it was consumed from.
    pub origin: String,
}

/// The note a message of a dead-letter queue is, if it is one (it has [`NOTE_FOR`]).
///
/// ```
/// use aws_sdk_sqs::types::{Message, MessageAttributeValue};
///
/// let text = |s: &str| MessageAttributeValue::builder().data_type("String").string_value(s).build().unwrap();
/// let note = Message::builder()
///     .body("cannot digest")
///     .message_attributes("cqrs-note-for", text("m-1"))
///     .message_attributes("cqrs-error", text("cannot digest"))
///     .message_attributes("cqrs-attempts", text("3"))
///     .message_attributes("cqrs-origin", text("orders"))
///     .build();
/// let note = cqrs_sqs::dead_letter_note(&note).unwrap();
/// assert_eq!((note.message_id.as_str(), note.error.as_str(), note.attempts), ("m-1", "cannot digest", 3));
/// ```
pub fn dead_letter_note(message: &Message) -> Option<DeadLetterNote> {
    let attributes = message.message_attributes.as_ref()?;
    let text = |name: &str| {
        attributes
            .get(name)
            .and_then(|v| v.string_value())
            .map(str::to_owned)
    };
    Some(DeadLetterNote {
        message_id: text(NOTE_FOR)?,
        event_id: text(HEADERS.event_id),
        error: text(HEADERS.error).unwrap_or_default(),
        attempts: text(HEADERS.attempts)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        origin: text(HEADERS.origin).unwrap_or_default(),
    })
}

/// The attributes of the note about `message_id` (SQS rejects an empty string attribute, so
/// an empty error is written as `-`).
pub(crate) fn note_attributes(
    message_id: &str,
    event_id: Option<&str>,
    error: &str,
    attempts: u32,
    origin: &str,
) -> Result<HashMap<String, MessageAttributeValue>> {
    let mut out = HashMap::new();
    out.insert(NOTE_FOR.to_owned(), string(message_id)?);
    out.insert(
        HEADERS.error.to_owned(),
        string(if error.is_empty() { "-" } else { error })?,
    );
    out.insert(HEADERS.attempts.to_owned(), string(attempts.to_string())?);
    out.insert(HEADERS.origin.to_owned(), string(origin)?);
    if let Some(id) = event_id {
        out.insert(HEADERS.event_id.to_owned(), string(id)?);
    }
    Ok(out)
}
