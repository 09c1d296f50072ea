//! The inbound consumer: an SQS queue as the kit's [`Source`], received in long-polled batches,
//! deleted in batches after the inbox commit, kept hidden while a batch takes long, sent back
//! for another try by its visibility, and moved to the dead-letter queue by the redrive policy.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use cqrs_broker::{Consumer, ConsumerHandle, Failure, Received, Session, Source};
use cqrs_core::{Error, InboxSubscriber, Result};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::codec::{HEADERS, decode_message, group_of, note_attributes, receive_count};
use crate::topology::{SqsQueue, sdk_error};

/// Messages a receive, delete or visibility call takes at most (SQS's limit).
const BATCH: usize = 10;

/// Consumes an [`SqsQueue`] into an [`InboxSubscriber`], on the kit's [`Consumer`].
///
/// It receives up to ten messages a call, long polling. Each message is turned back into a
/// [`cqrs_core::RecordedEvent`] and given to [`handle_once`](InboxSubscriber::handle_once),
/// which skips an event id it has seen and commits the effect with the id; only after that is
/// the message deleted (in batches of ten, before the next receive), so a crash redelivers it
/// after the visibility timeout and the inbox makes the repeat harmless. While a batch is in
/// hand, a keeper task extends the visibility of its messages before it runs out.
///
/// A failing handler has its message made visible again after
/// [`retry_after`](SqsQueue::retry_after) (on a FIFO queue, with the messages of its stream
/// behind it in the batch, so that they do not overtake it). SQS counts the receives; on the
/// last of [`max_receives`](SqsQueue::max_receives) the consumer writes its note (the error,
/// the tries, the queue, [`dead_letter_note`](crate::dead_letter_note)) into the dead-letter
/// queue and lets the message go: on its next receive the queue's redrive policy moves it
/// there, unchanged. A message that cannot be read (no envelope, a malformed one, a body that
/// is not JSON) is copied there at once with its note, then deleted.
///
/// Several consumers of one queue (in one process or many) compete: each message is handled
/// by one at a time, and on a FIFO queue each stream's messages in order.
///
/// ```no_run
/// use cqrs_core::*;
/// use cqrs_sqs::{SqsConsumer, SqsQueue};
///
/// #[derive(Debug)]
/// struct Notices;
/// #[async_trait]
/// impl Projector for Notices {
///     fn name(&self) -> &str { "notices" }
///     async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
///         println!("{} {}", event.stream, event.event_type);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let queue = SqsQueue::new("bank-notifier.fifo");
/// let consumer = SqsConsumer::new(Some("http://127.0.0.1:9324"), queue, InMemoryInbox::new(Notices)).start();
/// # consumer.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqsConsumer<S> {
    source: SqsSource,
    inbox: S,
}

impl<S: InboxSubscriber + 'static> SqsConsumer<S> {
    /// A consumer of `queue` at `endpoint` (else `SQS_ENDPOINT`, else AWS's endpoint for the
    /// configured region), feeding `inbox`. It creates the queue and its dead-letter queue if
    /// missing.
    pub fn new(endpoint: Option<&str>, queue: SqsQueue, inbox: S) -> Self {
        SqsConsumer {
            source: SqsSource {
                endpoint: endpoint.map(str::to_owned),
                client: tokio::sync::OnceCell::new(),
                queue,
            },
            inbox,
        }
    }

    /// A consumer through a client of the caller's (its own configuration of the SDK).
    pub fn with_client(client: Client, queue: SqsQueue, inbox: S) -> Self {
        SqsConsumer {
            source: SqsSource {
                endpoint: None,
                client: tokio::sync::OnceCell::new_with(Some(client)),
                queue,
            },
            inbox,
        }
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        Consumer::new(self.source, self.inbox).start()
    }
}

#[derive(Debug)]
struct SqsSource {
    endpoint: Option<String>,
    client: tokio::sync::OnceCell<Client>,
    queue: SqsQueue,
}

/// Messages received and neither deleted nor let go: message id to receipt handle and when
/// their visibility runs out.
type InFlight = Arc<Mutex<HashMap<String, (String, Instant)>>>;

#[derive(Debug)]
struct SqsSession {
    client: Client,
    queue: SqsQueue,
    url: String,
    dead_letters: String,
    /// Received, not yet handed out.
    buffer: VecDeque<Message>,
    in_flight: InFlight,
    /// Handled and committed, to delete with the next batch call.
    deletes: Vec<(String, String)>,
    keeper: JoinHandle<()>,
}

