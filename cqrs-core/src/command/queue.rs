//! One command at a time per stream within a handler.
//!
//! Commands on one aggregate that reach the same handler at once would otherwise race: all load
//! the same version, one appends, the others conflict, wait and try again, and a writer can lose
//! every race while newcomers keep winning. Queued, they go through in arrival order and conflict
//! only with writers in other processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

/// The streams of one handler that have a command under way, each with its queue.
#[derive(Default)]
pub(super) struct StreamQueue {
    streams: Mutex<HashMap<String, Arc<TurnLock<()>>>>,
}

impl StreamQueue {
    /// Waits until no other command of this handler is under way on stream `id`; the stream is
    /// the caller's until the returned turn is dropped. Waiters are served first come, first
    /// served.
    pub(super) async fn enter(&self, id: &str) -> Turn<'_> {
        let lock = self
            .streams
            .lock()
            .expect("stream queue poisoned")
            .entry(id.to_owned())
            .or_default()
            .clone();
        // NOTE: the turn exists before the wait, so that a caller who gives up while waiting
        // (a dropped future) still removes the stream's entry when it was the last one.
        let mut turn = Turn {
            queue: self,
            id: id.to_owned(),
            lock,
            guard: None,
        };
        turn.guard = Some(turn.lock.clone().lock_owned().await);
        turn
    }
}

/// A command's turn on its stream.
pub(super) struct Turn<'q> {
    queue: &'q StreamQueue,
    id: String,
    lock: Arc<TurnLock<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut streams = self.queue.streams.lock().expect("stream queue poisoned");
        // The map's handle and ours are the last: nobody waits, the entry goes.
        if Arc::strong_count(&self.lock) == 2 {
            streams.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_is_forgotten_once_its_last_command_is_done() {
        let queue = StreamQueue::default();
        let first = queue.enter("a").await;
        assert_eq!(queue.streams.lock().unwrap().len(), 1);
        drop(first);
        assert!(queue.streams.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn commands_on_one_stream_take_turns_and_a_given_up_wait_leaves_nothing() {
        let queue = Arc::new(StreamQueue::default());
        let first = queue.enter("a").await;
        // Another stream is not held up.
        drop(queue.enter("b").await);
        let q = queue.clone();
        let second = tokio::spawn(async move {
            let _turn = q.enter("a").await;
        });
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "the second command waits for the first"
        );
        second.abort();
        assert!(second.await.unwrap_err().is_cancelled());
        drop(first);
        assert!(queue.streams.lock().unwrap().is_empty());
    }
}
