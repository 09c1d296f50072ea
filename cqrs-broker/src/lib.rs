//! The broker kit: what every broker bridge (RabbitMQ, NATS JetStream, and the ones to come)
//! shares, so that a bridge crate is its driver calls and nothing more.
//!
//! A bridge implements a [`Publisher`] and a [`Source`]; the kit relays and consumes. Here a
//! broker in memory (one queue, a channel) stands in for a real one, to show the whole trip: an
//! event appended to the store, relayed, consumed into an inbox.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use cqrs_broker::{Consumer, Failure, Publisher, Received, Relay, Session, Source, WireMessage};
//! use cqrs_core::wire::{self, HeaderNames, HeaderValue};
//! use cqrs_core::*;
//! use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
//!
//! // The "broker": a message is its id, its headers and its body.
//! type Message = (String, Vec<(&'static str, HeaderValue)>, Vec<u8>);
//!
//! #[derive(Debug, Clone)]
//! struct Queue {
//!     tx: mpsc::UnboundedSender<Message>,
//!     rx: Arc<Mutex<mpsc::UnboundedReceiver<Message>>>,
//! }
//!
//! #[async_trait]
//! impl Publisher for Queue {
//!     async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
//!         for m in batch {
//!             self.tx.send((m.id(), m.headers.clone(), m.body.clone())).map_err(Error::backend)?;
//!         }
//!         Ok(()) // a real driver waits here for the broker's confirms
//!     }
//! }
//!
//! struct Receiving(OwnedMutexGuard<mpsc::UnboundedReceiver<Message>>);
//!
//! #[async_trait]
//! impl Source for Queue {
//!     type Session = Receiving;
//!     fn name(&self) -> &str { "queue" }
//!     fn max_attempts(&self) -> u32 { 3 }
//!     async fn open(&self, _consumer: &str) -> Result<Receiving> {
//!         Ok(Receiving(self.rx.clone().lock_owned().await))
//!     }
//! }
//!
//! #[async_trait]
//! impl Session for Receiving {
//!     type Message = String;
//!     async fn next(&mut self) -> Result<Received<String>> {
//!         let (id, headers, body) = self.0.recv().await.ok_or(Error::backend("queue closed"))?;
//!         let event = wire::event_from_headers(&HeaderNames::DEFAULT, Some(&id), headers.as_slice(), &body);
//!         Ok(Received { message: id, attempt: 1, event })
//!     }
//!     async fn ack(&mut self, _id: &String) -> Result<()> { Ok(()) }
//!     async fn retry(&mut self, _id: &String) -> Result<()> { Ok(()) }
//!     async fn dead_letter(&mut self, _id: &String, _why: &Failure) -> Result<()> { Ok(()) }
//! }
//!
//! // What the consuming service does with the events.
//! #[derive(Debug, Default)]
//! struct Notices(AtomicUsize);
//! #[async_trait]
//! impl Projector for Notices {
//!     fn name(&self) -> &str { "notices" }
//!     async fn handle(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let (tx, rx) = mpsc::unbounded_channel();
//! let broker = Queue { tx, rx: Arc::new(Mutex::new(rx)) };
//!
//! // The publishing service: the relay, checkpointed, in its store's runner.
//! let store = Arc::new(InMemoryEventStore::new());
//! let relay = Relay::new("relay", broker.clone()).checkpointed(InMemoryCheckpointStore::new());
//! let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new())).with(relay).start();
//!
//! // The consuming service: a supervised consumer feeding its inbox.
//! let inbox = Arc::new(InMemoryInbox::new(Notices::default()));
//! let consumer = Consumer::new(broker, inbox.clone()).start();
//!
//! let stream = StreamId::new("account", "a-1");
//! let out = store.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("Opened", serde_json::json!({}))], None).await?;
//! runner.wait_for("relay", out.position, Duration::from_secs(5)).await?;
//! while consumer.stats().handled < 1 {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! assert_eq!(inbox.projector().0.load(Ordering::Relaxed), 1);
//! consumer.shutdown().await;
//! runner.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//! A bridge implements two small things: a [`Publisher`] (publish a batch of [`WireMessage`]s,
//! return once the broker confirmed all of them) and a [`Source`] with its [`Session`] (open a
//! session, receive, acknowledge, send back, dead-letter). The kit does the rest:
//!
//! - [`Relay`]: the outbox relay as a batch [`Projector`](cqrs_core::Projector). Run under
//!   [`Checkpointed`](cqrs_core::Checkpointed) in the core's [`Runner`](cqrs_core::Runner), the
//!   checkpoint moves only after the broker confirmed the whole batch. A failed attempt is
//!   published again with [`Backoff`] for a retry window, then fails to the runner.
//! - [`Consumer`]: feeds a [`Source`] to a [`cqrs_core::InboxSubscriber`] (deduplication by event
//!   id), acknowledges after the inbox committed, sends failures back a bounded number of
//!   times, then dead-letters them with the error, the try count and the origin; a broken
//!   session is opened again with [`Backoff`]. [`ConsumerHandle`] stops it and shows its
//!   [`ConsumerStats`].
//! - The header names come from [`cqrs_core::wire::HeaderNames`]: the envelope, and on a dead
//!   letter its `error`, `attempts` and `origin`.
//!
//! # Features
//! - `testkit`: helpers for the bridges' tests against their real brokers (the `testkit`
//!   module: a seeded store, a recording projector, a checkpoint store that "crashes", order
//!   checks).

mod backoff;
mod consumer;
mod handle;
mod relay;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use backoff::Backoff;
pub use consumer::{Consumer, Failure, Received, Session, Source};
pub use handle::{ConsumerHandle, ConsumerStats};
pub use relay::{Publisher, Relay, WireMessage};
