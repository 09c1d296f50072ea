//! Read-side consumers: projectors, and the subscriber interface the runner drives.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{BoxError, Result};
use crate::event::{Cursor, RecordedEvent};
use crate::store::CheckpointStore;

/// What the [`Runner`](crate::Runner) drives: a named consumer of the all-stream that keeps its
/// own checkpoint.
///
/// `process` handles events in order and records `to` as the new checkpoint. A transactional
/// back-end commits both together, which gives exactly-once effect; [`Checkpointed`] writes the
/// checkpoint after the handler, which gives at-least-once delivery.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// The stable name, the key of the checkpoint and of the dead letters.
    fn name(&self) -> &str;
    /// The cursor after the last event whose effect is committed.
    async fn checkpoint(&self) -> Result<Cursor>;
    /// Handles `events` in order, then records `to` as the checkpoint. `events` may be empty
    /// (only the checkpoint moves), and `to` may equal the current checkpoint (a parked event
    /// handled on retry); the checkpoint never moves backwards.
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError>;
    /// Drops the read model and the checkpoint, to rebuild from the beginning.
    async fn reset(&self) -> Result<(), BoxError>;
}

/// A named handler of events that maintains a read model.
///
/// One `handle` is all it takes; `handle_batch` can be overridden to write a batch at once in
/// fast replays. Handlers must tolerate seeing an event again after a crash (at-least-once),
/// unless run by a transactional subscriber of a back-end.
///
/// ```
/// use std::sync::Mutex;
/// use cqrs_core::{BoxError, Projector, RecordedEvent};
///
/// #[derive(Debug, Default)]
/// struct EventCount(Mutex<u64>);
///
/// #[async_trait::async_trait]
/// impl Projector for EventCount {
///     fn name(&self) -> &str { "event_count" }
///     async fn handle(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
///         *self.0.lock().unwrap() += 1;
///         Ok(())
///     }
///     async fn reset(&self) -> Result<(), BoxError> {
///         *self.0.lock().unwrap() = 0;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projector: Send + Sync {
    /// The stable name.
    fn name(&self) -> &str;
    /// Handles one event.
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError>;
    /// Handles events in order; by default one by one.
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        for e in events {
            self.handle(e).await?;
        }
        Ok(())
    }
    /// Empties the read model before a rebuild. The default does nothing.
    async fn reset(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

#[async_trait]
impl<P: Projector + ?Sized> Projector for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        (**self).handle(event).await
    }
    async fn handle_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        (**self).handle_batch(events).await
    }
    async fn reset(&self) -> Result<(), BoxError> {
        (**self).reset().await
    }
}

#[async_trait]
impl<S: Subscriber + ?Sized> Subscriber for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        (**self).checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        (**self).process(events, to).await
    }
    async fn reset(&self) -> Result<(), BoxError> {
        (**self).reset().await
    }
}

/// Runs a [`Projector`] with its checkpoint in a [`CheckpointStore`], saved after each handled
/// batch: at-least-once delivery.
#[derive(Debug)]
pub struct Checkpointed<P, C> {
    projector: P,
    checkpoints: C,
}

impl<P: Projector, C: CheckpointStore> Checkpointed<P, C> {
    /// Pairs a projector with a checkpoint store.
    pub fn new(projector: P, checkpoints: C) -> Self {
        Checkpointed {
            projector,
            checkpoints,
        }
    }

    /// The projector.
    pub fn projector(&self) -> &P {
        &self.projector
    }

    /// The projector, to configure it after pairing (as a broker bridge's builder does).
    pub fn projector_mut(&mut self) -> &mut P {
        &mut self.projector
    }
}

#[async_trait]
impl<P: Projector, C: CheckpointStore> Subscriber for Checkpointed<P, C> {
    fn name(&self) -> &str {
        self.projector.name()
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.checkpoints.load(self.projector.name()).await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        if !events.is_empty() {
            self.projector.handle_batch(events).await?;
        }
        // NOTE: `to` never lies behind the saved checkpoint (the runner guarantees it), so the
        // save needs no read first.
        self.checkpoints.save(self.projector.name(), to).await?;
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.projector.reset().await?;
        self.checkpoints.reset(self.projector.name()).await?;
        Ok(())
    }
}
