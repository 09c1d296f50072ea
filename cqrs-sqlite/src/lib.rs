//! TODO: cqrs-sqlite.
