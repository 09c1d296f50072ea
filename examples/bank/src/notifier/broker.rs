//! `bank notifier`: a second service that hears the bank's account events through a message
//! broker (RabbitMQ or NATS JetStream) and keeps its own read model, the customers' notices.
//! Choreography: the bank does not know the notifier; it only publishes its events.
//!
//! Two halves, each a few lines on the broker crates:
//! - the bank's side, [`broker_relay`]: the outbox relay, a subscriber of the bank's store that
//!   publishes every event (run it in a [`Runner`] beside the read models, with the backend's
//!   leases on PostgreSQL so that one process relays);
//! - the notifier's side, [`start_notifier`]: a durable queue (RabbitMQ) or durable consumer
//!   (JetStream) named `bank-notifier`, bound to the `account` events, fed through an inbox to
//!   the [`Notifier`] read model. Its instances compete for the messages.
//!
//! NOTE: the read model and its inbox live in memory, so a restarted notifier starts empty and
//! hears only new events. A durable notifier keeps both in one database transaction (an SQL
//! inbox), which the back-end crates are to provide.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cqrs_core::{
    BoxError, InMemoryInbox, Projector, RecordedEvent, Runner, RunnerHandle, Subscriber,
    async_trait,
};
use cqrs_nats::{JetStreamConsumer, JetStreamEvents, JetStreamQueue, JetStreamRelay};
use cqrs_rabbitmq::{RabbitConsumer, RabbitQueue, RabbitRelay};

use crate::backend::Backend;
use crate::domain::account::{Account, AccountEvent};
use crate::readmodel::LARGE_WITHDRAWAL;

/// The relay's subscriber name (the key of its checkpoint).
pub const BROKER_RELAY: &str = "broker_relay";

/// Where the bank's events travel: the bank publishes to the RabbitMQ topic exchanges
/// `<prefix>.<aggregate type>` or the JetStream stream `<PREFIX>` (subjects `<prefix>.>`), and
/// the notifier reads them from its queue or durable consumer `queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// The bank's prefix: exchanges `bank.account`, stream `BANK` with subjects `bank.>`.
    pub prefix: String,
    /// The notifier's queue (RabbitMQ) or durable consumer (JetStream).
    pub queue: String,
}

impl Default for Channels {
    fn default() -> Self {
        Channels {
            prefix: "bank".to_owned(),
            queue: "bank-notifier".to_owned(),
        }
    }
}

impl Channels {
    fn exchange_prefix(&self) -> String {
        format!("{}.", self.prefix)
    }

    // NOTE: a stream of the bank's own: a JetStream relay must be its stream's only publisher.
    fn jetstream(&self) -> JetStreamEvents {
        JetStreamEvents::new(self.prefix.to_uppercase(), &self.prefix)
    }
}

/// A broker, from its URL: `amqp://...` for RabbitMQ, `nats://...` for NATS JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// RabbitMQ at this AMQP URL.
    Amqp(String),
    /// NATS (with JetStream) at this URL.
    Nats(String),
}

impl std::str::FromStr for Broker {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        if url.starts_with("amqp://") || url.starts_with("amqps://") {
            Ok(Broker::Amqp(url.to_owned()))
        } else if url.starts_with("nats://") || url.starts_with("tls://") {
            Ok(Broker::Nats(url.to_owned()))
        } else {
            Err(format!(
                "unknown broker {url:?}: expected amqp://... or nats://..."
            ))
        }
    }
}

/// The bank's outbox relay to `broker`, checkpointed in the backend's store.
///
/// RabbitMQ drops what no queue is bound to: start the notifier once before the relay, so that
/// its durable queue exists.
pub async fn broker_relay(
    backend: &Backend,
    broker: &Broker,
    channels: &Channels,
) -> Result<Arc<dyn Subscriber>, BoxError> {
    Ok(match broker {
        Broker::Amqp(url) => Arc::new(
            RabbitRelay::new(BROKER_RELAY, url, backend.checkpoints())
                .with_exchange_prefix(channels.exchange_prefix()),
        ),
        Broker::Nats(url) => {
            let client = cqrs_nats::async_nats::connect(url).await?;
            Arc::new(JetStreamRelay::new(
                BROKER_RELAY,
                client,
                channels.jetstream(),
                backend.checkpoints(),
            ))
        }
    })
}

