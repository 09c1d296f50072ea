//! The inbound consumer: a member of a Kafka consumer group as the kit's [`Source`], its records
//! committed, tried again in place or dead-lettered as the kit's [`Consumer`] decides.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_broker::{Consumer, ConsumerHandle, Failure, Received, Session, Source};
use cqrs_core::{Error, InboxSubscriber, Result};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::codec::{HEADERS, decode_record, header};
use crate::topology::{KafkaGroup, client_config};

/// Consumes a [`KafkaGroup`] into an [`InboxSubscriber`], on the kit's [`Consumer`].
///
/// Each record is turned back into a [`cqrs_core::RecordedEvent`] and given to
/// [`handle_once`](InboxSubscriber::handle_once), which skips an event id it has seen and
/// commits the effect with the id. Only then is the record's offset stored; stored offsets are
/// committed to the group every second (`auto.commit.interval.ms`), when partitions are
/// revoked and when the consumer stops. A crash redelivers what was not committed, and the
/// inbox makes the repeat harmless.
///
/// One record is in hand at a time, so when the group rebalances the record in hand has been
/// handled and its offset stored: the offsets are committed before the partitions go, and the
/// member that takes them goes on from there.
///
/// A failing handler has its record tried again in place, after the group's retry delay (later
/// records of the partition wait: order per stream holds). Once
/// [`KafkaGroup::max_attempts`] tries are spent (counted by this member: a record redelivered
/// after a crash starts again at 1) the record goes to the dead-letter topic with the error,
/// the try count and its origin ([`dead_letter_error`] reads them back), and the partition goes
/// on. A record that cannot be read (no envelope headers, a malformed one, a value that is not
/// JSON) goes there at once.
///
/// ```no_run
/// use cqrs_core::*;
/// use cqrs_kafka::{KafkaConsumer, KafkaGroup, KafkaTopics};
///
/// #[derive(Debug, Default)]
/// struct Notifications;
/// #[async_trait]
/// impl Projector for Notifications {
///     fn name(&self) -> &str { "notifications" }
///     async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
///         println!("{} {}", event.stream, event.event_type);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let group = KafkaGroup::new(&KafkaTopics::default(), "notifier").subscribe("account");
/// let consumer = KafkaConsumer::new("127.0.0.1:9092", group, InMemoryInbox::new(Notifications))
///     .set("session.timeout.ms", "10000")
///     .start();
/// # consumer.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct KafkaConsumer<S> {
    source: KafkaSource,
    inbox: S,
}

impl<S: InboxSubscriber + 'static> KafkaConsumer<S> {
    /// A member of `group` on the Kafka cluster at `brokers` (`host:port`, comma-separated),
    /// feeding `inbox`.
    pub fn new(brokers: &str, group: KafkaGroup, inbox: S) -> Self {
        KafkaConsumer {
            source: KafkaSource {
                brokers: brokers.to_owned(),
                group,
                consumer: Vec::new(),
                producer: Vec::new(),
            },
            inbox,
        }
    }

    /// Sets a librdkafka consumer property (`session.timeout.ms`, `fetch.max.bytes`, security
    /// settings, ...). `group.id`, `enable.auto.offset.store` and `enable.auto.commit` are this
    /// crate's to set.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.source
            .consumer
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets a librdkafka property of the producer of dead letters (idempotent, `acks=all`).
    pub fn set_producer(mut self, key: &str, value: &str) -> Self {
        self.source
            .producer
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// Creates the group's topics and its dead-letter topic if missing, with this consumer's
    /// client settings (starting does it too): so that an unreachable broker is an error here
    /// rather than a retry loop.
    pub async fn declare(&self) -> Result<()> {
        self.source.group.declare(&self.source.config()).await
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        Consumer::new(self.source, self.inbox).start()
    }
}

#[derive(Debug)]
struct KafkaSource {
    brokers: String,
    group: KafkaGroup,
    consumer: Vec<(String, String)>,
    producer: Vec<(String, String)>,
}

impl KafkaSource {
    /// The consumer's configuration: the defaults, the user's settings, then what this crate
    /// decides.
    fn config(&self) -> ClientConfig {
        let mut config = client_config(&self.brokers, &[]);
        config
            .set("group.id", self.group.group())
            .set("auto.offset.reset", "earliest")
            .set("auto.commit.interval.ms", "1000");
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        // NOTE: set last, over the user's: an offset is stored only once the inbox committed,
        // and only stored offsets are committed.
        config
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true");
        config
    }
}

/// Commits the stored offsets of the partitions a rebalance takes away, before they go.
///
/// NOTE: librdkafka's auto-commit also commits at a revocation; this makes it synchronous and
/// explicit, whatever the user set.
struct GroupContext;

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::debug!(
                partitions = partitions.count(),
                "partitions revoked, committing"
            );
            commit(consumer);
        }
    }
}

/// Commits the stored offsets, waiting for the broker; nothing stored since the last commit is
/// not an error.
fn commit(consumer: &impl rdkafka::consumer::Consumer<GroupContext>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "committing offsets failed"),
    }
}

/// A record in hand, with the try it is.
#[derive(Debug)]
struct Record {
    message: OwnedMessage,
    attempt: u32,
}

