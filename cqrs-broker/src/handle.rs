//! What a started consumer shows and how it is stopped: its stats and its handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a consumer has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received (redeliveries included).
    pub delivered: u64,
    /// Events the inbox handled for the first time.
    pub handled: u64,
    /// Repeats the inbox recognised and skipped.
    pub duplicates: u64,
    /// Failed messages sent back for another try.
    pub retried: u64,
    /// Messages moved to the dead-letter destination.
    pub dead_lettered: u64,
    /// Sessions (connections, pulls) lost and opened again.
    pub reconnects: u64,
}

/// The live counters behind [`ConsumerStats`], shared by the consumer's task and its handle.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumerStats {
            delivered: get(&self.delivered),
            handled: get(&self.handled),
            duplicates: get(&self.duplicates),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            reconnects: get(&self.reconnects),
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Controls a started consumer.
#[derive(Debug)]
pub struct ConsumerHandle {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: JoinHandle<()>,
    pub(crate) stats: Arc<Counters>,
}

impl ConsumerHandle {
    /// What the consumer has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.snapshot()
    }

    /// Stops after the message in hand and closes the session; unacknowledged messages go
    /// back to the broker (at once, or after its acknowledgement wait).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Stops at once, wherever it is, as a crash would. For tests of recovery.
    pub fn abort(self) {
        self.task.abort();
    }
}
