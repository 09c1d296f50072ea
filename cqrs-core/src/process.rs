//! Process managers (sagas): react to the events of each instance of a flow with commands, many
//! instances at once, each in log order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{BoxError, Result};
use crate::event::{Cursor, RecordedEvent, StreamId};
use crate::projector::Subscriber;
use crate::store::CheckpointStore;

/// A process manager: it says which instance of its flow an event belongs to (a transfer id, a
/// correlation id) and reacts to it, typically with commands.
///
/// Run it with [`Process`], which hands it the events of different instances concurrently and
/// those of one instance in log order. Delivery is at least once (a crash, a retry or a replay
/// hands an event again), so each command takes an id derived from the event or the instance
/// ([`command_id_for`](crate::command_id_for)): the store then answers a repeat with the first
/// result and no effect. The state of an instance lives where the commands go: in an aggregate
/// it drives (its status says which step is next), which `handle` loads.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use cqrs_core::*;
///
/// /// Answers every `Asked` of an order with a `Noted`, once.
/// #[derive(Debug)]
/// struct Acknowledge(Arc<InMemoryEventStore>);
///
/// #[async_trait::async_trait]
/// impl ProcessManager for Acknowledge {
///     fn name(&self) -> &str { "acknowledge" }
///     fn instance(&self, event: &RecordedEvent) -> Option<String> {
///         (event.event_type == "Asked").then(|| event.stream.id.clone())
///     }
///     async fn handle(&self, instance: &str, event: &RecordedEvent) -> Result<(), BoxError> {
///         let reply = StreamId::new("reply", instance);
///         let noted = NewEvent::new("Noted", serde_json::json!({}));
///         // The command id comes from the event: a second delivery appends nothing.
///         let id = command_id_for(event.event_id, "note");
///         let once = Some(CommandId::new(id));
///         self.0.append(&reply, ExpectedVersion::Any, vec![noted], once).await?;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
///     .with(Process::new(Acknowledge(store.clone()), InMemoryCheckpointStore::new()))
///     .start();
/// let asked = NewEvent::new("Asked", serde_json::json!({}));
/// let out = store.append(&StreamId::new("order", "7"), ExpectedVersion::Any, vec![asked], None).await?;
/// runner.wait_for("acknowledge", out.position, Duration::from_secs(5)).await?;
/// assert_eq!(store.read_stream(&StreamId::new("reply", "7"), 0, 10).await?.len(), 1);
/// runner.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// The stable name, the key of the checkpoint and of the dead letters.
    fn name(&self) -> &str;
    /// The instance `event` belongs to, or `None` when the process has nothing to do with it.
    fn instance(&self, event: &RecordedEvent) -> Option<String>;
    /// Reacts to `event` of `instance`. Called for the events of one instance in log order,
    /// one at a time; for different instances concurrently. An error retries the event (with
    /// backoff), then parks it as a dead letter that holds back the rest of its instance.
    async fn handle(&self, instance: &str, event: &RecordedEvent) -> Result<(), BoxError>;
    /// The [`Segment`](crate::Segment) this runner of the process is, if any: it then handles
    /// only the instances the segment owns (by a stable hash of the instance), and its
    /// [`name`](ProcessManager::name) must be the segment's own
    /// ([`Segment::name`](crate::Segment::name)). The default: none, every instance.
    fn segment(&self) -> Option<crate::Segment> {
        None
    }
}

#[async_trait]
impl<P: ProcessManager + ?Sized> ProcessManager for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        (**self).instance(event)
    }
    async fn handle(&self, instance: &str, event: &RecordedEvent) -> Result<(), BoxError> {
        (**self).handle(instance, event).await
    }
    fn segment(&self) -> Option<crate::Segment> {
        (**self).segment()
    }
}

/// The stream an instance of process `process` stands for: what its dead letters hold back and
/// what a segment hashes.
fn instance_key(process: &str, instance: &str) -> StreamId {
    StreamId::new(process, instance)
}

