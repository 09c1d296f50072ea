//! The notifier's side: its queue or durable consumer, fed to its read model through the inbox.

use std::time::Duration;

use cqrs_activemq::ActiveMqConsumer;
use cqrs_core::BoxError;
use cqrs_kafka::{KafkaConsumer, KafkaGroup};
use cqrs_nats::{JetStreamConsumer, JetStreamQueue};
use cqrs_rabbitmq::RabbitConsumer;
use cqrs_sqs::SqsConsumer;

use super::broker::{Broker, Channels, kafka_brokers};
use super::model::Notifier;

/// How long JetStream waits for an acknowledgement before it delivers a message again: a pull
/// of [`PULL`] small writes takes far less, and JetStream's default of 30 s would hold a
/// restarted notifier's backlog that long. A slow message is delivered twice; the inbox
/// absorbs it.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// Messages per JetStream pull.
const PULL: usize = 20;

/// A started notifier: its read model and its consumer (every bridge's is the broker kit's).
#[derive(Debug)]
pub struct NotifierHandle {
    notifier: Notifier,
    consumer: cqrs_rabbitmq::ConsumerHandle,
}

impl NotifierHandle {
    /// The read model.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Stops consuming; unacknowledged messages go back to the broker.
    pub async fn shutdown(self) {
        self.consumer.shutdown().await;
    }
}

/// Starts consuming the bank's account events from `broker` into `notifier`. The queue (or
/// the stream and durable consumer) exist when this returns, and an unreachable broker is an
/// error here rather than a retry loop.
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
            conn.close(200, "declared".into()).await?;
            RabbitConsumer::new(url, queue, inbox).start()
        }
        Broker::Nats(url) => {
            let client = cqrs_nats::async_nats::connect(url).await?;
            let queue = JetStreamQueue::new(&channels.jetstream(), &channels.queue)
                .subscribe("account")
                .ack_wait(ACK_WAIT);
            let js = cqrs_nats::async_nats::jetstream::new(client.clone());
            queue.declare(&js).await?;
            let consumer = JetStreamConsumer::new(client, queue, inbox).with_prefetch(PULL);
            consumer.start()
        }
        Broker::Kafka(url) => {
            let group =
                KafkaGroup::new(&channels.kafka_topics(), &channels.queue).subscribe("account");
            // NOTE: a notifier killed without leaving its group holds its partitions until its
            // session times out: 6 s rather than librdkafka's 45.
            let consumer = KafkaConsumer::new(kafka_brokers(url), group, inbox)
                .set("session.timeout.ms", "6000");
            consumer.declare().await?;
            consumer.start()
        }
        Broker::Stomp(url) => {
            let (url, queue) = (url.parse()?, channels.activemq_queue());
            queue.declare(&url).await?;
            ActiveMqConsumer::new(url, queue, inbox).start()
        }
        Broker::Sqs(url) => {
            let client = cqrs_sqs::sqs_client_for_url(url).await?;
            let queue = channels.sqs_queues().for_category("account");
            queue.declare(&client).await?;
            SqsConsumer::with_client(client, queue, inbox).start()
        }
    };
    Ok(NotifierHandle { notifier, consumer })
}

/// `bank notifier`: consumes into the notifier's database until `stop` resolves.
pub async fn run_notifier(
    broker: &Broker,
    channels: &Channels,
    database: &str,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    let handle = start_notifier(broker, channels, Notifier::open(database).await?).await?;
    let notifier = handle.notifier().clone();
    let sent = notifier.notices().await?.len();
    // NOTE: tests and scripts read this line to know the queue is there.
    println!(
        "bank notifier consuming {} queue {} ({sent} notices so far)",
        broker.kind(),
        channels.queue
    );
    stop.await;
    handle.shutdown().await;
    let sent = notifier.notices().await?.len();
    notifier.close().await;
    tracing::info!(sent, "notifier stopped");
    Ok(())
}
