//! NATS JetStream bridge: the event store's events leave through an outbox relay with
//! acknowledged publishes, and arrive in other services through inbox consumers with bounded
//! redelivery and a dead-letter stream.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_core::*;
//! use cqrs_nats::{JetStreamConsumer, JetStreamEvents, JetStreamQueue, JetStreamRelay};
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
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let events = JetStreamEvents::default(); // stream EVENTS, subjects events.<type>.<event>
//!
//! // The consuming service: its own durable consumer of every account event.
//! let queue = JetStreamQueue::new(&events, "notifier").subscribe("account");
//! let consumer = JetStreamConsumer::new(client.clone(), queue, InMemoryInbox::new(Notifications)).start();
//!
//! // The publishing service: a relay from its store to the stream.
//! let store = Arc::new(InMemoryEventStore::new());
//! let relay = JetStreamRelay::new("relay", client, events, InMemoryCheckpointStore::new());
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
//! Built on the broker kit ([`cqrs_broker`]): this crate is the JetStream calls, the kit the
//! relay's retries and checkpointing, the consumer's supervision, stats and dead-lettering.
//!
//! - [`JetStreamRelay`]: a [`cqrs_core::Subscriber`] run by the core [`cqrs_core::Runner`]. It
//!   publishes each event to `events.<aggregate type>.<event type>` in a [`JetStreamEvents`]
//!   stream, with the event id as `Nats-Msg-Id` (JetStream drops repeats) and the envelope in
//!   headers spelled as [`HEADERS`] says, waits for every acknowledgement of the batch, then
//!   saves its checkpoint.
//! - [`JetStreamQueue`]: a consuming service's durable pull consumer. One durable per service is
//!   publish/subscribe (each service gets every event); the instances of one service pulling
//!   from it are competing consumers (each message handled once among them).
//! - [`JetStreamConsumer`]: feeds a durable to a [`cqrs_core::InboxSubscriber`] (deduplication
//!   by event id, effect and id committed together), acknowledges after the commit, retries
//!   with delayed negative acknowledgements counted by JetStream, then dead-letters to a stream
//!   with the error ([`dead_letter_error`]).
//! - [`decode_message`]: a message's headers and payload back into a
//!   [`cqrs_core::RecordedEvent`].

mod codec;
mod consumer;
mod relay;
mod topology;

pub use codec::{HEADERS, decode_message};
pub use consumer::{JetStreamConsumer, dead_letter_error};
pub use cqrs_broker::{ConsumerHandle, ConsumerStats};
pub use relay::{JetStreamPublisher, JetStreamRelay};
pub use topology::{JetStreamEvents, JetStreamQueue};

// Re-exported so that users need not pin the same driver version.
pub use async_nats;
