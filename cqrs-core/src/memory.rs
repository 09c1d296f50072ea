//! In-memory stores: real, thread-safe implementations of every store trait, for small apps and
//! tests. They keep every guarantee of the traits; they keep nothing across restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Cursor, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use crate::event_store::{
    AllStreamReader, AppendResult, CommandId, EventAppender, Fingerprint, StreamEvent, StreamItem,
    StreamReader, StreamSink, WakeUps,
};
use crate::store::{
    CheckpointStore, DeadLetter, DeadLetterStatus, DeadLetterStore, Snapshot, SnapshotStore,
};

#[derive(Default)]
struct Log {
    /// The all-stream: the event at position p is at index p - 1.
    events: Vec<RecordedEvent>,
    /// Per stream, the all-stream indexes of its events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    commands: HashMap<(StreamId, Uuid), (AppendResult, Option<Fingerprint>)>,
    ids: HashSet<Uuid>,
}

/// An event store in memory.
///
/// Appends take one lock, so positions follow commit order and the all-stream has no gaps.
pub struct InMemoryEventStore {
    log: RwLock<Log>,
    wake: watch::Sender<u64>,
}

impl std::fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let log = self.log.read().expect("log lock");
        f.debug_struct("InMemoryEventStore")
            .field("events", &log.events.len())
            .field("streams", &log.streams.len())
            .finish()
    }
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        InMemoryEventStore {
            log: RwLock::default(),
            wake: watch::channel(0).0,
        }
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Log {
    /// The first result of `command` on `stream`, if any; an error if it was for another
    /// request.
    fn repeat(&self, stream: &StreamId, command: CommandId) -> Result<Option<AppendResult>> {
        let Some((prev, fingerprint)) = self.commands.get(&(stream.clone(), command.id)) else {
            return Ok(None);
        };
        if !command.matches(*fingerprint) {
            return Err(command.reused(stream));
        }
        Ok(Some(AppendResult {
            duplicate: true,
            ..*prev
        }))
    }
}

#[async_trait]
impl EventAppender for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        let result = {
            let mut log = self.log.write().expect("log lock");
            if let Some(command) = command
                && let Some(prev) = log.repeat(stream, command)?
            {
                return Ok(prev);
            }
            let actual = log.streams.get(stream).map_or(0, |v| v.len() as u64);
            if !expected.matches(actual) {
                return Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            let mut fresh = HashSet::with_capacity(events.len());
            if let Some(dup) = events
                .iter()
                .find(|e| log.ids.contains(&e.event_id) || !fresh.insert(e.event_id))
            {
                return Err(Error::Invalid(format!(
                    "event id {} already stored",
                    dup.event_id
                )));
            }
            let now = Utc::now();
            let mut version = actual;
            for e in events {
                version += 1;
                let e_id = e.event_id;
                let index = log.events.len();
                log.events.push(RecordedEvent {
                    event_id: e.event_id,
                    stream: stream.clone(),
                    stream_version: version,
                    cursor: Cursor::new(0, index as u64 + 1),
                    recorded_at: now,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    payload: e.payload.to_string(),
                    metadata: e.metadata,
                });
                log.streams.entry(stream.clone()).or_default().push(index);
                log.ids.insert(e_id);
            }
            let position = if version > actual {
                log.events.len() as u64
            } else {
                0
            };
            let result = AppendResult {
                version,
                position,
                duplicate: false,
            };
            if let Some(command) = command {
                log.commands
                    .insert((stream.clone(), command.id), (result, command.fingerprint));
            }
            result
        };
        if result.position > 0 {
            self.wake.send_modify(|n| *n += 1);
        }
        Ok(result)
    }

    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>> {
        self.log.read().expect("log lock").repeat(stream, command)
    }
}

