//! Handing batches to a subscriber: retries with backoff, parking poison events, and a lost
//! lease told apart from a failure. Shared by the live runner and by replays.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result, error_chain, is_fenced_out};
use crate::event::{Cursor, RecordedEvent, StreamId};
use crate::projector::Subscriber;
use crate::runner::{RunnerConfig, SubState};
use crate::store::{DeadLetter, DeadLetterStatus, DeadLetterStore};

/// Hands batches to a subscriber, retrying a failing event with backoff and parking it as a dead
/// letter once its tries are spent. Shared by the live runner and by replays.
///
/// For a [sequenced](Subscriber::sequenced) subscriber, a parked event holds back its stream:
/// the stream's later events are parked behind it as [held](DeadLetterStatus::Held) letters
/// while other streams go on, and are delivered in order once the letters before them are
/// handled or removed.
#[derive(Clone)]
pub(crate) struct Processor {
    pub(crate) dead_letters: Arc<dyn DeadLetterStore>,
    pub(crate) config: RunnerConfig,
    /// Where a live runner shows the last failure of its subscriber (none in a replay).
    pub(crate) status: Option<Arc<SubState>>,
    /// The streams held back by a letter, with their first letter (sequenced subscribers).
    pub(crate) blocked: HashMap<StreamId, Blocker>,
}

/// The first dead letter of a stream, which its later events wait behind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocker {
    event_id: Uuid,
    version: u64,
}

impl Blocker {
    fn of(letter: &DeadLetter) -> Self {
        Blocker {
            event_id: letter.event.event_id,
            version: letter.event.stream_version,
        }
    }
}

/// What [`Processor::process`] did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The cursor after the last event passed (handled or parked); `None` if none was.
    pub(crate) cursor: Option<Cursor>,
    /// Events handled (committed), parked events not included.
    pub(crate) handled: u64,
    /// Events parked as dead letters (held ones included).
    pub(crate) parked: u64,
    /// The subscriber was fenced out (its lease taken over): the batch stopped there, nothing
    /// of the fenced call committed, and the lease must be acquired again.
    pub(crate) fenced: bool,
}

/// Whether to go on with a batch.
enum Flow {
    Go,
    /// Fenced out or asked to stop: the outcome says how far it got.
    Stop,
}

/// What became of a dead letter handed to its subscriber again.
enum Redelivered {
    /// Handled (or gone meanwhile: handled elsewhere, or skipped).
    Done,
    /// Failed again, and parked again.
    Parked,
    /// The subscriber was fenced out.
    Fenced,
}

impl Processor {
    /// A processor parking in `dead_letters`.
    pub(crate) fn new(dead_letters: Arc<dyn DeadLetterStore>, config: RunnerConfig) -> Self {
        Processor {
            dead_letters,
            config,
            status: None,
            blocked: HashMap::new(),
        }
    }

    /// Learns which streams the dead letters of `sub` hold back (when it takes `sub` over).
    pub(crate) async fn load_blocked(&mut self, sub: &dyn Subscriber) -> Result<()> {
        self.blocked.clear();
        if sub.sequenced() {
            for letter in self.dead_letters.list(Some(sub.name())).await? {
                self.blocked
                    .entry(sub.sequence_key(&letter.event))
                    .or_insert(Blocker::of(&letter));
            }
        }
        self.show_blocked();
        Ok(())
    }

    fn show_blocked(&self) {
        if let Some(status) = &self.status {
            status
                .blocked
                .store(self.blocked.len() as u64, Ordering::Relaxed);
        }
    }

