//! The subscription runner: catches subscribers up from their checkpoints, follows live, parks
//! poison events, and tells how far each one is.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result, error_chain};
use crate::event::Cursor;
use crate::lease::{Lease, Leases};
use crate::processor::{Processor, sleep_or_stop};
use crate::projector::Subscriber;
use crate::store::{DeadLetterStore, EventStore};

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
            processor: Processor {
                dead_letters,
                config: RunnerConfig::default(),
                status: None,
            },
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
    pub fn start(self) -> RunnerHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut states = HashMap::new();
        let mut tasks = Vec::new();
        for sub in self.subscribers {
            let state = Arc::new(SubState::new());
            states.insert(sub.name().to_owned(), state.clone());
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

/// How many parked positions a runner remembers per subscriber for [`RunnerHandle::wait_for`]
/// (older ones are looked up in the dead-letter store).
const PARKED_MEMORY: usize = 1024;

pub(crate) struct SubState {
    cursor: watch::Sender<Cursor>,
    handled: AtomicU64,
    parked: AtomicU64,
    active: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// The checkpoint at which this process last took the subscriber over: what it parked
    /// after it, it remembers in `parked_at`.
    active_from: Mutex<Cursor>,
    /// Positions this process parked (while active), with the error; bounded.
    parked_at: Mutex<BTreeMap<u64, String>>,
    /// Callers of `wait_for` waiting now: a passive subscriber re-reads its checkpoint often
    /// while there are any.
    waiters: AtomicUsize,
    waiter_came: Notify,
}

impl SubState {
    fn new() -> Self {
        SubState {
            cursor: watch::channel(Cursor::START).0,
            handled: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            active: AtomicBool::new(false),
            last_error: Mutex::new(None),
            active_from: Mutex::new(Cursor::START),
            parked_at: Mutex::new(BTreeMap::new()),
            waiters: AtomicUsize::new(0),
            waiter_came: Notify::new(),
        }
    }

    pub(crate) fn error(&self, e: Option<String>) {
        *self.last_error.lock().expect("status lock") = e;
    }

    pub(crate) fn parked_at(&self, position: u64, error: String) {
        let mut parked = self.parked_at.lock().expect("status lock");
        parked.insert(position, error);
        while parked.len() > PARKED_MEMORY {
            parked.pop_first();
        }
    }

    pub(crate) fn retried(&self, position: u64) {
        self.parked_at
            .lock()
            .expect("status lock")
            .remove(&position);
    }
}

/// Counts a caller of `wait_for` while it waits.
struct Waiting<'a>(&'a SubState);

