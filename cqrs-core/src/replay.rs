//! Replays: rebuild a read model from the first event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::event::Cursor;
use crate::processor::Processor;
use crate::projector::Subscriber;
use crate::runner::RunnerConfig;
use crate::store::{DeadLetterStore, EventStore};

/// Progress of a replay, handed to the progress callback after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Events passed so far.
    pub processed: u64,
    /// Global position reached.
    pub position: u64,
    /// The store's head position when the replay started (the replay goes on past it if
    /// events keep coming).
    pub head: u64,
}

/// What a finished replay did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayReport {
    /// Events passed.
    pub events: u64,
    /// Of these, events parked as dead letters.
    pub parked: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds a subscriber's read model: runs its [`setup`](Subscriber::setup), resets it (read model, checkpoint and dead letters, with
/// [`Subscriber::reset_all`]), then feeds it the
/// all-stream from position zero in batches until it is caught up. Events that keep failing are
/// parked as in the live runner. Run it while the live runner of that subscriber is stopped (or
/// on a copy of the read model beside it).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use cqrs_core::*;
///
/// #[derive(Debug, Default)]
/// struct Count(Mutex<u64>);
/// #[async_trait::async_trait]
/// impl Projector for Count {
///     fn name(&self) -> &str { "count" }
///     async fn handle(&self, _: &RecordedEvent) -> Result<(), BoxError> { *self.0.lock().unwrap() += 1; Ok(()) }
///     async fn reset(&self) -> Result<(), BoxError> { *self.0.lock().unwrap() = 0; Ok(()) }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// for i in 0..3 {
///     let e = NewEvent::new("Noted", serde_json::json!({"i": i}));
///     store.append(&StreamId::new("demo", "1"), ExpectedVersion::Any, vec![e], None).await?;
/// }
/// let count = Arc::new(Count::default());
/// let sub = Checkpointed::new(count.clone(), InMemoryCheckpointStore::new());
/// let report = Replay::new(store, Arc::new(InMemoryDeadLetterStore::new()))
///     .run(&sub, |p| println!("{}/{}", p.position, p.head))
///     .await?;
/// assert_eq!((report.events, *count.0.lock().unwrap()), (3, 3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Replay {
    store: Arc<dyn EventStore>,
    processor: Processor,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("config", &self.processor.config)
            .finish()
    }
}

impl Replay {
    /// A replay reading `store` and parking poison events in `dead_letters`.
    pub fn new(store: Arc<dyn EventStore>, dead_letters: Arc<dyn DeadLetterStore>) -> Self {
        let config = RunnerConfig {
            batch_size: 2000,
            ..RunnerConfig::default()
        };
        Replay {
            store,
            processor: Processor::new(dead_letters, config),
        }
    }

    /// Sets the batch size and retry tuning.
    pub fn with_config(mut self, config: RunnerConfig) -> Self {
        self.processor.config = config;
        self
    }

    /// Rebuilds several subscribers at once, each as [`run`](Replay::run) does, on tasks of
    /// their own: the segments of a partitioned projector, say, which then use as many cores
    /// as there are segments. Returns their reports in order, or the first error.
    pub async fn run_parallel(&self, subs: Vec<Arc<dyn Subscriber>>) -> Result<Vec<ReplayReport>> {
        let tasks: Vec<_> = subs
            .into_iter()
            .map(|sub| {
                let replay = self.clone();
                tokio::spawn(async move { replay.run(&*sub, |_| {}).await })
            })
            .collect();
        let mut reports = Vec::with_capacity(tasks.len());
        for task in tasks {
            let report = match task.await {
                Ok(report) => report?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(Error::ShuttingDown),
            };
            reports.push(report);
        }
        Ok(reports)
    }

    /// Resets `sub` and rebuilds it from zero, calling `progress` after each batch.
    pub async fn run(
        &self,
        sub: &dyn Subscriber,
        mut progress: impl FnMut(ReplayProgress) + Send,
    ) -> Result<ReplayReport> {
        let started = Instant::now();
        // NOTE: the old dead letters go with the old read model: retried after the rebuild, one
        // would apply its event a second time, and a still failing event would get a second.
        let failed = |source| Error::Handler {
            handler: sub.name().to_owned(),
            source,
        };
        // NOTE: set-up first, as the runner does: the reset may need the read model's tables.
        sub.setup().await.map_err(failed)?;
        sub.reset_all(&*self.processor.dead_letters)
            .await
            .map_err(failed)?;
        let head = self.store.head_position().await?;
        let mut processor = self.processor.clone();
        processor.blocked.clear();
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut cursor = Cursor::START;
        let (mut events, mut parked) = (0, 0);
        loop {
            let batch = self
                .store
                .read_all(cursor, self.processor.config.batch_size)
                .await?;
            if batch.is_empty() {
                break;
            }
            let out = processor.process(sub, batch, &mut stop).await?;
            if out.fenced {
                return Err(Error::FencedOut {
                    subscriber: sub.name().to_owned(),
                    reason: "its lease was taken over during the replay".to_owned(),
                });
            }
            let to = out.cursor.expect("a batch not fenced passes an event");
            events += out.handled + out.parked;
            parked += out.parked;
            cursor = to;
            progress(ReplayProgress {
                processed: events,
                position: cursor.position,
                head,
            });
        }
        Ok(ReplayReport {
            events,
            parked,
            elapsed: started.elapsed(),
        })
    }
}
