//! Exchanges and queues: one topic exchange per aggregate type, one durable queue per consuming
//! service, with a retry queue and a dead-letter exchange and queue beside it.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// The prefix of the exchanges a [`RabbitRelay`](crate::RabbitRelay) publishes to unless told
/// otherwise.
pub const DEFAULT_EXCHANGE_PREFIX: &str = "events.";

/// The topic exchange that carries the events of aggregate type `category`, such as
/// `events.account`. Its routing keys are event types.
pub fn exchange_for(prefix: &str, category: &str) -> String {
    format!("{prefix}{category}")
}

pub(crate) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
}

/// A consuming service's durable queue and what it is bound to.
///
/// Publish/subscribe: every service declares its own queue bound to the exchanges it cares
/// about, so each service gets every event. Competing consumers: the instances of one service
/// consume the same queue, so each message goes to one of them.
///
/// Beside the queue `name` live `name.retry` (a failed message waits there `retry_delay`, then
/// returns), and the dead-letter exchange `name.dlx` with its queue `name.dlq`, where a message
/// lands with its error once `max_attempts` are spent.
///
/// Per-stream order holds for one consumer at a time; with several competing instances, set
/// [`single_active_consumer`](RabbitQueue::single_active_consumer) to keep it (the others stand
/// by), or accept that only the inbox's deduplication, not order, is promised.
#[derive(Debug, Clone)]
pub struct RabbitQueue {
    name: String,
    bindings: Vec<(String, String)>,
    max_attempts: u32,
    retry_delay: Duration,
    single_active: bool,
}

impl RabbitQueue {
    /// A queue named `name` with no bindings, 5 attempts per message and a 1 s retry delay.
    pub fn new(name: impl Into<String>) -> Self {
        RabbitQueue {
            name: name.into(),
            bindings: Vec::new(),
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            single_active: false,
        }
    }

    /// Binds the queue to `exchange` with a topic `pattern` (`#` for every event type, or an
    /// event type such as `Deposited`). The exchange is declared if missing.
    pub fn bind(mut self, exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.bindings.push((exchange.into(), pattern.into()));
        self
    }

    /// Binds the queue to every event of aggregate type `category` on the default exchanges.
    pub fn subscribe(self, category: &str) -> Self {
        self.bind(exchange_for(DEFAULT_EXCHANGE_PREFIX, category), "#")
    }

    /// Tries of a message (the first delivery included) before it is dead-lettered.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a failed message waits before it is delivered again.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Lets only one consumer at a time receive messages (RabbitMQ's single active consumer), so
    /// that per-stream order survives several instances; the others take over on failure.
    pub fn single_active_consumer(mut self, on: bool) -> Self {
        self.single_active = on;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tries of a message before it is dead-lettered.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The name of the queue where failed messages wait before their next try.
    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.name)
    }

    /// The name of the dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.name)
    }

    /// The name of the dead-letter queue, where messages land with their error.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// Declares the queue, its retry and dead-letter companions, the exchanges it is bound to and
    /// the bindings. Idempotent; a queue that exists with other arguments is an error.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let str_arg = |s: &str| AMQPValue::LongString(LongString::from(s));

        // A rejected message is dead-lettered (through the default exchange) into the retry
        // queue; when its TTL runs out there it is dead-lettered back into the main queue. Each
        // pass adds to the `x-death` count that tells the consumer which attempt it is.
        let mut main_args = FieldTable::default();
        main_args.insert("x-dead-letter-exchange".into(), str_arg(""));
        main_args.insert(
            "x-dead-letter-routing-key".into(),
            str_arg(&self.retry_queue()),
        );
        if self.single_active {
            main_args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        channel
            .queue_declare(self.name.as_str().into(), durable, main_args)
            .await?;

        let mut retry_args = FieldTable::default();
        let ttl = i64::try_from(self.retry_delay.as_millis()).unwrap_or(i64::MAX);
        retry_args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        retry_args.insert("x-dead-letter-exchange".into(), str_arg(""));
        retry_args.insert("x-dead-letter-routing-key".into(), str_arg(&self.name));
        channel
            .queue_declare(self.retry_queue().into(), durable, retry_args)
            .await?;

        let dlx = self.dead_letter_exchange();
        declare_exchange(channel, &dlx, ExchangeKind::Fanout).await?;
        let dlq = self.dead_letter_queue();
        channel
            .queue_declare(dlq.as_str().into(), durable, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                dlq.into(),
                dlx.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for (exchange, pattern) in &self.bindings {
            declare_exchange(channel, exchange, ExchangeKind::Topic).await?;
            channel
                .queue_bind(
                    self.name.as_str().into(),
                    exchange.as_str().into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}
