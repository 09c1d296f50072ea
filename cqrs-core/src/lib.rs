//! Event sourcing and CQRS for Rust: aggregates decide, an append-only store remembers,
//! projectors build read models, and everything can be replayed.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use cqrs_core::*;
//! use serde::{Deserialize, Serialize};
//!
//! // 1. Events and an aggregate: a pure decision and an infallible apply.
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum AccountEvent { Opened { owner: String }, Deposited { amount: u64 } }
//! impl DomainEvent for AccountEvent {}
//!
//! #[derive(Debug)]
//! enum AccountCommand { Open { owner: String }, Deposit { amount: u64 } }
//!
//! #[derive(Debug, thiserror::Error)]
//! enum AccountError { #[error("already open")] AlreadyOpen, #[error("not open")] NotOpen }
//!
//! #[derive(Debug, Clone, Default)]
//! struct Account { open: bool, balance: u64 }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "account";
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Error = AccountError;
//!     fn handle(&self, cmd: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
//!         match cmd {
//!             AccountCommand::Open { .. } if self.open => Err(AccountError::AlreadyOpen),
//!             AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened { owner: owner.clone() }]),
//!             AccountCommand::Deposit { .. } if !self.open => Err(AccountError::NotOpen),
//!             AccountCommand::Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
//!         }
//!     }
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Opened { .. } => self.open = true,
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!         }
//!     }
//! }
//!
//! // 2. A projector: one handler that keeps a read model.
//! #[derive(Debug, Default)]
//! struct Balances(Mutex<HashMap<String, u64>>);
//!
//! #[async_trait::async_trait]
//! impl Projector for Balances {
//!     fn name(&self) -> &str { "balances" }
//!     async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
//!         if let Some(e) = event.decode_for::<Account>()? {
//!             let mut map = self.0.lock().unwrap();
//!             let balance = map.entry(e.stream.id.clone()).or_default();
//!             if let AccountEvent::Deposited { amount } = e.payload { *balance += amount }
//!         }
//!         Ok(())
//!     }
//!     async fn reset(&self) -> Result<(), BoxError> { self.0.lock().unwrap().clear(); Ok(()) }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! // 3. Wire a store, a command handler and a runner.
//! let store = Arc::new(InMemoryEventStore::new());
//! let accounts = CommandHandler::<Account>::new(store.clone());
//! let balances = Arc::new(Balances::default());
//! let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
//!     .with(Checkpointed::new(balances.clone(), InMemoryCheckpointStore::new()))
//!     .start();
//!
//! // 4. Run commands; read your own writes.
//! accounts.execute("a1", &AccountCommand::Open { owner: "alice".into() }).await?;
//! let out = accounts.execute("a1", &AccountCommand::Deposit { amount: 250 }).await?;
//! runner.wait_for("balances", out.position, Duration::from_secs(5)).await?;
//! assert_eq!(balances.0.lock().unwrap()["a1"], 250);
//!
//! // A broken rule is a typed error, and nothing is written.
//! let err = accounts.execute("a2", &AccountCommand::Deposit { amount: 1 }).await.unwrap_err();
//! assert!(matches!(err, CommandError::Rejected(AccountError::NotOpen)));
//! runner.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//! - [`Aggregate`] and [`DomainEvent`]: the write model. [`CommandHandler`] loads (snapshot plus
//!   later events), decides, appends with optimistic concurrency, retries conflicts by a
//!   [`RetryPolicy`], snapshots every N events, and honours command ids (idempotency).
//! - [`EventStore`]: the event store, by concern an [`EventAppender`], a [`StreamReader`] and an
//!   [`AllStreamReader`] (seven methods for a new back-end), with conveniences in
//!   [`StreamReaderExt`]. [`SnapshotStore`], [`CheckpointStore`], [`DeadLetterStore`]: the other
//!   storage traits. All work at the serialized level, so back-ends know no user types.
//!   In-memory implementations live here; PostgreSQL and SQLite in their own crates.
//! - [`Projector`] and [`Subscriber`]: read models. [`Runner`] catches them up and follows live,
//!   parks poison events as [`DeadLetter`]s, reports [`SubscriberStatus`] and lets callers
//!   [`wait_for`](RunnerHandle::wait_for) a position. [`Replay`] rebuilds a read model from zero.
//! - Process managers are projectors that issue commands with [`command_id_for`] ids, so that a
//!   crash between the command and the checkpoint never repeats the command's effect.
//! - [`Upcasters`] and [`UpcastingStore`]: old event shapes turned into current ones on read.
//! - [`wire`]: the broker-neutral envelope of an event on a message bus (header names and
//!   values, body), shared by the broker bridges.
//! - [`InboxSubscriber`]: exactly-once effect for events arriving from a broker.
//! - [`testkit`] (feature `testkit`, on by default): given/when/then for aggregates, the store
//!   conformance suite every back-end runs, and checks of command handling on a real store.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade: the crate picks no exporter, so
//! nothing is recorded until the service installs a recorder (a Prometheus exporter, say).
//!
//! | Name | Kind | Labels | What |
//! |---|---|---|---|
//! | `cqrs_commands_total` | counter | `aggregate`, `outcome` (`ok`, `duplicate`, `rejected`, `conflict`, `error`) | commands handled |
//! | `cqrs_command_retries_total` | counter | `aggregate` | tries again after a concurrency conflict |
//! | `cqrs_events_appended_total` | counter | `aggregate` | events appended by commands |
//! | `cqrs_command_duration_seconds` | histogram | `aggregate` | load, decide and append, retries included |
//! | `cqrs_subscriber_events_total` | counter | `subscriber`, `outcome` (`handled`, `parked`) | events passed by a runner (held ones count as parked) |
//! | `cqrs_subscriber_batch_duration_seconds` | histogram | `subscriber` | one batch, from hand-over to commit |
//! | `cqrs_subscriber_position` | gauge | `subscriber` | the global position a subscriber has passed |
//! | `cqrs_subscriber_blocked_streams` | gauge | `subscriber` | streams held back behind a dead letter |
//!
//! Spans (`tracing`): `command` (aggregate, stream_id, command_id) around every command,
//! `subscriber.batch` (subscriber, from, to, events, handled, parked) around every batch a
//! runner hands over, and `consume` (source, consumer, event_id, event_type, stream, attempt)
//! around every message a broker bridge hands to an inbox. With the `opentelemetry` feature the
//! trace context travels with the events ([`trace`]): a `command` span's context is kept in the
//! events' metadata, a batch span continues the trace of its first event and links to the
//! others', and a `consume` span
//! continues the trace its message carries.

