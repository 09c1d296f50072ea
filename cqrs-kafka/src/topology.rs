//! Topics and groups: the relay writes each aggregate type's events to a topic of its own (or
//! every event to one topic), keyed by stream; each consuming service reads them in a consumer
//! group of its own, with a dead-letter topic beside it.

use std::time::Duration;

use cqrs_core::{Error, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

/// The topics a [`KafkaRelay`](crate::KafkaRelay) writes to: `<prefix>.<aggregate type>`
/// (`events.account`, `events.transfer`) by default, or one topic for every event
/// ([`single`](KafkaTopics::single)). Either way the record key is the stream
/// (`account-a-1`), so that one stream's events stay in one partition, in order.
///
/// Topics missing when first used are created with [`partitions`](KafkaTopics::partitions)
/// partitions (3 by default) and [`replication`](KafkaTopics::replication) replicas (the
/// broker's default by default); a topic that exists is left as it is.
///
/// ```
/// use cqrs_kafka::KafkaTopics;
///
/// assert_eq!(KafkaTopics::default().topic("account"), "events.account");
/// assert_eq!(KafkaTopics::single("bank-events").topic("account"), "bank-events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTopics {
    naming: Naming,
    partitions: i32,
    replication: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Naming {
    PerCategory(String),
    Single(String),
}

impl Default for KafkaTopics {
    /// A topic per aggregate type, `events.<aggregate type>`.
    fn default() -> Self {
        KafkaTopics::per_category("events")
    }
}

impl KafkaTopics {
    /// A topic per aggregate type: `<prefix>.<aggregate type>`. Aggregate types become part of
    /// topic names: Kafka allows letters, digits, `.`, `_` and `-`.
    pub fn per_category(prefix: impl Into<String>) -> Self {
        KafkaTopics {
            naming: Naming::PerCategory(prefix.into()),
            partitions: 3,
            replication: -1,
        }
    }

    /// One topic for every event, whatever its aggregate type.
    pub fn single(topic: impl Into<String>) -> Self {
        KafkaTopics {
            naming: Naming::Single(topic.into()),
            ..KafkaTopics::per_category("")
        }
    }

    /// Partitions of a topic this crate creates (3 by default). More partitions let more
    /// members of a group share the work; one stream is always in one partition.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = i32::from(partitions.max(1));
        self
    }

    /// Replicas of a topic this crate creates (by default the broker's
    /// `default.replication.factor`).
    pub fn replication(mut self, replicas: u16) -> Self {
        self.replication = i32::from(replicas.max(1));
        self
    }

    /// The topic the events of aggregate type `category` go to.
    pub fn topic(&self, category: &str) -> String {
        match &self.naming {
            Naming::PerCategory(prefix) => format!("{prefix}.{category}"),
            Naming::Single(topic) => topic.clone(),
        }
    }

    /// Creates the `topics` that do not exist yet, with this layout's partitions and replicas.
    pub async fn ensure(&self, config: &ClientConfig, topics: &[&str]) -> Result<()> {
        ensure_topics(config, topics, self.partitions, self.replication).await
    }
}

/// A consuming service's consumer group on a [`KafkaTopics`] layout.
///
/// Publish/subscribe: every service has its own group, so each service gets every event.
/// Competing consumers: the instances of one service join the same group, and Kafka splits the
/// partitions among them (each record handled by one of them; one stream's records by one
/// member at a time, in order).
///
/// A group with no committed offset starts from the earliest record kept. A record whose handler
/// keeps failing is tried again in place, `retry_delay` apart (its partition waits, so the
/// stream's order holds), up to `max_attempts` tries; then it goes to the dead-letter topic
/// `dlq.<group>` with its error and origin, and its partition goes on.
///
/// ```
/// use cqrs_kafka::{KafkaGroup, KafkaTopics};
///
/// let group = KafkaGroup::new(&KafkaTopics::default(), "notifier").subscribe("account");
/// assert_eq!(group.topics(), ["events.account"]);
/// assert_eq!(group.dead_letter_topic(), "dlq.notifier");
/// ```
#[derive(Debug, Clone)]
pub struct KafkaGroup {
    layout: KafkaTopics,
    group: String,
    topics: Vec<String>,
    max_attempts: u32,
    retry_delay: Duration,
    dead_letter_topic: String,
}

impl KafkaGroup {
    /// The consumer group `group` on `layout`, with 5 tries per record, 1 s apart. With
    /// [`KafkaTopics::single`] it reads the one topic; with a topic per aggregate type,
    /// [`subscribe`](KafkaGroup::subscribe) says which.
    pub fn new(layout: &KafkaTopics, group: impl Into<String>) -> Self {
        let group = group.into();
        let topics = match &layout.naming {
            Naming::Single(topic) => vec![topic.clone()],
            Naming::PerCategory(_) => Vec::new(),
        };
        KafkaGroup {
            layout: layout.clone(),
            dead_letter_topic: format!("dlq.{group}"),
            group,
            topics,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
        }
    }

    /// Also reads the events of aggregate type `category` (its topic). With a single topic,
    /// every event is read whatever its aggregate type, and this adds nothing.
    pub fn subscribe(mut self, category: &str) -> Self {
        let topic = self.layout.topic(category);
        if !self.topics.contains(&topic) {
            self.topics.push(topic);
        }
        self
    }

    /// Tries of a record (the first included) before it is dead-lettered.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a failed record waits before it is tried again.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Dead letters go to `topic` instead of `dlq.<group>`.
    pub fn dead_letter_to(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = topic.into();
        self
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topics read.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The tries of a record before it is dead-lettered.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait before a failed record is tried again.
    pub fn delay(&self) -> Duration {
        self.retry_delay
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Creates the topics read and the dead-letter topic if missing.
    pub async fn declare(&self, config: &ClientConfig) -> Result<()> {
        if self.topics.is_empty() {
            return Err(Error::Invalid(format!(
                "consumer group {} reads no topic: subscribe it to an aggregate type",
                self.group
            )));
        }
        let mut topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        topics.push(&self.dead_letter_topic);
        self.layout.ensure(config, &topics).await
    }
}

/// The client configuration of this crate's producers and consumers: `bootstrap.servers` and
/// whatever the user set.
pub(crate) fn client_config(brokers: &str, settings: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in settings {
        config.set(key, value);
    }
    config
}

/// Creates the topics of `names` that do not exist yet.
async fn ensure_topics(
    config: &ClientConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(Error::backend)?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(Error::backend)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::backend(format!(
                    "cannot create topic {topic}: {code}"
                )));
            }
        }
    }
    Ok(())
}
