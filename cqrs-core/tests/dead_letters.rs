//! Outcomes the runner keeps apart: a lost lease (nothing parked, nothing counted), a parked
//! event (`wait_for` says so), a rebuild (old dead letters go), a repeated park (one letter).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::*;

const WAIT: Duration = Duration::from_secs(10);

fn fast() -> RunnerConfig {
    RunnerConfig {
        batch_size: 50,
        max_attempts: 2,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        dead_letter_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

/// Counts events; fails on those whose payload says `poison` while `poisoned` is set, and is
/// fenced out (its lease lost) while `fenced` is set.
#[derive(Debug, Default)]
struct Counter {
    seen: AtomicU64,
    poisoned: AtomicBool,
    fenced: AtomicBool,
}

#[async_trait::async_trait]
impl Projector for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(Box::new(Error::FencedOut {
                subscriber: "counter".into(),
                reason: "epoch 1 is stale".into(),
            }));
        }
        if self.poisoned.load(Ordering::SeqCst) && event.payload_value()?["poison"] == true {
            return Err("cannot count a poisoned event".into());
        }
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.seen.store(0, Ordering::SeqCst);
        Ok(())
    }
}

async fn append(store: &InMemoryEventStore, poison: bool) -> u64 {
    let e = NewEvent::new("Noted", serde_json::json!({ "poison": poison }));
    store
        .append(
            &StreamId::new("n", "1"),
            ExpectedVersion::Any,
            vec![e],
            None,
        )
        .await
        .unwrap()
        .position
}

fn status_of(all: &[SubscriberStatus]) -> &SubscriberStatus {
    all.iter().find(|s| s.name == "counter").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_out_batch_parks_nothing_counts_nothing_and_keeps_the_cursor() {
    let store = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let counter = Arc::new(Counter::default());
    counter.fenced.store(true, Ordering::SeqCst);
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(
            counter.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    for _ in 0..3 {
        append(&store, false).await;
    }
    // Long enough for the batch, its one-by-one tries and their parking under the old code.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        dead.list(None).await.unwrap().is_empty(),
        "no false dead letter"
    );
    let status = runner.status().await.unwrap();
    let s = status_of(&status);
    assert_eq!((s.position, s.handled, s.parked_here), (0, 0, 0), "{s:?}");

    // The lease back: the same events are handled, once each.
    counter.fenced.store(false, Ordering::SeqCst);
    runner.wait_for("counter", 3, WAIT).await.unwrap();
    assert_eq!(counter.seen.load(Ordering::SeqCst), 3);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_an_event_that_was_parked_says_so_and_status_counts_it_apart() {
    let store = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let counter = Arc::new(Counter::default());
    counter.poisoned.store(true, Ordering::SeqCst);
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(
            counter.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    let good = append(&store, false).await;
    let bad = append(&store, true).await;
    runner.wait_for("counter", good, WAIT).await.unwrap();
    match runner.wait_for("counter", bad, WAIT).await {
        Err(Error::Parked {
            subscriber,
            position,
            error,
        }) => {
            assert_eq!((subscriber.as_str(), position), ("counter", bad));
            assert!(error.contains("cannot count a poisoned event"), "{error}");
        }
        other => panic!("expected a parked error, got {other:?}"),
    }
    let status = runner.status().await.unwrap();
    let s = status_of(&status);
    assert_eq!((s.handled, s.parked_here, s.parked), (1, 1, 1), "{s:?}");

    // Retried and handled at last: the event is no longer reported as parked.
    counter.poisoned.store(false, Ordering::SeqCst);
    let letter = dead.list(None).await.unwrap().remove(0);
    dead.set_status(letter.id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dead.list(None).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "retry not done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.wait_for("counter", bad, WAIT).await.unwrap();
    runner.shutdown().await;
}

#[tokio::test]
async fn a_replay_starts_with_a_clean_set_of_dead_letters() {
    let store = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let counter = Arc::new(Counter::default());
    counter.poisoned.store(true, Ordering::SeqCst);
    append(&store, false).await;
    append(&store, true).await;
    let sub = Checkpointed::new(counter.clone(), InMemoryCheckpointStore::new());
    let replay = Replay::new(store.clone(), dead.clone()).with_config(fast());
    let first = replay.run(&sub, |_| {}).await.unwrap();
    assert_eq!((first.events, first.parked), (2, 1));
    assert_eq!(dead.list(None).await.unwrap().len(), 1);

    // The cause fixed, a rebuild handles every event: no letter is left to apply it twice.
    counter.poisoned.store(false, Ordering::SeqCst);
    let second = replay.run(&sub, |_| {}).await.unwrap();
    assert_eq!((second.events, second.parked), (2, 0));
    assert!(
        dead.list(None).await.unwrap().is_empty(),
        "old letters gone"
    );
    assert_eq!(counter.seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn parking_an_event_twice_keeps_one_letter() {
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, true).await;
    let event = store.read_all(Cursor::START, 1).await.unwrap().remove(0);
    let dead = InMemoryDeadLetterStore::new();
    let letter = |attempts, error: &str| DeadLetter {
        id: uuid::Uuid::new_v4(),
        subscriber: "counter".into(),
        event: event.clone(),
        error: error.into(),
        attempts,
        parked_at: chrono::Utc::now(),
        status: DeadLetterStatus::Parked,
    };
    let first = letter(1, "first");
    dead.park(first.clone()).await.unwrap();
    dead.park(letter(2, "second")).await.unwrap();
    let letters = dead.list(None).await.unwrap();
    assert_eq!(letters.len(), 1, "one letter per subscriber and event");
    assert_eq!(
        (
            letters[0].id,
            letters[0].attempts,
            letters[0].error.as_str()
        ),
        (first.id, 2, "second")
    );
    let found = dead.find("counter", event.cursor.position).await.unwrap();
    assert_eq!(found.map(|l| l.id), Some(first.id));
}
