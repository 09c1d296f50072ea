//! `bank serve --broker kafka://...` and `bank notifier --broker kafka://...`, real processes on
//! the real Kafka-protocol broker at KAFKA_BROKERS: the same round trip as on RabbitMQ and NATS
//! (every notice, a SIGKILL of the notifier, a relay that publishes everything again).

use std::time::Duration;

use bank::Channels;
use cqrs_kafka::rdkafka::ClientConfig;
use cqrs_kafka::rdkafka::admin::{AdminClient, AdminOptions};
use cqrs_kafka::rdkafka::client::DefaultClientContext;
use cqrs_kafka::rdkafka::consumer::{BaseConsumer, Consumer};

use crate::notifier::{broker, notifier_round_trip, notifier_sqlite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_over_kafka_survives_sigkill_and_a_relay_replay() {
    // NOTE: KAFKA_URL (`kafka://host:port`) if set, else the KAFKA_BROKERS the other tests use.
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let Some(b) = broker("KAFKA_URL", &format!("kafka://{brokers}")).await else {
        return;
    };
    let (_dir, db) = notifier_sqlite();
    notifier_round_trip(b, &db).await;
}

/// Whether the brokers of a `kafka://` URL answer a metadata request.
pub(crate) async fn reach(url: &str) -> Result<(), String> {
    let config = config(url);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .expect("the metadata probe")
}

/// Deletes the test's topics: the bank's two (it relays every aggregate type) and the
/// notifier's dead-letter topic.
pub(crate) async fn cleanup(url: &str, channels: &Channels) {
    let admin: AdminClient<DefaultClientContext> = config(url).create().unwrap();
    let topics = [
        format!("{}.account", channels.prefix),
        format!("{}.transfer", channels.prefix),
        format!("dlq.{}", channels.queue),
    ];
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    admin
        .delete_topics(&names, &AdminOptions::new())
        .await
        .unwrap();
}

fn config(url: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", url.trim_start_matches("kafka://"));
    config
}
