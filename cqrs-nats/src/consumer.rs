//! The inbound consumer: JetStream messages back into events, handed to an inbox, acknowledged
//! only once the inbox committed, redelivered a bounded number of times, then dead-lettered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{AckKind, Context, Message};
use cqrs_core::{Error, InboxSubscriber, Result};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::codec::{decode_message, header, headers};
use crate::topology::{JetStreamQueue, context};

/// Consumes a [`JetStreamQueue`] into an [`InboxSubscriber`].
///
/// Each message is turned back into a [`cqrs_core::RecordedEvent`] and given to
/// [`handle_once`](InboxSubscriber::handle_once), which skips an event id it has seen and
/// commits the effect with the id. The message is acknowledged only after that, so a crash or a
/// lost connection redelivers it (after the queue's ack wait), and the inbox makes the repeat
/// harmless. A failing handler has its message negatively acknowledged with the queue's retry
/// delay; JetStream counts the deliveries, and once [`JetStreamQueue::max_attempts`] are spent
/// the message is published to the dead-letter stream with the error in the `Cqrs-Error`
/// header, and the consumer goes on with the next one.
///
/// Several consumers of one durable (in one process or many) compete: each message is handled
/// by one of them. The NATS client reconnects on its own; a broken pull is started again.
pub struct JetStreamConsumer<S> {
    js: Context,
    queue: JetStreamQueue,
    inbox: Arc<S>,
    prefetch: usize,
    stats: Arc<Counters>,
}

impl<S> std::fmt::Debug for JetStreamConsumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConsumer")
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

/// What a consumer has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received (redeliveries included).
    pub delivered: u64,
    /// Events the inbox handled for the first time.
    pub handled: u64,
    /// Repeats the inbox recognised and skipped.
    pub duplicates: u64,
    /// Failed messages sent back for another try.
    pub retried: u64,
    /// Messages moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Pulls that broke and were started again.
    pub restarts: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    handled: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    restarts: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumerStats {
            delivered: get(&self.delivered),
            handled: get(&self.handled),
            duplicates: get(&self.duplicates),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            restarts: get(&self.restarts),
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Controls a started [`JetStreamConsumer`].
#[derive(Debug)]
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Counters>,
}

impl ConsumerHandle {
    /// What the consumer has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.snapshot()
    }

    /// Stops after the message in hand; unacknowledged messages are delivered again after the
    /// ack wait.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Stops at once, wherever it is, as a crash would. For tests of recovery.
    pub fn abort(self) {
        self.task.abort();
    }
}

impl<S: InboxSubscriber + 'static> JetStreamConsumer<S> {
    /// A consumer of `queue` through `client`, feeding `inbox`, pulling 100 messages at a time.
    pub fn new(client: async_nats::Client, queue: JetStreamQueue, inbox: S) -> Self {
        JetStreamConsumer {
            js: context(client, Duration::from_secs(5)),
            queue,
            inbox: Arc::new(inbox),
            prefetch: 100,
            stats: Arc::default(),
        }
    }

    /// How many messages one pull asks for.
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        let (stop, rx) = watch::channel(false);
        let stats = self.stats.clone();
        let task = tokio::spawn(self.run(rx));
        ConsumerHandle { stop, task, stats }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let halted = *stop.borrow();
            if halted {
                break;
            }
            match self.session(&mut stop, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(durable = self.queue.durable(), error = %e, "pull failed, starting again");
                    bump(&self.stats.restarts);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        () = stopped(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One pull's life: consume until stopped (`Ok`) or the pull breaks (`Err`).
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Result<()> {
        let consumer = self.queue.declare(&self.js).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.prefetch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .map_err(Error::backend)?;
        *backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                () = stopped(stop) => return Ok(()),
                next = messages.next() => match next {
                    None => return Err(Error::backend("the pull ended")),
                    // NOTE: a missed heartbeat (a dropped connection, say) is reported, and the
                    // pull carries on by itself once the client is back.
                    Some(Err(e)) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                        tracing::debug!(durable = self.queue.durable(), error = %e, "missed heartbeat");
                    }
                    Some(Err(e)) => return Err(Error::backend(e)),
                    Some(Ok(message)) => self.handle(&message).await?,
                },
            }
        }
    }

    async fn handle(&self, message: &Message) -> Result<()> {
        bump(&self.stats.delivered);
        let attempts = message
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(1))
            .unwrap_or(1);
        let failure = match decode_message(message.headers.as_ref(), &message.payload) {
            // NOTE: a message that cannot be read never will be: no retries.
            Err(e) => Some((cqrs_core::error_chain(&e), true)),
            Ok(event) => match self.inbox.handle_once(&event).await {
                Ok(true) => {
                    bump(&self.stats.handled);
                    None
                }
                Ok(false) => {
                    bump(&self.stats.duplicates);
                    None
                }
                Err(e) => {
                    tracing::debug!(durable = self.queue.durable(), event = %event.event_id, attempts, error = %e, "handler failed");
                    Some((
                        cqrs_core::error_chain(&*e),
                        attempts >= self.queue.attempts(),
                    ))
                }
            },
        };
        match failure {
            Some((error, true)) => {
                self.dead_letter(message, &error, attempts).await?;
                bump(&self.stats.dead_lettered);
            }
            Some((_, false)) => {
                message
                    .ack_with(AckKind::Nak(Some(self.queue.delay())))
                    .await
                    .map_err(Error::backend)?;
                bump(&self.stats.retried);
                return Ok(());
            }
            None => {}
        }
        message.ack().await.map_err(Error::backend)?;
        Ok(())
    }

    /// Publishes the message, with its error, to the dead-letter stream and waits for the
    /// acknowledgement; the caller acknowledges the original only after that.
    async fn dead_letter(&self, message: &Message, error: &str, attempts: u32) -> Result<()> {
        tracing::warn!(
            durable = self.queue.durable(),
            attempts,
            error,
            "dead-lettering message"
        );
        // NOTE: the relay's `Nats-Expected-*` headers are stored with the message; carried over,
        // they would make JetStream refuse the dead letter.
        let mut h = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            if !name.to_string().starts_with("Nats-Expected") {
                for v in values {
                    h.append(name.clone(), v.clone());
                }
            }
        }
        // NOTE: one line, as NATS headers cannot carry line breaks.
        h.insert(headers::ERROR, error.replace(['\r', '\n'], " "));
        h.insert(headers::ATTEMPTS, attempts.to_string());
        h.insert("Cqrs-Original-Subject", message.subject.as_str());
        let publish = Publish::build().headers(h).payload(message.payload.clone());
        self.js
            .send_publish(self.queue.dead_letter_subject(), publish)
            .await
            .map_err(Error::backend)?
            .await
            .map_err(Error::backend)?;
        Ok(())
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // NOTE: the guard `wait_for` returns is not `Send`; drop it before anything else awaits.
    let _ = stop.wait_for(|s| *s).await;
}

/// The error text and delivery count a dead-lettered message carries in its headers, if it is
/// one.
pub fn dead_letter_error(h: &async_nats::HeaderMap) -> Option<(String, u32)> {
    let error = header(h, headers::ERROR)?.to_owned();
    let attempts = header(h, headers::ATTEMPTS)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Some((error, attempts))
}