/// Runs a [`ProcessManager`] as a [`Subscriber`]: each batch's events are grouped by instance,
/// the instances handled concurrently (at most [`with_concurrency`](Process::with_concurrency)
/// at once), the events of each in log order; the checkpoint moves past the batch once every
/// instance has finished it. A failing event is retried and parked by the runner, holding back
/// the later events of its instance only.
#[derive(Debug)]
pub struct Process<P, C> {
    manager: Arc<P>,
    checkpoints: C,
    concurrency: usize,
    /// Events handled past the saved checkpoint (id -> position): when a batch fails and the
    /// runner hands its events again one by one, those its other instances finished are not
    /// handled twice.
    done: Arc<Mutex<HashMap<Uuid, u64>>>,
}

impl<P: ProcessManager, C: CheckpointStore> Process<P, C> {
    /// Runs `manager` with its checkpoint in `checkpoints`, 32 instances at a time.
    pub fn new(manager: P, checkpoints: C) -> Self {
        Process {
            manager: Arc::new(manager),
            checkpoints,
            concurrency: 32,
            done: Arc::default(),
        }
    }

    /// Handles at most `instances` instances at once (at least 1).
    pub fn with_concurrency(mut self, instances: usize) -> Self {
        self.concurrency = instances.max(1);
        self
    }

    /// The process manager.
    pub fn manager(&self) -> &P {
        &self.manager
    }
}

#[async_trait]
impl<P: ProcessManager, C: CheckpointStore> Subscriber for Process<P, C> {
    fn name(&self) -> &str {
        self.manager.name()
    }
    fn segment(&self) -> Option<crate::Segment> {
        self.manager.segment()
    }
    fn sequence_key(&self, event: &RecordedEvent) -> StreamId {
        match self.manager.instance(event) {
            Some(i) => instance_key(self.manager.name(), &i),
            None => event.stream.clone(),
        }
    }
    async fn checkpoint(&self) -> Result<Cursor> {
        self.checkpoints.load(self.manager.name()).await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        let mut order: HashMap<String, usize> = HashMap::new();
        let mut instances: Vec<(String, Vec<RecordedEvent>)> = Vec::new();
        let done = self.done.lock().expect("lock").clone();
        for e in events {
            if done.contains_key(&e.event_id) {
                continue;
            }
            let Some(instance) = self.manager.instance(e) else {
                continue;
            };
            match order.get(&instance) {
                Some(&i) => instances[i].1.push(e.clone()),
                None => {
                    order.insert(instance.clone(), instances.len());
                    instances.push((instance, vec![e.clone()]));
                }
            }
        }
        // NOTE: every instance runs to its end (or its first failure) before the batch
        // answers, even when one fails: the runner then goes event by event, and an instance
        // still running would race its own redelivery.
        let mut first_error = None;
        let mut running = JoinSet::new();
        let mut pending = instances.into_iter();
        loop {
            while running.len() < self.concurrency {
                let Some((instance, events)) = pending.next() else {
                    break;
                };
                let (manager, done) = (self.manager.clone(), self.done.clone());
                running.spawn(async move {
                    for e in &events {
                        // NOTE: a step continues the trace of the command that wrote its
                        // event, so the commands it issues join that trace too.
                        let span = tracing::info_span!(
                            "process.step",
                            process = manager.name(),
                            instance = %instance,
                            event_id = %e.event_id,
                            event_type = %e.event_type,
                        );
                        crate::trace::continue_from(&span, e.metadata.traceparent.as_deref());
                        manager.handle(&instance, e).instrument(span).await?;
                        done.lock()
                            .expect("lock")
                            .insert(e.event_id, e.cursor.position);
                    }
                    Ok::<(), BoxError>(())
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let failed = match done {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(panic) => Some(Box::new(panic) as BoxError),
            };
            if let Some(e) = failed {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.checkpoints.save(self.manager.name(), to).await?;
        self.done
            .lock()
            .expect("lock")
            .retain(|_, position| *position > to.position);
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.done.lock().expect("lock").clear();
        self.checkpoints.reset(self.manager.name()).await?;
        Ok(())
    }
}
