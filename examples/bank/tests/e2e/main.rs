//! End-to-end tests of the `bank` binary over HTTP, on the embedded store and on PostgreSQL,
//! and of `bank notifier` on RabbitMQ, NATS JetStream and Kafka.

mod cli;
mod cluster;
mod contract;
mod crash;
mod edges;
mod load;
mod notifier;
mod notifier_kafka;
mod notifier_activemq;
mod racing_keys;
mod replay;
mod stale_cache;
mod support;
