//! Amazon SQS bridge: the event store's events leave through an outbox relay to a FIFO queue
//! (in order per stream, deduplicated by event id) or a standard queue, in batched sends
//! accepted before the checkpoint moves, and arrive in other services through inbox
//! consumers with long polling, batched deletes after the inbox commit, and a redrive policy
//! to a dead-letter queue.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_core::*;
//! use cqrs_sqs::{SqsConsumer, SqsQueue, SqsRelay};
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
//! let endpoint = Some("http://127.0.0.1:9324"); // None: SQS_ENDPOINT, else AWS's
//! let queue = SqsQueue::new("bank-notifier.fifo");
//!
//! // The consuming service: a consumer of the queue feeding its inbox.
//! let consumer = SqsConsumer::new(endpoint, queue.clone(), InMemoryInbox::new(Notifications)).start();
//!
//! // The publishing service: a relay from its store to the queue.
//! let store = Arc::new(InMemoryEventStore::new());
//! let relay = SqsRelay::new("relay", endpoint, queue, InMemoryCheckpointStore::new());
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
//! Built on the broker kit ([`cqrs_broker`]): this crate is the calls of the official AWS SDK
//! ([`aws_sdk_sqs`]), the kit the relay's retries and checkpointing, the consumer's
//! supervision and stats.
//!
//! - [`SqsRelay`]: a [`cqrs_core::Subscriber`] run by the core [`cqrs_core::Runner`]. It
//!   sends each event to one [`SqsQueue`] in `SendMessageBatch` calls of ten, the envelope in
//!   message attributes ([`HEADERS`], [`CONTEXT`]); on a FIFO queue the message group is the
//!   stream and the deduplication id the event id. The checkpoint moves once SQS accepted
//!   every message of the batch; refused entries are sent again without a later message of
//!   their stream going first ([`SqsPublisher`]).
//! - [`SqsQueue`]: a queue, FIFO by its `.fifo` name, with its dead-letter queue, the receives
//!   before its redrive policy moves a message there, its visibility timeout, long-polling
//!   wait and retry delay; [`SqsQueue::declare`] creates both queues.
//! - [`SqsConsumer`]: feeds a queue to a [`cqrs_core::InboxSubscriber`]: batched receives,
//!   deletes after the inbox commit, visibility extended while a batch takes long.
//! - [`decode_message`]: a message's attributes and body back into a
//!   [`cqrs_core::RecordedEvent`]; [`dead_letter_note`] reads the consumer's note in a
//!   dead-letter queue.
//! - [`sqs_client`]: the SDK client, configured from the environment (`SQS_ENDPOINT`,
//!   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
//!
//! # Dead letters
//! SQS cannot add anything to a message it moves, so the consumer's error travels beside it:
//! a *note*, a message in the same dead-letter queue whose body is the error and whose
//! attributes are `cqrs-note-for` (the dead message's id), `cqrs-error`, `cqrs-attempts`,
//! `cqrs-origin` and `cqrs-event-id` when known. A message whose handler keeps failing is
//! moved by the queue's redrive policy after [`SqsQueue::max_receives`] receives, unchanged
//! and under its own message id; the consumer writes the note on its last receive. A message
//! that cannot be read is copied there at once by the consumer, its note naming the copy, and
//! then deleted. On a FIFO queue the events of the poison's stream behind it may follow it
//! there (their receives spent beside it): they wait in order, as the core's sequenced dead
//! letters do, for SQS's redrive back to the source queue.
//!
//! # Limits
//! - SQS keeps a FIFO deduplication id for five minutes: a relay that sends a batch again
//!   later (a restart after a long outage) sends repeats, which consumers' inboxes drop.
//! - A message of more than 256 KiB is refused: the relay fails the batch with SQS's error
//!   and the runner parks the event.
//! - Tested against moto's SQS server (see the README); nothing here is specific to it.

mod codec;
mod consumer;
mod relay;
mod topology;

pub use codec::{CONTEXT, DeadLetterNote, HEADERS, NOTE_FOR, dead_letter_note, decode_message};
pub use consumer::SqsConsumer;
pub use cqrs_broker::{ConsumerHandle, ConsumerStats};
pub use relay::{SqsPublisher, SqsRelay};
pub use topology::{QueueUrls, SqsQueue, sqs_client, sqs_client_for_url, sqs_client_with_keys};

// Re-exported so that users need not pin the same SDK version.
pub use aws_sdk_sqs;
