//! Relay throughput: events per second from the in-memory store to messages accepted by the SQS
//! server at SQS_ENDPOINT (default `http://127.0.0.1:9324`, moto), beside the raw limit measured
//! in the same run: the same messages (attributes, group and deduplication id as the relay
//! writes them, encoded beforehand) sent in a loop of `SendMessageBatch` calls of ten, each
//! answered before the next. Run with `cargo bench -p cqrs-sqs --bench relay_throughput`
//! (EVENTS sets the count, 300 by default: moto takes tens of messages a second, fewer as a
//! queue deepens).
//!
//! Each run writes to a fresh FIFO queue that nothing consumes: moto slows as a queue deepens,
//! so the raw loop and each relay run start from an empty queue and go as deep as each other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::wire::{self, HeaderNames};
use cqrs_core::*;
use cqrs_sqs::aws_sdk_sqs::Client;
use cqrs_sqs::aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use cqrs_sqs::{SqsQueue, SqsRelay};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9324".into());
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let tag = format!(
        "cqrsbench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let client = client(&endpoint);

    let store = cqrs_broker::testkit::bench_store(events).await?;
    let head = store.head_position().await?;
    let recorded = store.read_all(Cursor::default(), head as usize).await?;

    // NOTE: moto slows as its process holds more messages, so the raw loop runs before and
    // after the relays, into fresh queues, and each relay is compared with the raw loop's mean.
    let mut declared = Vec::new();
    let mut raw_loop = async |n: u32| -> Result<f64, Box<dyn std::error::Error>> {
        let queue = SqsQueue::new(format!("{tag}-raw{n}.fifo"));
        let url = queue.declare(&client).await?.queue;
        declared.push(queue);
        let secs = raw_send(&client, &url, &recorded).await?;
        println!(
            "raw send loop {n} (FIFO, batches of 10): {head} messages in {secs:.2} s = {:.0} messages/s",
            head as f64 / secs
        );
        Ok(secs)
    };
    let before = raw_loop(1).await?;
    let mut relays = Vec::new();
    let mut relay_queues = Vec::new();
    for batch_size in [100, 500] {
        let name = format!("{tag}-b{batch_size}");
        let queue = SqsQueue::new(format!("{name}.fifo"));
        // NOTE: declared before the clock starts, as the raw loop's queue is.
        queue.declare(&client).await?;
        relay_queues.push(queue.clone());
        let relay =
            SqsRelay::with_client(&name, client.clone(), queue, InMemoryCheckpointStore::new());
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
            .wait_for(&name, head, Duration::from_secs(900))
            .await?;
        let secs = started.elapsed().as_secs_f64();
        runner.shutdown().await;
        relays.push((batch_size, secs));
    }
    let after = raw_loop(2).await?;
    let raw = (before + after) / 2.0;
    for (batch_size, secs) in relays {
        println!(
            "sqs relay, batch {batch_size:>4}: {head} events in {secs:.2} s = {:.0} events/s \
             (accepted), {:.2} x the raw loops' mean",
            head as f64 / secs,
            raw / secs
        );
    }
    // NOTE: moto keeps every queue, and slows as it holds more.
    for queue in declared.into_iter().chain(relay_queues) {
        for name in [queue.name().to_owned(), queue.dead_letter_queue()] {
            let url = client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await?
                .queue_url;
            client.delete_queue().set_queue_url(url).send().await?;
        }
    }
    Ok(())
}

/// Sends `events` as the relay would (attributes, group, deduplication id), ten a call in
/// store order, each call answered before the next; returns the seconds.
async fn raw_send(
    client: &Client,
    url: &str,
    events: &[RecordedEvent],
) -> Result<f64, Box<dyn std::error::Error>> {
    let names = HeaderNames::DEFAULT;
    let text = |t: &str, s: String| {
        MessageAttributeValue::builder()
            .data_type(t)
            .string_value(s)
            .build()
    };
    let mut entries = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(event.payload.clone())
            .message_group_id(event.stream.to_string())
            .message_deduplication_id(event.event_id.to_string())
            .message_attributes(names.event_id, text("String", event.event_id.to_string())?);
        for (name, value) in wire::envelope_headers(&names, event)? {
            let kind = match value {
                wire::HeaderValue::Number(_) => "Number",
                wire::HeaderValue::Text(_) => "String",
            };
            entry = entry.message_attributes(name, text(kind, value.into_text())?);
        }
        entries.push(entry.build()?);
    }
    let started = Instant::now();
    for chunk in entries.chunks(10) {
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await?;
        assert!(
            out.failed.is_empty(),
            "the raw loop was refused: {:?}",
            out.failed
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A client of the server: the environment's keys if set, else dummy ones (moto checks none).
fn client(endpoint: &str) -> Client {
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    cqrs_sqs::sqs_client_with_keys(endpoint, &key, &secret)
}
