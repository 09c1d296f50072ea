//! The outbound relay: the kit's [`Relay`] producing to Kafka topics, done once every record of
//! the batch has its delivery report.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_broker::{Publisher, Relay, WireMessage};
use cqrs_core::wire::HeaderNames;
use cqrs_core::{
    BoxError, CheckpointStore, Checkpointed, Cursor, Error, RecordedEvent, Result, Subscriber,
};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::codec::{HEADERS, record_headers};
use crate::topology::{KafkaTopics, client_config};

/// A [`Publisher`] to Kafka: each event to its aggregate type's topic ([`KafkaTopics`]), keyed
/// by its stream, the envelope in headers; a batch is done when every record of it has a
/// successful delivery report.
///
/// The producer is idempotent with acknowledgements from all in-sync replicas
/// (`enable.idempotence=true`, `acks=all`), so within one producer a partition holds what was
/// sent in order, without gaps or repeats. An attempt that fails or is abandoned drops its
/// producer (what it still had queued is purged, never sent) and the next attempt starts a new
/// one and sends the whole batch again: a partition then holds a prefix of the batch followed by
/// the whole batch, which consumers' inboxes read in order, dropping the repeats. It creates the
/// topics it writes to if missing.
pub struct KafkaPublisher {
    config: ClientConfig,
    topics: KafkaTopics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    producer: Option<FutureProducer>,
    /// Whether the producer's last attempt ended well: only then is it used again.
    clean: bool,
    /// Topics known to exist.
    created: HashSet<String>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher to the Kafka cluster at `brokers` (`host:port`, comma-separated) writing to
    /// `topics`.
    pub fn new(brokers: &str, topics: KafkaTopics) -> Self {
        let mut config = client_config(brokers, &[]);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        KafkaPublisher {
            config,
            topics,
            state: Mutex::new(State::default()),
        }
    }

    /// Sets a librdkafka producer property (`compression.type`, `linger.ms`, security
    /// settings, ...). Takes effect with the next producer, that is before the first publish.
    pub fn set(&mut self, key: &str, value: &str) {
        self.config.set(key, value);
    }

    /// The producer for an attempt: the last one if its last attempt ended well, else a new one.
    fn producer(&self) -> Result<(FutureProducer, Vec<String>)> {
        let mut state = self.state.lock().expect("not poisoned");
        if !state.clean
            && let Some(old) = state.producer.take()
        {
            // NOTE: dropping a producer purges what it holds and waits up to half a second for
            // the reports: not on the runtime's threads.
            tokio::task::spawn_blocking(move || drop(old));
        }
        let producer = match &state.producer {
            Some(p) => p.clone(),
            None => {
                let p: FutureProducer = self.config.create().map_err(Error::backend)?;
                state.producer = Some(p.clone());
                p
            }
        };
        state.clean = false;
        Ok((producer, state.created.iter().cloned().collect()))
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    fn header_names(&self) -> &HeaderNames {
        &HEADERS
    }

    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        let (producer, created) = self.producer()?;
        let topics: Vec<String> = batch
            .iter()
            .map(|m| self.topics.topic(&m.event.stream.category))
            .collect();
        let mut missing: Vec<&str> = topics
            .iter()
            .map(String::as_str)
            .filter(|t| !created.iter().any(|c| c == t))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            self.topics.ensure(&self.config, &missing).await?;
            let mut state = self.state.lock().expect("not poisoned");
            state
                .created
                .extend(missing.iter().map(|t| (*t).to_owned()));
        }

        let mut reports = Vec::with_capacity(batch.len());
        for (message, topic) in batch.iter().zip(&topics) {
            let key = message.ordering_key();
            let mut record = FutureRecord::to(topic)
                .key(&key)
                .payload(&message.body)
                .headers(record_headers(message));
            loop {
                match producer.send_result(record) {
                    Ok(report) => break reports.push(report),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // NOTE: the producer's queue is full: wait for some reports to free it.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(Error::backend(e)),
                }
            }
        }
        for report in reports {
            match report.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Error::backend(e)),
                Err(_) => return Err(Error::backend("the producer was dropped")),
            }
        }
        self.state.lock().expect("not poisoned").clean = true;
        Ok(())
    }
}

/// The outbox relay to Kafka: a [`Subscriber`] that produces every event through a
/// [`KafkaPublisher`] and saves the checkpoint after every record of the batch was acknowledged
/// by all in-sync replicas (the kit's [`Relay`] under [`Checkpointed`]).
///
/// Run it in a [`cqrs_core::Runner`], which hands it events in store order. A crash between the
/// acknowledgements and the checkpoint produces the batch again on restart; consumers' inboxes
/// drop the repeats by event id.
///
/// Failures are retried for up to [`retry_for`](KafkaRelay::retry_for) before the batch fails to
/// the runner (which retries and, once its attempts are spent, parks the event; give the runner
/// generous `max_attempts` for a relay).
///
/// ```no_run
/// use std::sync::Arc;
/// use cqrs_core::*;
/// use cqrs_kafka::{KafkaRelay, KafkaTopics};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let relay = KafkaRelay::new("relay", "127.0.0.1:9092", KafkaTopics::default(), InMemoryCheckpointStore::new())
///     .set("compression.type", "lz4");
/// let runner = Runner::new(store, Arc::new(InMemoryDeadLetterStore::new())).with(relay).start();
/// # runner.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct KafkaRelay<C>(Checkpointed<Relay<KafkaPublisher>, C>);

impl<C: CheckpointStore> KafkaRelay<C> {
    /// A relay named `name` (the key of its checkpoint in `checkpoints`) producing to the Kafka
    /// cluster at `brokers` (`host:port`, comma-separated), into `topics`, which it creates if
    /// missing.
    pub fn new(
        name: impl Into<String>,
        brokers: &str,
        topics: KafkaTopics,
        checkpoints: C,
    ) -> Self {
        let publisher = KafkaPublisher::new(brokers, topics);
        KafkaRelay(Relay::new(name, publisher).checkpointed(checkpoints))
    }

    /// Sets a librdkafka producer property (see [`KafkaPublisher::set`]).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.0.projector_mut().publisher_mut().set(key, value);
        self
    }

    /// How long a batch is retried before it fails (30 s by default).
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.0.projector_mut().set_retry_for(window);
        self
    }
}

#[async_trait]
impl<C: CheckpointStore> Subscriber for KafkaRelay<C> {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.0.checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        self.0.process(events, to).await
    }
    /// Forgets the checkpoint: the whole store is produced again (the consumers' inboxes drop
    /// the repeats).
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.reset().await
    }
}
