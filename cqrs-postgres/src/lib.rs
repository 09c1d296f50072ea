//! TODO: cqrs-postgres.