    /// Processes `batch` (non-empty, read from the all-stream). Stops early (returning how far
    /// it got) when `stop` turns true, and at once when the subscriber is fenced out. A
    /// [segment](Subscriber::segment) is handed only its own streams' events, and its
    /// checkpoint then moves past the rest of the batch.
    pub(crate) async fn process(
        &mut self,
        sub: &dyn Subscriber,
        mut batch: Vec<RecordedEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Outcome> {
        let last = batch.last().expect("non-empty batch").cursor;
        let Some(segment) = sub.segment() else {
            return self.process_events(sub, &batch, stop).await;
        };
        batch.retain(|e| segment.owns(&sub.sequence_key(e)));
        let mut out = if batch.is_empty() {
            Outcome::default()
        } else {
            self.process_events(sub, &batch, stop).await?
        };
        let all_passed = out.cursor == batch.last().map(|e| e.cursor);
        if !out.fenced && all_passed && out.cursor != Some(last) {
            match sub.process(&[], last).await {
                Ok(()) => out.cursor = Some(last),
                Err(e) if is_fenced_out(&*e) => out.fenced = true,
                Err(source) => {
                    return Err(Error::Handler {
                        handler: sub.name().to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Processes `batch` (non-empty), all of it the subscriber's.
    async fn process_events(
        &mut self,
        sub: &dyn Subscriber,
        batch: &[RecordedEvent],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Outcome> {
        let mut out = Outcome::default();
        let mut rest = batch;
        // NOTE: the events of held streams split the batch into runs, each handed over whole;
        // a held event is parked at its place, so the checkpoint passes it in order.
        while !rest.is_empty() {
            let run = rest
                .iter()
                .position(|e| self.holds(sub, e))
                .unwrap_or(rest.len());
            if run > 0
                && let Flow::Stop = self.process_run(sub, &rest[..run], stop, &mut out).await?
            {
                break;
            }
            if let Some(held) = rest.get(run)
                && let Flow::Stop = self.hold(sub, held, &mut out).await?
            {
                break;
            }
            rest = &rest[(run + 1).min(rest.len())..];
        }
        if out.cursor.is_none() && !out.fenced && *stop.borrow() {
            return Err(Error::ShuttingDown);
        }
        Ok(out)
    }

    /// Processes a run of events none of which is held: whole, else one by one.
    async fn process_run(
        &mut self,
        sub: &dyn Subscriber,
        batch: &[RecordedEvent],
        stop: &mut watch::Receiver<bool>,
        out: &mut Outcome,
    ) -> Result<Flow> {
        let last = batch.last().expect("non-empty run").cursor;
        match sub.process(batch, last).await {
            Ok(()) => {
                out.cursor = Some(last);
                out.handled += batch.len() as u64;
                return Ok(Flow::Go);
            }
            Err(e) if is_fenced_out(&*e) => {
                tracing::info!(subscriber = sub.name(), error = %e, "fenced out; batch left to the lease holder");
                out.fenced = true;
                return Ok(Flow::Stop);
            }
            Err(e) if batch.len() == 1 => {
                tracing::debug!(subscriber = sub.name(), error = %e, "event failed");
                self.failed(&*e);
            }
            Err(e) => {
                tracing::debug!(subscriber = sub.name(), error = %e, "batch failed, going one by one");
                self.failed(&*e);
            }
        }
        for event in batch {
            // NOTE: an event parked in this run holds back the rest of its stream.
            if self.holds(sub, event) {
                if let Flow::Stop = self.hold(sub, event, out).await? {
                    return Ok(Flow::Stop);
                }
                continue;
            }
            let mut attempt = 1;
            loop {
                match sub.process(std::slice::from_ref(event), event.cursor).await {
                    Ok(()) => {
                        out.handled += 1;
                        break;
                    }
                    // NOTE: a lost lease is no failure of this event: parking it would make a
                    // false dead letter of an event the new holder handles.
                    Err(err) if is_fenced_out(&*err) => {
                        tracing::info!(subscriber = sub.name(), error = %err, "fenced out; batch left to the lease holder");
                        out.fenced = true;
                        return Ok(Flow::Stop);
                    }
                    Err(err) if attempt >= self.config.max_attempts => {
                        tracing::warn!(subscriber = sub.name(), stream = %event.stream, version = event.stream_version,
                            event_type = %event.event_type, error = %err, "parking event as a dead letter");
                        let letter = self.letter(sub, event, error_chain(&*err), attempt);
                        if let Flow::Stop = self.park(sub, letter, out).await? {
                            return Ok(Flow::Stop);
                        }
                        break;
                    }
                    Err(err) => {
                        self.failed(&*err);
                        let wait = self
                            .config
                            .backoff
                            .saturating_mul(1 << (attempt - 1).min(16))
                            .min(self.config.max_backoff);
                        attempt += 1;
                        if sleep_or_stop(wait, stop).await {
                            return Ok(Flow::Stop);
                        }
                    }
                }
            }
            out.cursor = Some(event.cursor);
        }
        Ok(Flow::Go)
    }

    /// Whether `event` waits behind a dead letter of its sequence.
    fn holds(&self, sub: &dyn Subscriber, event: &RecordedEvent) -> bool {
        !self.blocked.is_empty() && self.blocked.contains_key(&sub.sequence_key(event))
    }

    fn letter(
        &self,
        sub: &dyn Subscriber,
        event: &RecordedEvent,
        error: String,
        attempts: u32,
    ) -> DeadLetter {
        DeadLetter {
            id: Uuid::new_v4(),
            subscriber: sub.name().to_owned(),
            event: event.clone(),
            error,
            attempts,
            parked_at: Utc::now(),
            status: DeadLetterStatus::Parked,
        }
    }

    /// Parks `event` behind the letter that holds back its stream.
    async fn hold(
        &mut self,
        sub: &dyn Subscriber,
        event: &RecordedEvent,
        out: &mut Outcome,
    ) -> Result<Flow> {
        let blocker = self.blocked[&sub.sequence_key(event)];
        let error = format!(
            "held behind event {} ({} version {}), parked before it",
            blocker.event_id, event.stream, blocker.version
        );
        let mut letter = self.letter(sub, event, error, 0);
        letter.status = DeadLetterStatus::Held;
        self.park(sub, letter, out).await
    }

    /// Parks `letter` and moves the checkpoint past its event.
    async fn park(
        &mut self,
        sub: &dyn Subscriber,
        letter: DeadLetter,
        out: &mut Outcome,
    ) -> Result<Flow> {
        let cursor = letter.event.cursor;
        let stream = sub.sequence_key(&letter.event);
        let blocker = Blocker::of(&letter);
        let error = letter.error.clone();
        match sub.park(letter, cursor, &*self.dead_letters).await {
            Ok(()) => {}
            Err(e) if is_fenced_out(&*e) => {
                out.fenced = true;
                return Ok(Flow::Stop);
            }
            Err(source) => {
                return Err(Error::Handler {
                    handler: sub.name().to_owned(),
                    source,
                });
            }
        }
        if sub.sequenced() {
            self.blocked.entry(stream).or_insert(blocker);
            self.show_blocked();
        }
        if let Some(status) = &self.status {
            status.parked_at(cursor.position, error);
        }
        out.parked += 1;
        out.cursor = Some(cursor);
        Ok(Flow::Go)
    }

    /// Shows `err` as the subscriber's last error while its event is being tried again: a
    /// subscriber stuck on an event (a broker down, a database gone) says why, not only lags.
    fn failed(&self, err: &(dyn std::error::Error + 'static)) {
        if let Some(status) = &self.status {
            status.error(Some(error_chain(err)));
        }
    }

    /// Hands `sub` the dead letters it may have again; false when the subscriber was fenced
    /// out meanwhile (its lease is lost).
    ///
    /// Unsequenced, those an operator asked to retry. Sequenced, each held-back stream's
    /// letters in order, from its first one on, as long as they are asked to retry or held
    /// behind a letter that is gone (handled, or skipped by an operator): a retried letter
    /// brings its held successors after it, and the first that fails again holds back the
    /// rest.
    pub(crate) async fn redeliver(
        &mut self,
        sub: &dyn Subscriber,
        current: Cursor,
    ) -> Result<bool> {
        if !sub.sequenced() {
            for mut letter in self.dead_letters.retry_requested(sub.name()).await? {
                if let Redelivered::Fenced = self.redeliver_one(sub, &mut letter, current).await? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        if self.blocked.is_empty() {
            return Ok(true);
        }
        let mut streams: HashMap<StreamId, Vec<DeadLetter>> = HashMap::new();
        for letter in self.dead_letters.list(Some(sub.name())).await? {
            streams
                .entry(sub.sequence_key(&letter.event))
                .or_default()
                .push(letter);
        }
        self.blocked.clear();
        for (stream, mut letters) in streams {
            letters.sort_by_key(|l| l.event.cursor.position);
            for mut letter in letters {
                let flow = match letter.status {
                    DeadLetterStatus::Parked => Redelivered::Parked,
                    _ => self.redeliver_one(sub, &mut letter, current).await?,
                };
                match flow {
                    Redelivered::Done => {}
                    Redelivered::Parked => {
                        self.blocked.insert(stream, Blocker::of(&letter));
                        break;
                    }
                    Redelivered::Fenced => return Ok(false),
                }
            }
        }
        self.show_blocked();
        Ok(true)
    }

    /// Hands one dead letter to `sub` again; parks it again (as parked) if it fails.
    async fn redeliver_one(
        &self,
        sub: &dyn Subscriber,
        letter: &mut DeadLetter,
        current: Cursor,
    ) -> Result<Redelivered> {
        let position = letter.event.cursor.position;
        match sub.retry(letter, current, &*self.dead_letters).await {
            Ok(()) => {
                if let Some(status) = &self.status {
                    status.retried(position);
                }
                Ok(Redelivered::Done)
            }
            Err(err) if is_fenced_out(&*err) => Ok(Redelivered::Fenced),
            Err(err) => {
                // NOTE: a letter gone meanwhile was handled after all (a transactional
                // retry whose COMMIT got no answer removes it as it commits) or skipped:
                // parking it again would bring back an event already applied.
                if self
                    .dead_letters
                    .find(sub.name(), position)
                    .await?
                    .is_none()
                {
                    return Ok(Redelivered::Done);
                }
                letter.attempts += 1;
                letter.error = error_chain(&*err);
                letter.parked_at = Utc::now();
                letter.status = DeadLetterStatus::Parked;
                self.dead_letters.park(letter.clone()).await?;
                Ok(Redelivered::Parked)
            }
        }
    }
}

/// Sleeps for `wait`; true if `stop` turned true meanwhile.
pub(crate) async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}