mod aggregate;
mod command;
mod error;
mod event;
mod event_store;
mod inbox;
mod lease;
mod memory;
mod process;
mod processor;
mod projector;
mod replay;
mod runner;
mod segment;
mod store;
pub mod trace;
mod upcast;
pub mod wire;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use aggregate::Aggregate;
pub use command::{
    CommandError, CommandHandler, CommandOptions, CommandOutcome, RetryPolicy, command_id_for,
};
pub use error::{BoxError, Error, Result, error_chain, is_fenced_out};
pub use event::{
    Cursor, DomainEvent, Envelope, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId,
};
pub use event_store::{
    AllStreamReader, AppendResult, CommandId, EventAppender, EventStore, Fingerprint, StreamEvent,
    StreamItem, StreamReader, StreamReaderExt, StreamSink, WakeUps,
};
pub use inbox::{InMemoryInbox, InboxSubscriber};
pub use lease::{Lease, Leases};
pub use memory::{
    InMemoryCheckpointStore, InMemoryDeadLetterStore, InMemoryEventStore, InMemorySnapshotStore,
};
pub use process::{Process, ProcessManager};
pub use projector::{Checkpointed, Projector, Subscriber};
pub use replay::{Replay, ReplayProgress, ReplayReport};
pub use runner::{Runner, RunnerConfig, RunnerHandle, SubscriberStatus};
pub use segment::Segment;
pub use store::{
    CheckpointStore, DeadLetter, DeadLetterStatus, DeadLetterStore, Snapshot, SnapshotStore,
};
pub use upcast::{Upcasters, UpcastingStore};

// Re-exported so that users implementing the traits need not pin the same versions.
pub use async_trait::async_trait;
