//! Upcasting: old stored event shapes turned into the current one on read.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{BoxError, Result};
use crate::event::{Cursor, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use crate::event_store::{
    AllStreamReader, AppendResult, CommandId, EventAppender, EventStore, StreamEvent, StreamItem,
    StreamReader, StreamSink, WakeUps,
};

type UpcastFn = dyn Fn(Value) -> Result<Value, BoxError> + Send + Sync;

/// A chain of upcasters, keyed by event type and the schema version they read.
///
/// Each step turns version `n` of a type into version `n + 1`; on read, steps run until no step
/// is registered for the event's version.
///
/// ```
/// use cqrs_core::Upcasters;
/// use serde_json::json;
///
/// // v1 had `cents`; v2 calls it `amount`.
/// let up = Upcasters::new().register("Deposited", 1, |mut v| {
///     let cents = v["cents"].take();
///     Ok(json!({ "amount": cents }))
/// });
/// let (version, payload) = up.upcast("Deposited", 1, json!({"cents": 5}))?;
/// assert_eq!((version, payload), (2, json!({"amount": 5})));
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Arc<UpcastFn>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.steps.keys()).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step from `from_version` of `event_type` to the next version.
    pub fn register(
        mut self,
        event_type: &str,
        from_version: u32,
        step: impl Fn(Value) -> Result<Value, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.to_owned(), from_version), Arc::new(step));
        self
    }

    /// Whether a step reads version `version` of `event_type`.
    pub fn applies(&self, event_type: &str, version: u32) -> bool {
        !self.steps.is_empty() && self.steps.contains_key(&(event_type.to_owned(), version))
    }

    /// Runs every step that applies; returns the final version and payload.
    pub fn upcast(
        &self,
        event_type: &str,
        mut version: u32,
        mut payload: Value,
    ) -> Result<(u32, Value), BoxError> {
        while let Some(step) = self.steps.get(&(event_type.to_owned(), version)) {
            payload = step(payload)?;
            version += 1;
        }
        Ok((version, payload))
    }

    /// Upcasts a recorded event in place; a failing step gives a decode error naming the event.
    /// Only an event with a step is parsed; the rest keep their text.
    pub fn apply(&self, event: &mut RecordedEvent) -> Result<()> {
        self.upcast_text(
            &event.event_type,
            &mut event.schema_version,
            &mut event.payload,
        )
        .map_err(|e| event.decode_error(e))
    }

    /// Upcasts a payload held as text in place, parsing it only when a step applies.
    fn upcast_text(
        &self,
        event_type: &str,
        version: &mut u32,
        payload: &mut String,
    ) -> Result<(), BoxError> {
        if !self.applies(event_type, *version) {
            return Ok(());
        }
        let (v, p) = self.upcast(event_type, *version, serde_json::from_str(payload)?)?;
        (*version, *payload) = (v, p.to_string());
        Ok(())
    }
}

/// An event store that upcasts every event it reads. Wrap a back-end in it and hand it to the
/// command handlers and runners.
#[derive(Debug)]
pub struct UpcastingStore<S> {
    inner: S,
    upcasters: Upcasters,
}

impl<S: EventStore> UpcastingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, upcasters: Upcasters) -> Self {
        UpcastingStore { inner, upcasters }
    }

    /// Upcasts an event of `stream` read as text; only an event with a step is parsed, the
    /// rest keep their text.
    fn up_text(&self, stream: &StreamId, e: &mut StreamEvent) -> Result<()> {
        self.upcasters
            .upcast_text(&e.event_type, &mut e.schema_version, &mut e.payload)
            .map_err(|err| e.decode_error(stream, err))
    }
}

#[async_trait]
impl<S: EventStore> EventAppender for UpcastingStore<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events, command).await
    }
    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>> {
        self.inner.command_result(stream, command).await
    }
}

#[async_trait]
impl<S: EventStore> StreamReader for UpcastingStore<S> {
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64> {
        self.inner
            .read_stream_into(stream, versions, &mut |item| match item {
                StreamItem::Event(mut e) => {
                    self.up_text(stream, &mut e)?;
                    sink(StreamItem::Event(e))
                }
                version => sink(version),
            })
            .await
    }
}

#[async_trait]
impl<S: EventStore> AllStreamReader for UpcastingStore<S> {
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut events = self.inner.read_all(after, limit).await?;
        for e in &mut events {
            // NOTE: a subscriber must not stall on one bad event: it gets the stored shape, fails
            // to decode it, and the runner parks it with that error.
            if let Err(err) = self.upcasters.apply(e) {
                tracing::warn!(error = %err, "upcast failed; passing the event on as stored");
            }
        }
        Ok(events)
    }
    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }
    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        self.inner.cursor_of(position).await
    }
    fn wake_ups(&self) -> WakeUps {
        self.inner.wake_ups()
    }
}
