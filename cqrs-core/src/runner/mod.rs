//! The subscription runner: catches subscribers up from their checkpoints, follows live, parks
//! poison events, and tells how far each one is.

mod handle;
mod status;
mod task;

pub use handle::RunnerHandle;
pub(crate) use status::SubState;
pub use status::SubscriberStatus;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::lease::Leases;
use crate::processor::Processor;
use crate::projector::Subscriber;
use crate::store::{DeadLetterStore, EventStore};

use task::SubTask;

/// Tuning of a [`Runner`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events read and handed to a subscriber at once.
    pub batch_size: usize,
    /// How long to wait for a wake-up before reading anyway (the polling fallback).
    pub poll_interval: Duration,
    /// Tries of one failing event before it is parked.
    pub max_attempts: u32,
    /// Wait before the second try of a failing event; doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    /// Upper bound of the wait between tries.
    pub max_backoff: Duration,
    /// How often dead letters are checked for retry requests.
    pub dead_letter_interval: Duration,
    /// How often a subscriber without its lease tries to take it.
    pub lease_interval: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            dead_letter_interval: Duration::from_secs(1),
            lease_interval: Duration::from_millis(500),
        }
    }
}

/// Runs subscribers against an event store.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use cqrs_core::*;
///
/// #[derive(Debug, Default)]
/// struct Count(Mutex<u64>);
/// #[async_trait::async_trait]
/// impl Projector for Count {
///     fn name(&self) -> &str { "count" }
///     async fn handle(&self, _: &RecordedEvent) -> Result<(), BoxError> {
///         *self.0.lock().unwrap() += 1;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let count = Arc::new(Count::default());
/// let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
///     .with(Checkpointed::new(count.clone(), InMemoryCheckpointStore::new()))
///     .start();
///
/// let stream = StreamId::new("demo", "1");
/// let event = NewEvent::new("Noted", serde_json::json!({}));
/// let out = store.append(&stream, ExpectedVersion::Any, vec![event], None).await?;
///
/// runner.wait_for("count", out.position, Duration::from_secs(5)).await?;
/// assert_eq!(*count.0.lock().unwrap(), 1);
/// runner.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Runner {
    store: Arc<dyn EventStore>,
    processor: Processor,
    leases: Option<Arc<dyn Leases>>,
    subscribers: Vec<Arc<dyn Subscriber>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field(
                "subscribers",
                &self
                    .subscribers
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.processor.config)
            .field("leases", &self.leases)
            .finish()
    }
}

impl Runner {
    /// A runner reading `store` and parking poison events in `dead_letters`.
    pub fn new(store: Arc<dyn EventStore>, dead_letters: Arc<dyn DeadLetterStore>) -> Self {
        Runner {
            store,
            processor: Processor::new(dead_letters, RunnerConfig::default()),
            leases: None,
            subscribers: Vec::new(),
        }
    }

    /// Sets the tuning.
    pub fn with_config(mut self, config: RunnerConfig) -> Self {
        self.processor.config = config;
        self
    }

    /// Runs each subscriber only while holding its lease, so that one process at a time runs it.
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Adds a subscriber.
    pub fn with(mut self, subscriber: impl Subscriber + 'static) -> Self {
        self.subscribers.push(Arc::new(subscriber));
        self
    }

    /// Adds a shared subscriber.
    pub fn with_arc(mut self, subscriber: Arc<dyn Subscriber>) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    /// Starts one task per subscriber on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When two subscribers have the same name: they would share one checkpoint, and each
    /// would skip what the other handled (segments of one projector need names of their own,
    /// see [`Segment::name`](crate::Segment::name)).
    pub fn start(self) -> RunnerHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut states = HashMap::new();
        let mut tasks = Vec::new();
        for sub in self.subscribers {
            let state = Arc::new(SubState::new());
            let taken = states.insert(sub.name().to_owned(), state.clone());
            assert!(taken.is_none(), "two subscribers are named {}", sub.name());
            let task = SubTask {
                store: self.store.clone(),
                processor: Processor {
                    status: Some(state.clone()),
                    ..self.processor.clone()
                },
                leases: self.leases.clone(),
                sub,
                state,
                stop: stop_rx.clone(),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        RunnerHandle {
            store: self.store,
            dead_letters: self.processor.dead_letters,
            states,
            stop: stop_tx,
            tasks,
        }
    }
}
