//! Command handling: load, decide, append, retry on conflict.

mod cache;
mod load;
mod options;
mod queue;

pub use options::{CommandError, CommandOptions, CommandOutcome, RetryPolicy, command_id_for};

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::event::{ExpectedVersion, NewEvent, StreamId};
use crate::event_store::{EventStore, StreamReaderExt};
use crate::store::{Snapshot, SnapshotStore};

use cache::Cache;
use load::LOAD_PARALLELISM;
use queue::StreamQueue;

type Encode<A> = fn(&A) -> serde_json::Result<Value>;
type Decode<A> = fn(Value) -> serde_json::Result<A>;

struct Snapshots<A> {
    store: Arc<dyn SnapshotStore>,
    every: u64,
    schema: u32,
    encode: Encode<A>,
    decode: Decode<A>,
}

/// Handles commands for aggregate type `A` against an event store.
///
/// Share one handler (in an `Arc`) across the tasks of a process: commands on one aggregate
/// that reach it at once take turns, in arrival order, instead of racing each other into
/// concurrency conflicts. Writers in other processes are met by optimistic concurrency: the
/// append checks the version the decision was made on, and a conflict is retried by the
/// [`RetryPolicy`].
///
/// ```
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { Added { n: u64 } }
/// # impl DomainEvent for CounterEvent {}
/// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Counter { total: u64 }
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = TooBig;
/// #     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, TooBig> {
/// #         if self.total + n > 100 { return Err(TooBig) } Ok(vec![CounterEvent::Added { n: *n }]) }
/// #     fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) { self.total += n; }
/// # }
/// use std::sync::Arc;
/// use cqrs_core::{CommandHandler, CommandOptions, InMemoryEventStore};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let counters = CommandHandler::<Counter>::new(store);
///
/// let out = counters.execute("c-1", &40).await?;
/// assert_eq!((out.version, out.position), (1, 1));
///
/// // The same command id appends once.
/// let id = uuid::Uuid::new_v4();
/// let first = counters.execute_with("c-1", &10, CommandOptions::with_id(id)).await?;
/// let again = counters.execute_with("c-1", &10, CommandOptions::with_id(id)).await?;
/// assert!(again.duplicate);
/// assert_eq!(again.version, first.version);
/// assert_eq!(counters.load("c-1").await?.0.total, 50);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CommandHandler<A: Aggregate> {
    store: Arc<dyn EventStore>,
    retry: RetryPolicy,
    snapshots: Option<Snapshots<A>>,
    cache: Option<Mutex<Cache<A>>>,
    load_parallelism: usize,
    queue: StreamQueue,
}

impl<A: Aggregate> fmt::Debug for CommandHandler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandler")
            .field("aggregate", &A::TYPE)
            .field("retry", &self.retry)
            .field("snapshot_every", &self.snapshots.as_ref().map(|s| s.every))
            .field("cache", &self.cache.is_some())
            .field("load_parallelism", &self.load_parallelism)
            .finish()
    }
}

