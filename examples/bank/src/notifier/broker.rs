//! The bank's side: which broker, which exchanges or stream, and the outbox relay.

use std::sync::Arc;

use cqrs_activemq::{ActiveMqDestination, ActiveMqQueue, ActiveMqRelay};
use cqrs_core::{BoxError, CheckpointStore, RunnerConfig, RunnerHandle, Subscriber};
use cqrs_kafka::{KafkaRelay, KafkaTopics};
use cqrs_nats::{JetStreamEvents, JetStreamRelay};
use cqrs_rabbitmq::{RabbitQueue, RabbitRelay};
use cqrs_sqs::{SqsQueue, SqsRelay};

use crate::backend::Backend;

/// The relay's subscriber name (the key of its checkpoint).
pub const BROKER_RELAY: &str = "broker_relay";

/// Where the bank's events travel: the RabbitMQ topic exchanges `<prefix>.<aggregate type>` or
/// the JetStream stream `<PREFIX>` (subjects `<prefix>.>`); the notifier reads them from its
/// queue or durable consumer `queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// The bank's prefix: exchanges `bank.account`, stream `BANK` with subjects `bank.>`.
    pub prefix: String,
    /// The notifier's queue (RabbitMQ) or durable consumer (JetStream).
    pub queue: String,
    /// RabbitMQ: the relay also declares the notifier's queue before it publishes, so that
    /// events relayed before the notifier first starts wait for it. Off by default: a queue no
    /// one consumes grows without end. (JetStream keeps the events in its stream either way.)
    pub declare_queue: bool,
}

impl Default for Channels {
    fn default() -> Self {
        Channels {
            prefix: "bank".to_owned(),
            queue: "bank-notifier".to_owned(),
            declare_queue: false,
        }
    }
}

impl Channels {
    /// The notifier's RabbitMQ queue: bound to every event of the bank's accounts.
    pub(crate) fn rabbit_queue(&self) -> RabbitQueue {
        let exchange = cqrs_rabbitmq::exchange_for(&self.exchange_prefix(), "account");
        RabbitQueue::new(&self.queue).bind(exchange, "#")
    }

    pub(crate) fn exchange_prefix(&self) -> String {
        format!("{}.", self.prefix)
    }

    // NOTE: a stream of the bank's own: a JetStream relay must be its stream's only publisher.
    pub(crate) fn jetstream(&self) -> JetStreamEvents {
        JetStreamEvents::new(self.prefix.to_uppercase(), &self.prefix)
    }

    /// ActiveMQ: the notifier's queue on the virtual topic of the bank's accounts,
    /// `Consumer.<queue>.VirtualTopic.<prefix>.account`.
    pub(crate) fn activemq_queue(&self) -> ActiveMqQueue {
        ActiveMqQueue::of_virtual_topic(&format!("{}.account", self.prefix), &self.queue)
    }

    /// Kafka: a topic per aggregate type, `<prefix>.<aggregate type>`; the notifier's consumer
    /// group is named after its queue.
    pub(crate) fn kafka_topics(&self) -> KafkaTopics {
        KafkaTopics::per_category(&self.prefix)
    }

    /// SQS: a FIFO queue per aggregate type, `<prefix>-<aggregate type>.fifo` (dots in the
    /// prefix made dashes), grouped by stream; this is their base, `<prefix>.fifo`. SQS has no
    /// fan-out: the notifier consumes `<prefix>-account.fifo`, and a second consuming service
    /// would need queues of its own (SNS in front, say).
    pub(crate) fn sqs_queues(&self) -> SqsQueue {
        // NOTE: a short visibility timeout, so that a notifier killed with messages in hand
        // has them back in seconds; the consumer extends it while a batch takes long.
        SqsQueue::new(format!("{}.fifo", self.prefix.replace('.', "-")))
            .visibility(std::time::Duration::from_secs(5))
    }
}

/// A broker, from its URL: `amqp://...` for RabbitMQ, `nats://...` for NATS JetStream,
/// `kafka://host:port` for Kafka, `stomp://...` for ActiveMQ, `sqs://...` for Amazon SQS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// RabbitMQ at this AMQP URL.
    Amqp(String),
    /// NATS (with JetStream) at this URL.
    Nats(String),
    /// Kafka at this URL: `kafka://` and its brokers, `host:port` comma-separated.
    Kafka(String),
    /// ActiveMQ over STOMP at this URL (`stomp://host:61613`): the virtual topics
    /// `VirtualTopic.<prefix>.<aggregate type>`, the notifier's queue
    /// `Consumer.<queue>.VirtualTopic.<prefix>.account`.
    Stomp(String),
    /// Amazon SQS at this URL: `sqs://` for AWS as the environment configures it,
    /// `sqs://host:port` or `sqs://key:secret@host:port` for a server of its own (moto); the
    /// FIFO queues `<prefix>-<aggregate type>.fifo`.
    Sqs(String),
}

