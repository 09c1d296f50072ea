//! Command handling: load, decide, append, retry on conflict.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::event::{DomainEvent, ExpectedVersion, Metadata, NewEvent, StreamId};
use crate::event_store::{
    CommandId, EventStore, Fingerprint, StreamEvent, StreamItem, StreamReaderExt,
};
use crate::store::{Snapshot, SnapshotStore};

/// How often a command is re-run after a concurrency conflict, and how long to wait between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles on each further one.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(2),
        }
    }
}

impl RetryPolicy {
    /// Never retry: a conflict goes straight back to the caller.
    pub const NEVER: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        backoff: Duration::ZERO,
    };
}

/// Per-call options of a command.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// An id that makes the command idempotent on its stream: a second call with the same id
    /// appends nothing and returns the first result.
    pub command_id: Option<Uuid>,
    /// The fingerprint of the request the command id stands for, kept by the store beside it:
    /// the same id with another fingerprint fails with
    /// [`Error::CommandIdReused`](crate::Error::CommandIdReused) instead of answering with the
    /// first request's result. `None` takes any repeat of the id as the same request.
    /// [`CommandHandler::execute_once`] sets it to the command's own fingerprint.
    pub fingerprint: Option<Fingerprint>,
    /// Metadata stamped on every event the command produces. When `causation_id` is unset it
    /// becomes the command id.
    pub metadata: Metadata,
}

impl CommandOptions {
    /// Options with a command id.
    pub fn with_id(command_id: Uuid) -> Self {
        CommandOptions {
            command_id: Some(command_id),
            ..Default::default()
        }
    }

    /// Options with a command id for `request`: the store keeps the request's
    /// [`Fingerprint`] beside the id, so that the id sent again with another request is refused.
    /// Fingerprint what identifies the request to the caller (a request body, say); when that is
    /// the command itself, [`CommandHandler::execute_once`] does it.
    pub fn for_request<R: Serialize + ?Sized>(command_id: Uuid, request: &R) -> Result<Self> {
        Ok(CommandOptions {
            command_id: Some(command_id),
            fingerprint: Some(Fingerprint::of(request)?),
            ..Default::default()
        })
    }

    /// The command id and fingerprint as the store takes them.
    fn command(&self) -> Option<CommandId> {
        self.command_id.map(|id| CommandId {
            id,
            fingerprint: self.fingerprint,
        })
    }
}

/// What a handled command left: the token for reading your own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    /// The stream's version after the command.
    pub version: u64,
    /// Global position of the last event appended (0 when the command appended nothing).
    pub position: u64,
    /// How many events this call appended (0 for a repeated command id).
    pub events: usize,
    /// True when the command id had been handled before and this is its first result.
    pub duplicate: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command; nothing was written.
    #[error("command rejected")]
    Rejected(#[source] E),
    /// The store failed, or a conflict outlasted the retry policy; nothing was written.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> CommandError<E> {
    /// True when conflicts outlasted the retries.
    pub fn is_conflict(&self) -> bool {
        matches!(self, CommandError::Store(e) if e.is_conflict())
    }
}

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

/// A bounded map of recently handled aggregates: stream id -> (version, state).
struct Cache<A> {
    capacity: usize,
    entries: HashMap<String, (u64, A)>,
}

/// Versions read by the first round trip of a load: all of a short stream (the common case) in
/// one query, which also tells the stream's version; beyond it the rest is read in ranges.
const FIRST_RANGE: u64 = 500;

/// The most versions one range read covers: with [`LOAD_PARALLELISM`] ranges in flight, a load
/// holds at most a few thousand events besides the aggregate.
const MAX_RANGE: u64 = 5000;

/// The fewest events worth a range read of their own.
const MIN_RANGE: u64 = 500;

/// Range reads of one load running at once, by default. Two suit a small database server:
/// both of its cores send rows while this process decodes.
const LOAD_PARALLELISM: usize = 2;

/// A read of a range of versions of a stream, running (on another worker) while earlier events are
/// applied; it decodes each event as the store hands it over. Dropped (the load failed or was
/// cancelled), it stops the read.
struct Prefetch<E>(tokio::task::JoinHandle<Result<Vec<(u64, E)>>>);

