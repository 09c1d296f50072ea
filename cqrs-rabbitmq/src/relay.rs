//! The outbound relay: the kit's [`Relay`] publishing to RabbitMQ with publisher confirms.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_broker::{Publisher, Relay, WireMessage};
use cqrs_core::wire::HeaderNames;
use cqrs_core::{
    BoxError, CheckpointStore, Checkpointed, Cursor, Error, RecordedEvent, Result, Subscriber,
};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use crate::codec::{HEADERS, properties};
use crate::topology::{DEFAULT_EXCHANGE_PREFIX, RabbitQueue, declare_exchange, exchange_for};

/// A [`Publisher`] to RabbitMQ: each event to the durable topic exchange of its aggregate type
/// (routing key = event type, message id = event id, the envelope in headers); a batch is done
/// when the broker confirmed every message of it.
///
/// It connects on first use, and again after a failed or abandoned attempt.
pub struct RabbitPublisher {
    name: String,
    url: String,
    prefix: String,
    queues: Vec<RabbitQueue>,
    link: Mutex<Option<Link>>,
}

struct Link {
    // NOTE: kept so that the connection lives as long as its channel.
    _conn: Connection,
    channel: Channel,
    declared: HashSet<String>,
}

impl std::fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RabbitPublisher {
    /// A publisher to the broker at `url` (such as `amqp://guest:guest@127.0.0.1:5672/%2f`),
    /// its connection named after `name`.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        RabbitPublisher {
            name: name.into(),
            url: url.into(),
            prefix: DEFAULT_EXCHANGE_PREFIX.to_owned(),
            queues: Vec::new(),
            link: Mutex::new(None),
        }
    }

    /// Publishes to exchanges named `prefix` + aggregate type instead of `events.` + type.
    pub fn with_exchange_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Declares `queue` each time it connects, before it publishes (see
    /// [`RabbitRelay::declaring`]).
    pub fn declaring(mut self, queue: RabbitQueue) -> Self {
        self.queues.push(queue);
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

    async fn publish_on(&self, link: &mut Link, batch: &[WireMessage<'_>]) -> Result<()> {
        let mut confirms = Vec::with_capacity(batch.len());
        for message in batch {
            let event = message.event;
            let exchange = exchange_for(&self.prefix, &event.stream.category);
            if !link.declared.contains(&exchange) {
                declare_exchange(&link.channel, &exchange, ExchangeKind::Topic)
                    .await
                    .map_err(Error::backend)?;
                link.declared.insert(exchange.clone());
            }
            let confirm = link
                .channel
                .basic_publish(
                    exchange.into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    &message.body,
                    properties(message),
                )
                .await
                .map_err(Error::backend)?;
            confirms.push(confirm);
        }
        for (confirm, message) in confirms.into_iter().zip(batch) {
            match confirm.await.map_err(Error::backend)? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) => {
                    return Err(Error::backend(format!(
                        "broker refused event {} at {}",
                        message.event.event_id, message.event.stream
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
}

#[async_trait]
impl Publisher for RabbitPublisher {
    fn header_names(&self) -> &HeaderNames {
        &HEADERS
    }

    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        let mut guard = self.link.lock().await;
        // NOTE: the link is taken out while in use and put back only after a success: a failed
        // attempt, or one the relay abandoned (a broker that stopped answering), leaves none,
        // so the next attempt connects afresh.
        let mut link = match guard.take() {
            Some(link) if link.channel.status().connected() => link,
            _ => self.connect().await?,
        };
        self.publish_on(&mut link, batch).await?;
        *guard = Some(link);
        Ok(())
    }
}

/// The outbox relay to RabbitMQ: a [`Subscriber`] that publishes every event through a
/// [`RabbitPublisher`] and saves the checkpoint after the broker confirmed the whole batch (the
/// kit's [`Relay`] under [`Checkpointed`]).
///
/// Run it in a [`cqrs_core::Runner`], which hands it events in store order: per-stream order is
/// kept on the wire. A crash between the confirms and the checkpoint publishes the batch again
/// on restart (at-least-once); consumers deduplicate by message id in their inbox.
///
/// A lost connection, or a broker that stops answering, is given up and reopened, and the
/// batch published again, for up to [`retry_for`](RabbitRelay::retry_for) before the batch
/// fails to the runner (which retries and, once its attempts are spent, parks the event; give
/// the runner generous `max_attempts` for a relay). A message routed to no queue is dropped by
/// the broker, as in any publish/subscribe: declare the consumers' queues before relaying, for
/// instance by handing them to the relay with [`declaring`](RabbitRelay::declaring).
#[derive(Debug)]
pub struct RabbitRelay<C>(Checkpointed<Relay<RabbitPublisher>, C>);

impl<C: CheckpointStore> RabbitRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) publishing to the broker
    /// at `url` (such as `amqp://guest:guest@127.0.0.1:5672/%2f`). It connects on first use.
    pub fn new(name: impl Into<String>, url: impl Into<String>, checkpoints: C) -> Self {
        let name = name.into();
        let publisher = RabbitPublisher::new(name.clone(), url);
        RabbitRelay(Relay::new(name, publisher).checkpointed(checkpoints))
    }

    fn publisher(&mut self) -> &mut RabbitPublisher {
        self.0.projector_mut().publisher_mut()
    }

    /// Publishes to exchanges named `prefix` + aggregate type instead of `events.` + type.
    pub fn with_exchange_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.publisher().prefix = prefix.into();
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
        self.publisher().queues.push(queue);
        self
    }

    /// How long a batch is retried over reconnections before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.0.projector_mut().set_retry_for(window);
        self
    }
}

#[async_trait]
impl<C: CheckpointStore> Subscriber for RabbitRelay<C> {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.0.checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        self.0.process(events, to).await
    }
    /// Forgets the checkpoint: the whole store is published again (consumers' inboxes drop the
    /// repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.reset().await
    }
}
