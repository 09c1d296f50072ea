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
use crate::store::{
    AppendResult, CheckpointStore, DeadLetter, DeadLetterStatus, DeadLetterStore, EventStore,
    Snapshot, SnapshotStore, WakeUps,
};

#[derive(Default)]
struct Log {
    /// The all-stream: the event at position p is at index p - 1.
    events: Vec<RecordedEvent>,
    /// Per stream, the all-stream indexes of its events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    commands: HashMap<(StreamId, Uuid), AppendResult>,
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

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command_id: Option<Uuid>,
    ) -> Result<AppendResult> {
        let result = {
            let mut log = self.log.write().expect("log lock");
            if let Some(cid) = command_id
                && let Some(prev) = log.commands.get(&(stream.clone(), cid))
            {
                return Ok(AppendResult {
                    duplicate: true,
                    ..*prev
                });
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
                    payload: e.payload,
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
            if let Some(cid) = command_id {
                log.commands.insert((stream.clone(), cid), result);
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
        command_id: Uuid,
    ) -> Result<Option<AppendResult>> {
        let log = self.log.read().expect("log lock");
        Ok(log
            .commands
            .get(&(stream.clone(), command_id))
            .map(|r| AppendResult {
                duplicate: true,
                ..*r
            }))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.log.read().expect("log lock");
        let Some(indexes) = log.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| log.events[i].clone())
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let log = self.log.read().expect("log lock");
        Ok(log.streams.get(stream).map_or(0, |v| v.len() as u64))
    }

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
