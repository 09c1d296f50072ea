//! The companion storage traits every back-end implements beside the event store (see
//! `event_store.rs`), at the serialized level: a back-end knows no user types.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Result;
use crate::event::{Cursor, RecordedEvent, StreamId};

// NOTE: the event store's traits moved to `event_store.rs`; this keeps the runner's and the
// replay's imports working.
pub(crate) use crate::event_store::EventStore;

/// A saved aggregate state, to shorten loads of long streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream version the state includes.
    pub version: u64,
    /// The serialized aggregate state.
    pub state: Value,
    /// A version tag of the state's shape; a snapshot with another tag is ignored.
    pub schema: u32,
}

/// Keeps the latest snapshot per stream.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `stream`, if any.
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>>;
    /// Saves a snapshot, replacing an older one (a snapshot never moves backwards).
    async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()>;
}

/// Keeps each subscriber's cursor, by subscriber name.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The saved cursor of `name`, or [`Cursor::START`].
    async fn load(&self, name: &str) -> Result<Cursor>;
    /// Saves `name`'s cursor.
    async fn save(&self, name: &str, cursor: Cursor) -> Result<()>;
    /// Forgets `name`'s cursor, so it starts again from the beginning.
    async fn reset(&self, name: &str) -> Result<()>;
}

/// The state of a parked event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeadLetterStatus {
    /// Parked, waiting for an operator.
    Parked,
    /// An operator asked for another try; the runner of its subscriber will pick it up.
    RetryRequested,
    /// Held behind an earlier dead letter of its stream (a [sequenced] subscriber keeps a
    /// stream's order): delivered by the runner once the letters before it are handled or
    /// removed. Its error names the event it waits behind.
    ///
    /// [sequenced]: crate::Subscriber::sequenced
    Held,
}

/// An event a subscriber could not handle, parked with the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id of the dead letter.
    pub id: Uuid,
    /// The subscriber that failed.
    pub subscriber: String,
    /// The event it failed on.
    pub event: RecordedEvent,
    /// The last error, as text.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked (or parked again).
    pub parked_at: DateTime<Utc>,
    /// Parked or waiting for a retry.
    pub status: DeadLetterStatus,
}

/// Keeps dead letters: at most one per subscriber and event.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Parks a dead letter. Idempotent by subscriber and event: when the subscriber already has
    /// a letter for the event (same global position), that letter is updated (error, attempts,
    /// time, status) and keeps its id and its place in the order, so a park repeated after a
    /// crash never makes a second letter.
    async fn park(&self, letter: DeadLetter) -> Result<()>;
    /// Dead letters, of one subscriber or of all, oldest first.
    async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>>;
    /// Sets a dead letter's status; [`Error::NotFound`](crate::Error::NotFound) if there is none.
    async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()>;
    /// Removes a dead letter (handled at last, or skipped); [`Error::NotFound`](crate::Error::NotFound) if there is none.
    async fn remove(&self, id: Uuid) -> Result<()>;
    /// How many dead letters each subscriber has (subscribers with none are left out). Stores
    /// override it to count without reading the letters; the default lists them all.
    async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for letter in self.list(None).await? {
            *counts.entry(letter.subscriber).or_insert(0) += 1;
        }
        Ok(counts)
    }
    /// The letter of `subscriber` for the event at global `position`, if any. Stores override
    /// it to read only that one; the default lists the subscriber's letters.
    async fn find(&self, subscriber: &str, position: u64) -> Result<Option<DeadLetter>> {
        let letters = self.list(Some(subscriber)).await?;
        Ok(letters
            .into_iter()
            .find(|l| l.event.cursor.position == position))
    }
    /// Removes every letter of `subscriber` (its read model is rebuilt from zero); returns how
    /// many. Stores override it to delete at once; the default removes them one by one.
    async fn clear(&self, subscriber: &str) -> Result<u64> {
        let mut n = 0;
        for letter in self.list(Some(subscriber)).await? {
            match self.remove(letter.id).await {
                Ok(()) => n += 1,
                Err(crate::Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
    /// The dead letters of `subscriber` an operator asked to retry, oldest first. Stores
    /// override it to read only those; the default lists the subscriber's letters and keeps
    /// them.
    async fn retry_requested(&self, subscriber: &str) -> Result<Vec<DeadLetter>> {
        let mut letters = self.list(Some(subscriber)).await?;
        letters.retain(|l| l.status == DeadLetterStatus::RetryRequested);
        Ok(letters)
    }
}

macro_rules! forward {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<T: SnapshotStore + ?Sized> SnapshotStore for $ptr {
            async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
                (**self).load(stream).await
            }
            async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()> {
                (**self).save(stream, snapshot).await
            }
        }

        #[async_trait]
        impl<T: CheckpointStore + ?Sized> CheckpointStore for $ptr {
            async fn load(&self, name: &str) -> Result<Cursor> {
                (**self).load(name).await
            }
            async fn save(&self, name: &str, cursor: Cursor) -> Result<()> {
                (**self).save(name, cursor).await
            }
            async fn reset(&self, name: &str) -> Result<()> {
                (**self).reset(name).await
            }
        }

        #[async_trait]
        impl<T: DeadLetterStore + ?Sized> DeadLetterStore for $ptr {
            async fn park(&self, letter: DeadLetter) -> Result<()> {
                (**self).park(letter).await
            }
            async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>> {
                (**self).list(subscriber).await
            }
            async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()> {
                (**self).set_status(id, status).await
            }
            async fn remove(&self, id: Uuid) -> Result<()> {
                (**self).remove(id).await
            }
            async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
                (**self).counts().await
            }
            async fn retry_requested(&self, subscriber: &str) -> Result<Vec<DeadLetter>> {
                (**self).retry_requested(subscriber).await
            }
            async fn find(&self, subscriber: &str, position: u64) -> Result<Option<DeadLetter>> {
                (**self).find(subscriber, position).await
            }
            async fn clear(&self, subscriber: &str) -> Result<u64> {
                (**self).clear(subscriber).await
            }
        }
    )*};
}

forward!(&T, Arc<T>, Box<T>);
