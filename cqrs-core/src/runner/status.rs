//! How far each subscriber is: the shared state its task writes and its handle reads.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use tokio::sync::{Notify, watch};

use crate::event::Cursor;

/// How many parked positions a runner remembers per subscriber for [`RunnerHandle::wait_for`]
/// (older ones are looked up in the dead-letter store).
///
/// [`RunnerHandle::wait_for`]: super::RunnerHandle::wait_for
pub(super) const PARKED_MEMORY: usize = 1024;

pub(crate) struct SubState {
    pub(super) cursor: watch::Sender<Cursor>,
    pub(super) handled: AtomicU64,
    pub(super) parked: AtomicU64,
    /// Streams held back by a dead letter (sequenced subscribers), as this process last saw.
    pub(crate) blocked: AtomicU64,
    pub(super) active: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
    /// The checkpoint at which this process last took the subscriber over: what it parked
    /// after it, it remembers in `parked_at`.
    pub(super) active_from: Mutex<Cursor>,
    /// Positions this process parked (while active), with the error; bounded.
    pub(super) parked_at: Mutex<BTreeMap<u64, String>>,
    /// Callers of `wait_for` waiting now: a passive subscriber re-reads its checkpoint often
    /// while there are any.
    pub(super) waiters: AtomicUsize,
    pub(super) waiter_came: Notify,
    /// Whether the subscriber's [`setup`](crate::Subscriber::setup) ran in this runner.
    pub(super) ready: watch::Sender<bool>,
}

impl SubState {
    pub(super) fn new() -> Self {
        SubState {
            cursor: watch::channel(Cursor::START).0,
            handled: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            active: AtomicBool::new(false),
            last_error: Mutex::new(None),
            active_from: Mutex::new(Cursor::START),
            parked_at: Mutex::new(BTreeMap::new()),
            waiters: AtomicUsize::new(0),
            waiter_came: Notify::new(),
            ready: watch::channel(false).0,
        }
    }

    pub(crate) fn error(&self, e: Option<String>) {
        *self.last_error.lock().expect("status lock") = e;
    }

    pub(crate) fn parked_at(&self, position: u64, error: String) {
        let mut parked = self.parked_at.lock().expect("status lock");
        parked.insert(position, error);
        while parked.len() > PARKED_MEMORY {
            parked.pop_first();
        }
    }

    pub(crate) fn retried(&self, position: u64) {
        self.parked_at
            .lock()
            .expect("status lock")
            .remove(&position);
    }
}

/// How far one subscriber is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriberStatus {
    /// Its name.
    pub name: String,
    /// Global position of the last event it passed (handled or parked), in this process or,
    /// while another holds its lease, in that one (its committed checkpoint).
    pub position: u64,
    /// Its full cursor.
    pub cursor: Cursor,
    /// Events appended after `position`, as far as positions tell (exact on stores whose
    /// positions follow commit order).
    pub lag: u64,
    /// Dead letters waiting for it (held ones included).
    pub parked: usize,
    /// Streams whose events wait behind a dead letter (a sequenced subscriber holds back the
    /// rest of a stream after a parked event), as the process running it last saw.
    pub blocked_streams: u64,
    /// Whether this process runs it now (false while another process holds its lease).
    pub active: bool,
    /// Events handled by this process since start (parked ones not included).
    pub handled: u64,
    /// Events this process parked as dead letters since start.
    pub parked_here: u64,
    /// The last error, until the next batch succeeds: also while an event is being tried
    /// again (a subscriber stuck behind an unreachable database or broker says why).
    pub last_error: Option<String>,
}
