//! Helpers shared by the JetStream tests: the server's address, unique names, a seeded store, a
//! recording projector, a checkpoint store that "crashes", a link to the server whose failures
//! the test decides, and a server of the test's own that can be killed and started again.

#![allow(dead_code, unreachable_pub, unused_imports)]

mod server;

pub use server::*;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::testkit::FaultyLink;
use cqrs_core::*;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A client of the server under test; `None` (skip) when unreachable, a panic under CI=true.
pub async fn broker() -> Option<async_nats::Client> {
    let url = nats_url();
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(&url);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(client)) => Some(client),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "NATS unreachable at {url} under CI: {why}"
            );
            eprintln!("skipping: NATS unreachable at {url}: {why}");
            None
        }
    }
}

/// A token no other test run uses (letters and digits only: fit for stream names and subjects).
pub fn unique(prefix: &str) -> String {
    format!(
        "cqrstest{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Appends `streams` x `per_stream` events round-robin, so that batches mix streams.
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

/// Appends the `rounds` (round n: version n) of one event to each of `streams` streams, 10 ms
/// apart, so that the relay sees a steady flow; before round `hold_at` it waits for `resume`.
pub fn spawn_writer(
    store: Arc<InMemoryEventStore>,
    category: &'static str,
    streams: usize,
    rounds: std::ops::Range<u64>,
    hold_at: u64,
    resume: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        for round in rounds {
            if round == hold_at {
                resume.notified().await;
            }
            for s in 0..streams {
                let stream = StreamId::new(category, format!("s{s}"));
                let e = NewEvent::new("Noted", serde_json::json!({ "round": round }));
                store
                    .append(&stream, ExpectedVersion::Exact(round), vec![e], None)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
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

/// Asserts every stream's events were handled once each; with `ordered`, versions 1..=n in
/// order.
pub fn assert_once(seen: &[RecordedEvent], streams: usize, per_stream: usize, ordered: bool) {
    assert_eq!(seen.len(), streams * per_stream, "events handled");
    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "an event was handled twice");
    for s in 0..streams {
        let mut versions: Vec<u64> = seen
            .iter()
            .filter(|e| e.stream.id == format!("s{s}"))
            .map(|e| e.stream_version)
            .collect();
        if !ordered {
            versions.sort_unstable();
        }
        assert_eq!(
            versions,
            (1..=per_stream as u64).collect::<Vec<_>>(),
            "events of stream s{s}"
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
/// process died between the broker's acknowledgements and the checkpoint.
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

/// Deletes JetStream streams, ignoring those already gone.
pub async fn cleanup(client: &async_nats::Client, streams: &[String]) {
    let js = async_nats::jetstream::new(client.clone());
    for s in streams {
        let _ = js.delete_stream(s).await;
    }
}

/// Messages stored in a JetStream stream.
pub async fn stream_messages(client: &async_nats::Client, name: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream(name)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages
}

/// Every event stored in a JetStream stream, in stream order (read by an ordered consumer).
pub async fn stream_events(client: &async_nats::Client, name: &str) -> Vec<RecordedEvent> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures_util::StreamExt;

    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(name).await.unwrap();
    let count = stream.get_info().await.unwrap().state.messages;
    let mut messages = stream
        .create_consumer(OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let mut events = Vec::new();
    while (events.len() as u64) < count {
        let message = messages
            .next()
            .await
            .expect("the stream's messages")
            .unwrap();
        let event = cqrs_nats::decode_message(message.headers.as_ref(), &message.payload);
        events.push(event.unwrap());
    }
    events
}

/// A [`FaultyLink`] to the NATS server, and the URL that goes through it: the failures a test
/// decides touch no other client of the server.
pub async fn faulty_link() -> (FaultyLink, String) {
    let link = FaultyLink::to(nats_url().trim_start_matches("nats://"))
        .await
        .unwrap();
    let url = format!("nats://{}", link.addr());
    (link, url)
}