/// Starts the relay to `broker` in a runner of its own, fenced by the backend's leases where it
/// has them.
pub async fn start_relay(
    backend: &Backend,
    broker: &Broker,
    channels: &Channels,
) -> Result<RunnerHandle, BoxError> {
    let mut runner = Runner::new(backend.events(), backend.dead_letters());
    if let Some(leases) = backend.leases() {
        runner = runner.with_leases(leases.as_leases());
    }
    Ok(runner
        .with_arc(broker_relay(backend, broker, channels).await?)
        .start())
}

/// What the notifier knows of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifiedAccount {
    /// The owner.
    pub owner: String,
    /// The balance after the last event heard, in minor units.
    pub balance: u64,
    /// The notices sent to the owner, oldest first.
    pub notices: Vec<String>,
}

/// The notifier's read model: accounts by id, with the notices their owners were sent.
#[derive(Debug, Default)]
pub struct Notifier {
    accounts: Mutex<BTreeMap<String, NotifiedAccount>>,
}

impl Notifier {
    /// What the notifier knows of account `id`.
    pub fn account(&self, id: &str) -> Option<NotifiedAccount> {
        self.accounts
            .lock()
            .expect("notifier lock")
            .get(id)
            .cloned()
    }

    /// How many accounts it knows.
    pub fn len(&self) -> usize {
        self.accounts.lock().expect("notifier lock").len()
    }

    /// Whether it knows no account yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Projector for Notifier {
    fn name(&self) -> &str {
        "notifier"
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let Some(e) = event.decode_for::<Account>()? else {
            return Ok(());
        };
        let mut accounts = self.accounts.lock().expect("notifier lock");
        let account = accounts.entry(e.stream.id.clone()).or_default();
        let notice = match e.payload {
            AccountEvent::Opened { owner } => {
                account.owner = owner;
                Some(format!("welcome, {}", account.owner))
            }
            AccountEvent::Withdrawn { amount, balance } => {
                account.balance = balance;
                (amount >= LARGE_WITHDRAWAL).then(|| format!("large withdrawal of {amount}"))
            }
            AccountEvent::Deposited { balance, .. }
            | AccountEvent::TransferDebited { balance, .. }
            | AccountEvent::TransferRefunded { balance, .. } => {
                account.balance = balance;
                None
            }
            AccountEvent::TransferCredited {
                amount, balance, ..
            } => {
                account.balance = balance;
                Some(format!("you received {amount}"))
            }
            AccountEvent::TransferSettled { .. } => None,
            AccountEvent::Closed => Some("your account is closed".to_owned()),
        };
        if let Some(n) = notice {
            tracing::info!(account = %e.stream.id, notice = %n, "notice");
            account.notices.push(n);
        }
        Ok(())
    }
}

/// A started notifier: its read model and its consumer.
#[derive(Debug)]
pub struct NotifierHandle {
    inbox: Arc<InMemoryInbox<Arc<Notifier>>>,
    consumer: Consumer,
}

#[derive(Debug)]
enum Consumer {
    Amqp(cqrs_rabbitmq::ConsumerHandle),
    Nats(cqrs_nats::ConsumerHandle),
}

impl NotifierHandle {
    /// The read model.
    pub fn notifier(&self) -> &Notifier {
        self.inbox.projector()
    }

    /// Stops consuming; unacknowledged messages go back to the broker.
    pub async fn shutdown(self) {
        match self.consumer {
            Consumer::Amqp(c) => c.shutdown().await,
            Consumer::Nats(c) => c.shutdown().await,
        }
    }
}

/// Starts consuming the bank's account events from `broker` into a fresh [`Notifier`].
pub async fn start_notifier(
    broker: &Broker,
    channels: &Channels,
) -> Result<NotifierHandle, BoxError> {
    let inbox = Arc::new(InMemoryInbox::new(Arc::new(Notifier::default())));
    let consumer = match broker {
        Broker::Amqp(url) => {
            let exchange = cqrs_rabbitmq::exchange_for(&channels.exchange_prefix(), "account");
            let queue = RabbitQueue::new(&channels.queue).bind(exchange, "#");
            Consumer::Amqp(RabbitConsumer::new(url, queue, inbox.clone()).start())
        }
        Broker::Nats(url) => {
            let client = cqrs_nats::async_nats::connect(url).await?;
            let queue =
                JetStreamQueue::new(&channels.jetstream(), &channels.queue).subscribe("account");
            Consumer::Nats(JetStreamConsumer::new(client, queue, inbox.clone()).start())
        }
    };
    Ok(NotifierHandle { inbox, consumer })
}