#[async_trait]
impl StreamReader for InMemoryEventStore {
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: std::ops::RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64> {
        // NOTE: copied out under the lock, handed over after it: a sink may take its time.
        let (head, events) = {
            let log = self.log.read().expect("log lock");
            let indexes = log
                .streams
                .get(stream)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let head = indexes.len() as u64;
            let (from, to) = (*versions.start(), (*versions.end()).min(head));
            let events: Vec<StreamEvent> = if from > to {
                Vec::new()
            } else {
                indexes[from.max(1) as usize - 1..to as usize]
                    .iter()
                    .map(|&i| StreamEvent::from_recorded(&log.events[i]))
                    .collect()
            };
            (head, events)
        };
        sink(StreamItem::Version(head))?;
        for e in events {
            sink(StreamItem::Event(e))?;
        }
        Ok(head)
    }
}

#[async_trait]
impl AllStreamReader for InMemoryEventStore {
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        let log = self.log.read().expect("log lock");
        let start = (after.position as usize).min(log.events.len());
        Ok(log.events[start..].iter().take(limit).cloned().collect())
    }

    async fn head_position(&self) -> Result<u64> {
        Ok(self.log.read().expect("log lock").events.len() as u64)
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        let len = self.log.read().expect("log lock").events.len() as u64;
        Ok((position >= 1 && position <= len).then(|| Cursor::new(0, position)))
    }

    fn wake_ups(&self) -> WakeUps {
        self.wake.subscribe()
    }
}

/// A snapshot store in memory.
#[derive(Debug, Default)]
pub struct InMemorySnapshotStore {
    snapshots: RwLock<HashMap<StreamId, Snapshot>>,
}

impl InMemorySnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SnapshotStore for InMemorySnapshotStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        Ok(self
            .snapshots
            .read()
            .expect("snapshot lock")
            .get(stream)
            .cloned())
    }

    async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()> {
        let mut map = self.snapshots.write().expect("snapshot lock");
        match map.get(stream) {
            Some(old) if old.version >= snapshot.version => {}
            _ => {
                map.insert(stream.clone(), snapshot);
            }
        }
        Ok(())
    }
}

/// A checkpoint store in memory.
#[derive(Debug, Default)]
pub struct InMemoryCheckpointStore {
    cursors: RwLock<HashMap<String, Cursor>>,
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, name: &str) -> Result<Cursor> {
        Ok(self
            .cursors
            .read()
            .expect("checkpoint lock")
            .get(name)
            .copied()
            .unwrap_or_default())
    }

    async fn save(&self, name: &str, cursor: Cursor) -> Result<()> {
        self.cursors
            .write()
            .expect("checkpoint lock")
            .insert(name.to_owned(), cursor);
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<()> {
        self.cursors.write().expect("checkpoint lock").remove(name);
        Ok(())
    }
}

/// A dead-letter store in memory.
#[derive(Debug, Default)]
pub struct InMemoryDeadLetterStore {
    /// Keyed by (parking order, id) so that `list` gives the oldest first.
    letters: RwLock<BTreeMap<Uuid, (u64, DeadLetter)>>,
    seq: std::sync::atomic::AtomicU64,
}

impl InMemoryDeadLetterStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DeadLetterStore for InMemoryDeadLetterStore {
    async fn park(&self, mut letter: DeadLetter) -> Result<()> {
        let mut map = self.letters.write().expect("dead letter lock");
        // NOTE: one letter per subscriber and event: a repeated park updates the letter there
        // is (its id and place kept), as the database stores do with a unique key.
        let same_event = map.values().find(|(_, l)| {
            l.subscriber == letter.subscriber
                && l.event.cursor.position == letter.event.cursor.position
        });
        let seq = match same_event.or_else(|| map.get(&letter.id)) {
            Some((seq, old)) => {
                letter.id = old.id;
                *seq
            }
            None => self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        map.insert(letter.id, (seq, letter));
        Ok(())
    }

    async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>> {
        let map = self.letters.read().expect("dead letter lock");
        let mut out: Vec<_> = map
            .values()
            .filter(|(_, l)| subscriber.is_none_or(|s| l.subscriber == s))
            .cloned()
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, l)| l).collect())
    }

    async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()> {
        let mut map = self.letters.write().expect("dead letter lock");
        let (_, letter) = map
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("dead letter {id}")))?;
        letter.status = status;
        Ok(())
    }

    async fn remove(&self, id: Uuid) -> Result<()> {
        let mut map = self.letters.write().expect("dead letter lock");
        map.remove(&id)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("dead letter {id}")))
    }
}
