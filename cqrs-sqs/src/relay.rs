//! The outbound relay: events from the store to an SQS queue in batched sends, the checkpoint
//! moved only once SQS accepted every message of the batch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use cqrs_broker::{Publisher, Relay, WireMessage};
use cqrs_core::wire::HeaderNames;
use cqrs_core::{
    BoxError, CheckpointStore, Checkpointed, Cursor, Error, RecordedEvent, Result, Subscriber,
};
use tokio::sync::{Mutex, OnceCell};

use crate::codec::{HEADERS, attributes};
use crate::topology::{SqsQueue, sdk_error};

/// Messages a `SendMessageBatch` call takes at most (SQS's limit).
const BATCH: usize = 10;

/// The kit's [`Publisher`] for SQS: sends a batch in `SendMessageBatch` calls of up to ten
/// messages and returns once SQS accepted every one.
///
/// On a FIFO queue each message's group is its stream (`MessageGroupId`) and its deduplication
/// id its event id (`MessageDeduplicationId`): SQS hands a group out in order and drops a
/// repeat sent within five minutes. A call carries at most one message of a stream, and a
/// stream's next message goes only once the call before was answered: so when SQS accepts some
/// entries of a call and refuses others (a partial failure), the refused ones are sent again
/// before anything that follows them in their stream, and no stream is reordered. The price is
/// one message of a stream per call: a burst on one stream goes ten times slower than one
/// spread over ten streams.
///
/// On a standard queue (no order, no deduplication), calls are filled to ten and the refused
/// entries sent again.
#[derive(Debug)]
pub struct SqsPublisher {
    client: OnceCell<Client>,
    endpoint: Option<String>,
    queue: SqsQueue,
    by_category: bool,
    /// The URLs of the queues declared so far, by name.
    urls: Mutex<HashMap<String, String>>,
}

impl SqsPublisher {
    /// A publisher to `queue` at `endpoint` (else `SQS_ENDPOINT`, else AWS's endpoint for the
    /// configured region; see [`sqs_client`](crate::sqs_client)). It creates the queue, with
    /// its dead-letter queue, on first use if missing.
    pub fn new(endpoint: Option<&str>, queue: SqsQueue) -> Self {
        SqsPublisher {
            client: OnceCell::new(),
            endpoint: endpoint.map(str::to_owned),
            queue,
            by_category: false,
            urls: Mutex::default(),
        }
    }

