//! The handle of a started runner: waits for positions, reports status, stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::status::PARKED_MEMORY;
use super::{SubState, SubscriberStatus};
use crate::error::{Error, Result};
use crate::event::Cursor;
use crate::store::{DeadLetterStore, EventStore};

/// Controls a started [`Runner`](super::Runner).
pub struct RunnerHandle {
    pub(super) store: Arc<dyn EventStore>,
    pub(super) dead_letters: Arc<dyn DeadLetterStore>,
    pub(super) states: HashMap<String, Arc<SubState>>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) tasks: Vec<JoinHandle<()>>,
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

    /// Waits until every subscriber's [`setup`](crate::Subscriber::setup) has run (its tables
    /// exist), so that a service can answer queries of its read models right after start.
    ///
    /// Fails with [`Error::Timeout`] after `timeout`, naming the subscribers not ready and the
    /// last error of their set-up, and with [`Error::ShuttingDown`] if the runner stopped first.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use cqrs_core::*;
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// # #[derive(Debug)] struct Noop;
    /// # #[async_trait::async_trait]
    /// # impl Projector for Noop {
    /// #     fn name(&self) -> &str { "noop" }
    /// #     async fn handle(&self, _: &RecordedEvent) -> Result<(), BoxError> { Ok(()) }
    /// # }
    /// let runner = Runner::new(Arc::new(InMemoryEventStore::new()), Arc::new(InMemoryDeadLetterStore::new()))
    ///     .with(Checkpointed::new(Noop, InMemoryCheckpointStore::new()))
    ///     .start();
    /// runner.ready(Duration::from_secs(5)).await?; // now the read models can be queried
    /// runner.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for name in self.names() {
            let state = &self.states[&name];
            let mut rx = state.ready.subscribe();
            match tokio::time::timeout_at(deadline, rx.wait_for(|r| *r)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => {
                    let why = state.last_error.lock().expect("status lock").clone();
                    return Err(Error::Timeout(format!(
                        "{name} not set up within {timeout:?}{}",
                        why.map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Waits until `subscriber` has handled the event at global `position`, so that a caller
    /// can read its own writes. Works in every process sharing the store: where another
    /// process holds the subscriber's lease, this runner follows that process's committed
    /// checkpoint.
    ///
    /// What `Ok(())` promises: the subscriber's checkpoint has passed `position` **and** the
    /// event there took effect (its batch committed, and it was handled, not parked), so a
    /// query of the read model made now sees it (and everything before it that was not
    /// parked). Position 0 (a command that appended nothing) returns at once.
    ///
    /// Otherwise it fails, and the read model must not be trusted to show the write:
    /// - [`Error::Parked`] when the subscriber passed the event by parking it as a dead letter
    ///   (a missing table, a handler bug): its effect is missing from the read model; the error
    ///   text says why;
    /// - [`Error::Timeout`] after `timeout` (also while the batch holding the event was not
    ///   committed, for example rolled back by a lost lease, or while the subscriber retries a
    ///   failing event before parking it);
    /// - [`Error::NotFound`] for an unknown subscriber or a position past the store's head;
    /// - [`Error::ShuttingDown`] when the runner stops meanwhile.
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
                blocked_streams: s.blocked.load(Ordering::Relaxed),
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
