//! Read-side consumers: projectors, and the subscriber interface the runner drives.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{BoxError, Error, Result};
use crate::event::{Cursor, RecordedEvent};
use crate::store::{CheckpointStore, DeadLetter, DeadLetterStore};

/// What the [`Runner`](crate::Runner) drives: a named consumer of the all-stream that keeps its
/// own checkpoint.
///
/// `process` handles events in order and records `to` as the new checkpoint. A transactional
/// back-end commits both together, which gives exactly-once effect; [`Checkpointed`] writes the
/// checkpoint after the handler, which gives at-least-once delivery.
///
/// Dead letters go through the subscriber too ([`park`](Subscriber::park),
/// [`retry`](Subscriber::retry), [`reset_all`](Subscriber::reset_all)), so that a back-end whose
/// dead letters live in the read model's database does each in the transaction of the read
/// model: a letter is parked in the transaction that moves the checkpoint past its event, and
/// removed in the one that applies it, so a crash in between neither parks an event twice nor
/// applies a retried one twice. The defaults take two steps through the runner's
/// [`DeadLetterStore`] (at-least-once, and idempotent by subscriber and event, as the store's
/// `park` is).
///
/// A subscriber fenced by a lease returns [`Error::FencedOut`] (boxed) from these methods once
/// another process holds its lease; the runner then stops the batch without parking anything.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// The stable name, the key of the checkpoint and of the dead letters.
    fn name(&self) -> &str;
    /// Whether a parked event holds back the rest of its stream (the default): its stream's
    /// later events are parked behind it as [held](crate::DeadLetterStatus::Held) letters,
    /// and delivered in order once it is retried or removed, so that the subscriber sees
    /// every stream in order. Return `false` (unsequenced) where order does not matter: a
    /// parked event then lets its stream's later events pass.
    fn sequenced(&self) -> bool {
        true
    }
    /// The [`Segment`](crate::Segment) of a partitioned projector this subscriber is, if any
    /// (the default: none, every event). The runner and replays then hand it only the events
    /// of the streams the segment owns; its [`name`](Subscriber::name) must be the segment's
    /// own ([`Segment::name`](crate::Segment::name)), the key of its checkpoint, lease and
    /// dead letters.
    fn segment(&self) -> Option<crate::Segment> {
        None
    }
    /// What orders `event` for this subscriber (the default: its stream): a parked event holds
    /// back the later events of its sequence, and a [segment](Subscriber::segment) owns whole
    /// sequences. A [`Process`](crate::Process) orders by instance.
    fn sequence_key(&self, event: &RecordedEvent) -> crate::StreamId {
        event.stream.clone()
    }
    /// Prepares the read model (creates its tables, say) before anything else is asked of the
    /// subscriber. The [`Runner`](crate::Runner) runs it once per start, before it reads the
    /// checkpoint or delivers the first event (retrying it while it fails, the error shown in
    /// the status), and [`Replay`](crate::Replay) runs it before the reset; wait for it with
    /// [`RunnerHandle::ready`](crate::RunnerHandle::ready). It must be idempotent
    /// (`CREATE TABLE IF NOT EXISTS`): it runs at every start, maybe in several processes at
    /// once. The default does nothing.
    async fn setup(&self) -> Result<(), BoxError> {
        Ok(())
    }
    /// The cursor after the last event whose effect is committed.
    async fn checkpoint(&self) -> Result<Cursor>;
    /// Handles `events` in order, then records `to` as the checkpoint. `events` may be empty
    /// (only the checkpoint moves), and `to` may equal the current checkpoint (a parked event
    /// handled on retry); the checkpoint never moves backwards.
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError>;
    /// Drops the read model and the checkpoint, to rebuild from the beginning.
    async fn reset(&self) -> Result<(), BoxError>;
    /// Parks `letter` (its event failed for good) and moves the checkpoint to `to`, the
    /// event's cursor. The default parks in `dead_letters`, then moves the checkpoint with an
    /// empty [`process`](Subscriber::process); a transactional back-end does both in one
    /// transaction.
    async fn park(
        &self,
        letter: DeadLetter,
        to: Cursor,
        dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        dead_letters.park(letter).await?;
        self.process(&[], to).await
    }
    /// Handles a parked event again (the checkpoint stays at `current`) and removes its
    /// letter. The default processes the event, then removes the letter from `dead_letters`
    /// (a letter already gone, skipped meanwhile, is no error); a transactional back-end does
    /// both in one transaction. On an error the letter stays, and the runner parks it again.
    async fn retry(
        &self,
        letter: &DeadLetter,
        current: Cursor,
        dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        self.process(std::slice::from_ref(&letter.event), current)
            .await?;
        match dead_letters.remove(letter.id).await {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    /// [`reset`](Subscriber::reset), and removes the subscriber's dead letters, so that a
    /// rebuild starts with a clean set (an old letter retried after it would apply its event
    /// twice). The default resets, then clears `dead_letters`; a transactional back-end does
    /// both in one transaction.
    async fn reset_all(&self, dead_letters: &dyn DeadLetterStore) -> Result<(), BoxError> {
        self.reset().await?;
        dead_letters.clear(self.name()).await?;
        Ok(())
    }
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
    /// Whether a parked event holds back the rest of its stream; see
    /// [`Subscriber::sequenced`]. The default is `true`.
    fn sequenced(&self) -> bool {
        true
    }
    /// The segment of a partitioned projector this one is, if any; see
    /// [`Subscriber::segment`]. The default is none.
    fn segment(&self) -> Option<crate::Segment> {
        None
    }
    /// Prepares the read model before the first event (see [`Subscriber::setup`]): run once
    /// per start by the runner, and by a replay; must be idempotent. The default does nothing.
    async fn setup(&self) -> Result<(), BoxError> {
        Ok(())
    }
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
    fn sequenced(&self) -> bool {
        (**self).sequenced()
    }
    fn segment(&self) -> Option<crate::Segment> {
        (**self).segment()
    }
    async fn setup(&self) -> Result<(), BoxError> {
        (**self).setup().await
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
    fn sequenced(&self) -> bool {
        (**self).sequenced()
    }
    fn segment(&self) -> Option<crate::Segment> {
        (**self).segment()
    }
    fn sequence_key(&self, event: &RecordedEvent) -> crate::StreamId {
        (**self).sequence_key(event)
    }
    async fn setup(&self) -> Result<(), BoxError> {
        (**self).setup().await
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
    async fn park(
        &self,
        letter: DeadLetter,
        to: Cursor,
        dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        (**self).park(letter, to, dead_letters).await
    }
    async fn retry(
        &self,
        letter: &DeadLetter,
        current: Cursor,
        dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        (**self).retry(letter, current, dead_letters).await
    }
    async fn reset_all(&self, dead_letters: &dyn DeadLetterStore) -> Result<(), BoxError> {
        (**self).reset_all(dead_letters).await
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
    fn sequenced(&self) -> bool {
        self.projector.sequenced()
    }
    fn segment(&self) -> Option<crate::Segment> {
        self.projector.segment()
    }
    async fn setup(&self) -> Result<(), BoxError> {
        self.projector.setup().await
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