    /// A publisher with a client of the caller's (its own configuration of the SDK).
    pub fn with_client(client: Client, queue: SqsQueue) -> Self {
        SqsPublisher {
            client: OnceCell::new_with(Some(client)),
            endpoint: None,
            queue,
            by_category: false,
            urls: Mutex::default(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| crate::sqs_client(self.endpoint.as_deref()))
            .await
    }

    /// The queue `message` goes to: the publisher's, or with [`by_category`](Self::by_category)
    /// its category's.
    fn queue_of(&self, message: &WireMessage<'_>) -> SqsQueue {
        if self.by_category {
            self.queue.for_category(&message.event.stream.category)
        } else {
            self.queue.clone()
        }
    }

    /// The URL of `queue`, declared (with its dead-letter queue) on first use.
    async fn url(&self, queue: &SqsQueue) -> Result<String> {
        let mut urls = self.urls.lock().await;
        if let Some(url) = urls.get(queue.name()) {
            return Ok(url.clone());
        }
        let url = queue.declare(self.client().await).await?.queue;
        urls.insert(queue.name().to_owned(), url.clone());
        Ok(url)
    }

    /// Sends each event to the queue of its category ([`SqsQueue::for_category`]) instead of
    /// the publisher's queue itself, so that a service consumes only the categories it wants.
    pub fn by_category(&mut self) {
        self.by_category = true;
    }

    /// The entries of the next call: in batch order, up to ten, on a FIFO queue at most one
    /// of a stream and none behind a message of its stream still waiting.
    fn next_call(&self, pending: &[usize], batch: &[WireMessage<'_>]) -> Vec<usize> {
        let mut call = Vec::with_capacity(BATCH);
        let mut streams = HashSet::new();
        for &i in pending {
            if call.len() == BATCH {
                break;
            }
            // NOTE: a stream seen once (taken or passed over) is closed for this call, so that
            // its later messages never go ahead of an earlier one.
            if !self.queue.is_fifo() || streams.insert(batch[i].ordering_key()) {
                call.push(i);
            }
        }
        call
    }

    fn entry(&self, i: usize, message: &WireMessage<'_>) -> Result<SendMessageBatchRequestEntry> {
        let body = String::from_utf8(message.body.clone()).map_err(Error::backend)?;
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(body)
            .set_message_attributes(Some(attributes(message)?));
        if self.queue.is_fifo() {
            entry = entry
                .message_group_id(message.ordering_key())
                .message_deduplication_id(message.id());
        }
        entry.build().map_err(Error::backend)
    }
}

#[async_trait]
impl Publisher for SqsPublisher {
    fn header_names(&self) -> &HeaderNames {
        &HEADERS
    }

    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        // NOTE: one queue after the other, each in batch order: a stream lives in one queue.
        let mut queues: Vec<(SqsQueue, Vec<usize>)> = Vec::new();
        for (i, message) in batch.iter().enumerate() {
            let queue = self.queue_of(message);
            match queues.iter_mut().find(|(q, _)| q.name() == queue.name()) {
                Some((_, indexes)) => indexes.push(i),
                None => queues.push((queue, vec![i])),
            }
        }
        for (queue, pending) in queues {
            let url = self.url(&queue).await?;
            self.send(&url, batch, pending).await?;
        }
        Ok(())
    }
}

impl SqsPublisher {
    /// Sends the messages of `batch` at `pending` (in batch order) to the queue at `url`.
    async fn send(
        &self,
        url: &str,
        batch: &[WireMessage<'_>],
        mut pending: Vec<usize>,
    ) -> Result<()> {
        let client = self.client().await;
        let mut refusals = 0;
        while !pending.is_empty() {
            let call = self.next_call(&pending, batch);
            let entries = call
                .iter()
                .map(|&i| self.entry(i, &batch[i]))
                .collect::<Result<Vec<_>>>()?;
            let out = client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sdk_error)?;
            let accepted: HashSet<usize> = out
                .successful
                .iter()
                .filter_map(|s| s.id.parse().ok())
                .collect();
            if let Some(f) = out.failed.first() {
                // NOTE: an entry SQS blames on the sender (too large, a bad attribute) will
                // never go: fail to the relay's retries, and from there to the runner, which
                // parks the event with this error.
                if f.sender_fault || refusals >= 5 {
                    return Err(Error::backend(format!(
                        "SQS refused event {}: {} ({})",
                        f.id.parse::<usize>().map_or("?".into(), |i| batch[i].id()),
                        f.message.as_deref().unwrap_or("no message"),
                        f.code
                    )));
                }
                refusals += 1;
                tracing::warn!(refused = out.failed.len(), code = %f.code, "SQS refused part of a batch, sending it again");
                tokio::time::sleep(Duration::from_millis(50 << refusals)).await;
            }
            pending.retain(|i| !accepted.contains(i));
        }
        Ok(())
    }
}

/// The outbox relay to SQS: a [`Subscriber`] that sends every event to one queue through an
/// [`SqsPublisher`] and saves the checkpoint after SQS accepted every message of the batch
/// (the kit's [`Relay`] under [`Checkpointed`]).
///
/// Run it in a [`cqrs_core::Runner`], which hands it events in store order. A crash between
/// the acceptance and the checkpoint sends the batch again on restart: a FIFO queue drops the
/// repeats sent within five minutes (deduplication by event id), and consumers' inboxes drop
/// any that get through.
///
/// ```no_run
/// use cqrs_core::InMemoryCheckpointStore;
/// use cqrs_sqs::{SqsQueue, SqsRelay};
///
/// let relay = SqsRelay::new(
///     "broker_relay",
///     Some("http://127.0.0.1:9324"),
///     SqsQueue::new("bank-notifier.fifo"),
///     InMemoryCheckpointStore::new(),
/// );
/// ```
#[derive(Debug)]
pub struct SqsRelay<C>(Checkpointed<Relay<SqsPublisher>, C>);

impl<C: CheckpointStore> SqsRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) sending to `queue`
    /// at `endpoint` (see [`SqsPublisher::new`]).
    pub fn new(
        name: impl Into<String>,
        endpoint: Option<&str>,
        queue: SqsQueue,
        checkpoints: C,
    ) -> Self {
        let publisher = SqsPublisher::new(endpoint, queue);
        SqsRelay(Relay::new(name, publisher).checkpointed(checkpoints))
    }

    /// A relay sending through a client of the caller's (its own configuration of the SDK:
    /// credentials, retries, timeouts).
    pub fn with_client(
        name: impl Into<String>,
        client: Client,
        queue: SqsQueue,
        checkpoints: C,
    ) -> Self {
        let publisher = SqsPublisher::with_client(client, queue);
        SqsRelay(Relay::new(name, publisher).checkpointed(checkpoints))
    }

    /// Sends each event to the queue of its category (`<queue>-<category>`, such as
    /// `bank-account.fifo`; see [`SqsQueue::for_category`]) instead of the queue itself, so
    /// that a service consumes only the categories it wants.
    pub fn by_category(mut self) -> Self {
        self.0.projector_mut().publisher_mut().by_category();
        self
    }

    /// How long a batch is retried before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.0.projector_mut().set_retry_for(window);
        self
    }
}

#[async_trait]
impl<C: CheckpointStore> Subscriber for SqsRelay<C> {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.0.checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        self.0.process(events, to).await
    }
    /// Forgets the checkpoint: the whole store is sent again (a FIFO queue and consumers'
    /// inboxes drop the repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.reset().await
    }
}
