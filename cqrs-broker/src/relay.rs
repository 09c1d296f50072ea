//! The outbound half: the event store is the outbox, and a [`Relay`] hands each batch to a
//! broker's [`Publisher`]. Run under [`Checkpointed`], the checkpoint moves only after the
//! broker confirmed the whole batch.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::wire::{self, HeaderNames, HeaderValue};
use cqrs_core::{BoxError, CheckpointStore, Checkpointed, Error, Projector, RecordedEvent, Result};

use crate::Backoff;

/// The least time one publishing attempt is given before it is abandoned: enough for a healthy
/// but slow batch to be confirmed.
const ATTEMPT_AT_LEAST: Duration = Duration::from_secs(2);

/// One event as it goes on the wire: the JSON body and the envelope headers (spelled by the
/// publisher's [`HeaderNames`]), beside the event a driver routes by (its category, type, id
/// and stream).
#[derive(Debug, Clone, PartialEq)]
pub struct WireMessage<'a> {
    /// The event, for routing: exchange, subject or topic by category and type; message id and
    /// deduplication id by event id; ordering key by stream.
    pub event: &'a RecordedEvent,
    /// The envelope headers ([`wire::envelope_headers`]); the event id is not among them.
    pub headers: Vec<(&'static str, HeaderValue)>,
    /// The message body ([`wire::encode_body`]).
    pub body: Vec<u8>,
}

impl<'a> WireMessage<'a> {
    /// The wire form of `event`, its headers spelled by `names`.
    pub fn encode(names: &HeaderNames, event: &'a RecordedEvent) -> Result<Self> {
        Ok(WireMessage {
            event,
            headers: wire::envelope_headers(names, event)?,
            body: wire::encode_body(event)?,
        })
    }

    /// The event id as text: the message id, and the deduplication id where the broker has one.
    pub fn id(&self) -> String {
        self.event.event_id.to_string()
    }

    /// The key that keeps one stream's events in order (Kafka's record key, SQS's message group,
    /// ActiveMQ's `JMSXGroupID`): the stream, as `category-id`.
    pub fn ordering_key(&self) -> String {
        self.event.stream.to_string()
    }
}

/// What a broker bridge implements to relay: publish a batch in order and return once the
/// broker confirmed every message of it.
///
/// An error (or an attempt that takes too long and is dropped) makes the [`Relay`] publish the
/// whole batch again after a backoff: a publisher that keeps a connection should drop it when an
/// attempt fails or is abandoned, so that the next attempt connects afresh. Publishing a message
/// twice is allowed (at-least-once); consumers deduplicate by event id.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// How this broker spells the envelope headers.
    fn header_names(&self) -> &HeaderNames {
        &HeaderNames::DEFAULT
    }

    /// Publishes `batch` in order and returns once the broker confirmed all of it.
    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()>;
}

#[async_trait]
impl<P: Publisher + ?Sized> Publisher for std::sync::Arc<P> {
    fn header_names(&self) -> &HeaderNames {
        (**self).header_names()
    }
    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        (**self).publish(batch).await
    }
}

/// The outbox relay: a batch [`Projector`] that publishes each batch of events through a
/// [`Publisher`], retrying over failures for up to [`retry_for`](Relay::retry_for).
///
/// Run it under [`Checkpointed`] (see [`checkpointed`](Relay::checkpointed)) in a
/// [`cqrs_core::Runner`], which hands it events in store order: the checkpoint moves only after
/// [`Projector::handle_batch`] returned, that is after the broker confirmed the whole batch. A
/// crash between the confirms and the checkpoint publishes the batch again on restart
/// (at-least-once); consumers deduplicate by event id in their inbox.
///
/// Once the retry window is spent the batch fails to the runner, which retries it and, once its
/// attempts are spent, parks the event: give the runner generous `max_attempts` for a relay, as
/// a relay's failures are the broker's outages, not poison events.
#[derive(Debug)]
pub struct Relay<P> {
    name: String,
    publisher: P,
    retry_for: Duration,
}

impl<P: Publisher> Relay<P> {
    /// A relay named `name` (the key of its checkpoint) publishing through `publisher`.
    pub fn new(name: impl Into<String>, publisher: P) -> Self {
        Relay {
            name: name.into(),
            publisher,
            retry_for: Duration::from_secs(30),
        }
    }

    /// How long a batch is retried over failures before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.retry_for = window;
        self
    }

    /// Sets the retry window in place (for bridges' builders).
    pub fn set_retry_for(&mut self, window: Duration) {
        self.retry_for = window;
    }

    /// The publisher.
    pub fn publisher(&self) -> &P {
        &self.publisher
    }

    /// The publisher, to configure it.
    pub fn publisher_mut(&mut self) -> &mut P {
        &mut self.publisher
    }

    /// The relay as a [`cqrs_core::Subscriber`], its checkpoint in `checkpoints`.
    pub fn checkpointed<C: CheckpointStore>(self, checkpoints: C) -> Checkpointed<Self, C> {
        Checkpointed::new(self, checkpoints)
    }

    async fn publish(&self, events: &[RecordedEvent]) -> Result<()> {
        let names = self.publisher.header_names();
        let batch = events
            .iter()
            .map(|e| WireMessage::encode(names, e))
            .collect::<Result<Vec<_>>>()?;
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut backoff = Backoff::default();
        loop {
            // NOTE: a broker that accepts connections but does not answer (stuck, or blocking
            // publishers under a resource alarm) would hold an attempt until the driver's
            // heartbeat gives up, minutes later: an attempt gets the rest of the window, and at
            // least ATTEMPT_AT_LEAST so that a healthy but slow batch can finish.
            let limit = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(ATTEMPT_AT_LEAST);
            let attempt = tokio::time::timeout(limit, self.publisher.publish(&batch))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout(format!(
                        "the broker did not connect or confirm within {limit:?}"
                    )))
                });
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + backoff.peek() < deadline => {
                    tracing::warn!(relay = %self.name, error = %e, "publish failed, publishing the batch again");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl<P: Publisher> Projector for Relay<P> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        if !events.is_empty() {
            self.publish(events).await?;
        }
        Ok(())
    }

    /// Nothing to empty: what was published stays published. [`Checkpointed`] forgets the
    /// checkpoint, so the whole store is published again (consumers drop the repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        Ok(())
    }
}
