//! The outbound relay: the event store is the outbox, and this subscriber publishes it to
//! RabbitMQ with publisher confirms, moving its checkpoint only once the broker confirmed.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{BoxError, CheckpointStore, Cursor, Error, RecordedEvent, Result, Subscriber};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use crate::codec::encode;
use crate::topology::{DEFAULT_EXCHANGE_PREFIX, RabbitQueue, declare_exchange, exchange_for};

/// The least time one publishing attempt is given before it is abandoned (and the connection
/// with it).
const ATTEMPT_AT_LEAST: Duration = Duration::from_secs(2);

/// A [`Subscriber`] that publishes every event to the topic exchange of its aggregate type
/// (routing key = event type, message id = event id, the envelope in headers) and saves the
/// checkpoint after the broker confirmed the whole batch.
///
/// Run it in a [`cqrs_core::Runner`], which hands it events in store order: per-stream order is
/// kept on the wire. A crash between the confirms and the checkpoint publishes the batch again
/// on restart (at-least-once); consumers deduplicate by message id in their inbox.
///
/// A lost connection, or a broker that stops answering, is given up and reopened, and the
/// batch published again, for up to [`retry_for`](RabbitRelay::retry_for) before the batch
/// fails to the runner (which retries and, once its attempts are spent, parks the event; give
/// the runner generous `max_attempts` for a relay). A message routed to no queue is dropped by the broker, as in
/// any publish/subscribe: declare the consumers' queues before relaying, for instance by
/// handing them to the relay with [`declaring`](RabbitRelay::declaring).
pub struct RabbitRelay<C> {
    name: String,
    url: String,
    prefix: String,
    checkpoints: C,
    retry_for: Duration,
    queues: Vec<RabbitQueue>,
    link: Mutex<Option<Link>>,
}

struct Link {
    // NOTE: kept so that the connection lives as long as its channel.
    _conn: Connection,
    channel: Channel,
    declared: HashSet<String>,
}

impl<C> std::fmt::Debug for RabbitRelay<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitRelay")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<C: CheckpointStore> RabbitRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) publishing to the broker
    /// at `url` (such as `amqp://guest:guest@127.0.0.1:5672/%2f`). It connects on first use.
    pub fn new(name: impl Into<String>, url: impl Into<String>, checkpoints: C) -> Self {
        RabbitRelay {
            name: name.into(),
            url: url.into(),
            prefix: DEFAULT_EXCHANGE_PREFIX.to_owned(),
            checkpoints,
            retry_for: Duration::from_secs(30),
            queues: Vec::new(),
            link: Mutex::new(None),
        }
    }

    /// Publishes to exchanges named `prefix` + aggregate type instead of `events.` + type.
    pub fn with_exchange_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Declares `queue` (with its companions, exchanges and bindings, as
    /// [`RabbitQueue::declare`] does) each time the relay connects, before it publishes: the
    /// events relayed before that queue's consumer first starts wait in it instead of being
    /// dropped as routed nowhere. Call it once per queue; the consumer declares the same queue
    /// with the same settings, which the broker accepts.
    ///
    /// ```no_run
    /// # use cqrs_core::InMemoryCheckpointStore;
    /// use cqrs_rabbitmq::{RabbitQueue, RabbitRelay};
    ///
    /// let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// let notifier = RabbitQueue::new("notifier").subscribe("account");
    /// let relay = RabbitRelay::new("broker_relay", url, InMemoryCheckpointStore::new())
    ///     .declaring(notifier);
    /// ```
    pub fn declaring(mut self, queue: RabbitQueue) -> Self {
        self.queues.push(queue);
        self
    }

    /// How long a batch is retried over reconnections before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.retry_for = window;
        self
    }

    async fn connect(&self) -> Result<Link> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("cqrs-relay:{}", self.name).into());
        let conn = Connection::connect(&self.url, props)
            .await
            .map_err(Error::backend)?;
        let channel = conn.create_channel().await.map_err(Error::backend)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::backend)?;
        for queue in &self.queues {
            queue.declare(&channel).await.map_err(Error::backend)?;
        }
        Ok(Link {
            _conn: conn,
            channel,
            declared: HashSet::new(),
        })
    }

    /// Publishes `events` in order and waits until the broker confirmed every one.
    async fn publish_once(&self, link: &mut Link, events: &[RecordedEvent]) -> Result<()> {
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let exchange = exchange_for(&self.prefix, &event.stream.category);
            if !link.declared.contains(&exchange) {
                declare_exchange(&link.channel, &exchange, ExchangeKind::Topic)
                    .await
                    .map_err(Error::backend)?;
                link.declared.insert(exchange.clone());
            }
            let (props, body) = encode(event)?;
            let confirm = link
                .channel
                .basic_publish(
                    exchange.into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await
                .map_err(Error::backend)?;
            confirms.push(confirm);
        }
        for (confirm, event) in confirms.into_iter().zip(events) {
            match confirm.await.map_err(Error::backend)? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) => {
                    return Err(Error::backend(format!(
                        "broker refused event {} at {}",
                        event.event_id, event.stream
                    )));
                }
                Confirmation::NotRequested => {
                    return Err(Error::backend(
                        "publisher confirms are not on for this channel",
                    ));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, events: &[RecordedEvent]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(50);
        let mut guard = self.link.lock().await;
        loop {
            // NOTE: a broker that accepts connections but does not answer (stuck, or blocking
            // publishers under a resource alarm) would hold an attempt until the heartbeat gives
            // up, minutes later: an attempt gets the rest of the window, and at least
            // ATTEMPT_AT_LEAST so that a healthy but slow batch can finish.
            let limit = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(ATTEMPT_AT_LEAST);
            let attempt = async {
                if guard
                    .as_ref()
                    .is_none_or(|l| !l.channel.status().connected())
                {
                    *guard = Some(self.connect().await?);
                }
                self.publish_once(guard.as_mut().expect("connected above"), events)
                    .await
            };
            let attempt = async {
                tokio::time::timeout(limit, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Timeout(format!(
                            "the broker did not connect or confirm within {limit:?}"
                        )))
                    })
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(relay = %self.name, error = %e, "publish failed, reconnecting");
                    *guard = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    *guard = None;
                    return Err(e);
                }
            }
        }
    }
}

#[async_trait]
impl<C: CheckpointStore> Subscriber for RabbitRelay<C> {
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

    /// Forgets the checkpoint: the whole store is published again (consumers' inboxes drop the
    /// repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.checkpoints.reset(&self.name).await?;
        Ok(())
    }
}
