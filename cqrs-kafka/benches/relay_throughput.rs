//! Relay throughput: events per second from the in-memory store to records acknowledged by the
//! Kafka broker at KAFKA_BROKERS (default `127.0.0.1:9092`), beside the raw limit measured in the
//! same run: the same records produced in a loop by a producer with the same settings
//! (idempotent, `acks=all`), every delivery report awaited. Run with
//! `cargo bench -p cqrs-kafka --bench relay_throughput` (EVENTS sets the count, 20,000
//! by default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::wire::{self, HeaderNames};
use cqrs_core::*;
use cqrs_kafka::rdkafka::ClientConfig;
use cqrs_kafka::rdkafka::message::{Header, OwnedHeaders};
use cqrs_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use cqrs_kafka::{KafkaRelay, KafkaTopics};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let tag = format!(
        "cqrsbench{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );

    let store = cqrs_broker::testkit::bench_store(events).await?;
    let head = store.head_position().await?;
    let recorded = store.read_all(Cursor::default(), head as usize).await?;

    let raw = raw_produce(&brokers, &format!("{tag}raw"), &recorded).await?;
    println!(
        "raw produce loop (idempotent, acks=all): {head} records in {raw:.2} s = {:.0} records/s",
        head as f64 / raw
    );
    for batch_size in [100, 500, 2000] {
        // NOTE: fresh topics per run, so that each run writes to empty ones.
        let prefix = format!("{tag}b{batch_size}");
        let relay = KafkaRelay::new(
            &prefix,
            &brokers,
            KafkaTopics::per_category(&prefix),
            InMemoryCheckpointStore::new(),
        );
        let config = RunnerConfig {
            batch_size,
            ..Default::default()
        };
        let started = Instant::now();
        let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
            .with_config(config)
            .with(relay)
            .start();
        runner
            .wait_for(&prefix, head, Duration::from_secs(600))
            .await?;
        let secs = started.elapsed().as_secs_f64();
        runner.shutdown().await;
        println!(
            "kafka relay, batch {batch_size:>4}: {head} events in {secs:.2} s = {:.0} events/s \
             (acknowledged), {:.2} x the raw loop",
            head as f64 / secs,
            raw / secs
        );
    }
    Ok(())
}

/// Produces `events`' records (key, headers and value as the relay writes them, encoded
/// beforehand) to `topic` in one loop, then awaits every delivery report; returns the seconds
/// (after a warm-up record).
async fn raw_produce(
    brokers: &str,
    topic: &str,
    events: &[RecordedEvent],
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    KafkaTopics::per_category("raw")
        .ensure(&config, &[topic])
        .await?;
    let producer: FutureProducer = config.create()?;
    let names = HeaderNames::DEFAULT;
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: names.event_id,
            value: Some(&event.event_id.to_string()),
        });
        for (name, value) in wire::envelope_headers(&names, event)? {
            headers = headers.insert(Header {
                key: name,
                value: Some(&value.into_text()),
            });
        }
        records.push((event.stream.to_string(), headers, wire::encode_body(event)?));
    }
    // NOTE: one record first, awaited, so that the connection, the producer id and the new
    // topic's metadata are settled before the clock starts: the loop measures producing only.
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic)
                .key("warm-up")
                .payload(b"{}"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let started = Instant::now();
    let mut reports = Vec::with_capacity(records.len());
    for (key, headers, body) in &records {
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(body)
            .headers(headers.clone());
        loop {
            match producer.send_result(record) {
                Ok(report) => break reports.push(report),
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for report in reports {
        report.await?.map_err(|(e, _)| e)?;
    }
    Ok(started.elapsed().as_secs_f64())
}
