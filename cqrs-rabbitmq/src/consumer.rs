//! The inbound consumer: a RabbitMQ queue as the kit's [`Source`], its messages acknowledged,
//! rejected into the retry queue or dead-lettered as the kit's [`Consumer`] decides.

use async_trait::async_trait;
use cqrs_broker::{Consumer, ConsumerHandle, Failure, Received, Session, Source};
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
use uuid::Uuid;

use crate::codec::{HEADERS, decode_message, header_text, header_u64};
use crate::topology::RabbitQueue;

/// Consumes a [`RabbitQueue`] into an [`InboxSubscriber`], on the kit's [`Consumer`].
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
#[derive(Debug)]
pub struct RabbitConsumer<S> {
    source: RabbitSource,
    inbox: S,
}

impl<S: InboxSubscriber + 'static> RabbitConsumer<S> {
    /// A consumer of `queue` on the broker at `url`, feeding `inbox`, with a prefetch of 100.
    pub fn new(url: impl Into<String>, queue: RabbitQueue, inbox: S) -> Self {
        RabbitConsumer {
            source: RabbitSource {
                url: url.into(),
                queue,
                prefetch: 100,
            },
            inbox,
        }
    }

    /// How many unacknowledged messages the broker may push ahead to this consumer.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.source.prefetch = prefetch.max(1);
        self
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        Consumer::new(self.source, self.inbox).start()
    }
}

#[derive(Debug)]
struct RabbitSource {
    url: String,
    queue: RabbitQueue,
    prefetch: u16,
}

struct RabbitSession {
    conn: Connection,
    queue: String,
    dead_letter_exchange: String,
    dead_letters: Channel,
    deliveries: lapin::Consumer,
}

#[async_trait]
impl Source for RabbitSource {
    type Session = RabbitSession;

    fn name(&self) -> &str {
        self.queue.name()
    }

    fn max_attempts(&self) -> u32 {
        self.queue.attempts()
    }

    async fn open(&self, consumer: &str) -> Result<RabbitSession> {
        let name = format!("cqrs-consumer:{}:{consumer}", self.queue.name());
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
        let tag = format!("{consumer}-{}", Uuid::new_v4());
        let deliveries = channel
            .basic_consume(
                self.queue.name().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::backend)?;
        Ok(RabbitSession {
            conn,
            queue: self.queue.name().to_owned(),
            dead_letter_exchange: self.queue.dead_letter_exchange(),
            dead_letters,
            deliveries,
        })
    }
}

#[async_trait]
impl Session for RabbitSession {
    type Message = Delivery;

    async fn next(&mut self) -> Result<Received<Delivery>> {
        let delivery = match self.deliveries.next().await {
            None => return Err(Error::backend("the broker cancelled the consumer")),
            Some(next) => next.map_err(Error::backend)?,
        };
        Ok(Received {
            attempt: previous_attempts(&delivery, &self.queue) + 1,
            event: decode_message(&delivery.properties, &delivery.data),
            message: delivery,
        })
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(Error::backend)
    }

    async fn retry(&mut self, delivery: &Delivery) -> Result<()> {
        delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(drop)
            .map_err(Error::backend)
    }

    async fn dead_letter(&mut self, delivery: &Delivery, failure: &Failure) -> Result<()> {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut table = delivery.properties.headers().clone().unwrap_or_default();
        table.insert(HEADERS.error.into(), text(&failure.error));
        table.insert(
            HEADERS.attempts.into(),
            AMQPValue::LongLongInt(failure.attempts.into()),
        );
        table.insert(HEADERS.origin.into(), text(&self.queue));
        let props = delivery.properties.clone().with_headers(table);
        let confirm = self
            .dead_letters
            .basic_publish(
                self.dead_letter_exchange.as_str().into(),
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

    async fn close(self) {
        let _ = self.conn.close(200, "consumer stopped".into()).await;
    }
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
    let error = header_text(h, HEADERS.error)?;
    let attempts = header_u64(h, HEADERS.attempts)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(0);
    Some((error, attempts))
}
