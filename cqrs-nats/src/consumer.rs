//! The inbound consumer: a JetStream durable as the kit's [`Source`], its messages
//! acknowledged, negatively acknowledged with a delay or dead-lettered as the kit's
//! [`Consumer`] decides.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{MessagesErrorKind, Stream as Messages};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{AckKind, Context, Message};
use async_trait::async_trait;
use cqrs_broker::{Consumer, ConsumerHandle, Failure, Received, Session, Source};
use cqrs_core::{Error, InboxSubscriber, Result};
use futures_util::StreamExt;

use crate::codec::{HEADERS, decode_message, header};
use crate::topology::{JetStreamQueue, context};

/// Consumes a [`JetStreamQueue`] into an [`InboxSubscriber`], on the kit's [`Consumer`].
///
/// Each message is turned back into a [`cqrs_core::RecordedEvent`] and given to
/// [`handle_once`](InboxSubscriber::handle_once), which skips an event id it has seen and
/// commits the effect with the id. The message is acknowledged only after that, so a crash or a
/// lost connection redelivers it (after the queue's ack wait), and the inbox makes the repeat
/// harmless. A failing handler has its message negatively acknowledged with the queue's retry
/// delay; JetStream counts the deliveries, and once [`JetStreamQueue::max_attempts`] are spent
/// the message is published to the dead-letter stream with the error in the `Cqrs-Error`
/// header, and the consumer goes on with the next one.
///
/// Several consumers of one durable (in one process or many) compete: each message is handled
/// by one of them. The NATS client reconnects on its own; a broken pull is started again.
#[derive(Debug)]
pub struct JetStreamConsumer<S> {
    source: JetStreamSource,
    inbox: S,
}

impl<S: InboxSubscriber + 'static> JetStreamConsumer<S> {
    /// A consumer of `queue` through `client`, feeding `inbox`, pulling 100 messages at a time.
    pub fn new(client: async_nats::Client, queue: JetStreamQueue, inbox: S) -> Self {
        JetStreamConsumer {
            source: JetStreamSource {
                js: context(client, Duration::from_secs(5)),
                queue,
                prefetch: 100,
            },
            inbox,
        }
    }

    /// How many messages one pull asks for.
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.source.prefetch = prefetch.max(1);
        self
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        Consumer::new(self.source, self.inbox).start()
    }
}

struct JetStreamSource {
    js: Context,
    queue: JetStreamQueue,
    prefetch: usize,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

struct JetStreamSession {
    js: Context,
    retry_delay: Duration,
    dead_letter_subject: String,
    messages: Messages,
}

#[async_trait]
impl Source for JetStreamSource {
    type Session = JetStreamSession;

    fn name(&self) -> &str {
        self.queue.durable()
    }

    fn max_attempts(&self) -> u32 {
        self.queue.attempts()
    }

    async fn open(&self, _consumer: &str) -> Result<JetStreamSession> {
        let consumer = self.queue.declare(&self.js).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.prefetch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .map_err(Error::backend)?;
        Ok(JetStreamSession {
            js: self.js.clone(),
            retry_delay: self.queue.delay(),
            dead_letter_subject: self.queue.dead_letter_subject(),
            messages,
        })
    }
}

#[async_trait]
impl Session for JetStreamSession {
    type Message = Message;

    async fn next(&mut self) -> Result<Received<Message>> {
        loop {
            let message = match self.messages.next().await {
                None => return Err(Error::backend("the pull ended")),
                // NOTE: a missed heartbeat (a dropped connection, say) is reported, and the pull
                // carries on by itself once the client is back.
                Some(Err(e)) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                    tracing::debug!(error = %e, "missed heartbeat");
                    continue;
                }
                Some(next) => next.map_err(Error::backend)?,
            };
            return Ok(Received {
                attempt: message
                    .info()
                    .map(|i| u32::try_from(i.delivered).unwrap_or(1))
                    .unwrap_or(1),
                event: decode_message(message.headers.as_ref(), &message.payload),
                message,
            });
        }
    }

    async fn ack(&mut self, message: &Message) -> Result<()> {
        message.ack().await.map_err(Error::backend)
    }

    async fn retry(&mut self, message: &Message) -> Result<()> {
        message
            .ack_with(AckKind::Nak(Some(self.retry_delay)))
            .await
            .map_err(Error::backend)
    }

    async fn dead_letter(&mut self, message: &Message, failure: &Failure) -> Result<()> {
        // NOTE: the relay's `Nats-Expected-*` headers are stored with the message; carried over,
        // they would make JetStream refuse the dead letter.
        let mut h = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            if !name.to_string().starts_with("Nats-Expected") {
                for v in values {
                    h.append(name.clone(), v.clone());
                }
            }
        }
        // NOTE: one line, as NATS headers cannot carry line breaks.
        h.insert(HEADERS.error, failure.error.replace(['\r', '\n'], " "));
        h.insert(HEADERS.attempts, failure.attempts.to_string());
        h.insert(HEADERS.origin, message.subject.as_str());
        let publish = Publish::build().headers(h).payload(message.payload.clone());
        self.js
            .send_publish(self.dead_letter_subject.clone(), publish)
            .await
            .map_err(Error::backend)?
            .await
            .map_err(Error::backend)?;
        Ok(())
    }
}

/// The error text and delivery count a dead-lettered message carries in its headers, if it is
/// one.
pub fn dead_letter_error(h: &async_nats::HeaderMap) -> Option<(String, u32)> {
    let error = header(h, HEADERS.error)?.to_owned();
    let attempts = header(h, HEADERS.attempts)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Some((error, attempts))
}