#[async_trait]
impl Source for SqsSource {
    type Session = SqsSession;

    fn name(&self) -> &str {
        self.queue.name()
    }

    fn max_attempts(&self) -> u32 {
        self.queue.receives()
    }

    async fn open(&self, _consumer: &str) -> Result<SqsSession> {
        let client = self
            .client
            .get_or_init(|| crate::sqs_client(self.endpoint.as_deref()))
            .await
            .clone();
        let urls = self.queue.declare(&client).await?;
        let in_flight = InFlight::default();
        let keeper = tokio::spawn(keep_hidden(
            client.clone(),
            urls.queue.clone(),
            self.queue.visibility_secs(),
            in_flight.clone(),
        ));
        Ok(SqsSession {
            client,
            queue: self.queue.clone(),
            url: urls.queue,
            dead_letters: urls.dead_letters,
            buffer: VecDeque::new(),
            in_flight,
            deletes: Vec::new(),
            keeper,
        })
    }
}

/// Extends the visibility of the messages in hand whose timeout is less than half gone, so
/// that a long batch is not handed to another consumer; ends with its session.
async fn keep_hidden(client: Client, url: String, visibility: i32, in_flight: InFlight) {
    let full = Duration::from_secs(visibility.max(1) as u64);
    loop {
        tokio::time::sleep(full / 4).await;
        // NOTE: held across the calls, so that a message let go meanwhile (made visible for
        // a retry) is not hidden again by a stale extension.
        let mut guard = in_flight.lock().await;
        let now = Instant::now();
        let due: Vec<(String, String)> = guard
            .iter()
            .filter(|(_, (_, until))| *until < now + full / 2)
            .map(|(id, (receipt, _))| (id.clone(), receipt.clone()))
            .collect();
        for chunk in due.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, receipt))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(visibility)
                        .build()
                        .ok()
                })
                .collect();
            let sent = client
                .change_message_visibility_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    for (id, _) in chunk {
                        if let Some((_, until)) = guard.get_mut(id) {
                            *until = now + full;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %sdk_error(e), "could not extend the visibility of messages in hand")
                }
            }
        }
    }
}

impl SqsSession {
    async fn receive(&mut self) -> Result<()> {
        self.flush_deletes().await?;
        #[allow(deprecated)]
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH as i32)
            .wait_time_seconds(self.queue.wait_secs())
            // NOTE: both spellings: servers that predate `MessageSystemAttributeNames` (moto)
            // read only the older one.
            .attribute_names(QueueAttributeName::All)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sdk_error)?;
        let messages = out.messages.unwrap_or_default();
        let until = Instant::now() + Duration::from_secs(self.queue.visibility_secs() as u64);
        let mut in_flight = self.in_flight.lock().await;
        for m in messages {
            let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                return Err(Error::backend(
                    "SQS handed out a message without id or receipt",
                ));
            };
            in_flight.insert(id.to_owned(), (receipt.to_owned(), until));
            self.buffer.push_back(m);
        }
        Ok(())
    }

    async fn flush_deletes(&mut self) -> Result<()> {
        if self.deletes.is_empty() {
            return Ok(());
        }
        let deletes = std::mem::take(&mut self.deletes);
        let entries = deletes
            .iter()
            .enumerate()
            .map(|(i, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(Error::backend)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sdk_error)?;
        // NOTE: a delete that failed leaves its message to come back after the visibility
        // timeout, and the inbox to skip it: nothing is lost, so it is only logged.
        for f in &out.failed {
            tracing::warn!(code = %f.code, message = ?f.message, "SQS did not delete a handled message");
        }
        let mut in_flight = self.in_flight.lock().await;
        for (id, _) in &deletes {
            in_flight.remove(id);
        }
        Ok(())
    }

    /// Makes `message` visible again after `delay` seconds, and on a FIFO queue the messages
    /// of its stream behind it in hand at once (SQS keeps them behind it): they leave the
    /// session's hands.
    async fn let_go(&mut self, message: &Message, delay: i32) -> Result<()> {
        let mut gone = vec![(message_id(message)?.to_owned(), delay)];
        if self.queue.is_fifo()
            && let Some(group) = group_of(message)
        {
            let (behind, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.buffer)
                .into_iter()
                .partition(|m| group_of(m) == Some(group));
            self.buffer = keep.into();
            for m in behind {
                gone.push((message_id(&m)?.to_owned(), 0));
            }
        }
        self.release(gone).await
    }

    /// Sets the visibility of each message of `gone` (id and seconds) and takes them out of
    /// hand.
    async fn release(&mut self, gone: Vec<(String, i32)>) -> Result<()> {
        let mut in_flight = self.in_flight.lock().await;
        let entries: Vec<_> = gone
            .iter()
            .enumerate()
            .filter_map(|(i, (id, delay))| {
                let (receipt, _) = in_flight.remove(id)?;
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(*delay)
                    .build()
                    .ok()
            })
            .collect();
        for chunk in entries.chunks(BATCH) {
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }

    /// Sends `body` with `attributes` to the dead-letter queue and returns its message id.
    async fn send_dead_letter(
        &self,
        body: &str,
        attributes: HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>,
        group: Option<&str>,
        dedup: String,
    ) -> Result<String> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.dead_letters)
            .message_body(if body.is_empty() { "-" } else { body })
            .set_message_attributes(Some(attributes));
        if self.queue.is_fifo() {
            request = request
                .message_group_id(group.unwrap_or("cqrs-dead-letters"))
                .message_deduplication_id(dedup);
        }
        let out = request.send().await.map_err(sdk_error)?;
        out.message_id
            .ok_or_else(|| Error::backend("SQS accepted a dead letter without a message id"))
    }
}

