//! The task that runs one subscriber: takes its lease, follows the all-stream, or follows the
//! lease holder's checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;

use super::SubState;
use crate::error::{Error, Result, error_chain};
use crate::lease::{Lease, Leases};
use crate::processor::{Processor, sleep_or_stop};
use crate::projector::Subscriber;
use crate::store::EventStore;

/// Runs one subscriber until the runner stops.
pub(super) struct SubTask {
    pub(super) store: Arc<dyn EventStore>,
    pub(super) processor: Processor,
    pub(super) leases: Option<Arc<dyn Leases>>,
    pub(super) sub: Arc<dyn Subscriber>,
    pub(super) state: Arc<SubState>,
    pub(super) stop: watch::Receiver<bool>,
}

impl SubTask {
    pub(super) async fn run(mut self) {
        let retry_wait = self.processor.config.poll_interval;
        if self.set_up().await {
            self.state.ready.send_replace(true);
        }
        while !*self.stop.borrow() {
            let lease = match &self.leases {
                None => None,
                Some(leases) => match leases.try_acquire(self.sub.name()).await {
                    Ok(Some(l)) => Some(l),
                    Ok(None) => {
                        self.follow_passively().await;
                        continue;
                    }
                    Err(e) => {
                        self.state.error(Some(error_chain(&e)));
                        sleep_or_stop(retry_wait, &mut self.stop).await;
                        continue;
                    }
                },
            };
            if let Err(e) = self.follow(lease).await {
                if matches!(e, Error::ShuttingDown) {
                    break;
                }
                tracing::warn!(subscriber = self.sub.name(), error = %e, "subscription failed, restarting");
                self.state.error(Some(error_chain(&e)));
                sleep_or_stop(retry_wait, &mut self.stop).await;
            }
        }
        self.state.active.store(false, Ordering::Release);
    }

    /// Runs the subscriber's [`setup`](Subscriber::setup) until it succeeds; false when the
    /// runner stopped first.
    ///
    /// NOTE: before the lease is asked for: set-up is idempotent, and a process that follows
    /// another's checkpoint serves queries of the read model too.
    async fn set_up(&mut self) -> bool {
        let retry_wait = self.processor.config.poll_interval;
        loop {
            if *self.stop.borrow() {
                return false;
            }
            match self.sub.setup().await {
                Ok(()) => {
                    self.state.error(None);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(subscriber = self.sub.name(), error = %e, "set-up failed, trying again");
                    self.state.error(Some(error_chain(&*e)));
                    sleep_or_stop(retry_wait, &mut self.stop).await;
                }
            }
        }
    }

