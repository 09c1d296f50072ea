//! Helpers of the RabbitMQ tests: the broker's address, unique names, queue declaring, counting
//! and cleaning, connection killing, and a link to the broker whose failures the test decides;
//! the bridge-neutral ones (a seeded store, a recording projector, a checkpoint store that
//! "crashes") come from the broker kit's testkit.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

pub use cqrs_broker::testkit::*;
use cqrs_core::testkit::FaultyLink;
use cqrs_rabbitmq::RabbitQueue;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

/// The broker under test, from AMQP_URL; `None` (skip) when unreachable, a panic under CI=true.
pub async fn broker() -> Option<String> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "probe".into()).await;
            Some(url)
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "RabbitMQ unreachable at {url} under CI: {why}"
            );
            eprintln!("skipping: RabbitMQ unreachable at {url}: {why}");
            None
        }
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "cqrs-test-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Declares `queue` (so that the relay's messages have somewhere to go before the consumers
/// start).
pub async fn declare(url: &str, queue: &RabbitQueue) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    queue.declare(&ch).await.unwrap();
    let _ = conn.close(200, "declared".into()).await;
}

/// Messages ready and consumers of a queue.
pub async fn queue_counts(url: &str, name: &str) -> (u32, u32) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let opts = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(name.into(), opts, Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "counted".into()).await;
    (q.message_count(), q.consumer_count())
}

/// Deletes a queue with its companions, and the given exchanges.
pub async fn cleanup(url: &str, queue: &RabbitQueue, exchanges: &[String]) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [
        queue.name().to_owned(),
        queue.retry_queue(),
        queue.dead_letter_queue(),
    ] {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for e in exchanges
        .iter()
        .cloned()
        .chain([queue.dead_letter_exchange()])
    {
        ch.exchange_delete(e.into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    let _ = conn.close(200, "cleaned".into()).await;
}

/// Closes, from the broker's side, every connection whose name contains `needle`; returns how
/// many it closed.
pub fn close_connections(needle: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in listing.lines().filter(|l| l.contains(needle)) {
        let pid = line.split('\t').next().unwrap();
        let status = std::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                pid,
                "closed by the connection-drop test",
            ])
            .status()
            .expect("rabbitmqctl runs");
        assert!(status.success(), "close_connection {pid}");
        closed += 1;
    }
    closed
}

/// A [`FaultyLink`] to the broker of the AMQP `url`, and the URL that goes through it.
pub async fn faulty_link(url: &str) -> (FaultyLink, String) {
    let link = FaultyLink::to(host_port(url)).await.unwrap();
    let through = url.replacen(host_port(url), &link.addr().to_string(), 1);
    (link, through)
}

/// The `host:port` of an AMQP URL.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}
