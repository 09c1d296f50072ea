//! Relay throughput: events per second from the in-memory store to acknowledged JetStream
//! publishes on the server at NATS_URL. Run with
//! `cargo bench -p cqrs-nats --bench relay_throughput` (EVENTS sets the count, 20,000 by
//! default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::*;
use cqrs_nats::{JetStreamEvents, JetStreamRelay};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let client = async_nats::connect(&url).await?;
    let tag = format!(
        "cqrsbench{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );

    let store = cqrs_broker::testkit::bench_store(events).await?;
    let head = store.head_position().await?;

    let js = async_nats::jetstream::new(client.clone());
    for batch_size in [100, 500, 2000] {
        // NOTE: a fresh stream per run, so that JetStream's deduplication does not turn the
        // second run into a run of repeats.
        let stream = format!("{tag}_{batch_size}");
        let relay = JetStreamRelay::new(
            &stream,
            client.clone(),
            JetStreamEvents::new(&stream, &stream),
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
            .wait_for(&stream, head, Duration::from_secs(600))
            .await?;
        let secs = started.elapsed().as_secs_f64();
        runner.shutdown().await;
        println!(
            "jetstream relay, batch {batch_size:>4}: {head} events in {secs:.2} s = {:.0} events/s (acknowledged)",
            head as f64 / secs
        );
        js.delete_stream(&stream).await?;
    }
    Ok(())
}
