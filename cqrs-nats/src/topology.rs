//! Streams and consumers: one JetStream stream holds the relayed events under one subject per
//! aggregate type and event type; each consuming service has a durable pull consumer on it, and
//! a dead-letter stream beside it.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{Config, Stream};
use async_nats::jetstream::{self, Context};
use cqrs_core::{Error, Result};

/// The JetStream stream a [`JetStreamRelay`](crate::JetStreamRelay) publishes to: subjects
/// `prefix.<aggregate type>.<event type>`, such as `events.account.Deposited`.
///
/// Aggregate types and event types become subject tokens: they must not contain `.`, `*`,
/// `>` or whitespace.
#[derive(Debug, Clone)]
pub struct JetStreamEvents {
    name: String,
    prefix: String,
    duplicate_window: Duration,
}

impl Default for JetStreamEvents {
    /// The stream `EVENTS` with subjects `events.>`.
    fn default() -> Self {
        JetStreamEvents::new("EVENTS", "events")
    }
}

impl JetStreamEvents {
    /// The stream `name` holding the subjects under `prefix`.
    pub fn new(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        JetStreamEvents {
            name: name.into(),
            prefix: prefix.into(),
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// How long JetStream remembers a message id to drop a repeat of it (2 minutes by default).
    /// Used when the stream is created.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject an event of `event_type` on a stream of `category` is published to.
    pub fn subject(&self, category: &str, event_type: &str) -> String {
        format!("{}.{category}.{event_type}", self.prefix)
    }

    /// The subject filter that matches every event of aggregate type `category`.
    pub fn category_filter(&self, category: &str) -> String {
        format!("{}.{category}.>", self.prefix)
    }

    /// Creates the stream (file storage, subjects `prefix.>`) if it does not exist.
    pub async fn ensure(&self, js: &Context) -> Result<Stream> {
        js.get_or_create_stream(Config {
            name: self.name.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            duplicate_window: self.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(Error::backend)
    }
}

/// A consuming service's durable pull consumer on a [`JetStreamEvents`] stream.
///
/// Publish/subscribe: every service has its own durable name, so each service gets every
/// event. Competing consumers: the instances of one service pull from the same durable, so each
/// message goes to one of them.
///
/// A failed message is delivered again after `retry_delay` (a negative acknowledgement with a
/// delay); JetStream counts the deliveries. Once `max_attempts` are spent it is published, with
/// its error, to the dead-letter stream `DLQ_<stream>_<durable>` (subject
/// `dlq.<stream>.<durable>`) and acknowledged.
///
/// Per-stream order holds while nothing is redelivered. A message that was delivered but never
/// acknowledged (its consumer died, or its connection dropped) comes back after `ack_wait`,
/// behind later ones; set [`max_ack_pending`](JetStreamQueue::max_ack_pending) to 1 where
/// strict order matters more than throughput.
#[derive(Debug, Clone)]
pub struct JetStreamQueue {
    events: JetStreamEvents,
    durable: String,
    filter: Option<String>,
    max_attempts: u32,
    retry_delay: Duration,
    ack_wait: Duration,
    max_ack_pending: i64,
}

impl JetStreamQueue {
    /// The durable consumer `durable` of every event in `events`, with 5 attempts per message,
    /// a 1 s retry delay, a 30 s ack wait and up to 1,000 unacknowledged messages.
    pub fn new(events: &JetStreamEvents, durable: impl Into<String>) -> Self {
        JetStreamQueue {
            events: events.clone(),
            durable: durable.into(),
            filter: None,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
        }
    }

    /// Consumes only the events of aggregate type `category` (one filter: this replaces any
    /// earlier one).
    pub fn subscribe(mut self, category: &str) -> Self {
        self.filter = Some(self.events.category_filter(category));
        self
    }

    /// Consumes only the subjects matching `filter` (one filter: this replaces any earlier one).
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Deliveries of a message (the first included) before it is dead-lettered.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a failed message waits before it is delivered again.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// How long JetStream waits for an acknowledgement before delivering a message again.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How many delivered, unacknowledged messages the durable allows (over all instances).
    pub fn max_ack_pending(mut self, pending: i64) -> Self {
        self.max_ack_pending = pending.max(1);
        self
    }

    /// The durable consumer's name.
    pub fn durable(&self) -> &str {
        &self.durable
    }

    /// The event stream consumed.
    pub fn events(&self) -> &JetStreamEvents {
        &self.events
    }

    /// The deliveries of a message before it is dead-lettered.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait before a failed message is delivered again.
    pub fn delay(&self) -> Duration {
        self.retry_delay
    }

    /// The name of the dead-letter stream.
    pub fn dead_letter_stream(&self) -> String {
        format!("DLQ_{}_{}", self.events.name, self.durable)
    }

    /// The subject dead letters are published to.
    pub fn dead_letter_subject(&self) -> String {
        format!("dlq.{}.{}", self.events.name, self.durable)
    }

    /// Creates the event stream, the dead-letter stream and the durable consumer if missing,
    /// and returns the consumer.
    pub async fn declare(&self, js: &Context) -> Result<PullConsumer> {
        let stream = self.events.ensure(js).await?;
        js.get_or_create_stream(Config {
            name: self.dead_letter_stream(),
            subjects: vec![self.dead_letter_subject()],
            ..Default::default()
        })
        .await
        .map_err(Error::backend)?;
        let config = pull::Config {
            durable_name: Some(self.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // NOTE: unlimited: the consumer itself dead-letters after `max_attempts`, with the
            // error; JetStream's own limit would silently stop delivering instead.
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending,
            filter_subject: self.filter.clone().unwrap_or_default(),
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&self.durable, config)
            .await
            .map_err(Error::backend)
    }
}

/// A JetStream context whose requests and publish acknowledgements time out after `timeout`.
pub(crate) fn context(client: async_nats::Client, timeout: Duration) -> Context {
    jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}
