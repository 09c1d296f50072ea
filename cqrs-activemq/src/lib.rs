//! ActiveMQ bridge over STOMP 1.2: the event store's events leave through an outbox relay to a
//! queue, a topic or a virtual topic, each message stored by the broker (its receipt) before
//! the checkpoint moves, and arrive in other services through inbox consumers with
//! client-individual acknowledgements, bounded tries and a dead-letter queue.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_activemq::{ActiveMqConsumer, ActiveMqDestination, ActiveMqQueue, ActiveMqRelay};
//! use cqrs_core::*;
//!
//! #[derive(Debug, Default)]
//! struct Notifications;
//! #[async_trait]
//! impl Projector for Notifications {
//!     fn name(&self) -> &str { "notifications" }
//!     async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
//!         println!("{} {}", event.stream, event.event_type);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let url: cqrs_activemq::StompUrl = "stomp://127.0.0.1:61613".parse()?;
//! // The consuming service: its own queue out of the bank's virtual topic.
//! let queue = ActiveMqQueue::of_virtual_topic("bank.account", "notifier");
//! let consumer = ActiveMqConsumer::new(url.clone(), queue, InMemoryInbox::new(Notifications)).start();
//!
//! // The publishing service: a relay from its store to the virtual topic.
//! let store = Arc::new(InMemoryEventStore::new());
//! let topic = ActiveMqDestination::virtual_topic("bank.account");
//! let relay = ActiveMqRelay::new("relay", url, topic, InMemoryCheckpointStore::new());
//! let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new())).with(relay).start();
//!
//! let stream = StreamId::new("account", "a-1");
//! store.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("Opened", serde_json::json!({}))], None).await?;
//! # runner.shutdown().await;
//! # consumer.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//! Built on the broker kit ([`cqrs_broker`]): this crate is the STOMP calls, the kit the relay's
//! retries and checkpointing, the consumer's supervision, stats and dead-lettering.
//!
//! - [`ActiveMqRelay`]: a [`cqrs_core::Subscriber`] run by the core [`cqrs_core::Runner`]. It
//!   sends each event to one [`ActiveMqDestination`], persistent, with the envelope in `cqrs-*`
//!   headers ([`HEADERS`]) and its stream as `JMSXGroupID`, waits for the broker's receipt of
//!   every message of the batch, then saves its checkpoint.
//! - [`ActiveMqQueue`]: what a service consumes, a queue or its own
//!   `Consumer.<service>.VirtualTopic.<name>` queue, with its tries and prefetch; its dead
//!   letters go to `DLQ.<queue>`.
//! - [`ActiveMqConsumer`]: feeds a queue to a [`cqrs_core::InboxSubscriber`], acknowledges
//!   after the inbox commit, NACKs a failure back for redelivery, counts the tries itself and
//!   dead-letters with the error ([`dead_letter_error`]). Reconnects on its own.
//! - [`decode_message`]: a message's headers and body back into a
//!   [`cqrs_core::RecordedEvent`].
//!
//! # Why STOMP, and why a client of our own
//! Debian's ActiveMQ 5.17 ships no AMQP transport, so the bridge speaks STOMP 1.2, which every
//! ActiveMQ (and Artemis) has. The client is a small one in this crate (`stomp`: a frame codec
//! and a connection, a few hundred lines) rather than the `async-stomp` crate: the bridge needs
//! exact control of receipts (one per SEND, awaited as a batch while messages keep arriving on
//! the same connection), of the `ack` ids of STOMP 1.2 and of header escaping, and nothing
//! else; a generic client's stream/sink of typed frames would have to be worked around for the
//! first two, and is one more dependency to keep in step.
//!
//! # The broker's side
//! ActiveMQ must run with `schedulerSupport="true"` and its `redeliveryPlugin` (a NACKed message
//! comes back after a delay instead of at once), persistent, and with per-queue dead-letter
//! queues `DLQ.<queue>` (`individualDeadLetterStrategy queuePrefix="DLQ."`) so that what the
//! broker dead-letters on its own lands beside what this crate does, not in the shared
//! `ActiveMQ.DLQ`; `scripts/activemq/activemq.xml` is such a configuration. Message groups and
//! virtual topics are on by default.
//!
//! # Limits
//! - Tries are counted in the consumer's memory: they survive its reconnections, not its
//!   process. A message that kills the process every time it is handled comes back after each
//!   restart with its count at 1 (the broker redelivers a message whose consumer vanished
//!   without counting it against its redelivery bound).
//! - Heart-beats are off: a broker that vanishes without closing the socket (a network cut
//!   without a reset) leaves a consumer waiting until the operating system gives the
//!   connection up; the relay is bounded by its attempt timeout and reconnects.
//! - STOMP cannot delete a queue: a service's virtual-topic queue stays until removed with
//!   ActiveMQ's own tools.

mod codec;
mod consumer;
mod relay;
mod stomp;
mod topology;

pub use codec::{HEADERS, dead_letter_error, decode_message};
pub use consumer::ActiveMqConsumer;
pub use cqrs_broker::{ConsumerHandle, ConsumerStats};
pub use relay::{ActiveMqPublisher, ActiveMqRelay};
pub use stomp::StompUrl;
pub use topology::{ActiveMqDestination, ActiveMqQueue};
