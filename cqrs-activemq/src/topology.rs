//! Where events go and where they are consumed from: the relay's destination (a queue, a topic
//! or a virtual topic) and a consuming service's queue with its dead-letter queue.

use cqrs_core::Result;

use crate::stomp::{Connection, Frame, StompUrl};

/// Where a relay sends: a queue (point-to-point), a topic (publish/subscribe to whoever is
/// subscribed at the time) or a virtual topic (publish/subscribe into one durable queue per
/// consuming service).
///
/// ```
/// use cqrs_activemq::{ActiveMqDestination, ActiveMqQueue};
///
/// let topic = ActiveMqDestination::virtual_topic("bank.account");
/// assert_eq!(topic.stomp_destination(), "/topic/VirtualTopic.bank.account");
/// // Each subscribing service gets a queue of its own out of it.
/// let queue = ActiveMqQueue::of_virtual_topic("bank.account", "notifier");
/// assert_eq!(queue.name(), "Consumer.notifier.VirtualTopic.bank.account");
/// assert_eq!(queue.dead_letter_queue(), "DLQ.Consumer.notifier.VirtualTopic.bank.account");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveMqDestination {
    /// A queue: each message handled by one of its consumers.
    Queue(String),
    /// A topic: each message to every subscriber present. Nothing is kept for a subscriber
    /// that is away; prefer a virtual topic for services.
    Topic(String),
    /// The virtual topic `VirtualTopic.<name>`: ActiveMQ copies each message into every queue
    /// `Consumer.<service>.VirtualTopic.<name>` that exists, one per consuming service, where
    /// it waits for that service (see [`ActiveMqQueue::of_virtual_topic`]).
    VirtualTopic(String),
}

impl ActiveMqDestination {
    /// The queue `name`.
    pub fn queue(name: impl Into<String>) -> Self {
        ActiveMqDestination::Queue(name.into())
    }

    /// The topic `name`.
    pub fn topic(name: impl Into<String>) -> Self {
        ActiveMqDestination::Topic(name.into())
    }

    /// The virtual topic `VirtualTopic.<name>`.
    pub fn virtual_topic(name: impl Into<String>) -> Self {
        ActiveMqDestination::VirtualTopic(name.into())
    }

    /// The destination as a STOMP SEND names it: `/queue/<name>`, `/topic/<name>` or
    /// `/topic/VirtualTopic.<name>`.
    pub fn stomp_destination(&self) -> String {
        match self {
            ActiveMqDestination::Queue(n) => format!("/queue/{n}"),
            ActiveMqDestination::Topic(n) => format!("/topic/{n}"),
            ActiveMqDestination::VirtualTopic(n) => format!("/topic/VirtualTopic.{n}"),
        }
    }

    /// The same kind of destination, its name followed by `.<suffix>`.
    pub fn child(&self, suffix: &str) -> Self {
        match self {
            ActiveMqDestination::Queue(n) => ActiveMqDestination::Queue(format!("{n}.{suffix}")),
            ActiveMqDestination::Topic(n) => ActiveMqDestination::Topic(format!("{n}.{suffix}")),
            ActiveMqDestination::VirtualTopic(n) => {
                ActiveMqDestination::VirtualTopic(format!("{n}.{suffix}"))
            }
        }
    }
}

/// A queue a service consumes, with its bounds: the tries of a message before it goes to the
/// dead-letter queue `DLQ.<queue>`, and how many unacknowledged messages the broker may push
/// ahead to one consumer.
///
/// ```
/// use cqrs_activemq::ActiveMqQueue;
///
/// let queue = ActiveMqQueue::new("orders").max_attempts(3).prefetch(50);
/// assert_eq!(queue.stomp_destination(), "/queue/orders");
/// assert_eq!(queue.dead_letter_queue(), "DLQ.orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveMqQueue {
    name: String,
    max_attempts: u32,
    prefetch: u32,
}

impl ActiveMqQueue {
    /// The queue `name`, 5 tries, a prefetch of 100.
    pub fn new(name: impl Into<String>) -> Self {
        ActiveMqQueue {
            name: name.into(),
            max_attempts: 5,
            prefetch: 100,
        }
    }

    /// The queue `Consumer.<service>.VirtualTopic.<topic>`: the `service`'s own copy of
    /// what is sent to [`ActiveMqDestination::virtual_topic`]`(topic)`. ActiveMQ creates it
    /// when first consumed; messages sent to the topic before that are not kept for it.
    pub fn of_virtual_topic(topic: &str, service: &str) -> Self {
        ActiveMqQueue::new(format!("Consumer.{service}.VirtualTopic.{topic}"))
    }

    /// Tries of a message (the first delivery included) before it is dead-lettered. Keep it
    /// below the broker's own redelivery bound (20 in `scripts/activemq/activemq.xml`), past
    /// which the broker dead-letters on its own, without our error.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How many unacknowledged messages the broker may push ahead to one consumer.
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/queue/<name>`.
    pub fn stomp_destination(&self) -> String {
        format!("/queue/{}", self.name)
    }

    /// Where its dead letters go: `DLQ.<name>` (the prefix `scripts/activemq/activemq.xml`
    /// gives the broker's own per-queue dead letters too, instead of the shared
    /// `ActiveMQ.DLQ`).
    pub fn dead_letter_queue(&self) -> String {
        format!("DLQ.{}", self.name)
    }

    /// Creates the queue if it does not exist (a subscription that takes nothing, at once
    /// ended), so that what is sent to its virtual topic from now on waits in it.
    ///
    /// ```no_run
    /// use cqrs_activemq::ActiveMqQueue;
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let url = "stomp://127.0.0.1:61613".parse()?;
    /// ActiveMqQueue::of_virtual_topic("bank.account", "notifier").declare(&url).await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn declare(&self, url: &StompUrl) -> Result<()> {
        let mut conn = Connection::open(url).await?;
        self.declare_on(&mut conn).await?;
        conn.close().await;
        Ok(())
    }

    pub(crate) async fn declare_on(&self, conn: &mut Connection) -> Result<()> {
        // NOTE: a prefetch of 0: ActiveMQ dispatches nothing to this subscription, so no
        // message is taken and handed back marked redelivered.
        let id = format!("declare-{}", self.name);
        let subscribe = Frame::new("SUBSCRIBE")
            .header("id", id.as_str())
            .header("destination", self.stomp_destination())
            .header("ack", "client-individual")
            .header("activemq.prefetchSize", "0");
        let unsubscribe = Frame::new("UNSUBSCRIBE").header("id", id);
        conn.write_with_receipts(vec![subscribe, unsubscribe]).await
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.max_attempts
    }

    pub(crate) fn prefetch_size(&self) -> u32 {
        self.prefetch
    }
}