impl<E: DomainEvent> Prefetch<E> {
    fn start(
        store: Arc<dyn EventStore>,
        stream: StreamId,
        from_version: u64,
        to_version: u64,
    ) -> Self {
        Prefetch(tokio::spawn(async move {
            // NOTE: sized for the whole range at once (at most MAX_RANGE events), rather than
            // grown and copied piece by piece.
            let expected = to_version.saturating_sub(from_version).saturating_add(1);
            let mut decoded = Vec::with_capacity(expected.min(MAX_RANGE) as usize);
            store
                .read_stream_into(&stream, from_version..=to_version, &mut |item| {
                    if let StreamItem::Event(e) = item {
                        decoded.push((e.stream_version, decode_loaded(&stream, &e)?));
                    }
                    Ok(())
                })
                .await?;
            Ok(decoded)
        }))
    }

    async fn finish(mut self) -> Result<Vec<(u64, E)>> {
        (&mut self.0).await.map_err(Error::backend)?
    }
}

impl<E> Drop for Prefetch<E> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The range reads of a load beyond its first read, planned once the stream's version is known.
struct RangeReads<E> {
    /// The first version not asked for yet.
    next: u64,
    /// The stream's version, once the first read has told it.
    head: Option<u64>,
    /// Versions per range read.
    range: u64,
    parallel: usize,
    reads: std::collections::VecDeque<Prefetch<E>>,
}

impl<E: DomainEvent> RangeReads<E> {
    fn new(next: u64, parallel: usize) -> Self {
        RangeReads {
            next,
            head: None,
            range: MIN_RANGE,
            parallel,
            reads: std::collections::VecDeque::with_capacity(parallel),
        }
    }

    /// Learns the stream's version (the first time only) and starts the first range reads.
    fn begin(&mut self, store: &Arc<dyn EventStore>, stream: &StreamId, head: u64) {
        if self.head.is_some() {
            return;
        }
        self.head = Some(head);
        if self.next <= head {
            self.range =
                ((head + 1 - self.next) / self.parallel as u64).clamp(MIN_RANGE, MAX_RANGE);
        }
        self.fill(store, stream);
    }

    /// Keeps `parallel` reads in flight until the stream's version is reached.
    fn fill(&mut self, store: &Arc<dyn EventStore>, stream: &StreamId) {
        let Some(head) = self.head else { return };
        while self.reads.len() < self.parallel && self.next <= head {
            let to = head.min(self.next + self.range - 1);
            self.reads.push_back(Prefetch::start(
                store.clone(),
                stream.clone(),
                self.next,
                to,
            ));
            self.next = to + 1;
        }
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
        self.cache = Some(Mutex::new(Cache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
        }));
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

