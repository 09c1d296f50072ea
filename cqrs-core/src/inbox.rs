//! Inboxes: exactly-once effect for events that arrive from outside the store (a broker), by
//! remembering the ids of handled events.

use std::collections::HashSet;

use async_trait::async_trait;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::error::BoxError;
use crate::event::RecordedEvent;
use crate::projector::Projector;

/// A named consumer of events delivered from outside the event store, at least once and in no
/// guaranteed order across streams. It deduplicates by event id: the handler's effect and the
/// id's record commit together, so a redelivered event has no second effect.
#[async_trait]
pub trait InboxSubscriber: Send + Sync {
    /// The stable name; each name has its own inbox.
    fn name(&self) -> &str;
    /// Handles `event` unless its id is in the inbox, and records the id, atomically. Returns
    /// `false` (and does nothing) for an event handled before.
    async fn handle_once(&self, event: &RecordedEvent) -> Result<bool, BoxError>;
}

/// An inbox in memory around a [`Projector`]: the handler and the id's record happen under one
/// lock, so a redelivered event is skipped.
#[derive(Debug)]
pub struct InMemoryInbox<P> {
    projector: P,
    seen: Mutex<HashSet<Uuid>>,
}

impl<P: Projector> InMemoryInbox<P> {
    /// Wraps a projector with an empty inbox.
    pub fn new(projector: P) -> Self {
        InMemoryInbox {
            projector,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The projector.
    pub fn projector(&self) -> &P {
        &self.projector
    }
}

#[async_trait]
impl<P: Projector> InboxSubscriber for InMemoryInbox<P> {
    fn name(&self) -> &str {
        self.projector.name()
    }

    async fn handle_once(&self, event: &RecordedEvent) -> Result<bool, BoxError> {
        let mut seen = self.seen.lock().await;
        if seen.contains(&event.event_id) {
            return Ok(false);
        }
        self.projector.handle(event).await?;
        seen.insert(event.event_id);
        Ok(true)
    }
}

#[async_trait]
impl<S: InboxSubscriber + ?Sized> InboxSubscriber for std::sync::Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn handle_once(&self, event: &RecordedEvent) -> Result<bool, BoxError> {
        (**self).handle_once(event).await
    }
}
