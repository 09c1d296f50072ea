//! The notifier's side: its queue or durable consumer, fed to its read model through the inbox.

use std::time::Duration;

use cqrs_core::BoxError;
use cqrs_kafka::{KafkaConsumer, KafkaGroup};
use cqrs_nats::{JetStreamConsumer, JetStreamQueue};
use cqrs_rabbitmq::RabbitConsumer;

use super::broker::{Broker, Channels, kafka_brokers};
use super::model::Notifier;

/// How long JetStream waits for an acknowledgement before it delivers a message again. A
/// notice is one small write and a pull brings [`PULL`] messages, so a message unacknowledged
/// this long was lost with its notifier (JetStream's default of 30 s would hold a restarted
/// notifier's backlog that long). A slow one is only delivered twice, which the inbox absorbs.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// Messages per JetStream pull: few enough to be handled well within [`ACK_WAIT`].
const PULL: usize = 20;

/// A started notifier: its read model and its consumer.
#[derive(Debug)]
pub struct NotifierHandle {
    notifier: Notifier,
    consumer: Consumer,
}

#[derive(Debug)]
enum Consumer {
    Amqp(cqrs_rabbitmq::ConsumerHandle),
    Nats(cqrs_nats::ConsumerHandle),
    Kafka(cqrs_kafka::ConsumerHandle),
    Stomp(cqrs_activemq::ConsumerHandle),
}

impl NotifierHandle {
    /// The read model.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Stops consuming; unacknowledged messages go back to the broker.
    pub async fn shutdown(self) {
        match self.consumer {
            Consumer::Amqp(c) => c.shutdown().await,
            Consumer::Nats(c) => c.shutdown().await,
            Consumer::Kafka(c) => c.shutdown().await,
            Consumer::Stomp(c) => c.shutdown().await,
        }
    }
}

/// Starts consuming the bank's account events from `broker` into `notifier`.
///
/// The queue (RabbitMQ) or the stream and durable consumer (JetStream) are declared before
/// this returns, so that the bank's events published from then on wait for the notifier, and
/// an unreachable broker is an error here rather than a retry loop.
pub async fn start_notifier(
    broker: &Broker,
    channels: &Channels,
    notifier: Notifier,
) -> Result<NotifierHandle, BoxError> {
    let inbox = notifier.inbox();
    let consumer = match broker {
        Broker::Amqp(url) => {
            let queue = channels.rabbit_queue();
            let conn = cqrs_rabbitmq::lapin::Connection::connect(url, Default::default()).await?;
            let channel = conn.create_channel().await?;
            queue.declare(&channel).await?;
            channel.close(200, "declared".into()).await?;
            conn.close(200, "declared".into()).await?;
            Consumer::Amqp(RabbitConsumer::new(url, queue, inbox).start())
        }
        Broker::Stomp(url) => {
            let (url, queue) = (url.parse()?, channels.activemq_queue());
            queue.declare(&url).await?;
            Consumer::Stomp(cqrs_activemq::ActiveMqConsumer::new(url, queue, inbox).start())
        }
        Broker::Nats(url) => {
            let client = cqrs_nats::async_nats::connect(url).await?;
            let queue = JetStreamQueue::new(&channels.jetstream(), &channels.queue)
                .subscribe("account")
                .ack_wait(ACK_WAIT);
            queue
                .declare(&cqrs_nats::async_nats::jetstream::new(client.clone()))
                .await?;
            Consumer::Nats(
                JetStreamConsumer::new(client, queue, inbox)
                    .with_prefetch(PULL)
                    .start(),
            )
        }
        Broker::Kafka(url) => {
            let group =
                KafkaGroup::new(&channels.kafka_topics(), &channels.queue).subscribe("account");
            // NOTE: a notifier killed without leaving its group holds its partitions until its
            // session times out: 6 s rather than librdkafka's 45.
            let consumer = KafkaConsumer::new(kafka_brokers(url), group, inbox)
                .set("session.timeout.ms", "6000");
            consumer.declare().await?;
            Consumer::Kafka(consumer.start())
        }
    };
    Ok(NotifierHandle { notifier, consumer })
}

/// `bank notifier --broker URL [--database URL]`: consumes into the notifier's database until
/// `stop` resolves, logging each notice.
pub async fn run_notifier(
    broker: &Broker,
    channels: &Channels,
    database: &str,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    let notifier = Notifier::open(database).await?;
    let handle = start_notifier(broker, channels, notifier).await?;
    let sent = handle.notifier().notices().await?.len();
    tracing::info!(broker = broker.kind(), queue = %channels.queue, sent, "notifier consuming account events");
    // NOTE: tests and scripts read this line to know the queue is there.
    println!(
        "bank notifier consuming {} queue {} ({sent} notices so far)",
        broker.kind(),
        channels.queue
    );
    stop.await;
    let notifier = handle.notifier().clone();
    handle.shutdown().await;
    let sent = notifier.notices().await?.len();
    notifier.close().await;
    tracing::info!(sent, "notifier stopped");
    Ok(())
}