struct KafkaSession {
    consumer: Option<StreamConsumer<GroupContext>>,
    producer: FutureProducer,
    dead_letter_topic: String,
    retry_delay: Duration,
    /// The record to try again before any other.
    again: Option<(OwnedMessage, u32)>,
}

impl KafkaSession {
    fn consumer(&self) -> &StreamConsumer<GroupContext> {
        self.consumer.as_ref().expect("open until closed")
    }
}

#[async_trait]
impl Source for KafkaSource {
    type Session = KafkaSession;

    fn name(&self) -> &str {
        self.group.group()
    }

    fn max_attempts(&self) -> u32 {
        self.group.attempts()
    }

    async fn open(&self, _consumer: &str) -> Result<KafkaSession> {
        let config = self.config();
        self.group.declare(&config).await?;
        let consumer: StreamConsumer<GroupContext> = config
            .create_with_context(GroupContext)
            .map_err(Error::backend)?;
        let topics: Vec<&str> = self.group.topics().iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(Error::backend)?;

        let mut producer = client_config(&self.brokers, &self.producer);
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all");
        Ok(KafkaSession {
            consumer: Some(consumer),
            producer: producer.create().map_err(Error::backend)?,
            dead_letter_topic: self.group.dead_letter_topic().to_owned(),
            retry_delay: self.group.delay(),
            again: None,
        })
    }
}

fn received(message: OwnedMessage, attempt: u32) -> Received<Record> {
    Received {
        event: decode_record(message.headers(), message.payload()),
        attempt,
        message: Record { message, attempt },
    }
}

#[async_trait]
impl Session for KafkaSession {
    type Message = Record;

    async fn next(&mut self) -> Result<Received<Record>> {
        if let Some((message, attempt)) = self.again.take() {
            tokio::time::sleep(self.retry_delay).await;
            return Ok(received(message, attempt));
        }
        loop {
            match self.consumer().recv().await {
                Ok(message) => return Ok(received(message.detach(), 1)),
                // NOTE: librdkafka reports a fetch that failed and goes on by itself (it
                // reconnects, and fetches again).
                Err(KafkaError::MessageConsumption(code)) => {
                    tracing::warn!(error = %code, "fetch failed");
                }
                Err(e) => return Err(Error::backend(e)),
            }
        }
    }

    async fn ack(&mut self, record: &Record) -> Result<()> {
        let m = &record.message;
        // NOTE: librdkafka stores this offset + 1, the next record to read, as the
        // commit's convention has it.
        self.consumer()
            .store_offset(m.topic(), m.partition(), m.offset())
            .map_err(Error::backend)
    }

    async fn retry(&mut self, record: &Record) -> Result<()> {
        self.again = Some((record.message.clone(), record.attempt + 1));
        Ok(())
    }

    async fn dead_letter(&mut self, record: &Record, failure: &Failure) -> Result<()> {
        let m = &record.message;
        let origin = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
        let attempts = failure.attempts.to_string();
        let mut h = OwnedHeaders::new();
        if let Some(original) = m.headers() {
            for i in 0..original.count() {
                if let Some(header) = original.try_get(i) {
                    h = h.insert(header);
                }
            }
        }
        for (key, value) in [
            (HEADERS.error, failure.error.as_str()),
            (HEADERS.attempts, attempts.as_str()),
            (HEADERS.origin, origin.as_str()),
        ] {
            h = h.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut letter = FutureRecord::<[u8], [u8]>::to(&self.dead_letter_topic).headers(h);
        if let Some(key) = m.key() {
            letter = letter.key(key);
        }
        if let Some(payload) = m.payload() {
            letter = letter.payload(payload);
        }
        self.producer
            .send(letter, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| Error::backend(e))?;
        Ok(())
    }

    async fn close(mut self) {
        if let Some(consumer) = self.consumer.take() {
            // NOTE: leaving the group waits for the broker: not on the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || {
                commit(&consumer);
                drop(consumer);
            })
            .await;
        }
    }
}

/// What a dead letter carries besides the record: why it failed and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaDeadLetter {
    /// The handler's last error with its causes, or why the record could not be read.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// The topic it was consumed from.
    pub topic: String,
    /// Its partition there.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// The error, try count and origin a dead-lettered record carries in its headers, if it is one.
///
/// ```
/// use rdkafka::message::{Header, OwnedHeaders};
///
/// let h = OwnedHeaders::new()
///     .insert(Header { key: "cqrs-error", value: Some("cannot digest") })
///     .insert(Header { key: "cqrs-attempts", value: Some("3") })
///     .insert(Header { key: "cqrs-origin", value: Some("events.account/2/41") });
/// let letter = cqrs_kafka::dead_letter_error(&h).unwrap();
/// assert_eq!((letter.topic.as_str(), letter.partition, letter.offset), ("events.account", 2, 41));
/// assert_eq!(letter.attempts, 3);
/// ```
pub fn dead_letter_error(h: &(impl Headers + ?Sized)) -> Option<KafkaDeadLetter> {
    let error = header(h, HEADERS.error)?.to_owned();
    let attempts = header(h, HEADERS.attempts)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let origin = header(h, HEADERS.origin)?;
    let mut parts = origin.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?.to_owned();
    Some(KafkaDeadLetter {
        error,
        attempts,
        topic,
        partition,
        offset,
    })
}
