//! The outbound relay: events from the store to an ActiveMQ queue, topic or virtual topic,
//! each SEND acknowledged by the broker's receipt before the checkpoint moves.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_broker::{Publisher, Relay, WireMessage};
use cqrs_core::wire::HeaderNames;
use cqrs_core::{
    BoxError, CheckpointStore, Checkpointed, Cursor, RecordedEvent, Result, Subscriber,
};
use tokio::sync::Mutex;

use crate::codec::{HEADERS, send_frame};
use crate::stomp::{Connection, StompUrl};
use crate::topology::{ActiveMqDestination, ActiveMqQueue};

/// The kit's [`Publisher`] for ActiveMQ: sends a batch as persistent STOMP SENDs, each asking
/// for a receipt, and returns once every receipt came back (ActiveMQ sends a persistent
/// message's receipt once it is stored).
#[derive(Debug)]
pub struct ActiveMqPublisher {
    url: StompUrl,
    destination: ActiveMqDestination,
    by_category: bool,
    queues: Vec<ActiveMqQueue>,
    link: Mutex<Option<Connection>>,
}

impl ActiveMqPublisher {
    /// A publisher to `destination` on the broker at `url`. It connects on first use.
    pub fn new(url: StompUrl, destination: &ActiveMqDestination) -> Self {
        ActiveMqPublisher {
            url,
            destination: destination.clone(),
            by_category: false,
            queues: Vec::new(),
            link: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Connection> {
        let mut conn = Connection::open(&self.url).await?;
        for queue in &self.queues {
            queue.declare_on(&mut conn).await?;
        }
        Ok(conn)
    }

    fn destination_of(&self, event: &RecordedEvent) -> String {
        if self.by_category {
            self.destination
                .child(&event.stream.category)
                .stomp_destination()
        } else {
            self.destination.stomp_destination()
        }
    }
}

#[async_trait]
impl Publisher for ActiveMqPublisher {
    fn header_names(&self) -> &HeaderNames {
        &HEADERS
    }

    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        let mut guard = self.link.lock().await;
        // NOTE: the connection is taken out while in use and put back only after a success: a
        // failed attempt, or one the relay abandoned (a broker that stopped answering), leaves
        // none, so the next attempt connects afresh.
        let mut link = match guard.take() {
            Some(link) => link,
            None => self.connect().await?,
        };
        let frames = batch
            .iter()
            .map(|m| send_frame(&self.destination_of(m.event), m))
            .collect();
        link.write_with_receipts(frames).await?;
        *guard = Some(link);
        Ok(())
    }
}

/// The outbox relay to ActiveMQ: a [`Subscriber`] that sends every event to one destination
/// through an [`ActiveMqPublisher`] and saves the checkpoint after the broker's receipts for
/// the whole batch (the kit's [`Relay`] under [`Checkpointed`]).
///
/// Each message is persistent, carries the envelope in `cqrs-*` headers and its stream as
/// `JMSXGroupID`: ActiveMQ keeps a group on one consumer of a queue at a time, so competing
/// consumers keep per-stream order. Run it in a [`cqrs_core::Runner`], which hands it events
/// in store order. A crash between the receipts and the checkpoint sends the batch again on
/// restart (at-least-once); consumers deduplicate by event id in their inbox.
///
/// ```no_run
/// use cqrs_activemq::{ActiveMqDestination, ActiveMqRelay};
/// use cqrs_core::InMemoryCheckpointStore;
///
/// let url = "stomp://127.0.0.1:61613".parse()?;
/// let relay = ActiveMqRelay::new(
///     "broker_relay",
///     url,
///     ActiveMqDestination::virtual_topic("bank.account"),
///     InMemoryCheckpointStore::new(),
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ActiveMqRelay<C>(Checkpointed<Relay<ActiveMqPublisher>, C>);

impl<C: CheckpointStore> ActiveMqRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) sending to
    /// `destination` on the broker at `url`.
    pub fn new(
        name: impl Into<String>,
        url: StompUrl,
        destination: ActiveMqDestination,
        checkpoints: C,
    ) -> Self {
        let publisher = ActiveMqPublisher::new(url, &destination);
        ActiveMqRelay(Relay::new(name, publisher).checkpointed(checkpoints))
    }

    fn publisher(&mut self) -> &mut ActiveMqPublisher {
        self.0.projector_mut().publisher_mut()
    }

    /// Sends each event to the destination's child of its category (`<name>.<category>`,
    /// such as `VirtualTopic.bank.account`) instead of the destination itself, so that a
    /// service consumes only the categories it wants.
    pub fn by_category(mut self) -> Self {
        self.publisher().by_category = true;
        self
    }

    /// Declares `queue` ([`ActiveMqQueue::declare`]) each time the relay connects, before it
    /// sends: what is sent to a virtual topic before that queue's consumer first starts waits
    /// in it instead of being copied nowhere.
    pub fn declaring(mut self, queue: ActiveMqQueue) -> Self {
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
impl<C: CheckpointStore> Subscriber for ActiveMqRelay<C> {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.0.checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        self.0.process(events, to).await
    }
    /// Forgets the checkpoint: the whole store is sent again (consumers' inboxes drop the
    /// repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.reset().await
    }
}