impl<'a> Waiting<'a> {
    fn new(state: &'a SubState) -> Self {
        state.waiters.fetch_add(1, Ordering::AcqRel);
        state.waiter_came.notify_one();
        Waiting(state)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

struct SubTask {
    store: Arc<dyn EventStore>,
    processor: Processor,
    leases: Option<Arc<dyn Leases>>,
    sub: Arc<dyn Subscriber>,
    state: Arc<SubState>,
    stop: watch::Receiver<bool>,
}

impl SubTask {
    async fn run(mut self) {
        let retry_wait = self.processor.config.poll_interval;
        while !*self.stop.borrow() {
            let lease = match &self.leases {
                None => None,
                Some(leases) => match leases.try_acquire(self.sub.name()).await {
                    Ok(Some(l)) => Some(l),
                    Ok(None) => {
                        self.follow_passively().await;
                        continue;
                    }
                    Err(e) => {
                        self.state.error(Some(error_chain(&e)));
                        sleep_or_stop(retry_wait, &mut self.stop).await;
                        continue;
                    }
                },
            };
            if let Err(e) = self.follow(lease).await {
                if matches!(e, Error::ShuttingDown) {
                    break;
                }
                tracing::warn!(subscriber = self.sub.name(), error = %e, "subscription failed, restarting");
                self.state.error(Some(error_chain(&e)));
                sleep_or_stop(retry_wait, &mut self.stop).await;
            }
        }
        self.state.active.store(false, Ordering::Release);
    }

    /// While another process holds the lease (until the next try to take it): keeps the
    /// status cursor at the subscriber's committed checkpoint, so that `wait_for` works in
    /// every process of a cluster. The checkpoint is read on the store's wake-ups, at every
    /// lease try, and every few milliseconds while a `wait_for` is waiting.
    async fn follow_passively(&mut self) {
        /// How often the checkpoint is read while a caller waits.
        const EAGER: Duration = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + self.processor.config.lease_interval;
        let mut wake = self.store.wake_ups();
        let mut wake_open = true;
        loop {
            wake.borrow_and_update();
            match self.sub.checkpoint().await {
                Ok(c) => {
                    self.state.cursor.send_if_modified(|cur| {
                        let moved = *cur != c;
                        *cur = c;
                        moved
                    });
                }
                Err(e) => self.state.error(Some(error_chain(&e))),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let until = if self.state.waiters.load(Ordering::Acquire) > 0 {
                deadline.min(now + EAGER)
            } else {
                deadline
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                r = wake.changed(), if wake_open => wake_open = r.is_ok(),
                _ = self.state.waiter_came.notified() => {}
                _ = self.stop.wait_for(|s| *s) => return,
            }
            // NOTE: one read per `EAGER` at most, however often appends wake the store.
            tokio::time::sleep_until(deadline.min(now + EAGER)).await;
        }
    }

    /// Follows the all-stream while the lease (if any) holds.
    async fn follow(&mut self, mut lease: Option<Box<dyn Lease>>) -> Result<()> {
        let mut cursor = self.sub.checkpoint().await?;
        *self.state.active_from.lock().expect("status lock") = cursor;
        // NOTE: what was parked before is asked of the store from now on: another holder may
        // have retried it meanwhile.
        self.state.parked_at.lock().expect("status lock").clear();
        self.state.cursor.send_replace(cursor);
        self.state.active.store(true, Ordering::Release);
        let _inactive = Deactivate(&self.state.active);
        let mut wake = self.store.wake_ups();
        let mut next_dead_letter_check = Instant::now();
        let cfg = self.processor.config.clone();
        loop {
            if *self.stop.borrow() {
                return Err(Error::ShuttingDown);
            }
            if let Some(l) = lease.as_mut()
                && !l.renew().await?
            {
                tracing::info!(subscriber = self.sub.name(), "lease lost");
                return Ok(());
            }
            if Instant::now() >= next_dead_letter_check {
                if !self.processor.retry_requested(&*self.sub, cursor).await? {
                    tracing::info!(
                        subscriber = self.sub.name(),
                        "fenced out while retrying dead letters"
                    );
                    sleep_or_stop(cfg.lease_interval, &mut self.stop).await;
                    return Ok(());
                }
                next_dead_letter_check = Instant::now() + cfg.dead_letter_interval;
            }
            // NOTE: mark the wake-up seen before reading, so an append racing the read still
            // wakes the next wait.
            wake.borrow_and_update();
            let batch = self.store.read_all(cursor, cfg.batch_size).await?;
            if batch.is_empty() {
                let wait = cfg.poll_interval.min(cfg.dead_letter_interval);
                let closed = tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    r = wake.changed() => r.is_err(),
                    _ = self.stop.wait_for(|s| *s) => return Err(Error::ShuttingDown),
                };
                if closed {
                    // NOTE: the store dropped its notifier: this is the polling fallback.
                    sleep_or_stop(wait, &mut self.stop).await;
                }
                continue;
            }
            let out = self
                .processor
                .process(&*self.sub, &batch, &mut self.stop)
                .await?;
            if let Some(to) = out.cursor {
                cursor = to;
                self.state.handled.fetch_add(out.handled, Ordering::Relaxed);
                self.state.parked.fetch_add(out.parked, Ordering::Relaxed);
                // NOTE: the error is cleared before the cursor moves, so that whoever
                // `wait_for` wakes sees the status of the batch that moved it.
                self.state.error(None);
                self.state.cursor.send_replace(cursor);
            }
            if out.fenced {
                // NOTE: the lease is gone; what this batch did not commit is the new holder's.
                // Back to acquiring (and following the holder's checkpoint meanwhile), after a
                // pause: without leases in the runner, the next try would come at once.
                sleep_or_stop(cfg.lease_interval, &mut self.stop).await;
                return Ok(());
            }
        }
    }
}

struct Deactivate<'a>(&'a AtomicBool);

impl Drop for Deactivate<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How far one subscriber is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriberStatus {
    /// Its name.
    pub name: String,
    /// Global position of the last event it passed (handled or parked), in this process or,
    /// while another holds its lease, in that one (its committed checkpoint).
    pub position: u64,
    /// Its full cursor.
    pub cursor: Cursor,
    /// Events appended after `position`, as far as positions tell (exact on stores whose
    /// positions follow commit order).
    pub lag: u64,
    /// Dead letters waiting for it.
    pub parked: usize,
    /// Whether this process runs it now (false while another process holds its lease).
    pub active: bool,
    /// Events handled by this process since start (parked ones not included).
    pub handled: u64,
    /// Events this process parked as dead letters since start.
    pub parked_here: u64,
    /// The last error, until the next batch succeeds: also while an event is being tried
    /// again (a subscriber stuck behind an unreachable database or broker says why).
    pub last_error: Option<String>,
}

/// Controls a started [`Runner`].
pub struct RunnerHandle {
    store: Arc<dyn EventStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    states: HashMap<String, Arc<SubState>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("subscribers", &self.names())
            .finish()
    }
}

