//! RabbitMQ (AMQP 0-9-1) bridge: the event store's events leave through an outbox relay with
//! publisher confirms, and arrive in other services through inbox consumers with bounded
//! redelivery and a dead-letter queue.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_core::*;
//! use cqrs_rabbitmq::{RabbitConsumer, RabbitQueue, RabbitRelay};
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
//! let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
//! // The consuming service: its own durable queue, bound to every account event.
//! let queue = RabbitQueue::new("notifier").subscribe("account");
//! let consumer = RabbitConsumer::new(url, queue, InMemoryInbox::new(Notifications)).start();
//!
//! // The publishing service: a relay from its store to the `events.account` exchange.
//! let store = Arc::new(InMemoryEventStore::new());
//! let relay = RabbitRelay::new("relay", url, InMemoryCheckpointStore::new());
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
//! Built on the broker kit ([`cqrs_broker`]): this crate is the AMQP calls, the kit the relay's
//! retries and checkpointing, the consumer's supervision, stats and dead-lettering.
//!
//! - [`RabbitRelay`]: a [`cqrs_core::Subscriber`] run by the core [`cqrs_core::Runner`]. It
//!   publishes each event to the durable topic exchange of its aggregate type (`events.account`,
//!   see [`exchange_for`]) with the event type as routing key, the event id as message id and the
//!   envelope in headers spelled as [`HEADERS`] says, waits for the broker's confirms of the
//!   batch, then saves its checkpoint. Per-stream order is the store's order; a crash before the checkpoint publishes
//!   again, never loses.
//! - [`RabbitQueue`]: a consuming service's durable queue and bindings. One queue per service is
//!   publish/subscribe (each service gets every event); the instances of one service sharing it
//!   are competing consumers (each message handled once among them).
//! - [`RabbitConsumer`]: feeds a queue to a [`cqrs_core::InboxSubscriber`] (deduplication by
//!   event id, effect and id committed together), acknowledges after the commit, retries through
//!   a delay queue counted by `x-death`, then dead-letters with the error, the tries and the queue
//!   ([`dead_letter_error`]). Reconnects on its own.
//! - [`decode_message`]: a message's properties and body back into a
//!   [`cqrs_core::RecordedEvent`].

mod codec;
mod consumer;
mod relay;
mod topology;

pub use codec::{HEADERS, decode_message};
pub use consumer::{RabbitConsumer, dead_letter_error};
pub use cqrs_broker::{ConsumerHandle, ConsumerStats};
pub use relay::{RabbitPublisher, RabbitRelay};
pub use topology::{DEFAULT_EXCHANGE_PREFIX, RabbitQueue, exchange_for};

// Re-exported so that users need not pin the same driver version.
pub use lapin;
