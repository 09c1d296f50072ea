//! `bank notifier`: a second service that hears the bank's account events through a message
//! broker (RabbitMQ or NATS JetStream) and keeps its own read model, the customers' notices.
//! Choreography: the bank does not know the notifier; it only publishes its events.
//!
//! - The bank's side, [`broker_relay`]: the outbox relay, a subscriber of the bank's store
//!   that publishes every event.
//! - The notifier's side, [`start_notifier`]: a durable queue (RabbitMQ) or durable consumer
//!   (JetStream), `bank-notifier`, fed to the [`Notifier`] read model through its inbox. Each
//!   message's id is recorded in the transaction that writes the read model, so a message
//!   delivered again has no second effect. Instances compete for the messages.

mod broker;
mod model;
mod run;

pub use broker::{BROKER_RELAY, Broker, Channels, broker_relay, start_relay};
pub use model::{DEFAULT_NOTIFIER_DATABASE, Notice, NotifiedAccount, Notifier};
pub use run::{NotifierHandle, run_notifier, start_notifier};
