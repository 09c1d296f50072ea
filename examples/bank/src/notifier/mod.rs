//! `bank notifier`: a second service that hears the bank's account events through a message
//! broker (RabbitMQ or NATS JetStream) and keeps its own read model, the customers' notices.
//! Choreography: the bank does not know the notifier; it only publishes its events.
//!
//! Two halves, each a few lines on the broker crates:
//! - the bank's side, [`broker_relay`]: the outbox relay, a subscriber of the bank's store that
//!   publishes every event (run it in a [`cqrs_core::Runner`] beside the read models, with the
//!   backend's leases on PostgreSQL so that one process relays);
//! - the notifier's side, [`start_notifier`]: a durable queue (RabbitMQ) or durable consumer
//!   (JetStream) named `bank-notifier`, bound to the `account` events, fed to the [`Notifier`]
//!   read model through its inbox. Its instances compete for the messages.
//!
//! The notifier's read model lives in a database of its own (default the SQLite file
//! `./notifier.db`; on PostgreSQL, the schema `notifier`), and its inbox beside it: each message's id is recorded in the transaction that writes the
//! read model, so a message delivered again (after a crash between commit and acknowledgement,
//! or relayed again by the bank) has no second effect, and a restarted notifier goes on where
//! it stopped.

mod broker;
mod model;
mod projection;
mod run;
#[cfg(test)]
mod tests;

pub use broker::{BROKER_RELAY, Broker, Channels, broker_relay, start_relay};
pub use model::{DEFAULT_NOTIFIER_DATABASE, Notice, NotifiedAccount, Notifier};
pub use run::{NotifierHandle, run_notifier, start_notifier};
