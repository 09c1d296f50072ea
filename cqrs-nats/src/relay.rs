//! The outbound relay: the kit's [`Relay`] publishing to a JetStream stream, done once
//! JetStream acknowledged every message of the batch.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_trait::async_trait;
use cqrs_broker::{Publisher, Relay, WireMessage};
use cqrs_core::wire::HeaderNames;
use cqrs_core::{
    BoxError, CheckpointStore, Checkpointed, Cursor, Error, RecordedEvent, Result, Subscriber,
};
use tokio::sync::OnceCell;

use crate::codec::{HEADERS, headers};
use crate::topology::{JetStreamEvents, context};

/// A [`Publisher`] to a [`JetStreamEvents`] stream: each event to
/// `events.<aggregate type>.<event type>` (`Nats-Msg-Id` = event id, the envelope in headers),
/// pipelined; a batch is done when JetStream acknowledged every message of it.
///
/// Within a batch each message names the one before it (`Nats-Expected-Last-Msg-Id`), so a
/// message lost in a dropped connection makes the ones behind it fail instead of overtaking it;
/// the batch is then published again, and JetStream drops the repeats of what it already stored
/// (same message id, within the duplicate window). This needs the relay to be the stream's only
/// publisher. It creates the stream if missing.
pub struct JetStreamPublisher {
    js: Context,
    events: JetStreamEvents,
    ready: OnceCell<()>,
}

impl std::fmt::Debug for JetStreamPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamPublisher")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl JetStreamPublisher {
    /// A publisher through `client` to `events`.
    pub fn new(client: async_nats::Client, events: JetStreamEvents) -> Self {
        JetStreamPublisher {
            js: context(client, Duration::from_secs(5)),
            events,
            ready: OnceCell::new(),
        }
    }
}

#[async_trait]
impl Publisher for JetStreamPublisher {
    fn header_names(&self) -> &HeaderNames {
        &HEADERS
    }

    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        self.ready
            .get_or_try_init(|| async { self.events.ensure(&self.js).await.map(drop) })
            .await?;
        let mut acks = Vec::with_capacity(batch.len());
        let mut previous: Option<String> = None;
        for message in batch {
            let id = message.id();
            let mut msg = Publish::build()
                .headers(headers(message))
                .payload(message.body.clone().into())
                .message_id(&id);
            if let Some(prev) = previous.take() {
                msg = msg.expected_last_message_id(prev);
            }
            let event = message.event;
            let subject = self
                .events
                .subject(&event.stream.category, &event.event_type);
            acks.push(
                self.js
                    .send_publish(subject, msg)
                    .await
                    .map_err(Error::backend)?,
            );
            previous = Some(id);
        }
        for ack in acks {
            ack.await.map_err(Error::backend)?;
        }
        Ok(())
    }
}

/// The outbox relay to JetStream: a [`Subscriber`] that publishes every event through a
/// [`JetStreamPublisher`] and saves the checkpoint after JetStream acknowledged the whole batch
/// (the kit's [`Relay`] under [`Checkpointed`]).
///
/// Run it in a [`cqrs_core::Runner`], which hands it events in store order. A crash between the
/// acks and the checkpoint publishes the batch again on restart: JetStream drops the repeats
/// within the duplicate window, consumers' inboxes after it.
///
/// Failures are retried for up to [`retry_for`](JetStreamRelay::retry_for) before the batch
/// fails to the runner (which retries and, once its attempts are spent, parks the event; give
/// the runner generous `max_attempts` for a relay).
#[derive(Debug)]
pub struct JetStreamRelay<C>(Checkpointed<Relay<JetStreamPublisher>, C>);

impl<C: CheckpointStore> JetStreamRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) publishing through
    /// `client` to `events`, which it creates if missing.
    pub fn new(
        name: impl Into<String>,
        client: async_nats::Client,
        events: JetStreamEvents,
        checkpoints: C,
    ) -> Self {
        let publisher = JetStreamPublisher::new(client, events);
        JetStreamRelay(Relay::new(name, publisher).checkpointed(checkpoints))
    }

    /// How long a batch is retried before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.0.projector_mut().set_retry_for(window);
        self
    }
}

#[async_trait]
impl<C: CheckpointStore> Subscriber for JetStreamRelay<C> {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.0.checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        self.0.process(events, to).await
    }
    /// Forgets the checkpoint: the whole store is published again (JetStream and the consumers'
    /// inboxes drop the repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.reset().await
    }
}