impl<A: Aggregate> CommandHandler<A> {
    /// A handler on `store` with the default retry policy, no snapshots and no cache.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        CommandHandler {
            store,
            retry: RetryPolicy::default(),
            snapshots: None,
            cache: None,
            load_parallelism: LOAD_PARALLELISM,
            queue: StreamQueue::default(),
        }
    }

    /// Sets how many range reads a load of a long stream runs at once (2 by default; 1 reads
    /// one batch after another). More suit a database server with more cores.
    pub fn with_load_parallelism(mut self, reads: usize) -> Self {
        self.load_parallelism = reads.max(1);
        self
    }

    /// Sets the retry policy for concurrency conflicts.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Keeps up to `capacity` aggregates in memory between commands, so that a command on a hot
    /// aggregate is decided without re-reading its stream.
    ///
    /// An entry may be stale: another handler or process may have written to the stream since.
    /// Every answer is still one a handler without a cache could give:
    /// - a decision that emits events is checked by its append (the cached version is the
    ///   expected one): on a stale entry the append conflicts, the entry is dropped and the
    ///   command is decided again on the stream read afresh, without spending a retry;
    /// - a refusal ([`CommandError::Rejected`]) or a decision that emits nothing is confirmed
    ///   first by reading the stream's current version (one small read): if the stream has
    ///   moved, the entry is dropped and the command is decided again on the stream read
    ///   afresh. So a refusal never rests on a stale entry, and never leaves one behind.
    ///
    /// So the cache saves the stream read of commands that append, and costs refusals and
    /// empty decisions one version read; it never weakens optimistic concurrency.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(Mutex::new(Cache::new(capacity.max(1))));
        self
    }

    /// Saves a snapshot each time a stream's version crosses a multiple of `every`, and loads
    /// from the latest snapshot. `schema` tags the state's shape: bump it when the aggregate's
    /// fields change and older snapshots are ignored.
    pub fn with_snapshots(mut self, store: Arc<dyn SnapshotStore>, every: u64, schema: u32) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots = Some(Snapshots {
            store,
            every: every.max(1),
            schema,
            encode: |a| serde_json::to_value(a),
            decode: |v| serde_json::from_value(v),
        });
        self
    }

    /// The stream id of aggregate `id`.
    pub fn stream(id: &str) -> StreamId {
        StreamId::new(A::TYPE, id)
    }

    /// Loads aggregate `id` from the store (snapshot, or else [`Aggregate::initial`], then later
    /// events): its state and version.
    pub async fn load(&self, id: &str) -> Result<(A, u64)> {
        let stream = Self::stream(id);
        let (mut state, mut version) = (A::initial(id), 0);
        if let Some(s) = &self.snapshots
            && let Some(snap) = s.store.load(&stream).await?
            && snap.schema == s.schema
        {
            match (s.decode)(snap.state) {
                Ok(a) => (state, version) = (a, snap.version),
                // NOTE: a snapshot that no longer decodes is only a lost shortcut.
                Err(e) => tracing::warn!(%stream, error = %e, "ignoring undecodable snapshot"),
            }
        }
        self.catch_up(&stream, &mut state, &mut version).await?;
        Ok((state, version))
    }

    /// Handles `command` on aggregate `id`.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        self.execute_with(id, command, CommandOptions::default())
            .await
    }

    /// Handles `command` on aggregate `id` once per `command_id`: a repeat of the same command
    /// with the same id appends nothing and returns the first result; the same id with another
    /// command fails with [`Error::CommandIdReused`](crate::Error::CommandIdReused) (as
    /// [`CommandError::Store`]), with nothing written.
    ///
    /// The store keeps the [`Fingerprint`] of the command beside the id. It is the command's
    /// and not the events', since the events a command yields depend on the state it meets: a
    /// genuine repeat after the first one succeeded may yield other events, or a refusal.
    ///
    /// ```
    /// # use cqrs_core::{Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum CounterEvent { Added { n: u64 } }
    /// # impl DomainEvent for CounterEvent {}
    /// # #[derive(Debug, Clone, Default)]
    /// # struct Counter { total: u64 }
    /// # impl Aggregate for Counter {
    /// #     const TYPE: &'static str = "counter";
    /// #     type Command = u64; type Event = CounterEvent; type Error = std::convert::Infallible;
    /// #     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Added { n: *n }]) }
    /// #     fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) { self.total += n; }
    /// # }
    /// use std::sync::Arc;
    /// use cqrs_core::{CommandError, CommandHandler, Error, InMemoryEventStore};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let counters = CommandHandler::<Counter>::new(Arc::new(InMemoryEventStore::new()));
    /// let key = uuid::Uuid::new_v4();
    /// counters.execute_once("c-1", &10, key).await?;
    /// assert!(counters.execute_once("c-1", &10, key).await?.duplicate);
    /// let other = counters.execute_once("c-1", &99, key).await.unwrap_err();
    /// assert!(matches!(other, CommandError::Store(Error::CommandIdReused { .. })));
    /// assert_eq!(counters.load("c-1").await?.0.total, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`Fingerprint`]: crate::Fingerprint
    pub async fn execute_once(
        &self,
        id: &str,
        command: &A::Command,
        command_id: Uuid,
    ) -> Result<CommandOutcome, CommandError<A::Error>>
    where
        A::Command: Serialize,
    {
        let options = CommandOptions::for_request(command_id, command)?;
        self.execute_with(id, command, options).await
    }

    /// Handles `command` on aggregate `id` with a command id and metadata.
    ///
    /// With a command id, a repeat of a command already handled on this stream appends nothing
    /// and gets the first result (`duplicate: true`), also when it races the first: a repeat
    /// that is refused, or decides nothing, on the state the first one left checks the id again
    /// before it answers.
    ///
    /// Runs in a `command` span (aggregate type, stream id, command id) and counts what it did
    /// in the [metrics](crate#metrics) `cqrs_commands_total` (by aggregate and outcome),
    /// `cqrs_command_retries_total`, `cqrs_events_appended_total` and
    /// `cqrs_command_duration_seconds`.
    pub async fn execute_with(
        &self,
        id: &str,
        command: &A::Command,
        options: CommandOptions,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        let span = tracing::info_span!(
            "command",
            aggregate = A::TYPE,
            stream_id = id,
            command_id = ?options.command_id,
        );
        let started = std::time::Instant::now();
        let result = self
            .execute_traced(id, command, options)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(o) if o.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Store(e)) if e.is_conflict() => "conflict",
            Err(_) => "error",
        };
        if let Err(e) = &result {
            span.in_scope(|| tracing::debug!(outcome, error = %e, "command failed"));
        }
        metrics::counter!("cqrs_commands_total", "aggregate" => A::TYPE, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("cqrs_command_duration_seconds", "aggregate" => A::TYPE)
            .record(started.elapsed());
        if let Ok(o) = &result
            && o.appended > 0
        {
            metrics::counter!("cqrs_events_appended_total", "aggregate" => A::TYPE)
                .increment(o.appended as u64);
        }
        result
    }

    async fn execute_traced(
        &self,
        id: &str,
        command: &A::Command,
        options: CommandOptions,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        let stream = Self::stream(id);
        let command_id = options.command();
        let _turn = self.queue.enter(id).await;
        if let Some(cid) = command_id
            && let Some(prev) = self.store.command_result(&stream, cid).await?
        {
            return Ok(repeated(prev.version, prev.position));
        }
        let mut metadata = options.metadata;
        if metadata.causation_id.is_none() {
            metadata.causation_id = options.command_id;
        }
        if metadata.traceparent.is_none() {
            metadata.traceparent = crate::trace::current();
        }
        let mut attempt = 1;
        let mut trust_cache = true;
        loop {
            let (hit, (mut state, version)) = match self.cached(id, trust_cache) {
                Some(hit) => (true, hit),
                None => (false, self.load(id).await?),
            };
            let decided = command_events(&state, command);
            if !matches!(&decided, Ok(events) if !events.is_empty()) {
                // NOTE: a refusal or a decision that emits nothing appends nothing, so no
                // conflict would reveal a stale cached state: the stream's version confirms it.
                if hit && self.store.stream_version(&stream).await? != version {
                    self.evict(id);
                    trust_cache = false;
                    continue;
                }
                if !hit {
                    self.remember(id, version, &state);
                }
                // NOTE: a repeat of this command id that loaded after the first committed
                // decides on the first one's effect (and is refused, say); the id, checked
                // again now, tells it is a repeat.
                if let Some(cid) = command_id
                    && let Some(prev) = self.store.command_result(&stream, cid).await?
                {
                    return Ok(repeated(prev.version, prev.position));
                }
                decided?;
                return Ok(CommandOutcome::new(version, 0, 0, false));
            }
            let events = decided?;
            let new_events = events
                .iter()
                .map(|e| NewEvent::from_domain(e, metadata.clone()))
                .collect::<Result<Vec<_>>>()?;
            let count = new_events.len();
            match self
                .store
                .append(
                    &stream,
                    ExpectedVersion::Exact(version),
                    new_events,
                    command_id,
                )
                .await
            {
                Ok(res) if res.duplicate => {
                    self.evict(id);
                    return Ok(repeated(res.version, res.position));
                }
                Ok(res) => {
                    for e in &events {
                        state.apply(e);
                    }
                    self.after_append(&stream, id, version, &state, res.version)
                        .await;
                    return Ok(CommandOutcome::new(res.version, res.position, count, false));
                }
                // NOTE: a stale cached state is not a conflict the caller ran into (without the
                // cache the stream would have been read afresh): decide again at once, without
                // spending an attempt.
                Err(e) if e.is_conflict() && hit => {
                    self.evict(id);
                    trust_cache = false;
                }
                Err(e) if e.is_conflict() && attempt < self.retry.max_attempts => {
                    tracing::debug!(attempt, "concurrency conflict, retrying");
                    metrics::counter!("cqrs_command_retries_total", "aggregate" => A::TYPE)
                        .increment(1);
                    self.evict(id);
                    trust_cache = false;
                    let wait = self.retry.wait(attempt);
                    attempt += 1;
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(e) => {
                    self.evict(id);
                    return Err(e.into());
                }
            }
        }
    }

    async fn after_append(&self, stream: &StreamId, id: &str, before: u64, state: &A, after: u64) {
        self.remember(id, after, state);
        if let Some(s) = &self.snapshots
            && before / s.every != after / s.every
        {
            let saved = match (s.encode)(state) {
                Ok(value) => {
                    s.store
                        .save(
                            stream,
                            Snapshot {
                                version: after,
                                state: value,
                                schema: s.schema,
                            },
                        )
                        .await
                }
                Err(e) => Err(Error::backend(e)),
            };
            // NOTE: the events are committed; a failed snapshot only costs a longer load later.
            if let Err(e) = saved {
                tracing::warn!(%stream, error = %e, "snapshot not saved");
            }
        }
    }
}

fn command_events<A: Aggregate>(
    state: &A,
    command: &A::Command,
) -> Result<Vec<A::Event>, CommandError<A::Error>> {
    state.handle(command).map_err(CommandError::Rejected)
}

/// The answer to a command id handled before: its first result, nothing appended now.
fn repeated(version: u64, position: u64) -> CommandOutcome {
    CommandOutcome::new(version, position, 0, true)
}