    /// Loads aggregate `id` from the store (snapshot, then later events): its state and version.
    pub async fn load(&self, id: &str) -> Result<(A, u64)> {
        let stream = Self::stream(id);
        let (mut state, mut version) = (A::default(), 0);
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

    /// Applies the stream's events after `version` to `state`.
    ///
    /// The first read covers a short stream whole and tells the stream's version; a longer
    /// stream is read up to that version in ranges, [`load_parallelism`] at a time, starting as
    /// soon as the first read has told the version. Each range is decoded event by event as the
    /// store hands it over, straight from the payload's text, on its own task, and applied in
    /// order. Events are immutable once
    /// written, so ranges read in separate round trips join up exactly.
    ///
    /// [`load_parallelism`]: Self::with_load_parallelism
    async fn catch_up(&self, stream: &StreamId, state: &mut A, version: &mut u64) -> Result<()> {
        let from = *version + 1;
        let store = &self.store;
        let mut rest = RangeReads::<A::Event>::new(from + FIRST_RANGE, self.load_parallelism);
        let head = store
            .read_stream_into(
                stream,
                from..=from + FIRST_RANGE - 1,
                &mut |item| match item {
                    StreamItem::Version(head) => {
                        rest.begin(store, stream, head);
                        Ok(())
                    }
                    StreamItem::Event(e) => {
                        let event = decode_loaded::<A::Event>(stream, &e)?;
                        apply_next(stream, state, version, e.stream_version, &event)
                    }
                },
            )
            .await?;
        rest.begin(store, stream, head);
        while let Some(read) = rest.reads.pop_front() {
            for (event_version, event) in read.finish().await? {
                apply_next(stream, state, version, event_version, &event)?;
            }
            rest.fill(store, stream);
        }
        Ok(())
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
    pub async fn execute_with(
        &self,
        id: &str,
        command: &A::Command,
        options: CommandOptions,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        let stream = Self::stream(id);
        let command_id = options.command();
        if let Some(cid) = command_id
            && let Some(prev) = self.store.command_result(&stream, cid).await?
        {
            return Ok(repeated(prev.version, prev.position));
        }
        let mut metadata = options.metadata;
        if metadata.causation_id.is_none() {
            metadata.causation_id = options.command_id;
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
                return Ok(CommandOutcome {
                    version,
                    position: 0,
                    events: 0,
                    duplicate: false,
                });
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
                    return Ok(CommandOutcome {
                        version: res.version,
                        position: res.position,
                        events: count,
                        duplicate: false,
                    });
                }
                // NOTE: a stale cached state is not a conflict the caller ran into (without the
                // cache the stream would have been read afresh): decide again at once, without
                // spending an attempt.
                Err(e) if e.is_conflict() && hit => {
                    self.evict(id);
                    trust_cache = false;
                }
                Err(e) if e.is_conflict() && attempt < self.retry.max_attempts => {
                    self.evict(id);
                    trust_cache = false;
                    let wait = self
                        .retry
                        .backoff
                        .saturating_mul(1 << (attempt - 1).min(16));
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

    fn cached(&self, id: &str, trust: bool) -> Option<(A, u64)> {
        if !trust {
            return None;
        }
        let cache = self.cache.as_ref()?.lock().expect("cache lock");
        cache.entries.get(id).map(|(v, a)| (a.clone(), *v))
    }

    fn evict(&self, id: &str) {
        if let Some(c) = &self.cache {
            c.lock().expect("cache lock").entries.remove(id);
        }
    }

    /// Keeps `state` at `version` for aggregate `id`, unless the cache holds a later version
    /// already (two commands of this handler on one aggregate may finish out of order).
    fn remember(&self, id: &str, version: u64, state: &A) {
        let Some(c) = &self.cache else { return };
        let mut c = c.lock().expect("cache lock");
        match c.entries.get(id) {
            Some((held, _)) if *held >= version => return,
            Some(_) => {}
            None if c.entries.len() >= c.capacity => {
                // NOTE: dropping an arbitrary entry is enough: a miss costs one stream read.
                if let Some(k) = c.entries.keys().next().cloned() {
                    c.entries.remove(&k);
                }
            }
            None => {}
        }
        c.entries.insert(id.to_owned(), (version, state.clone()));
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

/// Decodes a loaded event of `stream` straight from its JSON text.
fn decode_loaded<E: DomainEvent>(stream: &StreamId, e: &StreamEvent) -> Result<E> {
    e.decode(stream)
}

/// Applies the event of version `event_version` to `state` at `version`; an event at or below
/// the version already applied means the store returned events out of order.
fn apply_next<A: Aggregate>(
    stream: &StreamId,
    state: &mut A,
    version: &mut u64,
    event_version: u64,
    event: &A::Event,
) -> Result<()> {
    if event_version <= *version {
        return Err(Error::Corrupt {
            stream: stream.clone(),
            version: event_version,
            reason: format!("the store returned it after version {version}"),
        });
    }
    state.apply(event);
    *version = event_version;
    Ok(())
}

fn command_events<A: Aggregate>(
    state: &A,
    command: &A::Command,
) -> Result<Vec<A::Event>, CommandError<A::Error>> {
    state.handle(command).map_err(CommandError::Rejected)
}

/// The answer to a command id handled before: its first result, nothing appended now.
fn repeated(version: u64, position: u64) -> CommandOutcome {
    CommandOutcome {
        version,
        position,
        events: 0,
        duplicate: true,
    }
}

/// A deterministic command id for the command a handler issues in reaction to an event.
///
/// Process managers use it so that handling the same event twice (after a crash between the
/// command and the checkpoint) issues the same command id, which the store appends only once.
pub fn command_id_for(event_id: Uuid, step: &str) -> Uuid {
    Uuid::new_v5(&event_id, step.as_bytes())
}
