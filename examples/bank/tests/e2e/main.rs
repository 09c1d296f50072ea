//! End-to-end tests of the `bank` binary over HTTP, on the embedded store and on PostgreSQL,
//! and of `bank notifier` on RabbitMQ, NATS JetStream, Kafka, ActiveMQ and SQS; and, fed by hand
//! through the library, the read models, the notifier's inbox and the transfer process manager.

mod admin;
mod cli;
mod cluster;
mod contract;
mod crash;
mod edges;
mod load;
mod notifier;
mod notifier_activemq;
mod notifier_inbox;
mod notifier_kafka;
mod notifier_sqs;
mod racing_keys;
mod read_models;
mod replay;
mod stale_cache;
mod support;
mod trace;
mod transfer_kills;
mod transfer_process;
