//! The outbound relay: the event store is the outbox, and this subscriber publishes it to a
//! JetStream stream, moving its checkpoint only once JetStream acknowledged every message.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_trait::async_trait;
use cqrs_core::{BoxError, CheckpointStore, Cursor, Error, RecordedEvent, Result, Subscriber};
use tokio::sync::OnceCell;

use crate::codec::encode;
use crate::topology::{JetStreamEvents, context};

/// A [`Subscriber`] that publishes every event to its subject in a [`JetStreamEvents`] stream
/// (`events.<aggregate type>.<event type>`, `Nats-Msg-Id` = event id, the envelope in
/// headers) and saves the checkpoint after JetStream acknowledged the whole batch.
///
/// Run it in a [`cqrs_core::Runner`], which hands it events in store order. Within a batch each
/// message names the one before it (`Nats-Expected-Last-Msg-Id`), so a message lost in a
/// dropped connection makes the ones behind it fail instead of overtaking it; the batch is then
/// published again, and JetStream drops the repeats of what it already stored (same message id,
/// within the duplicate window). This needs the relay to be the stream's only publisher. A crash
/// between the acks and the checkpoint publishes the batch again on restart: JetStream drops the
/// repeats within the duplicate window, consumers' inboxes after it.
///
/// Failures are retried for up to [`retry_for`](JetStreamRelay::retry_for) before the batch
/// fails to the runner (which retries and, once its attempts are spent, parks the event; give
/// the runner generous `max_attempts` for a relay).
pub struct JetStreamRelay<C> {
    name: String,
    js: Context,
    events: JetStreamEvents,
    checkpoints: C,
    retry_for: Duration,
    ready: OnceCell<()>,
}

impl<C> std::fmt::Debug for JetStreamRelay<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamRelay")
            .field("name", &self.name)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<C: CheckpointStore> JetStreamRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) publishing through
    /// `client` to `events`, which it creates if missing.
    pub fn new(
        name: impl Into<String>,
        client: async_nats::Client,
        events: JetStreamEvents,
        checkpoints: C,
    ) -> Self {
        JetStreamRelay {
            name: name.into(),
            js: context(client, Duration::from_secs(5)),
            events,
            checkpoints,
            retry_for: Duration::from_secs(30),
            ready: OnceCell::new(),
        }
    }

    /// How long a batch is retried before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.retry_for = window;
        self
    }

    /// Publishes `events` pipelined and waits for every acknowledgement.
    async fn publish_once(&self, events: &[RecordedEvent]) -> Result<()> {
        self.ready
            .get_or_try_init(|| async { self.events.ensure(&self.js).await.map(drop) })
            .await?;
        let mut acks = Vec::with_capacity(events.len());
        let mut previous: Option<String> = None;
        for event in events {
            let (headers, body) = encode(event)?;
            let id = event.event_id.to_string();
            let mut msg = Publish::build()
                .headers(headers)
                .payload(body.into())
                .message_id(&id);
            if let Some(prev) = previous.take() {
                msg = msg.expected_last_message_id(prev);
            }
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

    async fn publish(&self, events: &[RecordedEvent]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.publish_once(events).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(relay = %self.name, error = %e, "publish failed, publishing the batch again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl<C: CheckpointStore> Subscriber for JetStreamRelay<C> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&self) -> Result<Cursor> {
        self.checkpoints.load(&self.name).await
    }

    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        if !events.is_empty() {
            self.publish(events).await?;
        }
        self.checkpoints.save(&self.name, to).await?;
        Ok(())
    }

    /// Forgets the checkpoint: the whole store is published again (JetStream and the consumers'
    /// inboxes drop the repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.checkpoints.reset(&self.name).await?;
        Ok(())
    }
}
