//! Helpers for the bridges' tests against their real brokers (feature `testkit`): a seeded
//! store, a recording projector, a checkpoint store that "crashes" between the broker's
//! confirms and the checkpoint, a runner set up for a relay, and the checks of order and
//! uniqueness every bridge makes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    BoxError, CheckpointStore, Cursor, EventAppender, ExpectedVersion, InMemoryCheckpointStore,
    InMemoryDeadLetterStore, InMemoryEventStore, NewEvent, Projector, RecordedEvent, Result,
    Runner, RunnerConfig, RunnerHandle, StreamId, Subscriber,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Appends `streams` x `per_stream` events (type `Noted`, streams `s0`, `s1`, ...) round-robin,
/// so that batches mix streams; returns the last position.
pub async fn seed(
    store: &InMemoryEventStore,
    category: &str,
    streams: usize,
    per_stream: usize,
) -> u64 {
    append_rounds(store, category, streams, 0..per_stream).await
}

/// Appends the `rounds` of [`seed`] (round n: version n of each of `streams` streams) to any
/// store, round-robin; returns the last position.
pub async fn append_rounds<S: EventAppender + ?Sized>(
    store: &S,
    category: &str,
    streams: usize,
    rounds: std::ops::Range<usize>,
) -> u64 {
    let mut last = 0;
    for v in rounds {
        for s in 0..streams {
            let stream = StreamId::new(category, format!("s{s}"));
            let event = NewEvent::new("Noted", serde_json::json!({"stream": s, "n": v}));
            last = store
                .append(&stream, ExpectedVersion::Exact(v as u64), vec![event], None)
                .await
                .expect("append")
                .position;
        }
    }
    last
}

/// The relay benches' log: `events` events (type `Deposited`) in an in-memory store, round-robin
/// over 100 streams `account/a0`, `account/a1`, ...
pub async fn bench_store(events: usize) -> Result<Arc<InMemoryEventStore>> {
    let store = Arc::new(InMemoryEventStore::new());
    let streams = 100;
    for v in 0..events / streams {
        for s in 0..streams {
            let event = NewEvent::new(
                "Deposited",
                serde_json::json!({"amount": v, "note": "benchmark"}),
            );
            let stream = StreamId::new("account", format!("a{s}"));
            store
                .append(&stream, ExpectedVersion::Any, vec![event], None)
                .await?;
        }
    }
    Ok(store)
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
                    .expect("append");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Records what it handles; fails forever on events of type `Poison`.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The events handled, in the order handled.
    pub seen: Mutex<Vec<RecordedEvent>>,
    /// A pause in each handling, to make a consumer slow.
    pub delay: Option<Duration>,
}

impl Recorder {
    /// How many events were handled.
    pub fn len(&self) -> usize {
        self.seen.lock().expect("not poisoned").len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the events handled.
    pub fn ids(&self) -> HashSet<uuid::Uuid> {
        let seen = self.seen.lock().expect("not poisoned");
        seen.iter().map(|e| e.event_id).collect()
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
        self.seen.lock().expect("not poisoned").push(event.clone());
        Ok(())
    }
}

/// The event types a [`Typed`] service knows: `Noted`, as [`seed`] writes it, with any payload.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Known {
    /// What [`seed`] appends.
    Noted(serde_json::Value),
}

impl cqrs_core::DomainEvent for Known {}

/// A [`Recorder`] that decodes each event as a [`Known`] first: an event of another type is
/// its decode error, as in a service that does not know the type.
#[derive(Debug, Default)]
pub struct Typed(pub Recorder);

#[async_trait]
impl Projector for Typed {
    fn name(&self) -> &str {
        "typed"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        event.decode::<Known>()?;
        self.0.handle(event).await
    }
}

/// Asserts every stream's events (as [`seed`] writes them) were handled once each; with
/// `ordered`, versions 1..=n in order.
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

/// Asserts every stream's events were handled once each, versions 1..=n in order.
pub fn assert_in_order_once(seen: &[RecordedEvent], streams: usize, per_stream: usize) {
    assert_once(seen, streams, per_stream, true);
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
    /// Where the allowed saves went.
    pub inner: Arc<InMemoryCheckpointStore>,
    allowed: usize,
    saves: AtomicUsize,
    /// Notified when the first save beyond `allowed` hangs.
    pub crashed: Notify,
}

impl CrashingCheckpoints {
    /// Saves into `inner` `allowed` times, then hangs.
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
