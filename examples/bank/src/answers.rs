//! What the service answers to commands and to `GET /projections`.

use cqrs_core::SubscriberStatus;
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

/// How far one projector is: `GET /projections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// Global position of the last event it passed.
    pub position: u64,
    /// Events appended after that position.
    pub lag: u64,
    /// Dead letters waiting for it.
    pub parked: usize,
    /// Whether this process runs it now.
    pub active: bool,
    /// The last error, until the next batch succeeds.
    pub last_error: Option<String>,
}

impl From<SubscriberStatus> for ProjectionStatus {
    fn from(s: SubscriberStatus) -> Self {
        ProjectionStatus {
            name: s.name,
            position: s.position,
            lag: s.lag,
            parked: s.parked,
            active: s.active,
            last_error: s.last_error,
        }
    }
}
