//! Helpers shared by the broker tests: the broker's address, unique names, a seeded store, a
//! recording projector, a checkpoint store that "crashes", connection killing, and a link to the
//! broker whose failures the test decides.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::testkit::FaultyLink;
use cqrs_core::*;
use cqrs_rabbitmq::RabbitQueue;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Notify;

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

/// Appends `streams` x `per_stream` events round-robin, so that batches mix streams; returns
/// the last position.
pub async fn seed(
    store: &InMemoryEventStore,
    category: &str,
    streams: usize,
    per_stream: usize,
) -> u64 {
    let mut last = 0;
    for v in 0..per_stream {
        for s in 0..streams {
            let stream = StreamId::new(category, format!("s{s}"));
            let event = NewEvent::new("Noted", serde_json::json!({"stream": s, "n": v}));
            last = store
                .append(&stream, ExpectedVersion::Exact(v as u64), vec![event], None)
                .await
                .unwrap()
                .position;
        }
    }
    last
}

/// Records what it handles; fails forever on events of type `Poison`.
#[derive(Debug, Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<RecordedEvent>>,
    pub delay: Option<Duration>,
}

impl Recorder {
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn ids(&self) -> HashSet<uuid::Uuid> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect()
    }
}

#[async_trait]
impl Projector for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.event_type == "Poison" {
            return Err(format!("cannot digest {}", event.event_id).into());
        }
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        self.seen.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Asserts every stream's events were handled once each, versions 1..=n in order.
pub fn assert_in_order_once(seen: &[RecordedEvent], streams: usize, per_stream: usize) {
    assert_eq!(seen.len(), streams * per_stream, "events handled");
    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "an event was handled twice");
    for s in 0..streams {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|e| e.stream.id == format!("s{s}"))
            .map(|e| e.stream_version)
            .collect();
        assert_eq!(
            versions,
            (1..=per_stream as u64).collect::<Vec<_>>(),
            "order of stream s{s}"
        );
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A checkpoint store whose `save` hangs forever once `allowed` saves are done, as if the
/// process died between the broker's confirms and the checkpoint.
#[derive(Debug)]
pub struct CrashingCheckpoints {
    pub inner: Arc<InMemoryCheckpointStore>,
    allowed: usize,
    saves: AtomicUsize,
    pub crashed: Notify,
}

impl CrashingCheckpoints {
    pub fn new(inner: Arc<InMemoryCheckpointStore>, allowed: usize) -> Self {
        CrashingCheckpoints {
            inner,
            allowed,
            saves: AtomicUsize::new(0),
            crashed: Notify::new(),
        }
    }
}

#[async_trait]
impl CheckpointStore for CrashingCheckpoints {
    async fn load(&self, name: &str) -> Result<Cursor> {
        self.inner.load(name).await
    }
    async fn save(&self, name: &str, cursor: Cursor) -> Result<()> {
        if self.saves.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.save(name, cursor).await
    }
    async fn reset(&self, name: &str) -> Result<()> {
        self.inner.reset(name).await
    }
}

/// A runner for a relay: small backoff, many attempts (a relay's failures are the broker's).
pub fn relay_runner(
    store: Arc<InMemoryEventStore>,
    relay: impl Subscriber + 'static,
) -> RunnerHandle {
    let config = RunnerConfig {
        max_attempts: 100,
        backoff: Duration::from_millis(50),
        ..Default::default()
    };
    Runner::new(store, Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(config)
        .with(relay)
        .start()
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