/// `bank notifier --broker URL`: consumes until `stop` resolves, logging each notice.
pub async fn run_notifier(
    broker: &str,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    let broker: Broker = broker.parse()?;
    let channels = Channels::default();
    let notifier = start_notifier(&broker, &channels).await?;
    tracing::info!(?broker, queue = %channels.queue, "notifier consuming account events");
    stop.await;
    let accounts = notifier.notifier().len();
    notifier.shutdown().await;
    tracing::info!(accounts, "notifier stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Amount, Bank, BankConfig};

    async fn round_trip(broker: Broker) {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let channels = Channels {
            prefix: format!("banktest{}", &tag[..10]),
            queue: format!("banktest-notifier-{}", &tag[..10]),
        };
        // NOTE: the queue must exist before the relay publishes, or RabbitMQ drops the events.
        let notifier = start_notifier(&broker, &channels).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let backend = Backend::open("sqlite::memory:").await.unwrap();
        let relay = start_relay(&backend, &broker, &channels).await.unwrap();
        let bank = Bank::start(backend, BankConfig::default());

        let alice = bank.open_account("alice", None).await.unwrap();
        let bob = bank.open_account("bob", None).await.unwrap();
        bank.deposit(alice.id, Amount::new(3_000_000).unwrap(), None)
            .await
            .unwrap();
        bank.withdraw(alice.id, Amount::new(LARGE_WITHDRAWAL).unwrap(), None)
            .await
            .unwrap();
        bank.transfer(alice.id, bob.id, Amount::new(500).unwrap(), None)
            .await
            .unwrap();
        bank.settle(Duration::from_secs(10)).await.unwrap();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let want_bob = |n: &Notifier| {
            n.account(&bob.id.to_string())
                .is_some_and(|a| a.balance == 500)
        };
        while !want_bob(notifier.notifier()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the notifier did not hear the transfer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = notifier.notifier().account(&alice.id.to_string()).unwrap();
        assert_eq!(a.owner, "alice");
        assert_eq!(a.balance, 3_000_000 - LARGE_WITHDRAWAL - 500);
        assert_eq!(
            a.notices,
            vec![
                "welcome, alice".to_owned(),
                format!("large withdrawal of {LARGE_WITHDRAWAL}")
            ]
        );
        let b = notifier.notifier().account(&bob.id.to_string()).unwrap();
        assert_eq!(
            b.notices,
            vec!["welcome, bob".to_owned(), "you received 500".to_owned()]
        );

        notifier.shutdown().await;
        relay.shutdown().await;
        bank.shutdown().await;
        cleanup(&broker, &channels).await;
    }

    async fn cleanup(broker: &Broker, channels: &Channels) {
        match broker {
            Broker::Amqp(url) => {
                use cqrs_rabbitmq::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
                let conn = cqrs_rabbitmq::lapin::Connection::connect(url, Default::default())
                    .await
                    .unwrap();
                let ch = conn.create_channel().await.unwrap();
                let q = &channels.queue;
                for name in [q.clone(), format!("{q}.retry"), format!("{q}.dlq")] {
                    ch.queue_delete(name.into(), QueueDeleteOptions::default())
                        .await
                        .unwrap();
                }
                // NOTE: the relay publishes every aggregate type, so it declared both exchanges.
                let prefix = channels.exchange_prefix();
                for name in [
                    format!("{q}.dlx"),
                    cqrs_rabbitmq::exchange_for(&prefix, "account"),
                    cqrs_rabbitmq::exchange_for(&prefix, "transfer"),
                ] {
                    ch.exchange_delete(name.into(), ExchangeDeleteOptions::default())
                        .await
                        .unwrap();
                }
            }
            Broker::Nats(url) => {
                let js = cqrs_nats::async_nats::jetstream::new(
                    cqrs_nats::async_nats::connect(url).await.unwrap(),
                );
                let events = channels.jetstream();
                let dlq = JetStreamQueue::new(&events, &channels.queue).dead_letter_stream();
                for name in [events.name().to_owned(), dlq] {
                    js.delete_stream(name).await.unwrap();
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_notifier_hears_the_bank_through_rabbitmq() {
        let url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        round_trip(Broker::Amqp(url)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_notifier_hears_the_bank_through_nats() {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        round_trip(Broker::Nats(url)).await;
    }
}
