//! The inbound consumer: an ActiveMQ queue as the kit's [`Source`], its messages acknowledged
//! one by one (`client-individual`), sent back with a NACK, or dead-lettered into `DLQ.<queue>`
//! as the kit's [`Consumer`] decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cqrs_broker::{Consumer, ConsumerHandle, Failure, Received, Session, Source};
use cqrs_core::{Error, InboxSubscriber, Result};

use crate::codec::{HEADERS, dead_letter_frame, decode_message};
use crate::stomp::{Connection, Frame, StompUrl};
use crate::topology::ActiveMqQueue;

/// Consumes an [`ActiveMqQueue`] into an [`InboxSubscriber`], on the kit's [`Consumer`].
///
/// Each message is turned back into a [`cqrs_core::RecordedEvent`] and given to
/// [`handle_once`](InboxSubscriber::handle_once), which skips an event id it has seen and
/// commits the effect with the id; the message is acknowledged (STOMP `ack:client-individual`)
/// only after that, so a crash or a lost connection redelivers it and the inbox makes the
/// repeat harmless.
///
/// STOMP tells a consumer only that a message is `redelivered`, not how often, and a message
/// whose consumer disconnects without acknowledging it comes back forever: so the tries are
/// counted here, in memory, by event id (by `message-id` for a message without one), across
/// this consumer's reconnections. A failing handler has its message NACKed (the broker's
/// redelivery plugin brings it back after its delay); once [`ActiveMqQueue::max_attempts`]
/// are spent the message is sent to `DLQ.<queue>` with the error in `cqrs-error`, the tries in
/// `cqrs-attempts` and the queue in `cqrs-origin`, and then acknowledged. A message that
/// cannot be read (no envelope, a malformed one, a body that is not JSON) goes there at once.
///
/// Several consumers of one queue (in one process or many) compete: each message is handled
/// by one of them, and each stream's messages (one `JMSXGroupID`) by one at a time.
///
/// ```no_run
/// use cqrs_activemq::{ActiveMqConsumer, ActiveMqQueue};
/// use cqrs_core::*;
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
/// let url = "stomp://127.0.0.1:61613".parse()?;
/// let queue = ActiveMqQueue::of_virtual_topic("bank.account", "notifier");
/// let consumer = ActiveMqConsumer::new(url, queue, InMemoryInbox::new(Notices)).start();
/// # consumer.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ActiveMqConsumer<S> {
    source: ActiveMqSource,
    inbox: S,
}

impl<S: InboxSubscriber + 'static> ActiveMqConsumer<S> {
    /// A consumer of `queue` on the broker at `url`, feeding `inbox`.
    pub fn new(url: StompUrl, queue: ActiveMqQueue, inbox: S) -> Self {
        ActiveMqConsumer {
            source: ActiveMqSource {
                url,
                queue,
                tries: Arc::default(),
            },
            inbox,
        }
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        Consumer::new(self.source, self.inbox).start()
    }
}

/// Tries so far, by message key; shared by the sessions of one consumer.
type Tries = Arc<Mutex<HashMap<String, u32>>>;

#[derive(Debug)]
struct ActiveMqSource {
    url: StompUrl,
    queue: ActiveMqQueue,
    tries: Tries,
}

/// A received message: its frame, its ack id and the key its tries are counted by.
#[derive(Debug)]
struct Delivery {
    frame: Frame,
    ack: String,
    key: String,
}

#[derive(Debug)]
struct ActiveMqSession {
    conn: Connection,
    queue: String,
    dead_letter_queue: String,
    tries: Tries,
}

#[async_trait]
impl Source for ActiveMqSource {
    type Session = ActiveMqSession;

    fn name(&self) -> &str {
        self.queue.name()
    }

    fn max_attempts(&self) -> u32 {
        self.queue.attempts()
    }

    async fn open(&self, _consumer: &str) -> Result<ActiveMqSession> {
        let mut conn = Connection::open(&self.url).await?;
        let subscribe = Frame::new("SUBSCRIBE")
            .header("id", "0")
            .header("destination", self.queue.stomp_destination())
            .header("ack", "client-individual")
            .header(
                "activemq.prefetchSize",
                self.queue.prefetch_size().to_string(),
            );
        conn.write_with_receipts(vec![subscribe]).await?;
        Ok(ActiveMqSession {
            conn,
            queue: self.queue.name().to_owned(),
            dead_letter_queue: self.queue.dead_letter_queue(),
            tries: self.tries.clone(),
        })
    }
}

impl ActiveMqSession {
    fn forget(&self, key: &str) {
        self.tries.lock().expect("not poisoned").remove(key);
    }
}

#[async_trait]
impl Session for ActiveMqSession {
    type Message = Delivery;

    async fn next(&mut self) -> Result<Received<Delivery>> {
        let frame = self.conn.next_message().await?;
        let ack = frame
            .get("ack")
            .ok_or_else(|| Error::backend("a STOMP MESSAGE without an ack header"))?
            .to_owned();
        let key = frame
            .get(HEADERS.event_id)
            .or_else(|| frame.get("message-id"))
            .unwrap_or(&ack)
            .to_owned();
        let attempt = {
            let mut tries = self.tries.lock().expect("not poisoned");
            let n = tries.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        Ok(Received {
            attempt,
            event: decode_message(&frame.headers, &frame.body),
            message: Delivery { frame, ack, key },
        })
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        self.conn
            .write(&[Frame::new("ACK").header("id", delivery.ack.as_str())])
            .await?;
        self.forget(&delivery.key);
        Ok(())
    }

    async fn retry(&mut self, delivery: &Delivery) -> Result<()> {
        self.conn
            .write(&[Frame::new("NACK").header("id", delivery.ack.as_str())])
            .await
    }

    async fn dead_letter(&mut self, delivery: &Delivery, failure: &Failure) -> Result<()> {
        let frame = dead_letter_frame(
            &delivery.frame,
            &self.dead_letter_queue,
            &self.queue,
            &failure.error,
            failure.attempts,
        );
        self.conn.write_with_receipts(vec![frame]).await
    }

    async fn close(self) {
        self.conn.close().await;
    }
}
