//! The load path: a stream's events after a snapshot, read in ranges running in parallel and
//! decoded straight from their text.

use std::sync::Arc;

use super::CommandHandler;
use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::event::{DomainEvent, StreamId};
use crate::event_store::{EventStore, StreamEvent, StreamItem};

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
pub(super) const LOAD_PARALLELISM: usize = 2;

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
    pub(super) async fn catch_up(
        &self,
        stream: &StreamId,
        state: &mut A,
        version: &mut u64,
    ) -> Result<()> {
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
