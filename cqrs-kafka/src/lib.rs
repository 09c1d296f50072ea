//! Kafka bridge: the event store's events leave through an outbox relay with an idempotent
//! producer acknowledged by all in-sync replicas, and arrive in other services through consumer
//! groups feeding inboxes, with bounded retries and a dead-letter topic.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_core::*;
//! use cqrs_kafka::{KafkaConsumer, KafkaGroup, KafkaRelay, KafkaTopics};
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
//! let brokers = "127.0.0.1:9092";
//! let topics = KafkaTopics::default(); // events.<aggregate type>, keyed by stream
//!
//! // The consuming service: its own consumer group on every account event.
//! let group = KafkaGroup::new(&topics, "notifier").subscribe("account");
//! let consumer = KafkaConsumer::new(brokers, group, InMemoryInbox::new(Notifications)).start();
//!
//! // The publishing service: a relay from its store to the topics.
//! let store = Arc::new(InMemoryEventStore::new());
//! let relay = KafkaRelay::new("relay", brokers, topics, InMemoryCheckpointStore::new());
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
//! Built on the broker kit ([`cqrs_broker`]): this crate is the librdkafka calls (through the
//! [`rdkafka`] crate), the kit the relay's retries and checkpointing, the consumer's
//! supervision, stats and dead-lettering.
//!
//! - [`KafkaRelay`]: a [`cqrs_core::Subscriber`] run by the core [`cqrs_core::Runner`]. It
//!   produces each event to its aggregate type's topic (or one topic: [`KafkaTopics`]) keyed by
//!   its stream, so that one stream stays in one partition, in order; the envelope travels in
//!   record headers spelled as [`HEADERS`] says. The producer is idempotent with `acks=all`;
//!   the checkpoint moves once every record of the batch has its delivery report.
//! - [`KafkaGroup`]: a consuming service's consumer group, its topics, its tries and its
//!   dead-letter topic (`dlq.<group>`).
//! - [`KafkaConsumer`]: a member of a group feeding a [`cqrs_core::InboxSubscriber`]
//!   (deduplication by event id, effect and id committed together). Offsets are stored only
//!   after the inbox committed and committed from there; on a rebalance the record in hand is
//!   finished and the offsets committed before the partitions go. Failures are tried again in
//!   place, then dead-lettered with the error and the origin ([`dead_letter_error`]).
//! - [`decode_record`]: a record's headers and value back into a [`cqrs_core::RecordedEvent`].
//!
//! # Brokers
//! Tested against [tansu](https://tansu.io) 0.6, a Kafka-protocol broker (see the README's
//! broker section for two storage defects of that version and how the tests step around them);
//! nothing here is specific to it.

mod codec;
mod consumer;
mod relay;
mod topology;

pub use codec::{HEADERS, decode_record};
pub use consumer::{KafkaConsumer, KafkaDeadLetter, dead_letter_error};
pub use cqrs_broker::{ConsumerHandle, ConsumerStats};
pub use relay::{KafkaPublisher, KafkaRelay};
pub use topology::{KafkaGroup, KafkaTopics};

// Re-exported so that users need not pin the same driver version.
pub use rdkafka;