fn message_id(message: &Message) -> Result<&str> {
    message
        .message_id()
        .ok_or_else(|| Error::backend("a message without an id"))
}

#[async_trait]
impl Session for SqsSession {
    type Message = Message;

    async fn next(&mut self) -> Result<Received<Message>> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Ok(Received {
                    attempt: receive_count(&message),
                    event: decode_message(&message),
                    message,
                });
            }
            self.receive().await?;
        }
    }

    async fn ack(&mut self, message: &Message) -> Result<()> {
        let id = message_id(message)?;
        // NOTE: a message let go for the redrive policy (see `dead_letter`) is no longer in
        // hand: nothing to delete.
        let Some((receipt, _)) = self.in_flight.lock().await.get(id).cloned() else {
            return Ok(());
        };
        self.deletes.push((id.to_owned(), receipt));
        if self.deletes.len() >= BATCH {
            self.flush_deletes().await?;
        }
        Ok(())
    }

    async fn retry(&mut self, message: &Message) -> Result<()> {
        self.let_go(message, self.queue.retry_secs()).await
    }

    async fn dead_letter(&mut self, message: &Message, failure: &Failure) -> Result<()> {
        let id = message_id(message)?;
        let event_id = message
            .message_attributes
            .as_ref()
            .and_then(|a| a.get(HEADERS.event_id))
            .and_then(|v| v.string_value());
        let group = group_of(message);
        let note = |about: &str| {
            note_attributes(
                about,
                event_id,
                &failure.error,
                failure.attempts,
                self.queue.name(),
            )
        };
        if receive_count(message) >= self.queue.receives() {
            // The redrive policy moves it on its next receive, unchanged and under its id:
            // the note goes first, then the message is let go (and not deleted by the ack
            // that follows).
            self.send_dead_letter(&failure.error, note(id)?, group, format!("note-{id}"))
                .await?;
            return self.let_go(message, 0).await;
        }
        // Not worth its tries (it cannot be read): a copy with its note, then the ack deletes
        // the original.
        let copy = self
            .send_dead_letter(
                message.body().unwrap_or_default(),
                message.message_attributes.clone().unwrap_or_default(),
                group,
                format!("dead-{id}"),
            )
            .await?;
        self.send_dead_letter(&failure.error, note(&copy)?, group, format!("note-{id}"))
            .await?;
        Ok(())
    }

    async fn close(mut self) {
        self.keeper.abort();
        if let Err(e) = self.flush_deletes().await {
            tracing::warn!(error = %e, "could not delete handled messages on close");
        }
        // What was received and not handed out goes back at once.
        let gone = self
            .buffer
            .drain(..)
            .filter_map(|m| Some((m.message_id?, 0)))
            .collect();
        if let Err(e) = self.release(gone).await {
            tracing::warn!(error = %e, "could not hand back unhandled messages on close");
        }
    }
}

impl Drop for SqsSession {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
