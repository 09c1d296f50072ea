//! The inbound consumer: broker messages back into events, handed to an inbox, acknowledged only
//! once the inbox committed, retried a bounded number of times, then dead-lettered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::{Error, InboxSubscriber, Result};
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::codec::{decode_message, header_text, header_u64, headers};
use crate::topology::RabbitQueue;

/// Consumes a [`RabbitQueue`] into an [`InboxSubscriber`].
///
/// Each message is turned back into a [`cqrs_core::RecordedEvent`] and given to
/// [`handle_once`](InboxSubscriber::handle_once), which skips an event id it has seen and
/// commits the effect with the id. The message is acknowledged only after that, so a crash or a
/// lost connection redelivers it, and the inbox makes the repeat harmless. A failing handler has
/// its message rejected into the retry queue (the broker counts the tries in `x-death`); once
/// [`RabbitQueue::max_attempts`] are spent the message goes to the dead-letter queue with the
/// error in the `cqrs-error` header, and the consumer goes on with the next one.
///
/// Several consumers of one queue (in one process or many) compete: each message is handled by
/// one of them. A lost connection is reopened with backoff, and the queue declared again.
pub struct RabbitConsumer<S> {
    url: String,
    queue: RabbitQueue,
    inbox: Arc<S>,
    prefetch: u16,
    stats: Arc<Counters>,
}

impl<S> std::fmt::Debug for RabbitConsumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConsumer")
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

/// What a consumer has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received (repeats included).
    pub delivered: u64,
    /// Events the inbox handled for the first time.
    pub handled: u64,
    /// Repeats the inbox recognised and skipped.
    pub duplicates: u64,
    /// Failed messages sent back for another try.
    pub retried: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Connections lost and reopened.
    pub reconnects: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    handled: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    reconnects: AtomicU64,
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
            reconnects: get(&self.reconnects),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Controls a started [`RabbitConsumer`].
#[derive(Debug)]
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Counters>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl ConsumerHandle {
    /// What the consumer has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.snapshot()
    }

    /// Stops after the message in hand and closes the connection; unacknowledged messages go
    /// back to the queue.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Stops at once, wherever it is, as a crash would. For tests of recovery.
    pub fn abort(self) {
        self.task.abort();
    }
}

impl<S: InboxSubscriber + 'static> RabbitConsumer<S> {
    /// A consumer of `queue` on the broker at `url`, feeding `inbox`, with a prefetch of 100.
    pub fn new(url: impl Into<String>, queue: RabbitQueue, inbox: S) -> Self {
        RabbitConsumer {
            url: url.into(),
            queue,
            inbox: Arc::new(inbox),
            prefetch: 100,
            stats: Arc::default(),
        }
    }

    /// How many unacknowledged messages the broker may push ahead to this consumer.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
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
            let stopped = *stop.borrow();
            if stopped {
                break;
            }
            match self.session(&mut stop, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(queue = self.queue.name(), error = %e, "consumer lost its connection, reconnecting");
                    bump(&self.stats.reconnects);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One connection's life: declare, consume until stopped (`Ok`) or the link fails (`Err`).
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Result<()> {
        let name = format!("cqrs-consumer:{}:{}", self.queue.name(), self.inbox.name());
        let conn = Connection::connect(
            &self.url,
            ConnectionProperties::default().with_connection_name(name.into()),
        )
        .await
        .map_err(Error::backend)?;
        let channel = conn.create_channel().await.map_err(Error::backend)?;
        self.queue.declare(&channel).await.map_err(Error::backend)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(Error::backend)?;
        let dead_letters = conn.create_channel().await.map_err(Error::backend)?;
        dead_letters
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::backend)?;
        let tag = format!("{}-{}", self.inbox.name(), Uuid::new_v4());
        let mut deliveries = channel
            .basic_consume(
                self.queue.name().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::backend)?;
        *backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                () = stopped(stop) => {
                    let _ = conn.close(200, "consumer stopped".into()).await;
                    return Ok(());
                }
                next = deliveries.next() => match next {
                    None => return Err(Error::backend("the broker cancelled the consumer")),
                    Some(Err(e)) => return Err(Error::backend(e)),
                    Some(Ok(delivery)) => self.handle(&delivery, &dead_letters).await?,
                },
            }
        }
    }

    async fn handle(&self, delivery: &Delivery, dead_letters: &Channel) -> Result<()> {
        bump(&self.stats.delivered);
        let attempts = previous_attempts(delivery, self.queue.name()) + 1;
        let failure = match decode_message(&delivery.properties, &delivery.data) {
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
                    tracing::debug!(queue = self.queue.name(), event = %event.event_id, attempts, error = %e, "handler failed");
                    Some((
                        cqrs_core::error_chain(&*e),
                        attempts >= self.queue.attempts(),
                    ))
                }
            },
        };
        match failure {
            Some((error, true)) => {
                self.dead_letter(delivery, dead_letters, &error, attempts)
                    .await?;
                bump(&self.stats.dead_lettered);
            }
            Some((_, false)) => {
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map_err(Error::backend)?;
                bump(&self.stats.retried);
                return Ok(());
            }
            None => {}
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(Error::backend)?;
        Ok(())
    }

    /// Publishes the message, with its error, to the dead-letter exchange and waits for the
    /// broker's confirm; the caller acknowledges the original only after that.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        channel: &Channel,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        tracing::warn!(
            queue = self.queue.name(),
            attempts,
            error,
            "dead-lettering message"
        );
        let mut table = delivery.properties.headers().clone().unwrap_or_default();
        table.insert(
            headers::ERROR.into(),
            AMQPValue::LongString(LongString::from(error)),
        );
        table.insert(
            headers::ATTEMPTS.into(),
            AMQPValue::LongLongInt(attempts.into()),
        );
        let props = delivery.properties.clone().with_headers(table);
        let confirm = channel
            .basic_publish(
                self.queue.dead_letter_exchange().into(),
                delivery.routing_key.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                props,
            )
            .await
            .map_err(Error::backend)?
            .await
            .map_err(Error::backend)?;
        match confirm {
            Confirmation::Ack(_) => Ok(()),
            _ => Err(Error::backend("the broker refused a dead letter")),
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // NOTE: the guard `wait_for` returns is not `Send`; drop it before anything else awaits.
    let _ = stop.wait_for(|s| *s).await;
}

/// Tries so far: how often the broker dead-lettered this message out of `queue` after a
/// rejection, as its `x-death` header counts.
fn previous_attempts(delivery: &Delivery, queue: &str) -> u32 {
    let Some(AMQPValue::FieldArray(deaths)) = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return 0;
    };
    deaths
        .as_slice()
        .iter()
        .filter_map(|d| match d {
            AMQPValue::FieldTable(t)
                if header_text(t, "queue").as_deref() == Some(queue)
                    && header_text(t, "reason").as_deref() == Some("rejected") =>
            {
                header_u64(t, "count")
            }
            _ => None,
        })
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
        .sum()
}

/// The error text and try count a dead-lettered message carries, if it is one.
pub fn dead_letter_error(delivery: &Delivery) -> Option<(String, u32)> {
    let h = delivery.properties.headers().as_ref()?;
    let error = header_text(h, headers::ERROR)?;
    let attempts = header_u64(h, headers::ATTEMPTS)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(0);
    Some((error, attempts))
}