impl Broker {
    /// `rabbitmq` or `nats`: the broker's name without its URL (which may hold a password).
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Amqp(_) => "rabbitmq",
            Broker::Nats(_) => "nats",
            Broker::Kafka(_) => "kafka",
            Broker::Stomp(_) => "activemq",
            Broker::Sqs(_) => "sqs",
        }
    }
}

impl std::str::FromStr for Broker {
    type Err = String;

    /// The broker a URL names, by its scheme: add a broker here.
    fn from_str(url: &str) -> Result<Self, String> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        match scheme {
            "amqp" | "amqps" => Ok(Broker::Amqp(url.to_owned())),
            "nats" | "tls" => Ok(Broker::Nats(url.to_owned())),
            "kafka" => Ok(Broker::Kafka(url.to_owned())),
            "stomp" => Ok(Broker::Stomp(url.to_owned())),
            "sqs" => Ok(Broker::Sqs(url.to_owned())),
            _ => Err(format!(
                "unknown broker {url:?}: expected amqp://..., nats://..., kafka://..., stomp://... (ActiveMQ) or sqs://..."
            )),
        }
    }
}

/// The brokers of a `kafka://host:port,...` URL, as Kafka clients take them.
pub(crate) fn kafka_brokers(url: &str) -> &str {
    url.trim_start_matches("kafka://").trim_end_matches('/')
}

/// The bank's outbox relay to `broker`, checkpointed in the backend's store.
///
/// RabbitMQ drops what no queue is bound to: start the notifier once before the relay, so that
/// its durable queue exists, or have the relay declare it ([`Channels::declare_queue`]).
pub async fn broker_relay(
    backend: &Backend,
    broker: &Broker,
    channels: &Channels,
) -> Result<Arc<dyn Subscriber>, BoxError> {
    Ok(match broker {
        Broker::Amqp(url) => {
            let mut relay = RabbitRelay::new(BROKER_RELAY, url, backend.checkpoints())
                .with_exchange_prefix(channels.exchange_prefix());
            if channels.declare_queue {
                relay = relay.declaring(channels.rabbit_queue());
            }
            Arc::new(relay)
        }
        Broker::Nats(url) => {
            let client = cqrs_nats::async_nats::connect(url).await?;
            let (events, checkpoints) = (channels.jetstream(), backend.checkpoints());
            Arc::new(JetStreamRelay::new(
                BROKER_RELAY,
                client,
                events,
                checkpoints,
            ))
        }
        Broker::Kafka(url) => Arc::new(KafkaRelay::new(
            BROKER_RELAY,
            kafka_brokers(url),
            channels.kafka_topics(),
            backend.checkpoints(),
        )),
        Broker::Stomp(url) => Arc::new(activemq_relay(url, backend, channels)?),
        Broker::Sqs(url) => Arc::new(
            SqsRelay::with_client(
                BROKER_RELAY,
                cqrs_sqs::sqs_client_for_url(url).await?,
                channels.sqs_queues(),
                backend.checkpoints(),
            )
            .by_category(),
        ),
    })
}

/// ActiveMQ: every event to the virtual topic of its aggregate type (`VirtualTopic.bank.account`).
fn activemq_relay(
    url: &str,
    backend: &Backend,
    channels: &Channels,
) -> Result<ActiveMqRelay<Arc<dyn CheckpointStore>>, BoxError> {
    let topic = ActiveMqDestination::virtual_topic(&channels.prefix);
    let mut relay =
        ActiveMqRelay::new(BROKER_RELAY, url.parse()?, topic, backend.checkpoints()).by_category();
    if channels.declare_queue {
        relay = relay.declaring(channels.activemq_queue());
    }
    Ok(relay)
}

/// Starts the relay to `broker` in a runner of its own, fenced by the backend's leases where
/// it has them.
pub async fn start_relay(
    backend: &Backend,
    broker: &Broker,
    channels: &Channels,
) -> Result<RunnerHandle, BoxError> {
    // NOTE: a relay's failures are the broker's outages, not poison events: retry without end
    // rather than park events, which would pass them by and never publish them.
    let config = RunnerConfig {
        max_attempts: u32::MAX,
        ..RunnerConfig::default()
    };
    let relay = broker_relay(backend, broker, channels).await?;
    Ok(backend.runner(config).with_arc(relay).start())
}
