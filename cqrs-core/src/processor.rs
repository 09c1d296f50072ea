//! Handing batches to a subscriber: retries with backoff, parking poison events, and a lost
//! lease told apart from a failure. Shared by the live runner and by replays.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result, error_chain, is_fenced_out};
use crate::event::{Cursor, RecordedEvent};
use crate::projector::Subscriber;
use crate::runner::{RunnerConfig, SubState};
use crate::store::{DeadLetter, DeadLetterStatus, DeadLetterStore};

/// Hands batches to a subscriber, retrying a failing event with backoff and parking it as a dead
/// letter once its tries are spent. Shared by the live runner and by replays.
#[derive(Clone)]
pub(crate) struct Processor {
    pub(crate) dead_letters: Arc<dyn DeadLetterStore>,
    pub(crate) config: RunnerConfig,
    /// Where a live runner shows the last failure of its subscriber (none in a replay).
    pub(crate) status: Option<Arc<SubState>>,
}

/// What [`Processor::process`] did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The cursor after the last event passed (handled or parked); `None` if none was.
    pub(crate) cursor: Option<Cursor>,
    /// Events handled (committed), parked events not included.
    pub(crate) handled: u64,
    /// Events parked as dead letters.
    pub(crate) parked: u64,
    /// The subscriber was fenced out (its lease taken over): the batch stopped there, nothing
    /// of the fenced call committed, and the lease must be acquired again.
    pub(crate) fenced: bool,
}

impl Processor {
    /// Processes `batch` (non-empty, after `from`). Stops early (returning how far it got)
    /// when `stop` turns true, and at once when the subscriber is fenced out.
    pub(crate) async fn process(
        &self,
        sub: &dyn Subscriber,
        batch: &[RecordedEvent],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Outcome> {
        let last = batch.last().expect("non-empty batch").cursor;
        let mut out = Outcome::default();
        match sub.process(batch, last).await {
            Ok(()) => {
                out.cursor = Some(last);
                out.handled = batch.len() as u64;
                return Ok(out);
            }
            Err(e) if is_fenced_out(&*e) => {
                tracing::info!(subscriber = sub.name(), error = %e, "fenced out; batch left to the lease holder");
                out.fenced = true;
                return Ok(out);
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
                        return Ok(out);
                    }
                    Err(err) if attempt >= self.config.max_attempts => {
                        tracing::warn!(subscriber = sub.name(), stream = %event.stream, version = event.stream_version,
                            event_type = %event.event_type, error = %err, "parking event as a dead letter");
                        let error = error_chain(&*err);
                        let letter = DeadLetter {
                            id: Uuid::new_v4(),
                            subscriber: sub.name().to_owned(),
                            event: event.clone(),
                            error: error.clone(),
                            attempts: attempt,
                            parked_at: Utc::now(),
                            status: DeadLetterStatus::Parked,
                        };
                        match sub.park(letter, event.cursor, &*self.dead_letters).await {
                            Ok(()) => {}
                            Err(e) if is_fenced_out(&*e) => {
                                out.fenced = true;
                                return Ok(out);
                            }
                            Err(source) => {
                                return Err(Error::Handler {
                                    handler: sub.name().to_owned(),
                                    source,
                                });
                            }
                        }
                        if let Some(status) = &self.status {
                            status.parked_at(event.cursor.position, error);
                        }
                        out.parked += 1;
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
                            return if out.cursor.is_none() {
                                Err(Error::ShuttingDown)
                            } else {
                                Ok(out)
                            };
                        }
                    }
                }
            }
            out.cursor = Some(event.cursor);
        }
        Ok(out)
    }

    /// Shows `err` as the subscriber's last error while its event is being tried again: a
    /// subscriber stuck on an event (a broker down, a database gone) says why, not only lags.
    fn failed(&self, err: &(dyn std::error::Error + 'static)) {
        if let Some(status) = &self.status {
            status.error(Some(error_chain(err)));
        }
    }

    /// Tries again the dead letters of `sub` an operator asked to retry; false when the
    /// subscriber was fenced out meanwhile (its lease is lost).
    pub(crate) async fn retry_requested(
        &self,
        sub: &dyn Subscriber,
        current: Cursor,
    ) -> Result<bool> {
        for mut letter in self.dead_letters.retry_requested(sub.name()).await? {
            match sub.retry(&letter, current, &*self.dead_letters).await {
                Ok(()) => {
                    if let Some(status) = &self.status {
                        status.retried(letter.event.cursor.position);
                    }
                }
                Err(err) if is_fenced_out(&*err) => return Ok(false),
                Err(err) => {
                    // NOTE: a letter gone meanwhile was handled after all (a transactional
                    // retry whose COMMIT got no answer removes it as it commits) or skipped:
                    // parking it again would bring back an event already applied.
                    let position = letter.event.cursor.position;
                    if self
                        .dead_letters
                        .find(sub.name(), position)
                        .await?
                        .is_none()
                    {
                        continue;
                    }
                    letter.attempts += 1;
                    letter.error = error_chain(&*err);
                    letter.parked_at = Utc::now();
                    letter.status = DeadLetterStatus::Parked;
                    self.dead_letters.park(letter).await?;
                }
            }
        }
        Ok(true)
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