impl RunnerHandle {
    /// The names of the subscribers, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.states.keys().cloned().collect();
        names.sort();
        names
    }

    /// Waits until `subscriber` has handled the event at global `position`, so that a caller
    /// can read its own writes. Works in every process sharing the store: where another
    /// process holds the subscriber's lease, this runner follows that process's committed
    /// checkpoint.
    ///
    /// Fails with [`Error::Parked`] when the subscriber passed the event by parking it (its
    /// effect is missing from the read model; the error text says why), with [`Error::Timeout`]
    /// after `timeout` (also while the batch holding the event was not committed, for example
    /// rolled back by a lost lease), and with [`Error::NotFound`] for an unknown subscriber.
    pub async fn wait_for(&self, subscriber: &str, position: u64, timeout: Duration) -> Result<()> {
        let state = self
            .states
            .get(subscriber)
            .ok_or_else(|| Error::NotFound(format!("subscriber {subscriber}")))?;
        if position == 0 {
            return Ok(());
        }
        let _waiting = Waiting::new(state);
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            Error::Timeout(format!(
                "{subscriber} did not reach position {position} within {timeout:?}"
            ))
        };
        // The event may be committed yet not readable by subscribers (an older transaction is
        // still open), so its cursor may take a moment to appear.
        let mut wake = self.store.wake_ups();
        let target = loop {
            wake.borrow_and_update();
            if let Some(c) = self.store.cursor_of(position).await? {
                break c;
            }
            if position > self.store.head_position().await? {
                return Err(Error::NotFound(format!("position {position}")));
            }
            let nap = tokio::time::sleep(Duration::from_millis(20));
            if tokio::time::timeout_at(deadline, async {
                tokio::select! { _ = nap => {}, _ = wake.changed() => {} }
            })
            .await
            .is_err()
            {
                return Err(timed_out());
            }
        };
        let mut rx = state.cursor.subscribe();
        match tokio::time::timeout_at(deadline, rx.wait_for(|c| *c >= target)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(Error::ShuttingDown),
            Err(_) => return Err(timed_out()),
        }
        self.parked_error(subscriber, state, position, target)
            .await
            .map_or(Ok(()), Err)
    }

    /// [`Error::Parked`] if `subscriber` passed the event at `position` by parking it.
    async fn parked_error(
        &self,
        subscriber: &str,
        state: &SubState,
        position: u64,
        target: Cursor,
    ) -> Option<Error> {
        let parked = |error: String| Error::Parked {
            subscriber: subscriber.to_owned(),
            position,
            error,
        };
        {
            let remembered = state.parked_at.lock().expect("status lock");
            if let Some(error) = remembered.get(&position) {
                return Some(parked(error.clone()));
            }
            // NOTE: what this process parked since it took the subscriber over, it remembers
            // (unless the memory overflowed past `position`); anything else (passed by another
            // process, or before) is asked of the store.
            let complete = remembered.len() < PARKED_MEMORY
                || remembered
                    .first_key_value()
                    .is_some_and(|(first, _)| *first <= position);
            if complete
                && state.active.load(Ordering::Acquire)
                && target > *state.active_from.lock().expect("status lock")
            {
                return None;
            }
        }
        match self.dead_letters.find(subscriber, position).await {
            Ok(Some(letter)) => Some(parked(letter.error)),
            Ok(None) => None,
            Err(e) => Some(e),
        }
    }

    /// Waits until every subscriber has passed `position`.
    pub async fn wait_for_all(&self, position: u64, timeout: Duration) -> Result<()> {
        for name in self.names() {
            self.wait_for(&name, position, timeout).await?;
        }
        Ok(())
    }

    /// Position, lag, parked count and activity of every subscriber, by name.
    pub async fn status(&self) -> Result<Vec<SubscriberStatus>> {
        let head = self.store.head_position().await?;
        let parked = self.dead_letters.counts().await?;
        let mut out = Vec::new();
        for name in self.names() {
            let s = &self.states[&name];
            let cursor = *s.cursor.borrow();
            out.push(SubscriberStatus {
                position: cursor.position,
                cursor,
                lag: head.saturating_sub(cursor.position),
                parked: parked
                    .get(&name)
                    .map_or(0, |n| usize::try_from(*n).unwrap_or(usize::MAX)),
                active: s.active.load(Ordering::Acquire),
                handled: s.handled.load(Ordering::Relaxed),
                parked_here: s.parked.load(Ordering::Relaxed),
                last_error: s.last_error.lock().expect("status lock").clone(),
                name,
            });
        }
        Ok(out)
    }

    /// Stops every subscriber after its current batch and waits for them.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Stops every subscriber at once, wherever it is, as a crash would. For tests of recovery.
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
