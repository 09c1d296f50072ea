//! TODO: cqrs-nats.
