//! What the service answers to commands.

use serde::Serialize;
use uuid::Uuid;

/// An account just opened: `201 {"id","version","position"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Opened {
    /// The new account's id.
    pub id: Uuid,
    /// Its stream version (1).
    pub version: u64,
    /// The global position to read your write at.
    pub position: u64,
}

/// A command's result: `{"version","position"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Written {
    /// The account's version after the command.
    pub version: u64,
    /// The global position to read your write at.
    pub position: u64,
}

/// A transfer accepted: `202 {"id","position"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The transfer's id.
    pub id: Uuid,
    /// The global position of its start.
    pub position: u64,
}

/// How far one projector is: an item of `GET /projections`.
pub type ProjectionStatus = cqrs_core::SubscriberStatus;
