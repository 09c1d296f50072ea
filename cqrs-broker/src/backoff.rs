//! The wait between two tries: doubling from 50 ms up to 2 s, back to the start after a success.

use std::time::Duration;

/// A doubling wait, for reconnections and publish retries: 50 ms, 100 ms, ... up to 2 s.
///
/// ```
/// use std::time::Duration;
/// use cqrs_broker::Backoff;
///
/// let mut backoff = Backoff::default();
/// assert_eq!(backoff.next_wait(), Duration::from_millis(50));
/// assert_eq!(backoff.next_wait(), Duration::from_millis(100));
/// backoff.reset();
/// assert_eq!(backoff.next_wait(), Duration::from_millis(50));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
    }
}

impl Backoff {
    /// Waits of `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait to use now; the one after it is twice as long (up to the maximum).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The wait that [`next_wait`](Self::next_wait) would give, without moving on.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}
