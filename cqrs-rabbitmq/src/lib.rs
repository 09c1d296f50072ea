//! TODO: cqrs-rabbitmq.
