//! Relay throughput: events per second from the in-memory store to confirmed publishes on the
//! RabbitMQ at AMQP_URL. Run with `cargo bench -p cqrs-rabbitmq --bench relay_throughput`
//! (EVENTS sets the count, 20,000 by default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::*;
use cqrs_rabbitmq::{RabbitQueue, RabbitRelay, exchange_for};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let tag = format!(
        "cqrs-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, "account");

    // A bound queue, so that every message is routed and stored as in production.
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let queue = RabbitQueue::new(&tag).bind(&exchange, "#");
    queue.declare(&ch).await?;

    let store = cqrs_broker::testkit::bench_store(events).await?;
    let head = store.head_position().await?;

    for batch_size in [100, 500, 2000] {
        let relay = RabbitRelay::new(
            format!("{tag}-{batch_size}"),
            &url,
            InMemoryCheckpointStore::new(),
        )
        .with_exchange_prefix(&prefix);
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
            .wait_for(
                &format!("{tag}-{batch_size}"),
                head,
                Duration::from_secs(600),
            )
            .await?;
        let secs = started.elapsed().as_secs_f64();
        runner.shutdown().await;
        println!(
            "rabbitmq relay, batch {batch_size:>4}: {head} events in {secs:.2} s = {:.0} events/s (confirmed)",
            head as f64 / secs
        );
    }

    for q in [
        queue.name().to_owned(),
        queue.retry_queue(),
        queue.dead_letter_queue(),
    ] {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    for e in [exchange, queue.dead_letter_exchange()] {
        ch.exchange_delete(e.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bench done".into()).await?;
    Ok(())
}
