//! Relay throughput: events per second from the in-memory store to ActiveMQ (persistent SENDs,
//! each with its receipt, to a queue) on the broker at ACTIVEMQ_URL, beside the raw limit: a
//! plain STOMP loop over a socket sending the same bodies, persistent, a receipt each, in
//! windows of the batch size, measured in the same run. Run with
//! `cargo bench -p cqrs-activemq --bench relay_throughput` (EVENTS sets the count,
//! 10,000 by default). Each kind runs 3 times, alternating; the medians are printed. The
//! queues are emptied afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_activemq::{ActiveMqDestination, ActiveMqRelay};
use cqrs_core::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Alternating runs of each kind per batch size.
const ROUNDS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ACTIVEMQ_URL").unwrap_or_else(|_| "stomp://127.0.0.1:61613".into());
    let addr = url.trim_start_matches("stomp://").to_owned();
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tag = format!(
        "cqrs-bench.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );

    let store = cqrs_broker::testkit::bench_store(events).await?;
    let head = store.head_position().await?;
    let body = serde_json::json!({"amount": 1, "note": "benchmark"}).to_string();

    for batch_size in [100, 500, 2000] {
        // NOTE: raw and relay alternate, ROUNDS times each, and the medians are compared: the
        // broker's disk and the shared machine make single runs swing by a third.
        let (mut raws, mut relays) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let raw_queue = format!("{tag}.raw.{batch_size}.{round}");
            let started = Instant::now();
            raw_sends(&addr, &raw_queue, &body, head as usize, batch_size).await?;
            raws.push(head as f64 / started.elapsed().as_secs_f64());

            let name = format!("{tag}.relay.{batch_size}.{round}");
            let relay = ActiveMqRelay::new(
                &name,
                url.parse()?,
                ActiveMqDestination::queue(&name),
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
                .wait_for(&name, head, Duration::from_secs(600))
                .await?;
            relays.push(head as f64 / started.elapsed().as_secs_f64());
            runner.shutdown().await;
            for queue in [raw_queue, name] {
                empty(&addr, &queue, head as usize).await?;
            }
        }
        let (raw, relayed) = (median(&mut raws), median(&mut relays));
        println!(
            "activemq relay, batch {batch_size:>4}: {relayed:.0} events/s (receipted); raw STOMP \
             send-with-receipt loop {raw:.0} msgs/s; ratio {:.2}x (medians of {ROUNDS})",
            relayed / raw
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    socket
        .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0")
        .await?;
    read_frames(&mut socket, 1).await?;
    Ok(socket)
}

/// Reads until `n` whole frames (NUL-terminated; none of these carry a body with NUL) came.
async fn read_frames(socket: &mut TcpStream, n: usize) -> std::io::Result<()> {
    let mut seen = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while seen < n {
        let read = socket.read(&mut buf).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen += buf[..read].iter().filter(|&&b| b == 0).count();
    }
    Ok(())
}

/// The raw limit: `count` persistent SENDs with receipts, `window` at a time.
async fn raw_sends(
    addr: &str,
    queue: &str,
    body: &str,
    count: usize,
    window: usize,
) -> std::io::Result<()> {
    let mut socket = connect(addr).await?;
    let mut sent = 0;
    while sent < count {
        let n = window.min(count - sent);
        let mut out = Vec::with_capacity(n * 256);
        for i in sent..sent + n {
            out.extend_from_slice(
                format!(
                    "SEND\ndestination:/queue/{queue}\npersistent:true\nreceipt:{i}\n\n{body}\0"
                )
                .as_bytes(),
            );
        }
        socket.write_all(&out).await?;
        read_frames(&mut socket, n).await?;
        sent += n;
    }
    Ok(())
}

/// Takes `count` messages off `queue` (auto-acknowledged), so that a run leaves nothing.
async fn empty(addr: &str, queue: &str, count: usize) -> std::io::Result<()> {
    let mut socket = connect(addr).await?;
    socket
        .write_all(
            format!(
                "SUBSCRIBE\nid:0\ndestination:/queue/{queue}\nack:auto\nactivemq.prefetchSize:1000\n\n\0"
            )
            .as_bytes(),
        )
        .await?;
    read_frames(&mut socket, count).await?;
    socket.write_all(b"DISCONNECT\n\n\0").await
}
