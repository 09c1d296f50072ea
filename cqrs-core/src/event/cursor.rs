//! The cursor: where a reader stands in the all-stream.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a subscriber stands in the all-stream; events are read in increasing cursor order.
///
/// `position` is the event's global position. `tx` is a commit-order key for back-ends whose
/// positions are handed out before commit (PostgreSQL keeps the writing transaction's id there,
/// so that a reader never passes an event that commits later with a lower position). Back-ends
/// whose positions already follow commit order leave `tx` at 0. [`Cursor::START`] is before
/// every event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Cursor {
    /// Commit-order key (0 where positions are already in commit order).
    pub tx: u64,
    /// Global position of the last event passed.
    pub position: u64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor { tx: 0, position: 0 };

    /// A cursor from a commit-order key and a position.
    pub const fn new(tx: u64, position: u64) -> Self {
        Cursor { tx, position }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tx == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}@{}", self.position, self.tx)
        }
    }
}