    /// While another process holds the lease (until the next try to take it): keeps the
    /// status cursor at the subscriber's committed checkpoint, so that `wait_for` works in
    /// every process of a cluster. The checkpoint is read on the store's wake-ups, at every
    /// lease try, and every few milliseconds while a `wait_for` is waiting.
    async fn follow_passively(&mut self) {
        /// How often the checkpoint is read while a caller waits.
        const EAGER: Duration = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + self.processor.config.lease_interval;
        let mut wake = self.store.wake_ups();
        let mut wake_open = true;
        loop {
            wake.borrow_and_update();
            match self.sub.checkpoint().await {
                Ok(c) => {
                    self.state.cursor.send_if_modified(|cur| {
                        let moved = *cur != c;
                        *cur = c;
                        moved
                    });
                }
                Err(e) => self.state.error(Some(error_chain(&e))),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let until = if self.state.waiters.load(Ordering::Acquire) > 0 {
                deadline.min(now + EAGER)
            } else {
                deadline
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                r = wake.changed(), if wake_open => wake_open = r.is_ok(),
                _ = self.state.waiter_came.notified() => {}
                _ = self.stop.wait_for(|s| *s) => return,
            }
            // NOTE: one read per `EAGER` at most, however often appends wake the store.
            tokio::time::sleep_until(deadline.min(now + EAGER)).await;
        }
    }

    /// Follows the all-stream while the lease (if any) holds.
    async fn follow(&mut self, mut lease: Option<Box<dyn Lease>>) -> Result<()> {
        let mut cursor = self.sub.checkpoint().await?;
        self.processor.load_blocked(&*self.sub).await?;
        *self.state.active_from.lock().expect("status lock") = cursor;
        // NOTE: what was parked before is asked of the store from now on: another holder may
        // have retried it meanwhile.
        self.state.parked_at.lock().expect("status lock").clear();
        self.state.cursor.send_replace(cursor);
        self.state.active.store(true, Ordering::Release);
        let _inactive = Deactivate(&self.state.active);
        let mut wake = self.store.wake_ups();
        let mut next_dead_letter_check = Instant::now();
        let cfg = self.processor.config.clone();
        loop {
            if *self.stop.borrow() {
                return Err(Error::ShuttingDown);
            }
            if let Some(l) = lease.as_mut()
                && !l.renew().await?
            {
                tracing::info!(subscriber = self.sub.name(), "lease lost");
                return Ok(());
            }
            if Instant::now() >= next_dead_letter_check {
                if !self.processor.redeliver(&*self.sub, cursor).await? {
                    tracing::info!(
                        subscriber = self.sub.name(),
                        "fenced out while retrying dead letters"
                    );
                    sleep_or_stop(cfg.lease_interval, &mut self.stop).await;
                    return Ok(());
                }
                next_dead_letter_check = Instant::now() + cfg.dead_letter_interval;
            }
            // NOTE: mark the wake-up seen before reading, so an append racing the read still
            // wakes the next wait.
            wake.borrow_and_update();
            let batch = self.store.read_all(cursor, cfg.batch_size).await?;
            if batch.is_empty() {
                let wait = cfg.poll_interval.min(cfg.dead_letter_interval);
                let closed = tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    r = wake.changed() => r.is_err(),
                    _ = self.stop.wait_for(|s| *s) => return Err(Error::ShuttingDown),
                };
                if closed {
                    // NOTE: the store dropped its notifier: this is the polling fallback.
                    sleep_or_stop(wait, &mut self.stop).await;
                }
                continue;
            }
            let name = self.sub.name().to_owned();
            let span = tracing::info_span!(
                "subscriber.batch",
                subscriber = %name,
                from = cursor.position,
                to = batch.last().map_or(0, |e| e.cursor.position),
                events = batch.len(),
                handled = tracing::field::Empty,
                parked = tracing::field::Empty,
            );
            crate::trace::follow_events(&span, &batch);
            let started = Instant::now();
            let out = self
                .processor
                .process(&*self.sub, batch, &mut self.stop)
                .instrument(span.clone())
                .await?;
            span.record("handled", out.handled);
            span.record("parked", out.parked);
            metrics::histogram!("cqrs_subscriber_batch_duration_seconds", "subscriber" => name.clone())
                .record(started.elapsed());
            if let Some(to) = out.cursor {
                cursor = to;
                self.state.handled.fetch_add(out.handled, Ordering::Relaxed);
                self.state.parked.fetch_add(out.parked, Ordering::Relaxed);
                let events = |outcome: &'static str| metrics::counter!("cqrs_subscriber_events_total", "subscriber" => name.clone(), "outcome" => outcome);
                events("handled").increment(out.handled);
                events("parked").increment(out.parked);
                metrics::gauge!("cqrs_subscriber_position", "subscriber" => name.clone())
                    .set(cursor.position as f64);
                metrics::gauge!("cqrs_subscriber_blocked_streams", "subscriber" => name.clone())
                    .set(self.state.blocked.load(Ordering::Relaxed) as f64);
                // NOTE: the error is cleared before the cursor moves, so that whoever
                // `wait_for` wakes sees the status of the batch that moved it.
                self.state.error(None);
                self.state.cursor.send_replace(cursor);
            }
            if out.fenced {
                // NOTE: the lease is gone; what this batch did not commit is the new holder's.
                // Back to acquiring (and following the holder's checkpoint meanwhile), after a
                // pause: without leases in the runner, the next try would come at once.
                sleep_or_stop(cfg.lease_interval, &mut self.stop).await;
                return Ok(());
            }
        }
    }
}

struct Deactivate<'a>(&'a AtomicBool);

impl Drop for Deactivate<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
